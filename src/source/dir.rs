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
    detect_opened, open_container, Entry, EntryKind, Format, Key, Listing, SkipReason, Skipped,
    Source, SourceOptions, ROOT,
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
    /// Why the container cannot be opened, once known (it is not retried). Never a resource
    /// error: that passes, and the next access tries again.
    broken: Mutex<Option<SkipReason>>,
}

/// Opens one container ([`open_container`]; a stand-in in the unit tests).
type Opener =
    fn(&Location, Format, &SourceOptions, &Arc<SeekPointStore>) -> Result<Arc<dyn Source>>;

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
    opener: Opener,
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
            opener: open_container,
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
                    let why = SkipReason::of_error(&e).ok_or(e)?;
                    log::warn!("{name} left out: {why}");
                    listing.skipped.push(Skipped::new(name, why));
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
            return Err(Error::format(container.location.display(), why.to_string()));
        }
        let opened = (self.opener)(
            &container.location,
            container.format,
            &self.options,
            &self.store,
        )
        .and_then(|source| replay(&*source, container).map(|_| source));
        if let Err(e) = &opened {
            container.remember_failure(e);
        }
        opened
    }

    fn list_container(&self, index: usize, inner: Key) -> Result<Listing> {
        let prefix = ((index + 1) as Key) << INNER_BITS;
        let source = match self.source(index) {
            Ok(source) => source,
            Err(e) if inner == ROOT => return self.broken_listing(index, e),
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
    /// `user.arrfs.skipped`; a resource error fails the listing instead.
    fn broken_listing(&self, index: usize, e: Error) -> Result<Listing> {
        let name = self
            .container(index)
            .ok()
            .map(|c| c.location.file_name())
            .unwrap_or_default();
        Ok(Listing {
            skipped: vec![Skipped::new(name, SkipReason::of_error(&e).ok_or(e)?)],
            ..Listing::default()
        })
    }
}

impl Container {
    /// Remembers why the container cannot be opened, so it is not retried on every access;
    /// a resource error is not remembered.
    fn remember_failure(&self, e: &Error) {
        log::warn!("{e}");
        if let Some(why) = SkipReason::of_error(e) {
            *self.broken.lock().unwrap() = Some(why);
        }
    }
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

    fn backing_file(&self, file: Key) -> Result<Option<std::fs::File>> {
        let (index, inner) = split(file).ok_or(Error::IsDir)?;
        self.source(index)?.backing_file(inner)
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

    /// Opens fail while this is above zero (one test sets it).
    static OPENS_TO_FAIL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static FAILURE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

    /// A container holding one directory `inner`; its first opens fail with `FAILURE`.
    fn flaky_opener(
        location: &Location,
        _: Format,
        _: &SourceOptions,
        _: &Arc<SeekPointStore>,
    ) -> Result<Arc<dyn Source>> {
        use std::sync::atomic::Ordering::SeqCst;
        if OPENS_TO_FAIL
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let errno = FAILURE.load(SeqCst);
            return Err(Error::io(
                location.display(),
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        Ok(Arc::new(OneDir))
    }

    struct OneDir;

    impl Source for OneDir {
        fn list(&self, dir: Key) -> Result<Listing> {
            let mut listing = Listing::default();
            if dir == ROOT {
                listing
                    .entries
                    .push(Entry::new("inner".into(), 1, EntryKind::Dir));
            }
            Ok(listing)
        }

        fn read(&self, _: Key, _: u64, _: &mut [u8]) -> Result<()> {
            Err(Error::IsDir)
        }
    }

    /// A tree of one container (a file detected as a zip) opened by [`flaky_opener`].
    fn one_container(name: &str) -> (DirSource, Key, PathBuf) {
        let dir = std::env::temp_dir().join(format!("arrfs-dir-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The end record of an empty zip: detected as a container; never read as one here.
        std::fs::write(dir.join("c.zip"), b"PK\x05\x06").unwrap();
        let mut source =
            DirSource::open(&Location::local(&dir), &SourceOptions::default()).unwrap();
        source.opener = flaky_opener;
        let listing = source.list(ROOT).unwrap();
        assert_eq!(listing.entries.len(), 1, "{listing:?}");
        (source, listing.entries[0].key, dir)
    }

    /// A container that failed to open for want of a resource (file descriptors, memory,
    /// an interrupted call) is not remembered as broken: the next listing opens it.
    #[test]
    fn a_resource_error_is_not_remembered_as_a_broken_container() {
        use std::sync::atomic::Ordering::SeqCst;
        let (source, key, dir) = one_container("resource");
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EINTR] {
            FAILURE.store(errno, SeqCst);
            // Out of file descriptors, the source closes its other containers and tries once
            // more; let both tries fail.
            OPENS_TO_FAIL.store(2, SeqCst);
            let err = source.list(key).unwrap_err();
            assert!(err.is_resource(), "{errno}: {err}");
            assert!(source
                .container(0)
                .unwrap()
                .broken
                .lock()
                .unwrap()
                .is_none());
            source.open.clear();
            OPENS_TO_FAIL.store(0, SeqCst);
            let listing = source.list(key).unwrap();
            assert!(listing.skipped.is_empty(), "{listing:?}");
            assert_eq!(listing.entries[0].name, "inner");
            source.open.clear();
        }
        // A failure that is the container's own is remembered, and shown as the reason.
        FAILURE.store(libc::EACCES, SeqCst);
        OPENS_TO_FAIL.store(1, SeqCst);
        let listing = source.list(key).unwrap();
        assert_eq!(listing.skipped.len(), 1, "{listing:?}");
        assert!(
            listing.skipped[0].why.to_string().contains("denied"),
            "{listing:?}"
        );
        let again = source.list(key).unwrap();
        assert_eq!(again.skipped, listing.skipped, "not opened again");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
