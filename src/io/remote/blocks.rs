//! Ranged reads of remote objects through fixed-size blocks: the memory cache, the disk
//! cache, one fetch in flight per block, coalescing of neighbouring missing blocks into one
//! GET, parallel GETs bounded by `max_requests`, read-ahead of sequential streams, and the
//! check on every GET that the object is still the version that was opened.
//!
//! Fetches run as tasks on the mount's tokio runtime; the FUSE threads that asked wait for
//! their blocks on a condition variable, with a deadline, so a stalled store fails a read
//! instead of hanging it. A sequential reader's blocks come from one streaming GET of the
//! rest of the object instead (stream.rs).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta, ObjectStore};

use super::disk::{BlockKey, DiskCache};
use super::pacing::GetPacing;
use super::store::describe;
use super::RemoteStats;
use crate::error::{Error, Result};
use crate::io::readahead::SequentialReads;
use crate::io::stable_hash;

mod stream;

/// Which version of an object a mount serves: any change of these is a changed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub size: u64,
    pub e_tag: Option<String>,
    /// Nanoseconds since the epoch; 0 if the store did not say.
    pub last_modified: i64,
}

impl Version {
    pub(crate) fn of(meta: &ObjectMeta) -> Version {
        Version {
            size: meta.size,
            e_tag: meta.e_tag.clone(),
            last_modified: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
        }
    }

    /// A name for this version, if the store gave enough to tell versions apart (an ETag
    /// or a modification time): only then may blocks outlive the mount on disk.
    fn disk_name(&self) -> Option<String> {
        match (&self.e_tag, self.last_modified) {
            (Some(tag), _) => Some(format!("etag {tag} size {}", self.size)),
            (None, 0) => None,
            (None, time) => Some(format!("mtime {time} size {}", self.size)),
        }
    }

    /// Same object? ETags decide when both sides have one; otherwise size and time.
    fn matches(&self, meta: &ObjectMeta) -> bool {
        let now = Version::of(meta);
        if now.size != self.size {
            return false;
        }
        match (&self.e_tag, &now.e_tag) {
            (Some(was), Some(is)) => was == is,
            _ => self.last_modified == now.last_modified,
        }
    }
}

/// One object as opened: where it is, which version, and whether it changed since.
pub(crate) struct ObjectState {
    pub id: u64,
    pub url: String,
    pub path: Path,
    pub version: Version,
    disk_name: Option<String>,
    changed: AtomicBool,
}

impl ObjectState {
    pub(crate) fn new(url: String, path: Path, version: Version) -> ObjectState {
        let disk_name = version.disk_name();
        let id = stable_hash(&[
            url.as_bytes(),
            disk_name.as_deref().unwrap_or("").as_bytes(),
            &version.size.to_le_bytes(),
        ]);
        ObjectState {
            id,
            url,
            path,
            version,
            disk_name,
            changed: AtomicBool::new(false),
        }
    }

    fn changed_error(&self) -> Error {
        Error::SourceChanged {
            path: self.url.clone().into(),
        }
    }

    /// Remembers for good that the object changed (reads of it fail until a remount), and
    /// says so once in the log.
    fn mark_changed(&self) {
        if !self.changed.swap(true, Ordering::Relaxed) {
            log::error!(
                "{}: the object changed on the store while mounted; its reads fail until a remount",
                self.url
            );
        }
    }
}

/// The sizes and limits of the block machinery, fixed at connect time.
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    pub block_size: u64,
    /// Most blocks one GET for a reader fetches (a longer run is split into parallel
    /// GETs); read-ahead GETs may be longer for a slow store (see `pacing`).
    pub max_get_blocks: u64,
    /// Bytes read ahead of a sequential reader (more for a slow store, see
    /// `Blocks::read_ahead_window`).
    pub read_ahead: u64,
    /// Sequential readers are served by a streaming GET (stream.rs).
    pub stream_reads: bool,
    /// Longest a fetch may take (waiting for a request permit included) before it fails.
    /// Readers wait a little longer, so that they see its failure and a later read starts
    /// a new fetch instead of joining a stalled one.
    pub fetch_limit: Duration,
    /// Longest a streaming GET may go without sending a byte it owes before it counts as
    /// broken (its blocks are then fetched by range).
    pub stall_limit: Duration,
}

/// Request counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub get_failures: AtomicU64,
    pub heads: AtomicU64,
    pub lists: AtomicU64,
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub disk_writes: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RemoteStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RemoteStats {
            gets: get(&self.gets),
            get_bytes: get(&self.get_bytes),
            get_failures: get(&self.get_failures),
            heads: get(&self.heads),
            lists: get(&self.lists),
            memory_hits: get(&self.memory_hits),
            disk_hits: get(&self.disk_hits),
            disk_writes: get(&self.disk_writes),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Bytes of cached blocks one GET may fetch again instead of being split in two.
const MAX_GAP_BYTES: u64 = 1 << 20;

/// How much longer than a fetch's limit its readers wait.
const READER_GRACE: Duration = Duration::from_secs(1);

/// (object id, block number)
type BlockId = (u64, u64);

/// Memory cache weight: the bytes, and a little for the entry.
#[derive(Clone)]
struct BlockWeight;

impl quick_cache::Weighter<BlockId, Bytes> for BlockWeight {
    fn weight(&self, _: &BlockId, block: &Bytes) -> u64 {
        block.len() as u64 + 64
    }
}

type BlockCache = quick_cache::sync::Cache<
    BlockId,
    Bytes,
    BlockWeight,
    quick_cache::DefaultHashBuilder,
    quick_cache::sync::DefaultLifecycle<BlockId, Bytes>,
>;

/// The memory cache of blocks. quick_cache keeps 97 % of a shard for blocks used twice and
/// gives new blocks the rest, per shard: with 1 MiB blocks that is a block or two, and
/// read-ahead blocks were evicted before their reader came (a test fetched 37 % of a
/// sequential stream twice). Half for new blocks, and shards of at least 64 blocks each.
fn block_cache(capacity: u64, block_size: u64) -> BlockCache {
    let blocks = (capacity / block_size.max(1)).max(1);
    let shards = (blocks / 64).clamp(1, 16) as usize;
    let options = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity(blocks.clamp(16, 1 << 20) as usize)
        .weight_capacity(capacity)
        .hot_allocation(0.5)
        .shards(shards)
        .build()
        .expect("valid cache options");
    quick_cache::sync::Cache::with_options(
        options,
        BlockWeight,
        Default::default(),
        Default::default(),
    )
}

/// Why a block could not be had.
#[derive(Clone, Debug)]
enum Failure {
    Changed,
    Transport(String),
}

/// A block being fetched: the readers that want it wait here for the one fetch.
#[derive(Default)]
struct Flight {
    outcome: Mutex<Option<std::result::Result<Bytes, Failure>>>,
    ready: Condvar,
}

impl Flight {
    fn finish(&self, outcome: std::result::Result<Bytes, Failure>) {
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(outcome);
            self.ready.notify_all();
        }
    }

    fn failed_in_transport(&self) -> bool {
        let slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        matches!(&*slot, Some(Err(Failure::Transport(_))))
    }

    fn wait(&self, until: Instant) -> Option<std::result::Result<Bytes, Failure>> {
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(outcome) = &*slot {
                return Some(outcome.clone());
            }
            let left = until.checked_duration_since(Instant::now())?;
            slot = self
                .ready
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A block a reader needs: at hand, on its way in a fetch this read started, or joined in
/// a fetch started earlier (which may have begun while the store was down).
enum Pending {
    Ready(Bytes),
    Coming(Arc<Flight>),
    Joined(Arc<Flight>),
}

/// What every object of one store shares: the store, the caches, the in-flight fetches,
/// the request bound and the counters.
pub(crate) struct Blocks {
    pub store: Arc<dyn ObjectStore>,
    pub tuning: Tuning,
    pub counters: Counters,
    /// Bounds the requests in flight (GET, HEAD, LIST) to `max_requests`.
    pub requests: Arc<tokio::sync::Semaphore>,
    memory: BlockCache,
    disk: Option<DiskCache>,
    in_flight: Mutex<HashMap<BlockId, Arc<Flight>>>,
    sequential: SequentialReads,
    pacing: GetPacing,
    /// The streaming GETs of sequentially read objects.
    streams: stream::Streams,
    /// The read-ahead window grows up to this for a slow store: `read_ahead`, or half the
    /// memory cache if that is more (read-ahead blocks wait in the cache for their reader).
    widest_window: u64,
}

impl Blocks {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        tuning: Tuning,
        max_requests: usize,
        memory_bytes: u64,
        disk: Option<DiskCache>,
    ) -> Blocks {
        let memory = block_cache(memory_bytes, tuning.block_size);
        Blocks {
            store,
            counters: Counters::default(),
            requests: Arc::new(tokio::sync::Semaphore::new(max_requests.max(1))),
            memory,
            disk,
            in_flight: Mutex::new(HashMap::new()),
            sequential: SequentialReads::default(),
            pacing: GetPacing::default(),
            streams: stream::Streams::new(max_requests),
            widest_window: tuning.read_ahead.max(memory_bytes / 2),
            tuning,
        }
    }

    /// Streams alive.
    #[cfg(test)]
    pub(crate) fn streams_alive(&self) -> usize {
        self.streams.alive()
    }

    /// Bytes the memory cache holds (as weighed against its capacity).
    #[cfg(test)]
    pub(crate) fn memory_weight(&self) -> u64 {
        self.memory.weight()
    }

    fn block_range(&self, object: &ObjectState, block: u64) -> Range<u64> {
        let start = block * self.tuning.block_size;
        start..(start + self.tuning.block_size).min(object.version.size)
    }

    /// Exactly `buf.len()` bytes at `offset` of `object`. A read that joined a fetch started
    /// before it, which then failed, tries once more with fetches of its own: the store may
    /// be back by now (a read-ahead started during an outage ends in failure after it).
    pub(crate) fn read(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        object: &Arc<ObjectState>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let mut joined_failed = false;
        match self.read_once(runtime, object, offset, buf, &mut joined_failed) {
            Err(_) if joined_failed => self.read_once(runtime, object, offset, buf, &mut false),
            result => result,
        }
    }

    fn read_once(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        object: &Arc<ObjectState>,
        offset: u64,
        buf: &mut [u8],
        joined_failed: &mut bool,
    ) -> Result<()> {
        if object.changed.load(Ordering::Relaxed) {
            return Err(object.changed_error());
        }
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= object.version.size)
            .ok_or_else(|| Error::Remote {
                url: object.url.clone(),
                cause: format!(
                    "read of {} bytes at {offset} is past the end ({} bytes)",
                    buf.len(),
                    object.version.size
                ),
            })?;
        let size = self.tuning.block_size;
        let wanted = offset / size..end.div_ceil(size);
        // A stream costs no request per read-ahead step: its window stays `read_ahead`
        // (a wider one only lets read-ahead blocks be evicted before they are read).
        let ahead_get = match self.tuning.stream_reads {
            true => self.usual_get_bytes(),
            false => self.read_ahead_get_bytes(),
        };
        let ahead = self.read_ahead_blocks(object, offset, end, &wanted, ahead_get);
        let sequential = ahead.is_some();
        let ahead = ahead.unwrap_or(wanted.end..wanted.end);
        let (pending, to_fetch) = self.claim(object, wanted.clone(), ahead);
        // A sequential reader's blocks, its own and those ahead, come from the object's
        // stream, and so do a random reader's a little ahead of a stream; the rest (and
        // all of them if no stream can be had) by range.
        let to_fetch = match self.tuning.stream_reads {
            true => self
                .streams
                .feed(self, runtime, object, to_fetch, sequential),
            false => to_fetch,
        };
        let first_ahead = to_fetch.partition_point(|(block, _)| *block < wanted.end);
        let (for_reader, for_later) = to_fetch.split_at(first_ahead);
        self.start_fetches(runtime, object, for_reader, self.tuning.max_get_blocks);
        let ahead_get_blocks = ahead_get.div_ceil(self.tuning.block_size);
        self.start_fetches(runtime, object, for_later, ahead_get_blocks);
        let until = Instant::now() + self.tuning.fetch_limit + READER_GRACE;
        for (block, pending) in wanted.zip(pending) {
            let data = match pending {
                Pending::Ready(data) => data,
                Pending::Coming(flight) => self.wait(object, &flight, until)?,
                Pending::Joined(flight) => {
                    let outcome = self.wait(object, &flight, until);
                    *joined_failed = matches!(&outcome, Err(Error::Unavailable { .. }))
                        && flight.failed_in_transport();
                    outcome?
                }
            };
            let range = self.block_range(object, block);
            let from = offset.max(range.start);
            let to = end.min(range.end);
            let into = (from - offset) as usize..(to - offset) as usize;
            let out = (from - range.start) as usize..(to - range.start) as usize;
            buf[into].copy_from_slice(&data[out]);
        }
        Ok(())
    }

    /// Starts fetching the blocks of `[offset, offset + len)` (clipped to the object) that are
    /// neither cached nor on their way, without waiting for them.
    pub(crate) fn prefetch(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        object: &Arc<ObjectState>,
        offset: u64,
        len: u64,
    ) {
        let end = offset.saturating_add(len).min(object.version.size);
        if object.changed.load(Ordering::Relaxed) || offset >= end {
            return;
        }
        let size = self.tuning.block_size;
        let blocks = offset / size..end.div_ceil(size);
        let (_, to_fetch) = self.claim(object, blocks.start..blocks.start, blocks);
        self.start_fetches(runtime, object, &to_fetch, self.tuning.max_get_blocks);
    }

    /// The usual length of a GET, past which a long read is split into parallel GETs.
    fn usual_get_bytes(&self) -> u64 {
        self.tuning.max_get_blocks * self.tuning.block_size
    }

    /// Bytes per read-ahead GET: as many as the store's first-byte wait makes worth it, up
    /// to half the widest window the memory cache allows.
    fn read_ahead_get_bytes(&self) -> u64 {
        let usual = self.usual_get_bytes();
        self.pacing.read_ahead_get(usual, self.widest_window / 2)
    }

    /// The read-ahead window for read-ahead GETs of `get` bytes: `read_ahead`, or two GETs
    /// once a slow store has made them longer than usual (one on its way while the other
    /// is read).
    fn read_ahead_window(&self, get: u64) -> u64 {
        if get <= self.usual_get_bytes() {
            return self.tuning.read_ahead;
        }
        (2 * get).clamp(self.tuning.read_ahead, self.widest_window)
    }

    /// One task per run of near blocks (each run spanning at most `longest` blocks).
    fn start_fetches(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        object: &Arc<ObjectState>,
        to_fetch: &[(u64, Arc<Flight>)],
        longest: u64,
    ) {
        for run in runs(to_fetch, longest, self.max_gap_blocks()) {
            runtime.spawn(fetch_run(self.clone(), object.clone(), run));
        }
    }

    /// Cached blocks a GET may fetch again rather than split in two: 1 MiB of them.
    fn max_gap_blocks(&self) -> u64 {
        (MAX_GAP_BYTES / self.tuning.block_size).max(1)
    }

    /// The blocks to read ahead of a sequential reader, past those it asked for, in GETs
    /// of `get` bytes (maybe none); `None` for a reader that is not sequential.
    fn read_ahead_blocks(
        &self,
        object: &ObjectState,
        offset: u64,
        end: u64,
        wanted: &Range<u64>,
        get: u64,
    ) -> Option<Range<u64>> {
        let size = self.tuning.block_size;
        let last = object.version.size.div_ceil(size);
        let window = self.read_ahead_window(get);
        let (from, to) =
            self.sequential
                .record_in_steps(object.id, offset, end, window, window / 2)?;
        let (from, to) = ((from / size).max(wanted.end), to.div_ceil(size).min(last));
        Some(from..to.max(from))
    }

    /// For each wanted block, the block or the flight that brings it; starts a flight for
    /// every wanted or read-ahead block that is neither cached nor on its way. The returned
    /// list of new flights is in block order.
    #[allow(clippy::type_complexity)] // two plain lists; a struct would only name them
    fn claim(
        &self,
        object: &ObjectState,
        wanted: Range<u64>,
        ahead: Range<u64>,
    ) -> (Vec<Pending>, Vec<(u64, Arc<Flight>)>) {
        let mut to_fetch = Vec::new();
        // Under the lock: a finished fetch puts its block in the cache before it leaves
        // `in_flight`, so a block is always found in one of the two or fetched once.
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mut find = |block: u64, to_fetch: &mut Vec<(u64, Arc<Flight>)>| {
            let id = (object.id, block);
            if let Some(flight) = in_flight.get(&id) {
                return Pending::Joined(flight.clone());
            }
            if let Some(data) = self.memory.get(&id) {
                return Pending::Ready(data);
            }
            let flight = Arc::new(Flight::default());
            in_flight.insert(id, flight.clone());
            to_fetch.push((block, flight.clone()));
            Pending::Coming(flight)
        };
        let pending: Vec<Pending> = wanted.map(|block| find(block, &mut to_fetch)).collect();
        let hits = pending
            .iter()
            .filter(|p| matches!(p, Pending::Ready(_)))
            .count();
        bump(&self.counters.memory_hits, hits as u64);
        for block in ahead {
            find(block, &mut to_fetch);
        }
        (pending, to_fetch)
    }

    fn wait(&self, object: &ObjectState, flight: &Flight, until: Instant) -> Result<Bytes> {
        match flight.wait(until) {
            Some(Ok(data)) => Ok(data),
            Some(Err(Failure::Changed)) => Err(object.changed_error()),
            Some(Err(Failure::Transport(cause))) => Err(Error::Unavailable {
                url: object.url.clone(),
                cause,
            }),
            None => Err(Error::Unavailable {
                url: object.url.clone(),
                cause: format!(
                    "no answer from the store within {:?}",
                    self.tuning.fetch_limit
                ),
            }),
        }
    }

    /// A block is here: cache it in memory and on disk, then wake its readers.
    async fn deliver(
        self: &Arc<Self>,
        object: &Arc<ObjectState>,
        block: u64,
        flight: &Flight,
        data: Bytes,
        from_disk: bool,
    ) {
        if let (Some(_), Some(_), false) = (&self.disk, &object.disk_name, from_disk) {
            let (blocks, object, copy) = (self.clone(), object.clone(), data.clone());
            let stored =
                tokio::task::spawn_blocking(move || blocks.store_on_disk(&object, block, &copy));
            let _ = stored.await;
        }
        self.deliver_cached(object, block, flight, data);
    }

    /// A block that needs no writing to disk is here: cache it in memory, wake its readers.
    fn deliver_cached(&self, object: &ObjectState, block: u64, flight: &Flight, data: Bytes) {
        let id = (object.id, block);
        self.memory.insert(id, data.clone());
        self.leave(id, flight, Ok(data));
    }

    /// Ends a flight: out of `in_flight` first, then its readers woken. The other order let
    /// a woken reader that read again at once find the ended flight still listed and take
    /// its failure for a fresh one.
    fn leave(&self, id: BlockId, flight: &Flight, outcome: std::result::Result<Bytes, Failure>) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if in_flight
                .get(&id)
                .is_some_and(|f| std::ptr::eq(&**f, flight))
            {
                in_flight.remove(&id);
            }
        }
        flight.finish(outcome);
    }

    fn disk_key<'a>(&self, object: &'a ObjectState, block: u64) -> Option<BlockKey<'a>> {
        Some(BlockKey {
            url: &object.url,
            version: object.disk_name.as_deref()?,
            block_size: self.tuning.block_size,
            block,
        })
    }

    fn load_from_disk(&self, object: &ObjectState, block: u64) -> Option<Bytes> {
        let disk = self.disk.as_ref()?;
        let range = self.block_range(object, block);
        let data = disk.load(
            &self.disk_key(object, block)?,
            (range.end - range.start) as usize,
        )?;
        bump(&self.counters.disk_hits, 1);
        Some(data)
    }

    fn store_on_disk(&self, object: &ObjectState, block: u64, data: &[u8]) {
        let (Some(disk), Some(key)) = (&self.disk, self.disk_key(object, block)) else {
            return;
        };
        match disk.store(&key, data) {
            Ok(()) => bump(&self.counters.disk_writes, 1),
            // The disk cache is an optimisation: a full or broken disk only costs refetches.
            Err(e) => log::warn!("disk cache: cannot write a block of {}: {e}", object.url),
        }
    }
}

/// `blocks` (sorted) cut into runs, one GET each: neighbours, or blocks at most `max_gap`
/// apart (the blocks between are cached or on their way already: fetching them again
/// costs less than another request, as object_store's own range coalescing judges with
/// its 1 MiB), each run spanning at most `longest` blocks.
fn runs<T: Clone>(blocks: &[(u64, T)], longest: u64, max_gap: u64) -> Vec<Vec<(u64, T)>> {
    let mut runs: Vec<Vec<(u64, T)>> = Vec::new();
    for (block, item) in blocks {
        match runs.last_mut() {
            Some(run) if joins(run, *block, longest, max_gap) => run.push((*block, item.clone())),
            _ => runs.push(vec![(*block, item.clone())]),
        }
    }
    runs
}

fn joins<T>(run: &[(u64, T)], block: u64, longest: u64, max_gap: u64) -> bool {
    let (first, last) = (run[0].0, run[run.len() - 1].0);
    block > last && block - last <= max_gap + 1 && block - first < longest.max(1)
}

/// Fetches the blocks of `run` (sorted, maybe with small gaps) of `object`: from the disk
/// cache what it has, the rest with one GET per remaining stretch, and finishes every
/// flight, whatever happens (a dropped task finishes them as failed).
async fn fetch_run(blocks: Arc<Blocks>, object: Arc<ObjectState>, run: Vec<(u64, Arc<Flight>)>) {
    let guard = FinishOnDrop {
        blocks: blocks.clone(),
        object_id: object.id,
        run: run.clone(),
    };
    let mut missing: Vec<(u64, Arc<Flight>)> = Vec::new();
    let on_disk = if blocks.disk.is_some() && object.disk_name.is_some() {
        let (b, o) = (blocks.clone(), object.clone());
        let numbers: Vec<u64> = run.iter().map(|(block, _)| *block).collect();
        tokio::task::spawn_blocking(move || {
            numbers
                .into_iter()
                .map(|block| b.load_from_disk(&o, block))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    for (i, (block, flight)) in run.iter().enumerate() {
        match on_disk.get(i).cloned().flatten() {
            Some(data) => blocks.deliver(&object, *block, flight, data, true).await,
            None => missing.push((*block, flight.clone())),
        }
    }
    let gets = runs(&missing, u64::MAX, blocks.max_gap_blocks())
        .into_iter()
        .map(|stretch| get_stretch(&blocks, &object, stretch));
    futures::future::join_all(gets).await;
    drop(guard);
}

/// One GET for consecutive blocks, delivered block by block as the body streams in.
async fn get_stretch(
    blocks: &Arc<Blocks>,
    object: &Arc<ObjectState>,
    stretch: Vec<(u64, Arc<Flight>)>,
) {
    let first = stretch[0].0;
    let last = stretch[stretch.len() - 1].0;
    let range = blocks.block_range(object, first).start..blocks.block_range(object, last).end;
    let deadline = blocks.tuning.fetch_limit;
    let outcome = tokio::time::timeout(deadline, get_blocks(blocks, object, range, &stretch)).await;
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(failure)) => failure,
        Err(_) => Failure::Transport(format!("no answer from the store within {deadline:?}")),
    };
    bump(&blocks.counters.get_failures, 1);
    if let Failure::Transport(cause) = &failure {
        log::debug!("{}: GET failed: {cause}", object.url);
    }
    for (block, flight) in &stretch {
        blocks.leave((object.id, *block), flight, Err(failure.clone()));
    }
}

async fn get_blocks(
    blocks: &Arc<Blocks>,
    object: &Arc<ObjectState>,
    range: Range<u64>,
    stretch: &[(u64, Arc<Flight>)],
) -> std::result::Result<(), Failure> {
    let _permit = blocks
        .requests
        .acquire()
        .await
        .map_err(|_| Failure::Transport("closing".into()))?;
    let sent = Instant::now();
    let result = send_get(blocks, object, range.clone()).await?;
    let mut body = result.into_stream();
    let mut next = stretch.iter();
    let mut filling: Vec<u8> = Vec::new();
    let mut current = next.next();
    let mut first_byte = None;
    // Offset in the object of the next body byte.
    let mut at = range.start;
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| Failure::Transport(describe(&e)))?;
        first_byte.get_or_insert_with(Instant::now);
        bump(&blocks.counters.get_bytes, chunk.len() as u64);
        while let Some((block, flight)) = current {
            let want = blocks.block_range(object, *block);
            // The bytes of cached blocks between two wanted ones are dropped.
            let gap = (want.start.saturating_sub(at) as usize).min(chunk.len());
            let _ = chunk.split_to(gap);
            at += gap as u64;
            if at < want.start {
                break;
            }
            let need = (want.end - want.start) as usize - filling.len();
            let take = need.min(chunk.len());
            filling.extend_from_slice(&chunk.split_to(take));
            at += take as u64;
            if take < need {
                break;
            }
            let data = Bytes::from(std::mem::take(&mut filling));
            blocks.deliver(object, *block, flight, data, false).await;
            current = next.next();
        }
    }
    if current.is_some() {
        return Err(Failure::Transport(
            "the store sent fewer bytes than asked".into(),
        ));
    }
    if let Some(first_byte) = first_byte {
        let body = first_byte.elapsed();
        blocks
            .pacing
            .record(first_byte - sent, range.end - range.start, body);
    }
    Ok(())
}

/// Sends one ranged GET of `object` carrying `If-Match` (the caller holds a request permit)
/// and checks its answer is the version opened: a 412, a 404 or another version marks the
/// object changed.
async fn send_get(
    blocks: &Blocks,
    object: &ObjectState,
    range: Range<u64>,
) -> std::result::Result<object_store::GetResult, Failure> {
    bump(&blocks.counters.gets, 1);
    log::debug!(
        "{}: GET bytes {}-{}",
        object.url,
        range.start,
        range.end - 1
    );
    let options = GetOptions::new()
        .with_range(Some(range.clone()))
        .with_if_match(object.version.e_tag.clone());
    let result = blocks
        .store
        .get_opts(&object.path, options)
        .await
        .map_err(|e| match e {
            object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. } => {
                Failure::Changed
            }
            e => Failure::Transport(describe(&e)),
        });
    let result = match result {
        Err(Failure::Changed) => {
            object.mark_changed();
            return Err(Failure::Changed);
        }
        other => other?,
    };
    if !object.version.matches(&result.meta) || result.range != range {
        object.mark_changed();
        return Err(Failure::Changed);
    }
    Ok(result)
}

/// Finishes, as failed, the flights of a fetch that ended without finishing them (its task
/// was dropped at runtime shutdown, or panicked): their readers must not wait forever.
struct FinishOnDrop {
    blocks: Arc<Blocks>,
    object_id: u64,
    run: Vec<(u64, Arc<Flight>)>,
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        for (block, flight) in &self.run {
            let failure = Failure::Transport("the fetch was cancelled".into());
            self.blocks
                .leave((self.object_id, *block), flight, Err(failure));
        }
    }
}
