//! NPZ archives and any zip of `.npy` files. Each member is served byte for byte: stored
//! members by `pread` at their data offset, deflated ones through a [`SeekableInflate`].
//! The central directory (ZIP64 included) is read by the `zip` crate, once, at open.

use std::path::Path;
use std::sync::Arc;

use zip::CompressionMethod;

use crate::error::{Error, Result};
use crate::io::inflate::{scan, DeflateRange, SeekPointStore, SeekableInflate};
use crate::io::verify::RangeCheck;
use crate::io::{Location, SourceFile};
use crate::npy::NPY_MAGIC;
use crate::source::path_tree::{PathTree, TreeNode};
use crate::source::{Entry, EntryKind, Key, Listing, SkipReason, Skipped, Source, SourceOptions};

struct Member {
    size: u64,
    data: MemberData,
    /// With `-o verify=open`: the outcome of checking the whole member, once known. A
    /// resource error is no outcome: the next read checks again.
    verified: std::sync::Mutex<Option<Verified>>,
}

/// What checking a whole member found.
#[derive(Clone)]
enum Verified {
    Good,
    Corrupt(String),
}

/// Why a member is left out of the tree.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("encrypted")]
    Encrypted,
    #[error("stored member with two sizes")]
    TwoSizes,
    #[error("compression method {0} is not supported")]
    Method(CompressionMethod),
}

enum MemberData {
    /// Served by `pread`; the CRC-32 is checked as a reader reaches the end.
    Stored {
        start: u64,
        check: RangeCheck,
    },
    Deflated(SeekableInflate),
}

pub struct ZipSource {
    file: Arc<SourceFile>,
    /// `-o verify=open`.
    verify_on_open: bool,
    /// Key -> node; [`ROOT`] is the archive's top directory.
    tree: PathTree<Member>,
}

/// What the central directory says about one member.
pub(crate) struct MemberInfo {
    pub path: String,
    pub is_dir: bool,
    pub encrypted: bool,
    pub method: CompressionMethod,
    pub data_start: u64,
    pub compressed_size: u64,
    pub size: u64,
    pub crc32: u32,
}

impl ZipSource {
    pub fn open(location: &Location, options: &SourceOptions) -> Result<ZipSource> {
        ZipSource::open_with_store(location, SeekPointStore::new(options.cache_size))
            .map(|zip| zip.verifying_on_open(options.verify_on_open))
    }

    /// Opens with seek points kept in `store` (shared by the containers of a directory).
    pub fn open_with_store(location: &Location, store: Arc<SeekPointStore>) -> Result<ZipSource> {
        let file = Arc::new(SourceFile::open(location)?);
        let members = read_central_directory(&file)?;
        ZipSource::from_members(file, members, store)
    }

    /// The archive whose central directory was read already.
    pub(crate) fn from_members(
        file: Arc<SourceFile>,
        members: Vec<MemberInfo>,
        store: Arc<SeekPointStore>,
    ) -> Result<ZipSource> {
        let mut source = ZipSource {
            file,
            tree: PathTree::default(),
            verify_on_open: false,
        };
        for info in members {
            source.add(info, &store)?;
        }
        Ok(source)
    }

    /// With `on`, each member's CRC-32 is checked in full on its first read
    /// (`-o verify=open`): a corrupt member fails every read, from the first.
    pub(crate) fn verifying_on_open(mut self, on: bool) -> ZipSource {
        self.verify_on_open = on;
        self
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads `member` to its end once, which checks its CRC-32; the outcome is kept (while
    /// it is found, other readers of the member wait).
    fn verify(&self, member: &Member) -> Result<()> {
        let mut verified = member.verified.lock().unwrap();
        if verified.is_none() {
            let checked = match &member.data {
                MemberData::Stored { check, .. } => check.verify_all(&self.file),
                MemberData::Deflated(stream) => read_through(stream, member.size),
            };
            *verified = Some(match checked {
                Ok(()) => Verified::Good,
                Err(e) if e.passes() => return Err(e),
                Err(e) => Verified::Corrupt(e.to_string()),
            });
        }
        match verified.as_ref() {
            Some(Verified::Corrupt(cause)) => Err(Error::read(self.path(), "member", cause)),
            _ => Ok(()),
        }
    }

    /// Places one member in the tree, or records why it is left out.
    fn add(&mut self, info: MemberInfo, store: &Arc<SeekPointStore>) -> Result<()> {
        let parts: Vec<&str> = info
            .path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Ok(());
        };
        if !info.is_dir {
            self.check_range(&info)?;
        }
        let parent = self.tree.make_dirs(dirs);
        if info.is_dir {
            self.tree.make_dirs(&parts);
            return Ok(());
        }
        match self.member(&info, store) {
            Ok(member) => {
                let name = self.member_name(last, &member, &info.path);
                self.tree.push(parent, name, member);
            }
            Err(why) => {
                log::info!("{}: {} left out: {why}", self.path().display(), info.path);
                self.tree.dir_mut(parent).skipped.push(Skipped::new(
                    *last,
                    SkipReason::Unsupported(why.to_string()),
                ));
            }
        }
        Ok(())
    }

    /// How a member is read, or why it cannot be.
    fn member(&self, info: &MemberInfo, store: &Arc<SeekPointStore>) -> Result<Member, Unreadable> {
        if info.encrypted {
            return Err(Unreadable::Encrypted);
        }
        let data = match info.method {
            CompressionMethod::Stored if info.compressed_size == info.size => MemberData::Stored {
                start: info.data_start,
                check: RangeCheck::new(info.data_start, info.size, info.crc32),
            },
            CompressionMethod::Stored => return Err(Unreadable::TwoSizes),
            CompressionMethod::Deflated => MemberData::Deflated(SeekableInflate::new(
                self.file.clone(),
                DeflateRange {
                    start: info.data_start,
                    compressed_len: info.compressed_size,
                    size: info.size,
                    crc32: Some(info.crc32),
                },
                format!("member {}", info.path),
                store.clone(),
            )),
            other => return Err(Unreadable::Method(other)),
        };
        Ok(Member {
            size: info.size,
            data,
            verified: std::sync::Mutex::default(),
        })
    }

    /// `k.npy` stays; a member holding `.npy` bytes under another name gets `.npy` added.
    fn member_name(&self, last: &str, member: &Member, path: &str) -> String {
        if last.ends_with(".npy") || !self.starts_with_npy_magic(member, path) {
            return last.to_string();
        }
        format!("{last}.npy")
    }

    fn starts_with_npy_magic(&self, member: &Member, path: &str) -> bool {
        if member.size < NPY_MAGIC.len() as u64 {
            return false;
        }
        let head = match &member.data {
            MemberData::Stored { start, .. } => {
                let mut head = [0u8; NPY_MAGIC.len()];
                self.file.read_at(*start, &mut head).map(|_| head.to_vec())
            }
            MemberData::Deflated(stream) => {
                let range = stream.range();
                scan(
                    &self.file,
                    range.start,
                    range.compressed_len,
                    NPY_MAGIC.len(),
                    false,
                )
                .map(|(head, _)| head)
            }
        };
        match head {
            Ok(head) => head == NPY_MAGIC,
            Err(e) => {
                log::warn!("{}: cannot look into {path}: {e}", self.path().display());
                false
            }
        }
    }

    /// Member data must lie inside the file: a truncated archive fails at mount.
    fn check_range(&self, info: &MemberInfo) -> Result<()> {
        let end = info.data_start.checked_add(info.compressed_size);
        match end {
            Some(end) if end <= self.file.len() => Ok(()),
            _ => Err(Error::format(
                self.path(),
                format!(
                    "member {} extends past the end of the file (truncated?)",
                    info.path
                ),
            )),
        }
    }
}

/// Every member's metadata, with the data offset from its local header.
pub(crate) fn read_central_directory(file: &SourceFile) -> Result<Vec<MemberInfo>> {
    let (path, len) = (file.path(), file.len());
    let bad = |e: zip::result::ZipError| Error::format(path, format!("not a readable zip: {e}"));
    // Windowed: the zip crate reads the central directory in small pieces, and seeks to
    // every member's local header (`data_start`), which a `BufReader` would read 64 KiB for.
    let reader =
        crate::io::window::WindowReader::new(|at, buf: &mut [u8]| file.read_at(at, buf), len);
    let mut archive = zip::ZipArchive::new(reader).map_err(bad)?;
    let mut members = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let member = archive.by_index_raw(i).map_err(bad)?;
        members.push(MemberInfo {
            path: String::from_utf8_lossy(member.name_raw()).into_owned(),
            is_dir: member.is_dir(),
            encrypted: member.encrypted(),
            method: member.compression(),
            data_start: member.data_start(),
            compressed_size: member.compressed_size(),
            size: member.size(),
            crc32: member.crc32(),
        });
    }
    log::debug!("{}: {} members, {len} bytes", path.display(), members.len());
    Ok(members)
}

impl Source for ZipSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        let dir = self.tree.dir(dir)?;
        let entries = dir
            .children
            .iter()
            .map(|(name, key)| {
                let kind = match self.tree.node(*key) {
                    Ok(TreeNode::Leaf(m)) => EntryKind::Blob { size: m.size },
                    _ => EntryKind::Dir,
                };
                Entry::new(name.clone(), *key, kind)
            })
            .collect();
        Ok(Listing {
            entries,
            xattrs: Vec::new(),
            skipped: dir.skipped.clone(),
        })
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        let TreeNode::Leaf(member) = self.tree.node(file)? else {
            return Err(Error::IsDir);
        };
        if self.verify_on_open {
            self.verify(member)?;
        }
        match &member.data {
            MemberData::Stored { start, check } => {
                self.file.read_at(start + offset, buf)?;
                check.saw(&self.file, offset, buf)
            }
            MemberData::Deflated(stream) => stream.read_at(offset, buf),
        }
    }
}

/// Inflates a whole member (its CRC-32 is checked at the end), keeping nothing.
fn read_through(stream: &SeekableInflate, size: u64) -> Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(size as usize)];
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(buf.len() as u64) as usize;
        stream.read_at(offset, &mut buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod fuzz;
