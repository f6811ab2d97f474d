//! Containers of arrays. Each format implements [`Source`]: list a directory, read bytes of a
//! file's payload. The virtual tree (`vfs`) knows nothing else about formats.

pub mod hdf5;
pub mod pickle;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::npy::NpyHeader;

/// A source's own name for one of its directories or files. [`ROOT`] is the top directory.
pub type Key = u64;
pub const ROOT: Key = 0;

/// An extended attribute: full name (`user.h5.units`) and value.
pub type Xattr = (String, Vec<u8>);

/// What a directory holds.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Extended attributes of the directory itself.
    pub xattrs: Vec<Xattr>,
    /// Children left out, with the reason (shown as `user.arrfs.skipped`).
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Entry {
    /// The final name, suffix included (`x.npy`); the tree escapes what a path cannot hold.
    pub name: String,
    pub key: Key,
    pub kind: EntryKind,
    pub xattrs: Vec<Xattr>,
    /// Objects reachable by several links share this identity (and so one inode).
    pub identity: Option<u64>,
    pub nlink: u32,
}

#[derive(Debug)]
pub enum EntryKind {
    Dir,
    /// A `.npy` whose header the tree writes; [`Source::read`] serves the payload bytes.
    Array(NpyHeader),
    /// A file served byte for byte by [`Source::read`] (npz members, `.npy` files).
    Blob {
        size: u64,
    },
    /// A relative path inside the mount.
    Symlink(String),
}

impl Entry {
    pub fn new(name: String, key: Key, kind: EntryKind) -> Self {
        Entry {
            name,
            key,
            kind,
            xattrs: Vec::new(),
            identity: None,
            nlink: 1,
        }
    }
}

pub trait Source: Send + Sync {
    /// The children of directory `dir` (a key from an earlier listing, or [`ROOT`]).
    fn list(&self, dir: Key) -> Result<Listing>;

    /// Fills `buf` with payload bytes from `offset` of file `file`. Callers never read past
    /// the end; a short count is an error in the source.
    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// The container formats, told apart by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Hdf5,
    Pickle,
}

const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

/// Detects the format of the file at `path` from its magic bytes.
pub fn detect(path: &Path) -> Result<Format> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if hdf5_signature_offset(&file)?.is_some() {
        return Ok(Format::Hdf5);
    }
    if pickle::sniff(path, &file)? {
        return Ok(Format::Pickle);
    }
    Err(Error::format(
        path,
        "unknown format (not HDF5, NPZ/zip, pickle or .npy)",
    ))
}

/// HDF5's superblock may follow a user block: it sits at 0, 512, 1024, 2048, ...
fn hdf5_signature_offset(file: &std::fs::File) -> Result<Option<u64>> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut offset = 0;
    while offset + HDF5_MAGIC.len() as u64 <= len {
        let mut buf = [0u8; 8];
        if crate::io::pread_exact(file, offset, &mut buf).is_ok() && buf == HDF5_MAGIC {
            return Ok(Some(offset));
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Ok(None)
}

/// Opens `path` as the source of its detected format.
pub fn open(path: &Path, options: &SourceOptions) -> Result<Arc<dyn Source>> {
    match detect(path)? {
        Format::Hdf5 => Ok(Arc::new(hdf5::Hdf5Source::open(path, options)?)),
        Format::Pickle => Ok(Arc::new(pickle::open(path, options)?)),
    }
}

/// Settings every source may use.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Bytes of decoded data a source may keep cached.
    pub cache_size: u64,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            cache_size: 256 << 20,
        }
    }
}
