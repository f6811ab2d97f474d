//! Which small files to hand the kernel before they are asked for.
//!
//! A script that loads many small arrays (`for f in files: np.load(f)`) pays FUSE round
//! trips per file, and on a virtual machine each one wakes an idle CPU on both sides: that
//! wait, not our work, is most of the cost. When a small file is read from its start, the
//! small files that follow it in its directory (in listing order, the order `os.walk`, `ls`
//! and sorted globs meet them) are worth pushing into the kernel's page cache in one go:
//! their first read is then a page-cache hit, one round trip fewer each.
//!
//! Only the choice lives here (no FUSE). Each directory remembers how far it was pushed, so
//! a reader moving on through pushed files (which reach us no more) triggers the next window
//! when it gets to its end, and nothing is pushed twice while the reader goes forward.

use std::collections::HashMap;
use std::sync::Mutex;

use super::inode::DirState;
use super::Ino;

/// Files up to this size are pushed.
pub const SMALL_FILE: u64 = 64 << 10;
/// Files pushed per window, and bytes at most.
const WINDOW_FILES: usize = 64;
const WINDOW_BYTES: u64 = 1 << 20;
/// How far from the last window's end (or the start of a directory) a read may land and
/// still be taken as the reader going on in listing order.
const SLACK: usize = 2 * WINDOW_FILES;
/// Directories remembered; past this, the map starts afresh (it only saves pushing twice).
const DIRS_KEPT: usize = 4096;

#[derive(Default)]
pub struct ReadAround {
    /// Directory -> position in its listing up to which files were pushed.
    pushed_to: Mutex<HashMap<Ino, usize>>,
}

impl ReadAround {
    /// The files to push now that `ino`, a child of `dir`, was read from its start: the small
    /// files that follow it in `dir`, up to a window, as (inode, size). `size_of` gives a
    /// child's size if it is a file. Empty when `ino` is not near where the reader is
    /// expected: a reader out of listing order gets nothing pushed.
    pub fn after_read(
        &self,
        dir: Ino,
        state: &DirState,
        ino: Ino,
        size_of: impl Fn(Ino) -> Option<u64>,
    ) -> Vec<(Ino, u64)> {
        let mut pushed_to = self.pushed_to.lock().unwrap();
        let from = pushed_to.get(&dir).copied().unwrap_or(0);
        let search_end = from.saturating_add(SLACK).min(state.len());
        let start = from.saturating_sub(SLACK);
        let Some(at) = (start..search_end).find(|&i| state.child(i).1 == ino) else {
            return Vec::new();
        };
        let mut chosen = Vec::new();
        let mut bytes = 0;
        let mut end = at + 1;
        while end < state.len() && chosen.len() < WINDOW_FILES {
            let child = state.child(end).1;
            match size_of(child) {
                Some(size) if size <= SMALL_FILE && bytes + size <= WINDOW_BYTES => {
                    bytes += size;
                    if end >= from {
                        chosen.push((child, size));
                    }
                }
                Some(size) if size <= SMALL_FILE => break,
                _ => {}
            }
            end += 1;
        }
        if pushed_to.len() >= DIRS_KEPT {
            pushed_to.clear();
        }
        pushed_to.insert(dir, end.max(from));
        chosen
    }
}
