//! A directory of containers: its tree is mirrored, each container file appears as a
//! directory of the same name, `.npy` files as themselves, other files not at all.
//!
//! Containers are recognised by their magic bytes when their directory is listed, and opened
//! only when something inside them is listed or read; about [`MAX_OPEN`] stay open (the ones
//! used most lately and most often).
//! The tree knows one `Source`, so keys are namespaced: the high bits name a container (0 =
//! this directory tree itself), the low [`INNER_BITS`] carry the container's own key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::io::inflate::SeekPointStore;
use crate::io::{Location, SourceFile};
use crate::source::single::FILE_KEY;
use crate::source::{
    detect_opened, open_container, Entry, EntryKind, Format, Key, Listing, Source, SourceOptions,
    ROOT,
};

/// Bits of a key that belong to the container's own key space.
const INNER_BITS: u32 = 40;
const INNER_MASK: Key = (1 << INNER_BITS) - 1;
/// Containers kept open at once; each gets this share of the cache.
const MAX_OPEN: usize = 16;

struct Container {
    location: Location,
    format: Format,
    /// Directory keys listed so far, in order. Sources such as HDF5 hand out keys as they
    /// list, so a reopened container replays these listings to get the same keys back.
    listed: Mutex<Vec<Key>>,
    /// Why the container cannot be opened, once known (it is not retried).
    broken: Mutex<Option<String>>,
}

pub struct DirSource {
    /// Directories of the mirrored tree: key -> location; [`ROOT`] is the top.
    dirs: RwLock<Vec<Location>>,
    /// Container `i` has key prefix `i + 1`.
    containers: RwLock<Vec<Arc<Container>>>,
    /// Open containers by index. Opening one (which for HDF5 includes the check in a child
    /// process) blocks only readers of that same container, never the others.
    open: quick_cache::sync::Cache<usize, Arc<dyn Source>>,
    options: SourceOptions,
    store: Arc<SeekPointStore>,
}

impl DirSource {
    pub fn open(location: &Location, options: &SourceOptions) -> Result<DirSource> {
        location.children()?;
        let local_root = location.local_path().map(Path::to_path_buf);
        Ok(DirSource {
            dirs: RwLock::new(vec![location.clone()]),
            containers: RwLock::default(),
            open: quick_cache::sync::Cache::new(MAX_OPEN),
            options: SourceOptions {
                cache_size: options.cache_size / MAX_OPEN as u64,
                // External links may reach sibling containers, not outside the mount.
                root: options.root.clone().or(local_root),
                ..options.clone()
            },
            store: SeekPointStore::new(options.cache_size / 2),
        })
    }

    fn list_dir(&self, dir: Key) -> Result<Listing> {
        let location = self.dirs.read().unwrap().get(dir as usize).cloned();
        let location = location.ok_or(Error::NotFound)?;
        let mut listing = Listing::default();
        for (name, is_dir) in location.children()? {
            let child = location.join(&name, is_dir);
            match self.entry_for(child, is_dir, name.clone()) {
                Ok(Some(entry)) => listing.entries.push(entry),
                Ok(None) => log::trace!("{name} is not a container: not shown"),
                Err(e) => {
                    log::warn!("{name} left out: {e}");
                    listing.skipped.push((name, e.to_string()));
                }
            }
        }
        Ok(listing)
    }

    /// The entry of one file or directory of the tree, or None if it is not shown.
    fn entry_for(&self, location: Location, is_dir: bool, name: String) -> Result<Option<Entry>> {
        if is_dir {
            let mut dirs = self.dirs.write().unwrap();
            dirs.push(location);
            let key = (dirs.len() - 1) as Key;
            return Ok(Some(Entry::new(name, key, EntryKind::Dir)));
        }
        let file = SourceFile::open(&location)?;
        let Some(format) = detect_opened(&file)? else {
            return Ok(None);
        };
        let prefix = self.add_container(location, format)?;
        let entry = match format {
            Format::Npy => Entry::new(
                name,
                prefix | FILE_KEY,
                EntryKind::Blob { size: file.len() },
            ),
            _ => Entry::new(name, prefix | ROOT, EntryKind::Dir),
        };
        Ok(Some(entry))
    }

    /// Registers a container; returns its key prefix.
    fn add_container(&self, location: Location, format: Format) -> Result<Key> {
        let mut containers = self.containers.write().unwrap();
        let prefix = ((containers.len() + 1) as Key) << INNER_BITS;
        if prefix >> INNER_BITS != (containers.len() + 1) as Key {
            return Err(Error::format(
                location.display(),
                "too many containers in one mount",
            ));
        }
        containers.push(Arc::new(Container {
            location,
            format,
            listed: Mutex::default(),
            broken: Mutex::default(),
        }));
        Ok(prefix)
    }

    fn container(&self, index: usize) -> Result<Arc<Container>> {
        let containers = self.containers.read().unwrap();
        containers.get(index).cloned().ok_or(Error::NotFound)
    }

    /// The open source of container `index`, opening it (and closing one not used lately)
    /// if needed. Out of file descriptors, it closes every other container and tries once
    /// more: reads in flight may still hold some, so under load this can still fail.
    fn source(&self, index: usize) -> Result<Arc<dyn Source>> {
        let container = self.container(index)?;
        self.open
            .get_or_insert_with(&index, || match self.open_container(&container) {
                Err(e) if e.is_resource() => {
                    log::warn!(
                        "{e}: closing {} open containers and retrying",
                        self.open.len()
                    );
                    self.open.clear();
                    self.open_container(&container)
                }
                other => other,
            })
    }

    fn open_container(&self, container: &Container) -> Result<Arc<dyn Source>> {
        if let Some(why) = container.broken.lock().unwrap().as_ref() {
            return Err(Error::format(container.location.display(), why.clone()));
        }
        let opened = open_container(
            &container.location,
            container.format,
            &self.options,
            &self.store,
        )
        .and_then(|source| replay(&*source, container).map(|_| source));
        match &opened {
            Err(e) if !e.is_resource() => mark_broken(container, e),
            _ => {}
        }
        opened
    }

    fn list_container(&self, index: usize, inner: Key) -> Result<Listing> {
        let prefix = ((index + 1) as Key) << INNER_BITS;
        let source = match self.source(index) {
            Ok(source) => source,
            Err(e) if inner == ROOT && !e.is_resource() => return Ok(self.broken_listing(index, e)),
            Err(e) => return Err(e),
        };
        let mut listing = source.list(inner)?;
        self.container(index)?.listed.lock().unwrap().push(inner);
        for entry in &mut listing.entries {
            if entry.key > INNER_MASK {
                return Err(Error::read(
                    source_path(self, index),
                    "keys",
                    "key space exhausted",
                ));
            }
            entry.key |= prefix;
        }
        Ok(listing)
    }

    /// A container that cannot be opened lists as empty, with the reason as its
    /// `user.arrfs.skipped`.
    fn broken_listing(&self, index: usize, e: Error) -> Listing {
        let name = self
            .container(index)
            .ok()
            .map(|c| c.location.file_name())
            .unwrap_or_default();
        let why = match e {
            Error::Format { cause, .. } => cause,
            other => other.to_string(),
        };
        Listing {
            skipped: vec![(name, why)],
            ..Listing::default()
        }
    }
}

/// Remembers why a container cannot be opened, so it is not retried on every access.
fn mark_broken(container: &Container, e: &Error) {
    log::warn!("{e}");
    let why = match e {
        Error::Format { cause, .. } => cause.clone(),
        other => other.to_string(),
    };
    *container.broken.lock().unwrap() = Some(why);
}

/// Lists again what was listed before the container was closed, so keys come out the same.
fn replay(source: &dyn Source, container: &Container) -> Result<()> {
    let listed = container.listed.lock().unwrap().clone();
    for key in listed {
        source.list(key)?;
    }
    Ok(())
}

fn source_path(source: &DirSource, index: usize) -> PathBuf {
    source
        .container(index)
        .map(|c| c.location.display())
        .unwrap_or_default()
}

/// Splits a key into (container index, inner key); None for the tree's own directories.
fn split(key: Key) -> Option<(usize, Key)> {
    match key >> INNER_BITS {
        0 => None,
        prefix => Some(((prefix - 1) as usize, key & INNER_MASK)),
    }
}

impl Source for DirSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        match split(dir) {
            None => self.list_dir(dir),
            Some((index, inner)) => self.list_container(index, inner),
        }
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (index, inner) = split(file).ok_or(Error::IsDir)?;
        self.source(index)?.read(inner, offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_container_and_inner() {
        assert_eq!(split(5), None);
        assert_eq!(split((1 << INNER_BITS) | 7), Some((0, 7)));
        assert_eq!(split((3 << INNER_BITS) | INNER_MASK), Some((2, INNER_MASK)));
    }
}
