//! Containers of arrays. Each format implements [`Source`]: list a directory, read bytes of a
//! file's payload. The virtual tree (`vfs`) knows nothing else about formats.

pub mod dir;
pub mod hdf5;
pub mod npz;
pub mod pickle;
pub mod single;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::inflate::SeekPointStore;
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
    /// A small file held in memory and served by the tree itself (attribute sidecars).
    Bytes(Arc<[u8]>),
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
    /// NPZ or any zip archive.
    Zip,
    Npy,
    /// A gzip-wrapped `.npy`.
    Gzip,
    /// A directory of containers.
    Dir,
    Pickle,
}

const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";
const ZIP_MAGICS: [&[u8]; 2] = [b"PK\x03\x04", b"PK\x05\x06"];
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";

/// Detects the format of `path` (a file or a directory) from its magic bytes.
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Ok(Format::Dir);
    }
    detect_file(path)?.ok_or_else(|| {
        Error::format(
            path,
            "unknown format (not HDF5, NPZ/zip, pickle, .npy or .npy.gz)",
        )
    })
}

/// The container format of a file, or None if it is none we read.
pub fn detect_file(path: &Path) -> Result<Option<Format>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 8];
    let n = std::io::Read::read(&mut &file, &mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    let format = match head {
        h if ZIP_MAGICS.iter().any(|m| h.starts_with(m)) => Some(Format::Zip),
        h if h.starts_with(npz::NPY_MAGIC) => Some(Format::Npy),
        // A gzip-wrapped pickle is a pickle; any other gzip file is taken for a `.npy.gz`.
        h if h.starts_with(GZIP_MAGIC) && pickle::sniff(path, &file)? => Some(Format::Pickle),
        h if h.starts_with(GZIP_MAGIC) => Some(Format::Gzip),
        _ if hdf5_signature_offset(&file)?.is_some() => Some(Format::Hdf5),
        _ if pickle::sniff(path, &file)? => Some(Format::Pickle),
        _ => None,
    };
    Ok(format)
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
        Format::Dir => Ok(Arc::new(dir::DirSource::open(path, options)?)),
        format => {
            let store = SeekPointStore::new(options.cache_size);
            open_container(path, format, options, &store)
        }
    }
}

/// Opens a container file of a known format; deflate seek points are kept in `store`.
pub fn open_container(
    path: &Path,
    format: Format,
    options: &SourceOptions,
    store: &Arc<SeekPointStore>,
) -> Result<Arc<dyn Source>> {
    Ok(match format {
        Format::Hdf5 => {
            if options.check_hdf5 {
                crate::probe::check_hdf5(path)?;
            }
            Arc::new(hdf5::Hdf5Source::open(path, options)?)
        }
        Format::Zip => Arc::new(npz::ZipSource::open_with_store(path, store.clone())?),
        Format::Npy => Arc::new(single::NpyFileSource::open(path)?),
        Format::Gzip => Arc::new(single::GzipNpySource::open_with_store(path, store.clone())?),
        Format::Dir => Arc::new(dir::DirSource::open(path, options)?),
        Format::Pickle => Arc::new(pickle::open(path, options)?),
    })
}

/// Settings every source may use.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Bytes of decoded data a source may keep cached.
    pub cache_size: u64,
    /// Add `x.attrs.json` / `.attrs.json` sidecars with every attribute, typed.
    pub attrs_json: bool,
    /// Walk each HDF5 file's metadata in a child process before opening it ([`crate::probe`]).
    pub check_hdf5: bool,
    /// Follow external links and external raw data anywhere (`-o external_links=any`), not
    /// only inside the source's own directory.
    pub external_links_any: bool,
    /// The source's own directory (the directory mounted); None: the container's directory.
    pub root: Option<std::path::PathBuf>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            cache_size: 256 << 20,
            attrs_json: false,
            check_hdf5: false,
            external_links_any: false,
            root: None,
        }
    }
}
