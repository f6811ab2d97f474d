//! Memory per entry of a mounted HDF5 file (issue 10, bench case S5: at most 400 bytes of
//! daemon RSS per entry above the mount's base). h5py writes files of scalar datasets in
//! groups of 1,000; the tree over each is walked as `ls -lR` would (every directory listed,
//! every entry looked up and stat'ed), and the heap the tree and the source still hold
//! afterwards is counted by this binary's allocator. Counted, not measured: the same on
//! every run.
//!
//! Each allocation counts as the chunk glibc's malloc gives it (size + 8, rounded up to 16,
//! at least 32), which is what it costs in RSS. Only the test's own thread is counted (the
//! walk runs there, without FUSE), so nothing else in the process disturbs the count.
//! libhdf5's own allocations (C malloc) are not counted: its caches are bounded, not per
//! entry; `scripts/entry_memory.py` measures the whole daemon's RSS.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::OsStr;
use std::time::SystemTime;

use arrfs::io::Location;
use arrfs::source::{self, SourceOptions};
use arrfs::vfs::{Fs, Kind, ROOT_INO};
use common::{run_py, TempDir};

/// Counted heap bytes per entry the walked tree may keep (entries: datasets and groups). The
/// goal is 400 bytes of RSS; what the count leaves out (libhdf5, malloc's free lists) is
/// given the rest. Counted: 1,222 before the per-entry state was made compact, 210 after.
const BOUND: u64 = 300;

struct Counting;

thread_local! {
    /// Bytes of heap allocated on this thread and not yet freed (freed anywhere).
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

/// What an allocation of `size` bytes costs in RSS with glibc's malloc.
fn cost(size: usize) -> i64 {
    ((size + 8 + 15) & !15).max(32) as i64
}

fn count(bytes: i64) {
    // Not after the thread's locals are gone (allocations while it exits).
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
}

fn live() -> i64 {
    LIVE.with(Cell::get)
}

// SAFETY: every call is passed on to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(cost(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(cost(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, layout) };
        count(-cost(layout.size()));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            count(cost(new_size) - cost(layout.size()));
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Lists every directory and looks up and stats every entry; the number of entries.
fn walk(fs: &Fs) -> u64 {
    let mut seen = 0;
    let mut todo = vec![ROOT_INO];
    while let Some(dir) = todo.pop() {
        for entry in fs.entries(dir).unwrap() {
            let attr = fs.lookup(dir, &entry.name).unwrap();
            assert_eq!(fs.getattr(entry.ino).unwrap().ino, attr.ino);
            if attr.kind == Kind::Dir {
                todo.push(entry.ino);
            }
            seen += 1;
        }
    }
    seen
}

/// Heap bytes per entry kept by a walked tree over an h5py file of `n` scalar datasets.
fn bytes_per_entry(dir: &TempDir, n: u64) -> u64 {
    let h5 = dir.join(&format!("forest{n}.h5"));
    let n_arg = n.to_string();
    run_py(
        "scale_cases.py",
        &[OsStr::new("forest"), OsStr::new(&n_arg), h5.as_os_str()],
    );
    let options = SourceOptions::default();
    let source = source::open(&Location::local(&h5), &options).unwrap();
    let fs = Fs::new(source, SystemTime::UNIX_EPOCH);
    let base = live();
    let entries = walk(&fs);
    let kept = live() - base;
    assert_eq!(entries, n + n.div_ceil(1000), "datasets and groups walked");
    eprintln!(
        "{n} datasets: {entries} entries keep {kept} bytes, {} per entry",
        kept as u64 / entries
    );
    drop(fs);
    kept.max(0) as u64 / entries
}

#[test]
fn a_walked_tree_keeps_few_bytes_per_entry() {
    let dir = TempDir::new("entry-memory");
    for n in [5_000, 20_000] {
        let per_entry = bytes_per_entry(&dir, n);
        assert!(
            per_entry <= BOUND,
            "a walked tree of {n} datasets keeps {per_entry} bytes per entry, more than {BOUND} \
             (issue 10 / bench S5: 400 B of RSS per entry): some per-entry state grew"
        );
    }
}
