//! The direct chunk path: chunks of datasets whose filters we can decode are located through
//! libhdf5 (a short call under its global lock), read with `pread`, and decoded in Rust in
//! parallel, outside the lock. Decoded chunks are shared through one byte-bounded cache, and
//! sequential reading decodes the next chunks on worker threads before they are asked for.

use std::sync::Arc;

use super::chunks::{ChunkTable, DirectChunks, TableError};
use super::dataset::{DatasetInfo, OpenDataset};
use super::filters::FilterError;
use crate::error::{Error, Result};
use crate::io::cache::{CachedBytes, ChunkCache};
use crate::io::readahead::{SequentialReads, WorkerPool};
use crate::io::SourceFile;
use crate::npy::{boxes_of_range, read_elements, ElementBox};
use crate::source::Key;

/// Set to `1` to read every chunked dataset through libhdf5 (to compare, or to work around
/// a bug of the direct path).
pub const FORCE_FALLBACK_ENV: &str = "ARRFS_HDF5_FALLBACK";

pub fn fallback_forced() -> bool {
    std::env::var(FORCE_FALLBACK_ENV).is_ok_and(|v| v == "1")
}

/// A decoded chunk in the cache: (dataset key, chunk number in C order).
type ChunkKey = (Key, u64);

/// Background decode jobs take this many decoded bytes of chunks each (at least one chunk):
/// one job per tiny chunk would cost more in queueing than in decoding.
const JOB_BYTES: usize = 256 << 10;

/// A sequential reader drops a chunk from the cache once it is this far past the chunk's
/// end (FUSE threads may still serve a slightly earlier request of the same stream).
const PASSED_SLACK: u64 = 4 << 20;
/// At most this many used chunks are remembered for dropping (24 bytes each): enough for a
/// stream of 1 KiB chunks to pass its slack before the oldest are forgotten.
const PASSED_TRACKED: usize = 1 << 16;

/// Reads ahead at least this much of a sequentially read file, and at least a few chunks.
const MIN_READ_AHEAD: u64 = 4 << 20;
const READ_AHEAD_CHUNKS: u64 = 4;

/// A dataset's chunk table, or the knowledge that it would pass the tables' budget.
#[derive(Debug)]
pub enum TableState {
    Ready(ChunkTable),
    OverBudget,
}

/// Weighs chunk tables by the bytes they hold.
#[derive(Clone)]
struct TableBytes;

impl quick_cache::Weighter<Key, Arc<TableState>> for TableBytes {
    fn weight(&self, _key: &Key, table: &Arc<TableState>) -> u64 {
        match table.as_ref() {
            TableState::Ready(table) => table.bytes() as u64,
            TableState::OverBudget => 1,
        }
    }
}

/// Loads decoded chunks: from the cache, else from the file.
pub struct ChunkLoader {
    file: Arc<SourceFile>,
    /// Added to libhdf5's chunk addresses (see [`super::chunks::chunk_address_base`]).
    address_base: u64,
    cache: ChunkCache<ChunkKey>,
    /// Chunk tables of the datasets read lately, bounded in bytes by `table_budget`.
    tables: quick_cache::sync::Cache<Key, Arc<TableState>, TableBytes>,
    table_budget: usize,
}

/// One dataset being read: everything a worker thread needs to decode one of its chunks.
#[derive(Clone)]
pub struct DatasetRead {
    pub key: Key,
    pub info: Arc<DatasetInfo>,
    /// The dataset's [`super::dataset::ReadPath::DirectChunks`].
    pub chunks: Arc<DirectChunks>,
    pub handle: Arc<OpenDataset>,
}

/// Why one chunk could not be loaded; made an [`Error`] naming file, dataset and chunk in
/// one place ([`ChunkLoader::located`]).
#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error("no chunk table (over budget)")]
    NoTable,
    #[error("chunk lies past the end of the file")]
    PastEnd,
    #[error(transparent)]
    Decode(#[from] FilterError),
    /// Reading the file or its chunk index failed: already says where.
    #[error(transparent)]
    Source(#[from] Error),
}

impl ChunkLoader {
    /// The decoded bytes of the chunk at `origin`.
    pub fn chunk(&self, ds: &DatasetRead, origin: &[u64]) -> Result<Arc<CachedBytes>> {
        let key = (ds.key, ds.chunks.grid.number(origin));
        self.cache
            .get_or_load(&key, || self.load(ds, origin))
            .map_err(|e| self.located(e, ds, origin))
    }

    /// Adds the file, dataset and chunk to a chunk error, so that its log line says where.
    fn located(&self, e: ChunkError, ds: &DatasetRead, origin: &[u64]) -> Error {
        match e {
            ChunkError::Source(e) => e,
            e => Error::read(
                self.file.path(),
                &ds.info.path,
                format!("chunk at {origin:?}: {e}"),
            ),
        }
    }

    /// The chunk table of `ds`, enumerated on first use.
    fn table(&self, ds: &DatasetRead) -> Result<Arc<TableState>> {
        self.tables.get_or_insert_with(&ds.key, || {
            match ChunkTable::build(ds.handle.id(), &ds.chunks.grid, self.table_budget) {
                Ok(table) => Ok(Arc::new(TableState::Ready(table))),
                Err(TableError::OverBudget(budget)) => {
                    log::warn!(
                        "{}: {}: chunk table over its budget of {budget} bytes: read through libhdf5",
                        self.file.path().display(),
                        ds.info.path
                    );
                    Ok(Arc::new(TableState::OverBudget))
                }
                Err(TableError::Library(e)) => Err(Error::read(
                    self.file.path(),
                    &ds.info.path,
                    format!("chunk index cannot be read: {e}"),
                )),
            }
        })
    }

    fn load(&self, ds: &DatasetRead, origin: &[u64]) -> Result<Vec<u8>, ChunkError> {
        let direct = &ds.chunks;
        let chunk_bytes = direct.grid.chunk_bytes();
        let table = self.table(ds)?;
        let TableState::Ready(table) = table.as_ref() else {
            return Err(ChunkError::NoTable);
        };
        let location = table.locate(direct.grid.number(origin));
        let Some(address) = location.address else {
            return Ok(direct.fill.repeat(chunk_bytes / direct.fill.len().max(1)));
        };
        let address = address.saturating_add(self.address_base);
        if address.saturating_add(location.size) > self.file.len() {
            return Err(ChunkError::PastEnd);
        }
        let mut stored = vec![0u8; location.size as usize];
        self.file.read_at(address, &mut stored)?;
        direct
            .pipeline
            .decode(stored, location.filter_mask, chunk_bytes)
            .map_err(ChunkError::Decode)
    }
}

/// The direct path of one HDF5 source: loader, decode workers, sequential-read detection.
pub struct DirectReader {
    loader: Arc<ChunkLoader>,
    workers: WorkerPool,
    sequential: SequentialReads,
    /// Chunks sequential readers have used, with the payload byte where each ends. Once a
    /// stream is well past that byte the chunk leaves the cache: the kernel's page cache
    /// holds those bytes now, and streaming a large dataset must not fill the cache.
    passed: std::sync::Mutex<Vec<(ChunkKey, u64)>>,
}

impl DirectReader {
    /// A reader keeping `cache_bytes` of decoded chunks and `table_bytes` of chunk tables.
    pub fn new(
        file: Arc<SourceFile>,
        address_base: u64,
        cache_bytes: usize,
        table_bytes: usize,
    ) -> DirectReader {
        DirectReader {
            loader: Arc::new(ChunkLoader {
                file,
                address_base,
                cache: ChunkCache::new(cache_bytes),
                tables: quick_cache::sync::Cache::with_weighter(
                    1024,
                    table_bytes as u64,
                    TableBytes,
                ),
                table_budget: table_bytes,
            }),
            workers: WorkerPool::per_cpu(),
            sequential: SequentialReads::default(),
            passed: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Whether the direct path can read `ds`: false when its chunk table would pass the
    /// budget (libhdf5 reads it then).
    pub fn can_read(&self, ds: &DatasetRead) -> Result<bool> {
        Ok(matches!(
            self.loader.table(ds)?.as_ref(),
            TableState::Ready(_)
        ))
    }

    /// Fills `buf` with payload bytes from `offset` of a dataset with [`DirectChunks`].
    pub fn read(&self, ds: &DatasetRead, offset: u64, buf: &mut [u8]) -> Result<()> {
        let grid = &ds.chunks.grid;
        let unit = grid.unit() as u64;
        read_elements(grid.shape(), unit, offset, buf, |boxes, out| {
            self.fill_boxes(ds, boxes, out)
        })?;
        let end = offset + buf.len() as u64;
        let window = (READ_AHEAD_CHUNKS * grid.chunk_bytes() as u64).max(MIN_READ_AHEAD);
        if let Some((from, to)) = self.sequential.record(ds.key, offset, end, window) {
            self.read_ahead(ds, from, to);
            self.drop_passed_chunks(ds, offset, end);
        }
        Ok(())
    }

    /// Remembers the chunks of the sequential read `[offset, end)` and drops from the cache
    /// those the stream has left behind.
    fn drop_passed_chunks(&self, ds: &DatasetRead, offset: u64, end: u64) {
        let grid = &ds.chunks.grid;
        let unit = grid.unit() as u64;
        let mut passed = self.passed.lock().unwrap();
        for b in boxes_of_range(grid.shape(), offset / unit, end.div_ceil(unit)) {
            // Never-written chunks are filled, not cached: nothing to drop.
            if self.never_written(ds, &b).unwrap_or(false) {
                continue;
            }
            for origin in grid.chunks_of_box(&b) {
                let key = (ds.key, grid.number(&origin));
                if !passed.iter().rev().take(64).any(|(k, _)| *k == key) {
                    passed.push((key, grid.end_byte(&origin)));
                }
            }
        }
        let behind = offset.saturating_sub(PASSED_SLACK);
        passed.retain(|(key, chunk_end)| {
            let keep = key.0 != ds.key || *chunk_end > behind;
            if !keep {
                self.loader.cache.remove(key);
            }
            keep
        });
        if passed.len() > PASSED_TRACKED {
            passed.drain(..PASSED_TRACKED / 2);
        }
    }

    /// Fills `out` with the elements of `boxes`, one after the other. The chunks needed are
    /// decoded in parallel: all but the first are handed to the workers in batches, while
    /// this thread starts on the first (and then takes, or waits for, the rest from the
    /// cache).
    fn fill_boxes(&self, ds: &DatasetRead, boxes: &[ElementBox], out: &mut [u8]) -> Result<()> {
        let grid = &ds.chunks.grid;
        let unwritten = boxes
            .iter()
            .map(|b| self.never_written(ds, b))
            .collect::<Result<Vec<bool>>>()?;
        let per_box: Vec<Vec<Vec<u64>>> = boxes
            .iter()
            .zip(&unwritten)
            .map(|(b, &none)| {
                if none {
                    Vec::new()
                } else {
                    grid.chunks_of_box(b)
                }
            })
            .collect();
        self.decode_in_background(ds, per_box.iter().flatten().skip(1).cloned().collect());
        let mut at = 0;
        for ((b, origins), &none) in boxes.iter().zip(&per_box).zip(&unwritten) {
            let len = b.len() as usize * grid.unit();
            if none {
                fill_with(&mut out[at..at + len], &ds.chunks.fill);
            }
            for origin in origins {
                let chunk = self.loader.chunk(ds, origin)?;
                grid.copy_from_chunk(origin, &chunk, b, &mut out[at..at + len]);
            }
            at += len;
        }
        Ok(())
    }

    /// Whether no chunk that `b` touches was ever written: it then reads as the fill value,
    /// in one fill rather than one per chunk (a sparse or damaged dataset may have
    /// billions of tiny chunks: a damaged one served 1 MiB in 0.26 s chunk by chunk).
    fn never_written(&self, ds: &DatasetRead, b: &ElementBox) -> Result<bool> {
        if b.is_empty() {
            return Ok(false);
        }
        let (first, last) = ds.chunks.grid.numbers_of_box(b);
        Ok(match self.loader.table(ds)?.as_ref() {
            TableState::Ready(table) => !table.any_written(first, last),
            TableState::OverBudget => false,
        })
    }

    /// Starts decoding the chunks that hold payload bytes `[from, to)`.
    fn read_ahead(&self, ds: &DatasetRead, from: u64, to: u64) {
        let direct = &ds.chunks;
        let unit = direct.grid.unit() as u64;
        let elements: u64 = direct.grid.shape().iter().product();
        let first = (from / unit).min(elements);
        let end = to.div_ceil(unit).min(elements);
        let origins = boxes_of_range(direct.grid.shape(), first, end)
            .iter()
            .filter(|b| !self.never_written(ds, b).unwrap_or(true))
            .flat_map(|b| direct.grid.chunks_of_box(b))
            .collect();
        self.decode_in_background(ds, origins);
    }

    /// Queues the decode of the chunks at `origins` that are neither cached nor being
    /// decoded, in jobs of about [`JOB_BYTES`]. Errors are left for the reader that asks for
    /// a chunk (it decodes again and reports).
    fn decode_in_background(&self, ds: &DatasetRead, mut origins: Vec<Vec<u64>>) {
        let grid = &ds.chunks.grid;
        origins.retain(|o| !self.loader.cache.has_or_loading(&(ds.key, grid.number(o))));
        let per_job = (JOB_BYTES / grid.chunk_bytes().max(1)).max(1);
        while !origins.is_empty() {
            let batch: Vec<Vec<u64>> = origins.drain(..per_job.min(origins.len())).collect();
            let (loader, ds) = (self.loader.clone(), ds.clone());
            self.workers.try_run(move || {
                for origin in batch {
                    if let Err(e) = loader.chunk(&ds, &origin) {
                        log::debug!("read-ahead of a chunk failed (reported when read): {e}");
                    }
                }
            });
        }
    }
}

/// Fills `out` with copies of one element's `fill` bytes (`out` arrives zeroed, so a zero
/// fill value costs nothing).
fn fill_with(out: &mut [u8], fill: &[u8]) {
    if fill.iter().all(|&b| b == 0) {
        return;
    }
    for element in out.chunks_mut(fill.len()) {
        element.copy_from_slice(&fill[..element.len()]);
    }
}
