//! File access shared by the sources: positioned reads, and a guard that notices when the
//! source file changes under the mount.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub mod cache;
pub mod inflate;
pub mod readahead;
pub mod remote;
pub mod verify;

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

/// An open source file that refuses to serve bytes once the file on disk has changed.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    file: File,
    stamp: Stamp,
}

impl SourceFile {
    pub fn open(path: &Path) -> Result<SourceFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            file,
            stamp: Stamp::of(&meta),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.stamp.size
    }

    pub fn is_empty(&self) -> bool {
        self.stamp.size == 0
    }

    /// Fails with [`Error::SourceChanged`] if the path now names a different or modified file.
    pub fn check_unchanged(&self) -> Result<()> {
        let now = std::fs::metadata(&self.path).map(|m| Stamp::of(&m));
        match now {
            Ok(stamp) if stamp == self.stamp => Ok(()),
            _ => Err(Error::SourceChanged {
                path: self.path.clone(),
            }),
        }
    }

    /// `pread` of exactly `buf.len()` bytes, after checking that the file is unchanged.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_unchanged()?;
        pread_exact(&self.file, offset, buf).map_err(|e| Error::io(&self.path, e))
    }
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
