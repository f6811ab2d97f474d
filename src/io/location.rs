//! Where a container lives: a local path, or an object in a store reached over the network.
//! Sources open a [`Location`] and read it through [`super::SourceFile`]; only this file and
//! the transport behind [`ObjectStore`] know which of the two it is.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A flat namespace of objects named by keys, with `/` taken as a directory separator.
/// The remote transport implements it; tests use an in-memory one.
pub trait ObjectStore: Send + Sync {
    /// The object named `key`: its size now, and its bytes as long as it stays unchanged.
    fn open(&self, key: &str) -> Result<Arc<dyn ObjectBytes>>;
    /// One level under `prefix` (empty, or ending in `/`): sub-prefixes and objects, by name
    /// relative to `prefix`, without the trailing `/`.
    fn list(&self, prefix: &str) -> Result<ObjectListing>;
    /// The URL of `key`, for messages (never with credentials).
    fn url(&self, key: &str) -> String;
}

/// The bytes of one remote object.
pub trait ObjectBytes: Send + Sync {
    fn size(&self) -> u64;
    /// Exactly `buf.len()` bytes at `offset`; [`Error::SourceChanged`] once the object has
    /// been replaced.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Starts fetching `len` bytes at `offset` without waiting: a reader that knows what it
    /// needs next saves round trips. Nothing by default.
    fn prefetch(&self, _offset: u64, _len: u64) {}
}

/// One level of a prefix.
#[derive(Clone, Debug, Default)]
pub struct ObjectListing {
    pub dirs: Vec<String>,
    /// Objects with their sizes.
    pub objects: Vec<(String, u64)>,
}

/// A local path, or a key in an object store.
#[derive(Clone)]
pub enum Location {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        /// The object's key, or a prefix (empty or ending in `/`) for a directory.
        key: String,
    },
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display().display())
    }
}

impl Location {
    pub fn local(path: impl Into<PathBuf>) -> Location {
        Location::Local(path.into())
    }

    /// The path for local sources; the URL (as a path) for remote ones. Errors carry it.
    pub fn display(&self) -> PathBuf {
        match self {
            Location::Local(path) => path.clone(),
            Location::Remote { store, key } => PathBuf::from(store.url(key)),
        }
    }

    /// The local path, for the code that can only open files by name (libhdf5).
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::Remote { .. } => None,
        }
    }

    /// The last component of the name (`data.h5`), from which suffixes are read.
    pub fn file_name(&self) -> String {
        match self {
            Location::Local(path) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Location::Remote { key, .. } => key
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    pub fn is_dir(&self) -> Result<bool> {
        match self {
            Location::Local(path) => std::fs::metadata(path)
                .map(|m| m.is_dir())
                .map_err(|e| Error::io(path, e)),
            Location::Remote { key, .. } => Ok(key.is_empty() || key.ends_with('/')),
        }
    }

    /// The child `name` of this directory; `dir` says whether it is itself a directory.
    pub fn join(&self, name: &str, dir: bool) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(name)),
            Location::Remote { store, key } => Location::Remote {
                store: store.clone(),
                key: format!("{key}{name}{}", if dir { "/" } else { "" }),
            },
        }
    }

    /// The entries of this directory, sorted by name, each with whether it is a directory.
    /// A local entry whose metadata cannot be read is taken for a file (opening it then
    /// says why it cannot be shown).
    pub fn children(&self) -> Result<Vec<(String, bool)>> {
        let mut children = match self {
            Location::Local(path) => std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|entry| entry.ok())
                .map(|entry| {
                    let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
                    (entry.file_name().to_string_lossy().into_owned(), is_dir)
                })
                .collect(),
            Location::Remote { store, key } => {
                let listing = store.list(key)?;
                let dirs = listing.dirs.into_iter().map(|name| (name, true));
                let objects = listing.objects.into_iter().map(|(name, _)| (name, false));
                dirs.chain(objects).collect::<Vec<_>>()
            }
        };
        children.sort();
        Ok(children)
    }

    /// The object store and key, for remote locations.
    pub fn remote(&self) -> Option<(&Arc<dyn ObjectStore>, &str)> {
        match self {
            Location::Local(_) => None,
            Location::Remote { store, key } => Some((store, key)),
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Local(path.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Local(path)
    }
}
