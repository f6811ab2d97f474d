//! File access shared by the sources: positioned reads, and a guard that notices when the
//! source file changes under the mount.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::error::{Error, Result};
pub use location::{Location, ObjectBytes, ObjectListing, ObjectStore};

pub mod cache;
pub mod inflate;
pub mod location;
pub mod readahead;
pub mod remote;
pub mod verify;
pub mod window;

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn pread_exact(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Identity of a file on disk: a change of any field means the file was modified or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        }
    }
}

/// An open source file that refuses to serve bytes once the file has changed: a local file
/// (checked against its stamp on every read) or a remote object (checked by the transport).
pub struct SourceFile {
    /// The path, or the URL of a remote object; messages name it.
    path: PathBuf,
    location: Location,
    backing: Backing,
}

enum Backing {
    Local { file: File, stamp: Stamp },
    Remote(Arc<dyn ObjectBytes>),
}

impl std::fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceFile({})", self.path.display())
    }
}

impl SourceFile {
    pub fn open(location: &Location) -> Result<SourceFile> {
        let backing = match location {
            Location::Local(path) => {
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                let meta = file.metadata().map_err(|e| Error::io(path, e))?;
                let stamp = Stamp::of(&meta);
                Backing::Local { file, stamp }
            }
            Location::Remote { store, key } => Backing::Remote(store.open(key)?),
        };
        Ok(SourceFile {
            path: location.display(),
            location: location.clone(),
            backing,
        })
    }

    /// The path, or the URL of a remote object.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn len(&self) -> u64 {
        match &self.backing {
            Backing::Local { stamp, .. } => stamp.size,
            Backing::Remote(object) => object.size(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fails with [`Error::SourceChanged`] if the path now names a different or modified
    /// file. Remote objects are checked by the transport on every fetch instead.
    pub fn check_unchanged(&self) -> Result<()> {
        let Backing::Local { stamp, .. } = &self.backing else {
            return Ok(());
        };
        match std::fs::metadata(&self.path).map(|m| Stamp::of(&m)) {
            Ok(now) if now == *stamp => Ok(()),
            _ => Err(Error::SourceChanged {
                path: self.path.clone(),
            }),
        }
    }

    /// A handle of its own on the local file, after checking that the file is unchanged;
    /// None for a remote object.
    pub fn local_handle(&self) -> Result<Option<std::fs::File>> {
        let Backing::Local { file, .. } = &self.backing else {
            return Ok(None);
        };
        self.check_unchanged()?;
        let handle = file.try_clone().map_err(|e| Error::io(&self.path, e))?;
        Ok(Some(handle))
    }

    /// Exactly `buf.len()` bytes at `offset`, after checking that the file is unchanged.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.backing {
            Backing::Local { file, .. } => {
                self.check_unchanged()?;
                pread_exact(file, offset, buf).map_err(|e| Error::io(&self.path, e))
            }
            Backing::Remote(object) => object.read_at(offset, buf),
        }
    }

    /// Asks a remote object to start fetching `[offset, offset + len)` (local files: nothing;
    /// the kernel's read-ahead does it).
    pub fn prefetch(&self, offset: u64, len: u64) {
        if let Backing::Remote(object) = &self.backing {
            object.prefetch(offset, len);
        }
    }

    /// A `Read + Seek` view of the whole file, for parsers that want a stream (zip, pickle).
    pub fn reader(&self) -> SourceReader<'_> {
        self.window(0, self.len())
    }

    /// A `Read + Seek` view of `len` bytes from `start`, positions counted from `start`.
    pub fn window(&self, start: u64, len: u64) -> SourceReader<'_> {
        SourceReader {
            file: self,
            start,
            len,
            pos: 0,
        }
    }
}

/// A cursor over part of a [`SourceFile`]: `Read + Seek` by positioned reads, so that
/// several can share one file.
pub struct SourceReader<'a> {
    file: &'a SourceFile,
    start: u64,
    len: u64,
    pos: u64,
}

impl std::io::Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        self.file
            .read_at(self.start + self.pos, &mut buf[..n])
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for SourceReader<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = seek_target(to, self.pos, self.len)?;
        Ok(self.pos)
    }
}

/// Where `to` moves a cursor at `pos` over `len` bytes (`Seek` for positioned readers).
pub fn seek_target(to: std::io::SeekFrom, pos: u64, len: u64) -> std::io::Result<u64> {
    let target = match to {
        std::io::SeekFrom::Start(at) => Some(at),
        std::io::SeekFrom::End(delta) => len.checked_add_signed(delta),
        std::io::SeekFrom::Current(delta) => pos.checked_add_signed(delta),
    };
    target.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
    })
}

/// FNV-1a over byte strings: small, and stable across builds and platforms (inode numbers
/// and object identities derive from it, so they are the same on every mount).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
