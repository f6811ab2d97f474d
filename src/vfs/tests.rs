//! The tree without FUSE, over an in-memory [`Source`]: listing in pages, inode numbers, and
//! the joining of header and payload bytes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;

use super::*;
use crate::npy::{ByteOrder, Dtype, NpyHeader};
use crate::source::{Key, Listing};

/// A source held in memory: directory key -> entries (name, key, what). Payload byte `i` of
/// file `k` is `(i * 7 + k) as u8`.
#[derive(Default)]
struct MemSource {
    dirs: HashMap<Key, Vec<(String, Key, MemKind)>>,
}

#[derive(Clone)]
enum MemKind {
    Dir,
    /// A `.npy` of this many little-endian u16.
    Array(u64),
}

impl MemSource {
    /// A root of `n` arrays `a0.npy ...` and one directory `d` holding `b.npy`.
    fn flat(n: u64) -> MemSource {
        let mut root: Vec<_> = (0..n)
            .map(|i| (format!("a{i}.npy"), 100 + i, MemKind::Array(i % 50)))
            .collect();
        root.push(("d".into(), 1, MemKind::Dir));
        let mut dirs = HashMap::new();
        dirs.insert(ROOT, root);
        dirs.insert(1, vec![("b.npy".into(), 2, MemKind::Array(40))]);
        MemSource { dirs }
    }
}

impl Source for MemSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        let entries = self.dirs.get(&dir).ok_or(Error::NotFound)?;
        let entries = entries
            .iter()
            .map(|(name, key, kind)| {
                let kind = match kind {
                    MemKind::Dir => EntryKind::Dir,
                    MemKind::Array(n) => EntryKind::Array(NpyHeader::new(
                        Dtype::plain('u', ByteOrder::Little, 2),
                        vec![*n],
                    )),
                };
                Entry::new(name.clone(), *key, kind)
            })
            .collect();
        Ok(Listing {
            entries,
            ..Listing::default()
        })
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ((offset + i as u64) * 7 + file) as u8;
        }
        Ok(())
    }
}

fn fs_over(source: MemSource) -> Fs {
    Fs::new(Arc::new(source), SystemTime::UNIX_EPOCH)
}

/// Lists `ino` the way the kernel does: pages of at most `page` entries, each call resuming
/// at the offset the last entry of the previous one gave.
fn list_in_pages(fs: &Fs, ino: Ino, page: usize) -> Vec<(OsString, Ino)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let mut got = 0;
        fs.readdir(ino, offset, |entry, next| {
            out.push((entry.name, entry.ino));
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

#[test]
fn listing_in_pages_gives_every_entry_once_in_order() {
    let fs = fs_over(MemSource::flat(1000));
    let paged = list_in_pages(&fs, ROOT_INO, 37);
    let names: Vec<_> = paged.iter().map(|(n, _)| n.to_string_lossy()).collect();
    let mut expected = vec![".".to_string(), "..".to_string()];
    expected.extend((0..1000).map(|i| format!("a{i}.npy")));
    expected.push("d".into());
    assert_eq!(names, expected);
    let whole: Vec<_> = fs.entries(ROOT_INO).unwrap();
    assert_eq!(whole.len(), 1001);
    assert!(whole
        .iter()
        .zip(&paged[2..])
        .all(|(e, (_, ino))| e.ino == *ino));
}

#[test]
fn listing_4n_entries_in_pages_costs_about_4_times_n() {
    let visits = |n| {
        let fs = fs_over(MemSource::flat(n));
        list_in_pages(&fs, ROOT_INO, 100);
        fs.readdir_visits()
    };
    let (small, large) = (visits(5_000), visits(20_000));
    assert!(small >= 5_000, "{small}");
    let ratio = large as f64 / small as f64;
    assert!(
        ratio <= 4.5,
        "{small} visits for 5,000 entries, {large} for 20,000"
    );
}

#[test]
fn inode_numbers_do_not_depend_on_the_order_of_exploration() {
    let first = fs_over(MemSource::flat(10));
    let second = fs_over(MemSource::flat(10));
    let d1 = first.lookup(ROOT_INO, OsStr::new("d")).unwrap().ino;
    let b1 = first.lookup(d1, OsStr::new("b.npy")).unwrap().ino;
    // The second tree meets `d` through a readdir, not a lookup, and lists it page by page.
    let d2 = list_in_pages(&second, ROOT_INO, 3)
        .into_iter()
        .find(|(n, _)| n == "d")
        .unwrap()
        .1;
    let b2 = list_in_pages(&second, d2, 1)[2].1;
    assert_eq!((d1, b1), (d2, b2));
    assert_eq!(first.resolve("d/b.npy").unwrap(), b1);
}

#[test]
fn header_and_payload_join_at_every_boundary() {
    let fs = fs_over(MemSource::flat(3));
    let ino = fs.lookup(ROOT_INO, OsStr::new("a2.npy")).unwrap().ino;
    let header = NpyHeader::new(Dtype::plain('u', ByteOrder::Little, 2), vec![2]).encode();
    let mut whole = header.clone();
    whole.extend((0..4u64).map(|i| (i * 7 + 102) as u8));
    assert_eq!(fs.getattr(ino).unwrap().size, whole.len() as u64);
    for offset in 0..=whole.len() + 2 {
        for size in 0..=whole.len() + 2 {
            let got = fs.read(ino, offset as u64, size as u32).unwrap();
            let from = offset.min(whole.len());
            let to = (offset + size).min(whole.len());
            assert_eq!(got, &whole[from..to], "read of {size} at {offset}");
        }
    }
}
