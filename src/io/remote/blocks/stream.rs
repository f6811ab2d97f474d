//! One streaming GET per sequentially read object (mountpoint-s3's design): instead of a
//! ranged GET per read-ahead step, a sequential reader's blocks come from one GET of the
//! rest of the object whose body is read block by block as the reader needs it.
//!
//! Every request costs a store its first-byte wait (and some stores much more: moto copies
//! the whole object for every ranged GET), so a stream read in one request costs one wait
//! instead of one per step. The body is read only as far as the blocks handed to the
//! stream (the reader's and its read-ahead window's): past them the stream stops polling
//! it, TCP's flow control pauses the store, and memory stays within the cache. Blocks go
//! to the memory and disk caches as they come, exactly as a ranged GET's do.
//!
//! The stream is the object's `Feed`: readers hand it their missing blocks in order. A
//! block before the stream's end (the reader went back) starts a new stream; one far past
//! its body's position (the reader jumped ahead) makes it drop its GET and send a new one
//! from there. A stream with nothing to bring for `STREAM_IDLE` ends. A stream whose GET
//! fails fails its blocks as a ranged GET's failure would (EIO rules, the changed-object
//! check: the GET carries `If-Match`); one whose body breaks or stalls hands its blocks to
//! ranged GETs and ends. Streams are bounded to a quarter of `max_requests`, each holding
//! one request permit while its GET is open; past that, sequential readers get ranged GETs.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{bump, describe, send_get, Blocks, Failure, Flight, ObjectState, MAX_GAP_BYTES};

/// A stream with no block to bring for this long ends (its reader stopped or went random),
/// freeing its connection and request permit.
const STREAM_IDLE: Duration = Duration::from_secs(10);

/// A block and the flight its readers wait on.
type Item = (u64, Arc<Flight>);

/// The streams of one mount, one per object at most.
pub(super) struct Streams {
    feeds: Mutex<HashMap<u64, Feed>>,
    next_generation: AtomicU64,
    /// Bounds the streams alive at once.
    slots: Arc<Semaphore>,
}

/// How readers hand blocks to an object's stream.
struct Feed {
    /// Tells this stream from a later one of the same object.
    generation: u64,
    /// The block after the last one handed over: blocks are handed in increasing order.
    next_block: u64,
    queue: UnboundedSender<Item>,
}

impl Streams {
    pub(super) fn new(max_requests: usize) -> Streams {
        Streams {
            feeds: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new((max_requests / 4).max(1))),
        }
    }

    /// Hands `items` (sorted: the missing blocks of a read, and of its read-ahead if it is
    /// `sequential`) to `object`'s stream. A sequential reader's go to the stream they
    /// continue (at most `reach` past its last block), or start a new one (the reader went
    /// back or jumped far ahead: it need not wait for the old stream's window first); a
    /// random reader's go to a stream they are a little ahead of (with the blocks
    /// between), and else nowhere. Returns those no
    /// stream took (all of them when every stream slot is busy), for ranged GETs.
    pub(super) fn feed(
        &self,
        blocks: &Arc<Blocks>,
        runtime: &tokio::runtime::Handle,
        object: &Arc<ObjectState>,
        items: Vec<Item>,
        sequential: bool,
    ) -> Vec<Item> {
        let (Some(&(first, _)), Some(&(last, _))) = (items.first(), items.last()) else {
            return items;
        };
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if !sequential {
            let Some(feed) = feeds.get_mut(&object.id) else {
                return items;
            };
            let ahead = (last + 1).saturating_sub(feed.next_block) * blocks.tuning.block_size;
            if first < feed.next_block || ahead > reach(blocks) {
                return items;
            }
            // The blocks between come from the stream too (the reader is likely to want
            // them next, and the stream reads through them anyway).
            let (_, between) = blocks.claim(object, first..first, feed.next_block..first);
            let items = between.into_iter().chain(items).collect();
            return send(feed, items, last);
        }
        if let Some(feed) = feeds.get_mut(&object.id) {
            let gap = first.saturating_sub(feed.next_block) * blocks.tuning.block_size;
            if first >= feed.next_block && gap <= reach(blocks) {
                return send(feed, items, last);
            }
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return items;
        };
        let had = feeds.get(&object.id).map(|feed| feed.next_block);
        log::debug!(
            "{}: a stream from block {first} (the last one had reached {had:?})",
            object.url
        );
        let (queue, receiver) = unbounded_channel();
        for item in items {
            // The receiver is alive: it is right here.
            let _ = queue.send(item);
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        // Replaces the object's stream if it has one: that one brings what it was handed,
        // then ends (its queue has no sender left).
        feeds.insert(
            object.id,
            Feed {
                generation,
                next_block: last + 1,
                queue,
            },
        );
        let task = StreamTask {
            blocks: blocks.clone(),
            object: object.clone(),
            generation,
            queue: receiver,
            owed: VecDeque::new(),
            _slot: slot,
        };
        runtime.spawn(task.run());
        Vec::new()
    }

    /// Streams alive (for tests).
    #[cfg(test)]
    pub(super) fn alive(&self) -> usize {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// How far ahead of a stream's last block a random read may be and still be served by
/// it: as far as the store sends in one first-byte wait (no further than the read-ahead
/// window: the blocks between wait in the memory cache).
fn reach(blocks: &Blocks) -> u64 {
    let skip_limit = blocks.pacing.skip_limit(MAX_GAP_BYTES);
    skip_limit.min(blocks.tuning.read_ahead.max(MAX_GAP_BYTES))
}

/// Hands `items` (ending with block `last`) to `feed`'s stream; returns those it did not
/// take. A stream leaves `feeds` before it stops taking blocks, so a listed one takes
/// them all; should one not, the rest go by range.
fn send(feed: &mut Feed, items: Vec<Item>, last: u64) -> Vec<Item> {
    let mut items = items.into_iter();
    for item in items.by_ref() {
        if let Err(refused) = feed.queue.send(item) {
            return std::iter::once(refused.0).chain(items).collect();
        }
    }
    feed.next_block = last + 1;
    Vec::new()
}

/// Why a stream ended early.
enum StreamEnd {
    /// Its GET failed (after the client's retries), as a ranged GET may.
    GetFailed(Failure),
    /// Its body broke off or stalled after the GET was answered.
    Broken(String),
}

/// One object's stream: brings the blocks handed to it, in order, from one GET's body.
struct StreamTask {
    blocks: Arc<Blocks>,
    object: Arc<ObjectState>,
    generation: u64,
    queue: UnboundedReceiver<Item>,
    /// The blocks taken from the queue and not delivered yet, in order: finished on every
    /// way out, as the queued ones are.
    owed: VecDeque<Item>,
    _slot: OwnedSemaphorePermit,
}

impl StreamTask {
    async fn run(mut self) {
        let mut body: Option<Body> = None;
        loop {
            let next = tokio::time::timeout(STREAM_IDLE, self.queue.recv()).await;
            // Idle, or replaced by a newer stream and done with what it was handed.
            let Ok(Some(item)) = next else {
                break;
            };
            // Everything handed over by now, so that the disk cache is asked once for all.
            self.owed.push_back(item);
            while let Ok(item) = self.queue.try_recv() {
                self.owed.push_back(item);
            }
            self.deliver_from_disk().await;
            while let Some((block, flight)) = self.owed.front().cloned() {
                match self.bring(block, &mut body).await {
                    Ok(data) => {
                        let blocks = self.blocks.clone();
                        blocks
                            .deliver(&self.object, block, &flight, data, false)
                            .await;
                        self.owed.pop_front();
                    }
                    Err(end) => return self.fail(end),
                }
            }
        }
        // A block handed over while the stream was ending goes by range.
        let left = self.retire();
        self.fetch_by_range(&left);
    }

    /// `block`'s bytes from the body, which is opened (again) as needed.
    async fn bring(
        &self,
        block: u64,
        body: &mut Option<Body>,
    ) -> std::result::Result<Bytes, StreamEnd> {
        let range = self.blocks.block_range(&self.object, block);
        let skip_limit = self.blocks.pacing.skip_limit(MAX_GAP_BYTES);
        if body
            .as_ref()
            .is_some_and(|b| !b.reaches(range.start, skip_limit))
        {
            // The reader jumped ahead: a new GET from there costs less than the bytes
            // between.
            *body = None;
        }
        let body = match body {
            Some(body) => body,
            None => body.insert(
                Body::open(&self.blocks, &self.object, range.start)
                    .await
                    .map_err(StreamEnd::GetFailed)?,
            ),
        };
        body.take(
            range,
            self.blocks.tuning.stall_limit,
            &self.blocks.counters.get_bytes,
        )
        .await
        .map_err(StreamEnd::Broken)
    }

    /// Delivers the owed blocks the disk cache has (one blocking task for all of them).
    async fn deliver_from_disk(&mut self) {
        if self.blocks.disk.is_none() || self.object.disk_name.is_none() {
            return;
        }
        let (blocks, object) = (self.blocks.clone(), self.object.clone());
        let numbers: Vec<u64> = self.owed.iter().map(|(block, _)| *block).collect();
        let found = tokio::task::spawn_blocking(move || {
            numbers
                .into_iter()
                .map(|block| blocks.load_from_disk(&object, block))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut found = found.into_iter();
        self.owed
            .retain(|(block, flight)| match found.next().flatten() {
                Some(data) => {
                    self.blocks
                        .deliver_cached(&self.object, *block, flight, data);
                    false
                }
                None => true,
            });
    }

    /// Ends the stream early: its blocks fail as a ranged GET's would if its GET failed,
    /// and are fetched by range if its body broke.
    fn fail(mut self, end: StreamEnd) {
        bump(&self.blocks.counters.get_failures, 1);
        let items = self.retire();
        match end {
            StreamEnd::GetFailed(failure) => {
                if let Failure::Transport(cause) = &failure {
                    log::debug!("{}: streaming GET failed: {cause}", self.object.url);
                }
                for (block, flight) in &items {
                    self.blocks
                        .leave((self.object.id, *block), flight, Err(failure.clone()));
                }
            }
            StreamEnd::Broken(cause) => {
                log::debug!(
                    "{}: streaming GET broke off ({cause}); its blocks go by range",
                    self.object.url
                );
                self.fetch_by_range(&items);
            }
        }
    }

    fn fetch_by_range(&self, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        let runtime = tokio::runtime::Handle::current();
        let longest = self.blocks.tuning.max_get_blocks;
        self.blocks
            .start_fetches(&runtime, &self.object, items, longest);
    }

    /// Takes the stream out of its object's feed (if still there), so that no block is
    /// handed to it any more, and returns the blocks it still owes.
    fn retire(&mut self) -> Vec<Item> {
        {
            let mut feeds = self
                .blocks
                .streams
                .feeds
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if feeds
                .get(&self.object.id)
                .is_some_and(|feed| feed.generation == self.generation)
            {
                feeds.remove(&self.object.id);
            }
        }
        self.queue.close();
        let mut items: Vec<Item> = self.owed.drain(..).collect();
        while let Ok(item) = self.queue.try_recv() {
            items.push(item);
        }
        items
    }
}

impl Drop for StreamTask {
    /// A task dropped mid-way (runtime shutdown at unmount, a panic) fails what it owes:
    /// its readers must not wait forever.
    fn drop(&mut self) {
        for (block, flight) in self.retire() {
            let failure = Failure::Transport("the fetch was cancelled".into());
            self.blocks
                .leave((self.object.id, block), &flight, Err(failure));
        }
    }
}

/// The body of a stream's GET, read as far as its blocks need.
struct Body {
    chunks: BoxStream<'static, object_store::Result<Bytes>>,
    /// Offset in the object of the first byte of `left` (of the next chunk if it is empty).
    at: u64,
    /// Bytes received and not yet used.
    left: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl Body {
    /// One GET from `start` to the end of the object, under a request permit (held while
    /// the body is read) and the fetch deadline.
    async fn open(
        blocks: &Arc<Blocks>,
        object: &ObjectState,
        start: u64,
    ) -> std::result::Result<Body, Failure> {
        let permit = blocks
            .requests
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Failure::Transport("closing".into()))?;
        let limit = blocks.tuning.fetch_limit;
        let sent = Instant::now();
        let range = start..object.version.size;
        let result = tokio::time::timeout(limit, send_get(blocks, object, range))
            .await
            .map_err(|_| {
                Failure::Transport(format!("no answer from the store within {limit:?}"))
            })??;
        // The wait for the answer, as a ranged GET's first byte; no rate (the body is read
        // at the reader's pace).
        blocks.pacing.record(sent.elapsed(), 0, Duration::ZERO);
        Ok(Body {
            chunks: result.into_stream(),
            at: start,
            left: Bytes::new(),
            _permit: permit,
        })
    }

    /// Whether the block at `start` is at most `skip_limit` bytes ahead.
    fn reaches(&self, start: u64, skip_limit: u64) -> bool {
        start >= self.at && start - self.at <= skip_limit
    }

    /// The bytes of `range` (at or past the body's position), dropping those before it.
    /// Fails if the body ends or breaks first, or sends nothing for `stall_limit`.
    async fn take(
        &mut self,
        range: Range<u64>,
        stall_limit: Duration,
        get_bytes: &AtomicU64,
    ) -> std::result::Result<Bytes, String> {
        let len = (range.end - range.start) as usize;
        let mut filling: Vec<u8> = Vec::with_capacity(len);
        loop {
            let skip = (range.start.saturating_sub(self.at) as usize).min(self.left.len());
            self.left.advance(skip);
            self.at += skip as u64;
            if self.at >= range.start {
                let take = (len - filling.len()).min(self.left.len());
                filling.extend_from_slice(&self.left.split_to(take));
                self.at += take as u64;
                if filling.len() == len {
                    return Ok(Bytes::from(filling));
                }
            }
            let chunk = tokio::time::timeout(stall_limit, self.chunks.next())
                .await
                .map_err(|_| format!("no data from the store within {stall_limit:?}"))?
                .ok_or_else(|| "the store sent fewer bytes than asked".to_string())?
                .map_err(|e| describe(&e))?;
            bump(get_bytes, chunk.len() as u64);
            self.left = chunk;
        }
    }
}
