//! One file of named tensors whose bytes lie contiguously at known offsets (safetensors,
//! GGUF), shown as a tree: each tensor `NAME` is `NAME.npy`, or with a name separator
//! (`-o split_names=.`) the parts before the last one become directories. Reads are
//! `pread`s of the file; with `-o widen=f32`, tensors whose `user.arrfs.dtype_logical` is
//! bfloat16 or a float8 are served as `<f4`, converted as read. The formats parse their
//! headers; this module only holds the result.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::SourceFile;
use crate::npy::widen::{self, Narrow};
use crate::npy::NpyHeader;
use crate::source::path_tree::{PathTree, TreeNode};
use crate::source::{
    Entry, EntryKind, Key, Listing, SkipReason, Skipped, Source, SourceOptions, Xattr, ROOT,
};

const DTYPE_LOGICAL: &str = "user.arrfs.dtype_logical";

/// A tensor's `.npy` header, the absolute file offset of its first payload byte, and its
/// extended attributes.
pub struct Tensor {
    pub header: NpyHeader,
    pub offset: u64,
    pub xattrs: Vec<Xattr>,
}

/// Why one header entry is not a tensor shown.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The entry is left out (`user.arrfs.skipped`); the rest of the file is shown.
    #[error("{0}")]
    Skip(SkipReason),
    /// The file is truncated or corrupt (data past its end): the file fails to open.
    #[error("{0}")]
    Broken(String),
}

impl EntryError {
    /// An entry arrfs does not serve (its dtype, shape or offsets).
    pub fn unsupported(why: impl Into<String>) -> Self {
        EntryError::Skip(SkipReason::Unsupported(why.into()))
    }
}

enum Leaf {
    /// A tensor, served as float32 if it is stored as this narrower float.
    Tensor(Tensor, Option<Narrow>),
    Bytes(Arc<[u8]>),
}

pub struct TensorFile {
    file: SourceFile,
    tree: PathTree<Leaf>,
    /// Tensor names are split into directories at this separator.
    split: Option<String>,
    /// `-o widen=f32`.
    widen: bool,
}

impl TensorFile {
    pub fn new(file: SourceFile, options: &SourceOptions) -> TensorFile {
        TensorFile {
            file,
            tree: PathTree::default(),
            split: options.split_names.clone().filter(|s| !s.is_empty()),
            widen: options.widen,
        }
    }

    pub fn file(&self) -> &SourceFile {
        &self.file
    }

    /// Extended attributes of the top directory (the file's metadata).
    pub fn set_root_xattrs(&mut self, xattrs: Vec<Xattr>) {
        self.tree.dir_mut(ROOT).xattrs = xattrs;
    }

    /// A small file of the top directory held in memory (an `--attrs-json` sidecar).
    pub fn add_bytes(&mut self, name: String, bytes: Vec<u8>) {
        self.tree.push(ROOT, name, Leaf::Bytes(bytes.into()));
    }

    /// Adds the tensor of header entry `name`, or records why it is left out; a broken
    /// entry fails the whole file.
    pub fn add_entry(&mut self, name: &str, entry: Result<Tensor, EntryError>) -> Result<()> {
        match entry {
            Ok(tensor) => self.add(name, tensor),
            Err(EntryError::Skip(why)) => self.skip(name, why),
            Err(EntryError::Broken(why)) => {
                let cause = format!("tensor {name:?}: {why}");
                return Err(Error::format(self.file.path(), cause));
            }
        }
        Ok(())
    }

    fn add(&mut self, name: &str, mut tensor: Tensor) {
        let narrow = if self.widen {
            narrow_type(&tensor.xattrs)
        } else {
            None
        };
        if narrow.is_some() {
            tensor.header = widen::widened_header(&tensor.header);
        }
        let (parent, last) = self.place(name);
        self.tree
            .push(parent, format!("{last}.npy"), Leaf::Tensor(tensor, narrow));
    }

    /// Records a tensor that is not shown, with the reason (`user.arrfs.skipped`).
    fn skip(&mut self, name: &str, why: SkipReason) {
        log::info!(
            "{}: tensor {name:?} left out: {why}",
            self.file.path().display()
        );
        let (parent, last) = self.place(name);
        self.tree
            .dir_mut(parent)
            .skipped
            .push(Skipped::new(last, why));
    }

    /// The directory a tensor name goes into, created as needed, and its last part.
    fn place(&mut self, name: &str) -> (Key, String) {
        let Some(sep) = self.split.clone() else {
            return (ROOT, name.to_string());
        };
        let parts: Vec<&str> = name.split(sep.as_str()).collect();
        let (last, dirs) = parts.split_last().expect("split yields at least one part");
        (self.tree.make_dirs(dirs), last.to_string())
    }
}

/// The stored float type a tensor's `user.arrfs.dtype_logical` names, if widening applies.
fn narrow_type(xattrs: &[Xattr]) -> Option<Narrow> {
    let (_, logical) = xattrs.iter().find(|(name, _)| name == DTYPE_LOGICAL)?;
    Narrow::from_logical(std::str::from_utf8(logical).ok()?)
}

impl Source for TensorFile {
    fn list(&self, dir: Key) -> Result<Listing> {
        let dir = self.tree.dir(dir)?;
        let entries = dir
            .children
            .iter()
            .map(|(name, key)| match self.tree.node(*key) {
                Ok(TreeNode::Leaf(Leaf::Bytes(bytes))) => {
                    Entry::new(name.clone(), *key, EntryKind::Bytes(bytes.clone()))
                }
                Ok(TreeNode::Leaf(Leaf::Tensor(t, _))) => {
                    let mut entry =
                        Entry::new(name.clone(), *key, EntryKind::Array(t.header.clone()));
                    entry.xattrs = t.xattrs.as_slice().into();
                    entry
                }
                _ => Entry::new(name.clone(), *key, EntryKind::Dir),
            })
            .collect();
        Ok(Listing {
            entries,
            xattrs: dir.xattrs.clone(),
            skipped: dir.skipped.clone(),
        })
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.tree.node(file)? {
            TreeNode::Leaf(Leaf::Tensor(t, None)) => self.file.read_at(t.offset + offset, buf),
            TreeNode::Leaf(Leaf::Tensor(t, Some(narrow))) => {
                widen::read_widened(*narrow, offset, buf, |stored, out| {
                    self.file.read_at(t.offset + stored, out)
                })
            }
            TreeNode::Dir(_) => Err(Error::IsDir),
            TreeNode::Leaf(Leaf::Bytes(_)) => Err(Error::NotFound),
        }
    }
}
