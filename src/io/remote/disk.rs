//! The disk cache of remote blocks: one file per block under `--cache-dir`, named by a hash
//! of (object URL, object version, block size, block number), bounded by
//! `--disk-cache-size` with the least recently used files removed first.
//!
//! Several mounts and processes may share one directory: a block is written to a temporary
//! name and renamed into place (readers see a whole block or none), every file starts with
//! the full key it holds (a hash collision reads as a miss, never as wrong bytes), and each
//! process corrects its idea of the directory's size by scanning it when it thinks the bound
//! is passed. A use touches the file's mtime, which is the LRU order.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

use crate::io::stable_hash;

/// First bytes of every block file, before its key.
const MAGIC: &[u8; 8] = b"arrfsblk";
/// Eviction goes down to this share of the bound, so that it does not run on every write.
const EVICT_TO_PERCENT: u64 = 90;
/// A temporary file this old was left by a writer that died.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);
/// Extension of finished block files; temporary files have another and are never counted.
const BLOCK_EXTENSION: &str = "blk";

pub(crate) struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    /// This process's estimate of the bytes in `dir` (other processes write too).
    used: AtomicU64,
    /// One eviction at a time in this process.
    evicting: Mutex<()>,
}

/// What a block file holds: enough to tell it from any other block.
pub(crate) struct BlockKey<'a> {
    pub url: &'a str,
    pub version: &'a str,
    pub block_size: u64,
    pub block: u64,
}

impl BlockKey<'_> {
    fn header(&self) -> Vec<u8> {
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            self.url, self.version, self.block_size, self.block
        );
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(text.len() as u64).to_le_bytes());
        header.extend_from_slice(text.as_bytes());
        header
    }

    fn file_name(&self) -> String {
        let key = [
            self.url.as_bytes(),
            self.version.as_bytes(),
            &self.block_size.to_le_bytes(),
            &self.block.to_le_bytes(),
        ];
        // Two independent 64-bit hashes: names rarely collide, and a collision is a miss.
        let low = stable_hash(&key);
        let high = stable_hash(&[b"arrfs disk cache", &low.to_le_bytes(), &key.concat()]);
        format!("{high:016x}{low:016x}.{BLOCK_EXTENSION}")
    }
}

impl DiskCache {
    /// Opens (creating) the cache directory and measures what it holds.
    pub(crate) fn open(dir: &Path, capacity: u64) -> std::io::Result<DiskCache> {
        let dir = dir.join("blocks");
        fs::create_dir_all(&dir)?;
        let cache = DiskCache {
            dir,
            capacity,
            used: AtomicU64::new(0),
            evicting: Mutex::new(()),
        };
        cache.remove_stale_temporaries();
        let used = cache.scan().iter().map(|file| file.size).sum();
        cache.used.store(used, Ordering::Relaxed);
        Ok(cache)
    }

    /// The block if it is on disk, whole and under this key.
    pub(crate) fn load(&self, key: &BlockKey, expected_len: usize) -> Option<Bytes> {
        let path = self.dir.join(key.file_name());
        let mut file = File::open(&path).ok()?;
        let header = key.header();
        let mut stored = vec![0; header.len() + expected_len];
        file.read_exact(&mut stored).ok()?;
        let mut extra = [0u8; 1];
        if stored[..header.len()] != header[..] || file.read(&mut extra).ok()? != 0 {
            return None;
        }
        // The LRU order: a use makes the block young again.
        let _ = file.set_modified(SystemTime::now());
        Some(Bytes::from(stored).slice(header.len()..))
    }

    /// Writes the block under a temporary name and renames it into place, then evicts if
    /// the directory passed its bound.
    pub(crate) fn store(&self, key: &BlockKey, data: &[u8]) -> std::io::Result<()> {
        let name = key.file_name();
        let temp = self.dir.join(format!(
            ".{name}.{}.{:x}.tmp",
            std::process::id(),
            stable_hash(&[format!("{:?}", std::thread::current().id()).as_bytes()])
        ));
        let written = write_file(&temp, &key.header(), data)
            .and_then(|size| fs::rename(&temp, self.dir.join(&name)).map(|()| size));
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        let used = self.used.fetch_add(size, Ordering::Relaxed) + size;
        if used > self.capacity {
            self.evict();
        }
        Ok(())
    }

    /// Removes the least recently used blocks until the directory is well under its bound.
    fn evict(&self) {
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|e| e.into_inner());
        if self.used.load(Ordering::Relaxed) <= self.capacity {
            return; // another thread evicted while this one waited
        }
        let before = self.used.load(Ordering::Relaxed);
        let mut files = self.scan();
        files.sort_by_key(|file| file.used);
        let mut used: u64 = files.iter().map(|file| file.size).sum();
        let target = self.capacity / 100 * EVICT_TO_PERCENT;
        for file in files {
            if used <= target {
                break;
            }
            // Another process may have removed it already: it is gone either way.
            let _ = fs::remove_file(&file.path);
            used -= file.size;
        }
        // Blocks stored while this ran added themselves to `used` (and may be in the scan
        // too: counted twice only evicts sooner). Storing `used` outright would lose them,
        // and the directory would outgrow its bound.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_sub(before) + used)
            });
    }

    /// Removes temporary files that a process which died while writing left behind (old
    /// enough that no live writer still holds them).
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_temporary = path.extension().and_then(|e| e.to_str()) == Some("tmp");
            let age = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|time| time.elapsed().ok());
            if is_temporary && age.is_some_and(|age| age > STALE_TEMPORARY) {
                let _ = fs::remove_file(path);
            }
        }
    }

    /// The finished block files in the directory.
    fn scan(&self) -> Vec<BlockFile> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| {
                entry.path().extension().and_then(|e| e.to_str()) == Some(BLOCK_EXTENSION)
            })
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                Some(BlockFile {
                    path: entry.path(),
                    size: meta.len(),
                    used: meta.modified().ok()?,
                })
            })
            .collect()
    }
}

struct BlockFile {
    path: PathBuf,
    size: u64,
    used: SystemTime,
}

fn write_file(path: &Path, header: &[u8], data: &[u8]) -> std::io::Result<u64> {
    let mut file = File::create(path)?;
    file.write_all(header)?;
    file.write_all(data)?;
    Ok((header.len() + data.len()) as u64)
}
