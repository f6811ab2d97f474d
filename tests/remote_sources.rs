//! Every source format read from an object store gives the same tree and the same bytes as
//! the same file read locally. The store here is in memory (no network): this tests that no
//! source reaches past `SourceFile` to the local file system. The local trees are checked
//! against numpy, pickle, safetensors and gguf by the other suites; the transport itself is
//! tested against a real S3 server in `remote_io.rs` and the mount in `remote_mount.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arrfs::error::{Error, Result};
use arrfs::io::{Location, ObjectBytes, ObjectListing, ObjectStore};
use arrfs::source::{self, SourceOptions};
use arrfs::vfs::{Fs, Kind};
use common::{every_format, files_under, run_py, TempDir};

/// Objects held in memory under their keys, with the bytes read counted.
struct MemoryStore {
    objects: BTreeMap<String, Arc<Vec<u8>>>,
    read: Arc<AtomicU64>,
    access: Arc<AccessLog>,
    outage: Arc<Outage>,
}

struct MemoryObject {
    bytes: Arc<Vec<u8>>,
    read: Arc<AtomicU64>,
    access: Arc<AccessLog>,
    outage: Arc<Outage>,
}

/// A store that goes down after a number of reads: those reads succeed, later ones fail
/// as a store that does not answer would, until it is back.
#[derive(Default)]
struct Outage {
    /// Reads left before the store goes down; negative: it stays up.
    reads_left: std::sync::atomic::AtomicI64,
}

impl Outage {
    fn up() -> Arc<Outage> {
        let outage = Arc::new(Outage::default());
        outage.back();
        outage
    }

    fn after(&self, reads: i64) {
        self.reads_left.store(reads, Ordering::SeqCst);
    }

    fn back(&self) {
        self.reads_left.store(-1, Ordering::SeqCst);
    }

    /// Whether this read fails.
    fn fails(&self) -> bool {
        let left = self.reads_left.load(Ordering::SeqCst);
        if left > 0 {
            self.reads_left.fetch_sub(1, Ordering::SeqCst);
        }
        left == 0
    }
}

/// Where reads started, and where prefetches were asked for.
#[derive(Default)]
struct AccessLog {
    reads: Mutex<BTreeSet<u64>>,
    prefetches: Mutex<BTreeSet<u64>>,
}

impl ObjectStore for MemoryStore {
    fn open(&self, key: &str) -> Result<Arc<dyn ObjectBytes>> {
        let bytes = self.objects.get(key).ok_or(Error::NotFound)?;
        Ok(Arc::new(MemoryObject {
            bytes: bytes.clone(),
            read: self.read.clone(),
            access: self.access.clone(),
            outage: self.outage.clone(),
        }))
    }

    fn list(&self, prefix: &str) -> Result<ObjectListing> {
        let mut listing = ObjectListing::default();
        for (key, bytes) in self.objects.range(prefix.to_string()..) {
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((dir, _)) if listing.dirs.last().map(String::as_str) != Some(dir) => {
                    listing.dirs.push(dir.to_string())
                }
                Some(_) => {}
                None => listing.objects.push((rest.to_string(), bytes.len() as u64)),
            }
        }
        Ok(listing)
    }

    fn url(&self, key: &str) -> String {
        format!("mem://bucket/{key}")
    }
}

impl ObjectBytes for MemoryObject {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.outage.fails() {
            return Err(Error::Unavailable {
                url: "mem://bucket".into(),
                cause: "no answer from the store".into(),
            });
        }
        let start = offset as usize;
        let part = self
            .bytes
            .get(start..start + buf.len())
            .ok_or(Error::Read {
                path: "mem".into(),
                what: "object".into(),
                cause: "read past the end".into(),
            })?;
        buf.copy_from_slice(part);
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.access.reads.lock().unwrap().insert(offset);
        Ok(())
    }

    fn prefetch(&self, offset: u64, _len: u64) {
        self.access.prefetches.lock().unwrap().insert(offset);
    }
}

/// Every file under `dir` in memory, keyed by its path relative to `dir`.
fn load_tree(dir: &Path) -> BTreeMap<String, Arc<Vec<u8>>> {
    files_under(dir)
        .into_iter()
        .map(|(key, path)| (key, Arc::new(std::fs::read(path).unwrap())))
        .collect()
}

/// The whole virtual tree: path -> (kind, size, bytes of files).
fn walk(fs: &Fs) -> Tree {
    let mut out = BTreeMap::new();
    let mut pending = vec![(1, String::new())];
    while let Some((ino, path)) = pending.pop() {
        for entry in fs.entries(ino).unwrap() {
            let child = format!("{path}/{}", entry.name.to_string_lossy());
            let attr = fs.getattr(entry.ino).unwrap();
            let bytes = match attr.kind {
                Kind::File => fs.read(entry.ino, 0, attr.size as u32).unwrap(),
                Kind::Dir => {
                    pending.push((entry.ino, child.clone()));
                    Vec::new()
                }
                _ => fs.readlink(entry.ino).unwrap(),
            };
            out.insert(child, (format!("{:?}", attr.kind), attr.size, bytes));
        }
    }
    out
}

type Tree = BTreeMap<String, (String, u64, Vec<u8>)>;

/// An HDF5 external link is followed by path; read from a store, the file has none, so the
/// link is left out (with the reason in `user.arrfs.skipped`, checked below).
const EXTERNAL_LINK: &str = "/links/external.npy";

/// Fails naming the first path where the trees differ (not dumping them whole).
fn assert_same_tree(remote: &Tree, local: &Tree, what: &str) {
    for (path, entry) in local {
        let Some(other) = remote.get(path) else {
            assert!(
                path.ends_with(EXTERNAL_LINK),
                "{what}: {path} missing from the store's tree"
            );
            continue;
        };
        assert!(
            other == entry,
            "{what}: {path} differs: {} {} bytes from the store, {} {} locally",
            other.0,
            other.1,
            entry.0,
            entry.1
        );
    }
    let extra: Vec<_> = remote.keys().filter(|k| !local.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "{what}: only in the store's tree: {extra:?}"
    );
}

fn fs_of(location: &Location) -> Fs {
    let source = source::open(location, &SourceOptions::default()).unwrap();
    Fs::new(source, SystemTime::UNIX_EPOCH)
}

fn tree_of(location: &Location) -> Tree {
    walk(&fs_of(location))
}

#[test]
fn every_container_reads_the_same_from_a_store_as_from_disk() {
    let tmp = TempDir::new("remote-sources");
    let dir = every_format(&tmp);
    let read = Arc::new(AtomicU64::new(0));
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore {
        objects: load_tree(&dir),
        read: read.clone(),
        access: Arc::default(),
        outage: Outage::up(),
    });
    let mut compared = 0;
    for (key, _) in load_tree(&dir) {
        let local = Location::local(dir.join(&key));
        if source::detect(&local).is_err() {
            continue; // not a container (a script's side file): the directory test covers it
        }
        let remote = Location::Remote {
            store: store.clone(),
            key: key.clone(),
        };
        let before = read.load(Ordering::Relaxed);
        assert_same_tree(&tree_of(&remote), &tree_of(&local), &key);
        assert!(
            read.load(Ordering::Relaxed) > before,
            "{key} was not read from the store"
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} containers compared");

    let remote = fs_of(&Location::Remote {
        store,
        key: "hdf5/cases.h5".into(),
    });
    let links = remote.resolve("links").unwrap();
    let skipped = remote
        .getxattr(links, std::ffi::OsStr::new("user.arrfs.skipped"))
        .unwrap();
    let skipped = String::from_utf8(skipped).unwrap();
    assert!(
        skipped.contains("external") && skipped.contains("driver"),
        "{skipped}"
    );
}

/// Bytes read from the store to open an npz of `n` scalar members (written by numpy) and
/// list it, and the archive's size.
fn bytes_read_opening_npz(dir: &TempDir, n: usize) -> (u64, u64) {
    let path = dir.join(&format!("wide{n}.npz"));
    let n_arg = n.to_string();
    run_py("scale_cases.py", &["npz", &n_arg, path.to_str().unwrap()]);
    let bytes = std::fs::read(&path).unwrap();
    let size = bytes.len() as u64;
    let read = Arc::new(AtomicU64::new(0));
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore {
        objects: BTreeMap::from([("wide.npz".to_string(), Arc::new(bytes))]),
        read: read.clone(),
        access: Arc::default(),
        outage: Outage::up(),
    });
    let location = Location::Remote {
        store,
        key: "wide.npz".into(),
    };
    let fs = fs_of(&location);
    assert_eq!(fs.entries(1).unwrap().len(), n);
    (read.load(Ordering::Relaxed), size)
}

/// The zip crate seeks to every member's local header while reading the central
/// directory; through a reader that dropped its 64 KiB buffer at each seek, that read 64 KiB
/// per member (0.7 s to open 100,000 members locally, 6.4 GB over the network).
#[test]
fn opening_an_npz_of_many_members_reads_it_about_once() {
    let dir = TempDir::new("remote-wide-npz");
    let (read_n, size_n) = bytes_read_opening_npz(&dir, 1000);
    let (read_4n, size_4n) = bytes_read_opening_npz(&dir, 4000);
    for (read, size) in [(read_n, size_n), (read_4n, size_4n)] {
        assert!(read <= 2 * size, "{read} bytes read to open {size}");
    }
    assert!(
        read_4n <= 5 * read_n,
        "{read_n} bytes for n, {read_4n} for 4n"
    );
}

#[test]
fn a_prefix_reads_as_the_directory_it_was_uploaded_from() {
    let tmp = TempDir::new("remote-prefix");
    let dir = every_format(&tmp);
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore {
        objects: load_tree(&dir),
        read: Arc::default(),
        access: Arc::default(),
        outage: Outage::up(),
    });
    let remote = Location::Remote {
        store,
        key: String::new(),
    };
    let local_tree = tree_of(&Location::local(&dir));
    assert!(local_tree.len() > 100, "{} entries", local_tree.len());
    assert_same_tree(&tree_of(&remote), &local_tree, "prefix");
}

/// Reads `name` of `dir` from a store that logs accesses: the prefetched addresses, and
/// those of them that libhdf5 then read itself.
fn prefetches_reading(dir: &Path, name: &str, expected: Option<&[u8]>) -> (usize, usize) {
    let access = Arc::new(AccessLog::default());
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore {
        objects: load_tree(dir),
        read: Arc::default(),
        access: access.clone(),
        outage: Outage::up(),
    });
    let tree = tree_of(&Location::Remote {
        store,
        key: name.into(),
    });
    if let Some(expected) = expected {
        assert!(
            tree["/x.npy"].2 == expected,
            "x.npy differs from h5py's reading"
        );
    }
    let reads = access.reads.lock().unwrap();
    let prefetches = access.prefetches.lock().unwrap();
    let read_later = prefetches.iter().filter(|p| reads.contains(p)).count();
    (prefetches.len(), read_later)
}

/// libhdf5 reads a B-tree one node at a time; over a store each node would cost a round
/// trip of its own. The driver reads the child addresses of each node it passes and
/// prefetches them together. libhdf5's own reads are the check that those addresses were
/// right: it read every one of them afterwards.
#[test]
fn b_tree_children_are_prefetched_and_each_prefetch_is_a_node_libhdf5_reads() {
    let tmp = TempDir::new("remote-btree");
    let dir = tmp.join("store");
    std::fs::create_dir(&dir).unwrap();
    let (chunks, groups, npy) = (
        dir.join("chunks.h5"),
        dir.join("groups.h5"),
        tmp.join("x.npy"),
    );
    let arg = |s: &'static str| std::ffi::OsStr::new(s);
    run_py(
        "scale_cases.py",
        &[
            arg("chunks"),
            arg("2000"),
            chunks.as_os_str(),
            npy.as_os_str(),
        ],
    );
    run_py(
        "scale_cases.py",
        &[arg("datasets"), arg("2000"), groups.as_os_str()],
    );
    let oracle = std::fs::read(&npy).unwrap();

    let (prefetched, read) = prefetches_reading(&dir, "chunks.h5", Some(&oracle));
    // 2,000 chunks in leaves of at most 64: the root has at least 32 children.
    assert!(
        prefetched >= 32,
        "{prefetched} chunk-index nodes prefetched"
    );
    assert_eq!(
        read, prefetched,
        "prefetched addresses that libhdf5 never read"
    );
    let (prefetched, read) = prefetches_reading(&dir, "groups.h5", None);
    // 20 groups of 100 links in symbol-table nodes of at most 8: 13 or more per group.
    assert!(
        prefetched >= 20 * 13,
        "{prefetched} symbol-table nodes prefetched"
    );
    assert_eq!(
        read, prefetched,
        "prefetched addresses that libhdf5 never read"
    );
}

/// The names listed in directory `path` of `fs`, or the listing's error.
fn names(fs: &Fs, path: &str) -> Result<Vec<String>> {
    let ino = fs.resolve(path)?;
    let entries = fs.entries(ino)?;
    Ok(entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect())
}

/// A store that stops answering in the middle of a listing (wherever that is: after each
/// number of reads in turn) fails that listing or finishes it, but never leaves an array
/// out for good: once the store is back, the same mount lists every array.
#[test]
fn a_store_outage_while_listing_is_never_remembered() {
    let tmp = TempDir::new("remote-outage");
    let dir = tmp.join("store");
    std::fs::create_dir(&dir).unwrap();
    let h5 = dir.join("many.h5");
    let arg = |s: &'static str| std::ffi::OsStr::new(s);
    run_py(
        "scale_cases.py",
        &[arg("datasets"), arg("30"), h5.as_os_str()],
    );
    let outage = Outage::up();
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore {
        objects: load_tree(&dir),
        read: Arc::default(),
        access: Arc::default(),
        outage: outage.clone(),
    });
    let location = Location::Remote {
        store,
        key: "many.h5".into(),
    };
    let all: Vec<String> = (0..30).map(|i| format!("d{i:04}.npy")).collect();
    let mut failed_listings = 0;
    for reads in 0..400 {
        let fs = fs_of(&location);
        assert_eq!(names(&fs, "").unwrap(), ["g000"]);
        outage.after(reads);
        let during = names(&fs, "g000");
        let reached = outage.reads_left.load(Ordering::SeqCst) == 0;
        outage.back();
        match during {
            Err(e) => {
                assert_eq!(e.errno(), libc::EIO, "{e}");
                failed_listings += 1;
            }
            Ok(listed) => assert_eq!(listed, all, "listed during an outage after {reads} reads"),
        }
        assert_eq!(
            names(&fs, "g000").unwrap(),
            all,
            "after an outage at read {reads}"
        );
        if !reached {
            // The listing needed fewer reads than that: every point has been tried.
            assert!(failed_listings > 0, "no outage ever hit the listing");
            return;
        }
    }
    panic!("listing g000 took more than 400 reads");
}
