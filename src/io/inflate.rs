//! Random access into a deflate stream (a zip member, a gzip file) without inflating it
//! whole and without restarting at byte 0 for every read.
//!
//! A *seek point* is a full copy of the decoder at some output offset: miniz_oxide's
//! `DecompressorOxide` is plain data (`Clone`) and decodes into a 32 KiB ring that doubles as
//! its back-reference window, so decoder + ring + input position resume the stream exactly,
//! mid-block and mid-byte included. That is zlib's zran.c idea without the bit-priming and
//! block-boundary bookkeeping that flate2/zlib-rs do not expose.
//!
//! Seek points are taken every `interval` bytes of output as reads move forward, and kept in
//! a [`SeekPointStore`] shared by all streams of a source: an LRU bounded by the cache size,
//! so memory does not grow with member size. Each stream also parks its decoder there after
//! a read, so sequential reads continue where the last one stopped.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use miniz_oxide::inflate::core::{decompress_with_limit, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use crate::error::{Error, Result};
use crate::io::SourceFile;

/// The output ring: deflate back-references reach at most 32 KiB.
const RING: usize = 32 << 10;
/// Compressed bytes read per `pread`.
const INPUT_CHUNK: u64 = 64 << 10;
/// Smallest distance between seek points: a random read inflates at most this much.
const MIN_INTERVAL: u64 = 1 << 20;
/// The store slot of a stream's parked decoder (seek points use their ordinal).
const CURSOR_SLOT: u64 = u64::MAX;

static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// The decoder at one output offset: enough to continue the stream from there.
#[derive(Clone)]
struct Snapshot {
    decoder: Box<DecompressorOxide>,
    ring: Box<[u8]>,
    /// Compressed bytes consumed (relative to the stream's start).
    in_pos: u64,
    /// Bytes produced so far.
    out_pos: u64,
    crc: crc32fast::Hasher,
    done: bool,
}

/// Memory one stored snapshot costs.
const SNAPSHOT_BYTES: u64 = (std::mem::size_of::<DecompressorOxide>() + RING + 128) as u64;

impl Snapshot {
    fn start() -> Snapshot {
        Snapshot {
            decoder: Box::default(),
            ring: vec![0; RING].into_boxed_slice(),
            in_pos: 0,
            out_pos: 0,
            crc: crc32fast::Hasher::new(),
            done: false,
        }
    }

    /// One decoder call on `input`, writing at most `limit` bytes. Returns the status, the
    /// input bytes used and where in the ring the new output lies.
    fn step(
        &mut self,
        input: &[u8],
        more: bool,
        limit: usize,
    ) -> (TINFLStatus, usize, Range<usize>) {
        let at = (self.out_pos % RING as u64) as usize;
        let flags = if more {
            inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
        } else {
            0
        };
        let (status, used, written) =
            decompress_with_limit(&mut self.decoder, input, &mut self.ring, at, limit, flags);
        self.in_pos += used as u64;
        self.out_pos += written as u64;
        self.crc.update(&self.ring[at..at + written]);
        self.done |= status == TINFLStatus::Done;
        (status, used, at..at + written)
    }
}

/// Seek points and parked decoders of every stream of a source, bounded in bytes (the
/// ones used least lately and least often go first).
pub struct SeekPointStore {
    entries: quick_cache::sync::Cache<(u64, u64), Arc<Snapshot>>,
}

impl SeekPointStore {
    /// A store that keeps at most `budget` bytes (but room for a few snapshots at least).
    pub fn new(budget: u64) -> Arc<SeekPointStore> {
        let snapshots = (budget / SNAPSHOT_BYTES).max(8) as usize;
        Arc::new(SeekPointStore {
            entries: quick_cache::sync::Cache::new(snapshots),
        })
    }

    /// How many snapshots the store keeps.
    fn capacity(&self) -> u64 {
        self.entries.capacity()
    }

    fn put(&self, stream: u64, slot: u64, snapshot: Arc<Snapshot>) {
        self.entries.insert((stream, slot), snapshot);
    }

    fn take(&self, stream: u64, slot: u64) -> Option<Arc<Snapshot>> {
        self.entries.remove(&(stream, slot)).map(|(_, s)| s)
    }

    fn contains(&self, stream: u64, slot: u64) -> bool {
        self.entries.contains_key(&(stream, slot))
    }

    /// The latest seek point of `stream` with ordinal <= `ordinal`.
    fn at_or_before(&self, stream: u64, ordinal: u64) -> Option<Arc<Snapshot>> {
        (1..=ordinal)
            .rev()
            .find_map(|k| self.entries.get(&(stream, k)))
    }

    fn forget(&self, stream: u64) {
        self.entries.retain(|(s, _), _| *s != stream);
    }
}

/// Where a deflate stream lies in a file and what it must inflate to.
#[derive(Clone, Debug)]
pub struct DeflateRange {
    /// File offset of the first compressed byte.
    pub start: u64,
    pub compressed_len: u64,
    /// Exact size of the inflated data.
    pub size: u64,
    /// CRC-32 of the inflated data, checked whenever a read inflates through to the end.
    pub crc32: Option<u32>,
}

/// A deflate stream readable at any offset.
pub struct SeekableInflate {
    file: Arc<SourceFile>,
    range: DeflateRange,
    /// Names the stream in errors (`member data/x.npy`).
    what: String,
    id: u64,
    interval: u64,
    store: Arc<SeekPointStore>,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    /// The whole stream inflated once with the right size and CRC.
    verified: bool,
    /// Set once the stream proved corrupt: every later read fails too.
    failure: Option<String>,
}

impl SeekableInflate {
    pub fn new(
        file: Arc<SourceFile>,
        range: DeflateRange,
        what: String,
        store: Arc<SeekPointStore>,
    ) -> SeekableInflate {
        // Few seek points per stream when the store is small, so one huge stream cannot
        // evict everything else; never closer than MIN_INTERVAL.
        let per_stream = (store.capacity() / 4).max(4);
        let interval = (range.size / per_stream)
            .max(MIN_INTERVAL)
            .next_power_of_two();
        SeekableInflate {
            file,
            range,
            what,
            id: NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed),
            interval,
            store,
            state: Mutex::default(),
        }
    }

    pub fn size(&self) -> u64 {
        self.range.size
    }

    pub fn range(&self) -> &DeflateRange {
        &self.range
    }

    /// Seek points every `interval` bytes (tests use small ones).
    #[cfg(test)]
    fn with_interval(mut self, interval: u64) -> SeekableInflate {
        self.interval = interval;
        self
    }

    /// Fills `buf` with inflated bytes from `offset`. The first read that comes within one
    /// interval of the end inflates through to the end to check size and CRC.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if let Some(why) = &state.failure {
            return Err(self.error(why));
        }
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.range.size {
            return Err(self.error(&format!("read of {end} bytes past the end")));
        }
        let finish = !state.verified && self.range.size - end < self.interval;
        let start = self.start_for(offset);
        match self.run(start, offset, buf, finish) {
            Ok(snapshot) => {
                state.verified |= snapshot.done;
                self.store.put(self.id, CURSOR_SLOT, Arc::new(snapshot));
                Ok(())
            }
            Err(Error::Read { cause, .. }) => {
                log::error!("{}: {}: {cause}", self.file.path().display(), self.what);
                state.failure = Some(cause.clone());
                Err(self.error(&cause))
            }
            Err(e) => Err(e),
        }
    }

    /// The snapshot closest before `offset`: the parked decoder, a seek point, or the start.
    fn start_for(&self, offset: u64) -> Snapshot {
        let parked = self
            .store
            .take(self.id, CURSOR_SLOT)
            .filter(|s| s.out_pos <= offset);
        let point = self.store.at_or_before(self.id, offset / self.interval);
        let best = match (parked, point) {
            (Some(a), Some(b)) => Some(if a.out_pos >= b.out_pos { a } else { b }),
            (a, b) => a.or(b),
        };
        best.map_or_else(Snapshot::start, Arc::unwrap_or_clone)
    }

    /// Inflates from `snapshot` until `buf` (at `offset`) is filled, or to the end of the
    /// stream if `finish`; returns the decoder where it stopped.
    fn run(
        &self,
        mut snapshot: Snapshot,
        offset: u64,
        buf: &mut [u8],
        finish: bool,
    ) -> Result<Snapshot> {
        let stop = offset + buf.len() as u64;
        let mut input = Vec::new();
        let mut used_total = 0;
        let mut stalls = 0;
        while snapshot.out_pos < stop || (finish && !snapshot.done) {
            if snapshot.done {
                return Err(self.corrupt(format!("stream ends after {} bytes", snapshot.out_pos)));
            }
            if used_total == input.len() {
                input = self.read_input(snapshot.in_pos)?;
                used_total = 0;
            }
            let left = (input.len() - used_total) as u64;
            let more = snapshot.in_pos + left < self.range.compressed_len;
            let limit = self.step_limit(&snapshot, stop);
            let out_start = snapshot.out_pos;
            let (status, used, fresh) = snapshot.step(&input[used_total..], more, limit);
            used_total += used;
            copy_overlap(&snapshot.ring[fresh.clone()], out_start, offset, buf);
            self.check_step(&snapshot, status, more)?;
            stalls = if used == 0 && fresh.is_empty() {
                stalls + 1
            } else {
                0
            };
            if stalls > 2 && !snapshot.done {
                return Err(self.corrupt("inflate makes no progress".into()));
            }
            self.maybe_add_seek_point(&snapshot);
        }
        if snapshot.done {
            self.verify_end(&snapshot)?;
        }
        Ok(snapshot)
    }

    /// Output bytes the next decoder call may write: up to the ring's end, the next seek
    /// point, and the stop (one byte past the declared size when checking the end).
    fn step_limit(&self, snapshot: &Snapshot, stop: u64) -> usize {
        let pos = snapshot.out_pos;
        let to_ring_end = RING as u64 - pos % RING as u64;
        let to_point = self.interval - pos % self.interval;
        let to_stop = if pos < stop {
            stop - pos
        } else {
            self.range.size + 1 - pos
        };
        to_ring_end.min(to_point).min(to_stop) as usize
    }

    fn check_step(&self, snapshot: &Snapshot, status: TINFLStatus, more: bool) -> Result<()> {
        if snapshot.out_pos > self.range.size {
            return Err(self.corrupt(format!(
                "inflates to more than the declared {} bytes",
                self.range.size
            )));
        }
        match status {
            TINFLStatus::Done | TINFLStatus::HasMoreOutput => Ok(()),
            TINFLStatus::NeedsMoreInput if more => Ok(()),
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                Err(self.corrupt("compressed data is truncated".into()))
            }
            _ => Err(self.corrupt(format!(
                "corrupt deflate data near compressed byte {}",
                snapshot.in_pos
            ))),
        }
    }

    fn verify_end(&self, snapshot: &Snapshot) -> Result<()> {
        if snapshot.out_pos != self.range.size {
            return Err(self.corrupt(format!(
                "inflates to {} bytes, {} declared",
                snapshot.out_pos, self.range.size
            )));
        }
        let crc = snapshot.crc.clone().finalize();
        match self.range.crc32 {
            Some(expected) if expected != crc => Err(self.corrupt(format!(
                "CRC-32 mismatch: data {crc:08x}, declared {expected:08x}"
            ))),
            _ => Ok(()),
        }
    }

    fn maybe_add_seek_point(&self, snapshot: &Snapshot) {
        let pos = snapshot.out_pos;
        if pos == 0 || !pos.is_multiple_of(self.interval) || snapshot.done {
            return;
        }
        let ordinal = pos / self.interval;
        if !self.store.contains(self.id, ordinal) {
            self.store.put(self.id, ordinal, Arc::new(snapshot.clone()));
        }
    }

    /// The next chunk of compressed bytes from `in_pos` (empty at the end of the range).
    fn read_input(&self, in_pos: u64) -> Result<Vec<u8>> {
        let len = INPUT_CHUNK.min(self.range.compressed_len.saturating_sub(in_pos));
        let mut input = vec![0; len as usize];
        self.file.read_at(self.range.start + in_pos, &mut input)?;
        Ok(input)
    }

    fn corrupt(&self, cause: String) -> Error {
        Error::read(self.file.path(), &self.what, cause)
    }

    fn error(&self, cause: &str) -> Error {
        Error::read(self.file.path(), &self.what, cause)
    }
}

impl Drop for SeekableInflate {
    fn drop(&mut self) {
        self.store.forget(self.id);
    }
}

/// Copies the part of `chunk` (inflated bytes at `chunk_at`) that falls into `buf` (at
/// `buf_at`).
fn copy_overlap(chunk: &[u8], chunk_at: u64, buf_at: u64, buf: &mut [u8]) {
    let start = chunk_at.max(buf_at);
    let end = (chunk_at + chunk.len() as u64).min(buf_at + buf.len() as u64);
    if start >= end {
        return;
    }
    let (from, to, n) = (
        (start - chunk_at) as usize,
        (start - buf_at) as usize,
        (end - start) as usize,
    );
    buf[to..to + n].copy_from_slice(&chunk[from..from + n]);
}

/// Inflates `compressed_len` bytes at `start` of `file` from the beginning, without seek
/// points: returns the first `prefix_len` bytes and the total size (counting stops once
/// `prefix_len` bytes are in if `count` is false). Used to sniff contents and to size gzip
/// streams whose trailer cannot tell.
pub fn scan(
    file: &SourceFile,
    start: u64,
    compressed_len: u64,
    prefix_len: usize,
    count: bool,
) -> Result<(Vec<u8>, u64)> {
    let mut snapshot = Snapshot::start();
    let mut prefix = Vec::new();
    let mut input = Vec::new();
    let mut used_total = 0;
    let mut stalls = 0;
    let corrupt = |cause: &str| Error::read(file.path(), "deflate stream", cause);
    while !snapshot.done && (count || prefix.len() < prefix_len) {
        if used_total == input.len() {
            let len = INPUT_CHUNK.min(compressed_len.saturating_sub(snapshot.in_pos));
            input = vec![0; len as usize];
            file.read_at(start + snapshot.in_pos, &mut input)?;
            used_total = 0;
        }
        let more = snapshot.in_pos + ((input.len() - used_total) as u64) < compressed_len;
        let (status, used, fresh) = snapshot.step(&input[used_total..], more, RING);
        used_total += used;
        let want = prefix_len.saturating_sub(prefix.len()).min(fresh.len());
        prefix.extend_from_slice(&snapshot.ring[fresh.start..fresh.start + want]);
        match status {
            TINFLStatus::Done | TINFLStatus::HasMoreOutput => {}
            TINFLStatus::NeedsMoreInput if more => {}
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                return Err(corrupt("compressed data is truncated"))
            }
            _ => return Err(corrupt("corrupt deflate data")),
        }
        stalls = if used == 0 && fresh.is_empty() {
            stalls + 1
        } else {
            0
        };
        if stalls > 2 && !snapshot.done {
            return Err(corrupt("inflate makes no progress"));
        }
    }
    Ok((prefix, snapshot.out_pos))
}

#[cfg(test)]
mod tests;
