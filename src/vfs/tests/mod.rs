//! The tree without FUSE, over an in-memory [`Source`] (as mountpoint-s3 tests its core with a
//! mock client). This file holds the source and the helpers; the tests are grouped by what
//! they cover: listings and names, inode numbers, file contents and xattrs.

mod files;
mod inodes;
mod listing;
mod read_around;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::*;
use crate::npy::{ByteOrder, Dtype, NpyHeader};
use crate::source::{Key, Listing, SkipReason, Skipped};

/// A source held in memory: directory key -> its listing. Payload byte `i` of file `k` is
/// [`payload_byte`]`(k, i)`. Listing or reading a `broken` key fails as a corrupt container
/// would.
#[derive(Default)]
struct MemSource {
    dirs: HashMap<Key, Listing>,
    broken: HashSet<Key>,
    /// Calls of [`Source::list`] so far.
    lists: AtomicU64,
}

fn payload_byte(file: Key, i: u64) -> u8 {
    (i * 7 + file) as u8
}

impl MemSource {
    fn with_dir(self, key: Key, entries: Vec<Entry>) -> MemSource {
        let listing = Listing {
            entries,
            ..Listing::default()
        };
        self.with_listing(key, listing)
    }

    fn with_listing(mut self, key: Key, listing: Listing) -> MemSource {
        self.dirs.insert(key, listing);
        self
    }

    fn with_broken(mut self, key: Key) -> MemSource {
        self.broken.insert(key);
        self
    }

    /// A root of `n` arrays `a0.npy ...` and one directory `d` holding `b.npy`.
    fn flat(n: u64) -> MemSource {
        let mut root: Vec<_> = (0..n)
            .map(|i| array(&format!("a{i}.npy"), 100 + i, &[i % 50]))
            .collect();
        root.push(dir("d", 1));
        MemSource::default()
            .with_dir(ROOT, root)
            .with_dir(1, vec![array("b.npy", 2, &[40])])
    }
}

impl Source for MemSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        if self.broken.contains(&dir) {
            return Err(Error::format("mem", format!("group {dir}: corrupt")));
        }
        self.dirs.get(&dir).cloned().ok_or(Error::NotFound)
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.broken.contains(&file) {
            return Err(Error::read("mem", format!("file {file}"), "corrupt chunk"));
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = payload_byte(file, offset + i as u64);
        }
        Ok(())
    }
}

/// The dtype of every array of the tests: little-endian u16.
fn u16_le() -> Dtype {
    Dtype::plain('u', ByteOrder::Little, 2)
}

fn array(name: &str, key: Key, shape: &[u64]) -> Entry {
    let header = NpyHeader::new(u16_le(), shape.to_vec());
    Entry::new(name.into(), key, EntryKind::Array(header))
}

fn dir(name: &str, key: Key) -> Entry {
    Entry::new(name.into(), key, EntryKind::Dir)
}

fn blob(name: &str, key: Key, size: u64) -> Entry {
    Entry::new(name.into(), key, EntryKind::Blob { size })
}

/// A sidecar held by the tree; `key` is one the source would fail to read, if asked.
fn bytes(name: &str, key: Key, content: &[u8]) -> Entry {
    Entry::new(name.into(), key, EntryKind::Bytes(content.into()))
}

fn symlink(name: &str, target: &str) -> Entry {
    Entry::new(name.into(), 0, EntryKind::Symlink(target.into()))
}

/// `entry` as one of `nlink` links to the object `identity`.
fn linked(mut entry: Entry, identity: u64, nlink: u32) -> Entry {
    entry.identity = Some(identity);
    entry.nlink = nlink;
    entry
}

fn with_xattr(mut entry: Entry, name: &str, value: &[u8]) -> Entry {
    let mut xattrs = entry.xattrs.to_vec();
    xattrs.push((name.into(), value.to_vec()));
    entry.xattrs = xattrs.into();
    entry
}

fn fs_over(source: MemSource) -> Fs {
    Fs::new(Arc::new(source), SystemTime::UNIX_EPOCH)
}

fn ino_of(fs: &Fs, path: &str) -> Ino {
    fs.resolve(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Lists `ino` the way the kernel does: pages of at most `page` entries, each call resuming
/// at the offset the last entry of the previous one gave.
fn list_in_pages(fs: &Fs, ino: Ino, page: usize) -> Vec<(OsString, Ino)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let mut got = 0;
        fs.readdir(ino, offset, |name, attr, next| {
            out.push((name.to_owned(), attr.ino));
            offset = next;
            got += 1;
            got == page
        })
        .unwrap();
        if got < page {
            return out;
        }
    }
}

/// Every path under the root (`a/b`), with its inode, found by readdir alone.
fn walk(fs: &Fs) -> BTreeMap<String, Ino> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), ROOT_INO)];
    while let Some((path, ino)) = todo.pop() {
        for entry in fs.entries(ino).unwrap() {
            let child = format!("{path}{}", entry.name.to_str().unwrap());
            if entry.kind == Kind::Dir {
                todo.push((format!("{child}/"), entry.ino));
            }
            out.insert(child, entry.ino);
        }
    }
    out
}
