//! One file of named tensors whose bytes lie contiguously at known offsets (safetensors,
//! GGUF), shown as a tree: each tensor `NAME` is `NAME.npy`, or with a name separator
//! (`-o split_names=.`) the parts before the last one become directories. Reads are
//! `pread`s of the file; with `-o widen=f32`, tensors whose `user.arrfs.dtype_logical` is
//! bfloat16 or a float8 are served as `<f4`, converted as read. The formats parse their
//! headers; this module only holds the result.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::SourceFile;
use crate::npy::widen::{self, Narrow};
use crate::npy::NpyHeader;
use crate::source::{Entry, EntryKind, Key, Listing, Source, SourceOptions, Xattr, ROOT};

const DTYPE_LOGICAL: &str = "user.arrfs.dtype_logical";

/// A tensor's `.npy` header, the absolute file offset of its first payload byte, and its
/// extended attributes.
pub struct Tensor {
    pub header: NpyHeader,
    pub offset: u64,
    pub xattrs: Vec<Xattr>,
}

enum Node {
    Dir(Dir),
    /// A tensor, served as float32 if it is stored as this narrower float.
    Tensor(Tensor, Option<Narrow>),
    Bytes(Arc<[u8]>),
}

#[derive(Default)]
struct Dir {
    /// Final names (`x.npy`) and keys, in the order added.
    children: Vec<(String, Key)>,
    subdirs: HashMap<String, Key>,
    xattrs: Vec<Xattr>,
    skipped: Vec<(String, String)>,
}

pub struct TensorFile {
    file: SourceFile,
    /// Key -> node; [`ROOT`] is the top directory.
    nodes: Vec<Node>,
    /// Tensor names are split into directories at this separator.
    split: Option<String>,
    /// `-o widen=f32`.
    widen: bool,
}

impl TensorFile {
    pub fn new(file: SourceFile, options: &SourceOptions) -> TensorFile {
        TensorFile {
            file,
            nodes: vec![Node::Dir(Dir::default())],
            split: options.split_names.clone().filter(|s| !s.is_empty()),
            widen: options.widen,
        }
    }

    pub fn file(&self) -> &SourceFile {
        &self.file
    }

    /// Extended attributes of the top directory (the file's metadata).
    pub fn set_root_xattrs(&mut self, xattrs: Vec<Xattr>) {
        self.dir_mut(ROOT).xattrs = xattrs;
    }

    /// A small file of the top directory held in memory (an `--attrs-json` sidecar).
    pub fn add_bytes(&mut self, name: String, bytes: Vec<u8>) {
        self.push(ROOT, name, Node::Bytes(bytes.into()));
    }

    pub fn add(&mut self, name: &str, mut tensor: Tensor) {
        let narrow = if self.widen {
            narrow_type(&tensor.xattrs)
        } else {
            None
        };
        if narrow.is_some() {
            tensor.header = widen::widened_header(&tensor.header);
        }
        let (parent, last) = self.place(name);
        self.push(parent, format!("{last}.npy"), Node::Tensor(tensor, narrow));
    }

    /// Records a tensor that is not shown, with the reason (`user.arrfs.skipped`).
    pub fn skip(&mut self, name: &str, why: String) {
        log::info!(
            "{}: tensor {name:?} left out: {why}",
            self.file.path().display()
        );
        let (parent, last) = self.place(name);
        self.dir_mut(parent).skipped.push((last, why));
    }

    /// The directory a tensor name goes into, created as needed, and its last part.
    fn place(&mut self, name: &str) -> (Key, String) {
        let Some(sep) = self.split.clone() else {
            return (ROOT, name.to_string());
        };
        let parts: Vec<&str> = name.split(sep.as_str()).collect();
        let (last, dirs) = parts.split_last().expect("split yields at least one part");
        let mut dir = ROOT;
        for part in dirs {
            dir = match self.dir_mut(dir).subdirs.get(*part) {
                Some(&key) => key,
                None => {
                    let key = self.push(dir, part.to_string(), Node::Dir(Dir::default()));
                    self.dir_mut(dir).subdirs.insert(part.to_string(), key);
                    key
                }
            };
        }
        (dir, last.to_string())
    }

    fn push(&mut self, parent: Key, name: String, node: Node) -> Key {
        let key = self.nodes.len() as Key;
        self.nodes.push(node);
        self.dir_mut(parent).children.push((name, key));
        key
    }

    fn dir_mut(&mut self, key: Key) -> &mut Dir {
        match &mut self.nodes[key as usize] {
            Node::Dir(dir) => dir,
            _ => unreachable!("parents are always directories"),
        }
    }

    fn node(&self, key: Key) -> Result<&Node> {
        self.nodes.get(key as usize).ok_or(Error::NotFound)
    }
}

/// The stored float type a tensor's `user.arrfs.dtype_logical` names, if widening applies.
fn narrow_type(xattrs: &[Xattr]) -> Option<Narrow> {
    let (_, logical) = xattrs.iter().find(|(name, _)| name == DTYPE_LOGICAL)?;
    Narrow::from_logical(std::str::from_utf8(logical).ok()?)
}

impl Source for TensorFile {
    fn list(&self, dir: Key) -> Result<Listing> {
        let Node::Dir(dir) = self.node(dir)? else {
            return Err(Error::NotDir);
        };
        let entries = dir
            .children
            .iter()
            .map(|(name, key)| match &self.nodes[*key as usize] {
                Node::Dir(_) => Entry::new(name.clone(), *key, EntryKind::Dir),
                Node::Bytes(bytes) => {
                    Entry::new(name.clone(), *key, EntryKind::Bytes(bytes.clone()))
                }
                Node::Tensor(t, _) => {
                    let mut entry =
                        Entry::new(name.clone(), *key, EntryKind::Array(t.header.clone()));
                    entry.xattrs = t.xattrs.clone();
                    entry
                }
            })
            .collect();
        Ok(Listing {
            entries,
            xattrs: dir.xattrs.clone(),
            skipped: dir.skipped.clone(),
        })
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.node(file)? {
            Node::Tensor(t, None) => self.file.read_at(t.offset + offset, buf),
            Node::Tensor(t, Some(narrow)) => {
                widen::read_widened(*narrow, offset, buf, |stored, out| {
                    self.file.read_at(t.offset + stored, out)
                })
            }
            Node::Dir(_) => Err(Error::IsDir),
            Node::Bytes(_) => Err(Error::NotFound),
        }
    }
}
