//! Read-ahead: a small pool of worker threads that decode data before it is asked for, and
//! the detector that tells sequential reading (worth it) from random reading (not).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting for a worker; more are dropped (read-ahead is only a hint).
const QUEUE_LEN: usize = 64;

/// Threads that run jobs in the background. Dropping the pool lets them finish and exit.
pub struct WorkerPool {
    jobs: SyncSender<Job>,
}

impl WorkerPool {
    /// A pool of `threads` workers (at least one).
    pub fn new(threads: usize) -> WorkerPool {
        let (jobs, queue) = sync_channel::<Job>(QUEUE_LEN);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("arrfs-decode-{i}"))
                .spawn(move || run_jobs(&queue));
            if let Err(e) = spawned {
                log::warn!("cannot start a read-ahead worker: {e}");
            }
        }
        WorkerPool { jobs }
    }

    /// A pool with one worker per CPU.
    pub fn per_cpu() -> WorkerPool {
        WorkerPool::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Queues `job`; false if the queue is full and the job was dropped.
    pub fn try_run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        match self.jobs.try_send(Box::new(job)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn run_jobs(queue: &Mutex<Receiver<Job>>) {
    loop {
        let next = queue.lock().unwrap().recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// How many recent read ends per file count as "where the reader is": the kernel sends
/// read-ahead requests on several FUSE threads, so sequential reads can arrive slightly out
/// of order.
const RECENT_ENDS: usize = 4;
/// Files tracked at once; past this the least used are forgotten.
const TRACKED_FILES: usize = 1024;

#[derive(Clone, Default)]
struct Stream {
    recent_ends: [u64; RECENT_ENDS],
    next_slot: usize,
    /// Read-ahead was already requested up to here.
    ahead_to: u64,
}

/// Per-file detection of sequential reading.
pub struct SequentialReads {
    streams: Mutex<quick_cache::unsync::Cache<u64, Stream>>,
}

impl Default for SequentialReads {
    fn default() -> Self {
        SequentialReads {
            streams: Mutex::new(quick_cache::unsync::Cache::new(TRACKED_FILES)),
        }
    }
}

impl SequentialReads {
    /// Records the read `[offset, end)` of `file`. If it continues an earlier read, returns the
    /// range `[from, end + window)` not yet read ahead (empty if all of it was); `None` for a
    /// random read.
    pub fn record(&self, file: u64, offset: u64, end: u64, window: u64) -> Option<(u64, u64)> {
        self.record_in_steps(file, offset, end, window, 0)
    }

    /// As [`Self::record`], but the window moves only in steps of at least `step` bytes (or
    /// when the reader has caught up with it): a remote reader then fetches read-ahead in a
    /// few large requests instead of one small one per read, as each request costs a round
    /// trip.
    pub fn record_in_steps(
        &self,
        file: u64,
        offset: u64,
        end: u64,
        window: u64,
        step: u64,
    ) -> Option<(u64, u64)> {
        let mut streams = self.streams.lock().unwrap();
        let Ok(Some(mut entry)) = streams.get_mut_or_insert_with(&file, || {
            Ok::<_, std::convert::Infallible>(Stream::default())
        }) else {
            return None;
        };
        let stream = &mut *entry;
        let sequential = offset > 0 && stream.recent_ends.contains(&offset);
        stream.recent_ends[stream.next_slot] = end;
        stream.next_slot = (stream.next_slot + 1) % RECENT_ENDS;
        if !sequential {
            stream.ahead_to = end;
            return None;
        }
        let to = end.saturating_add(window);
        if stream.ahead_to >= end && to < stream.ahead_to.saturating_add(step) {
            return Some((stream.ahead_to, stream.ahead_to));
        }
        let from = stream.ahead_to.max(end);
        stream.ahead_to = stream.ahead_to.max(to);
        Some((from.min(to), to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_reads_get_read_ahead_once_and_random_reads_none() {
        let reads = SequentialReads::default();
        assert_eq!(reads.record(1, 0, 100, 1000), None);
        assert_eq!(reads.record(1, 100, 200, 1000), Some((200, 1200)));
        assert_eq!(reads.record(1, 200, 300, 1000), Some((1200, 1300)));
        assert_eq!(reads.record(1, 5000, 5100, 1000), None);
        assert_eq!(reads.record(2, 100, 200, 1000), None, "files are apart");
    }

    #[test]
    fn read_ahead_in_steps_moves_only_when_half_the_window_is_used() {
        let reads = SequentialReads::default();
        assert_eq!(reads.record_in_steps(1, 0, 100, 1000, 500), None);
        assert_eq!(
            reads.record_in_steps(1, 100, 200, 1000, 500),
            Some((200, 1200))
        );
        // 400 more bytes read: the window would grow by 400 < 500, so nothing new.
        let quiet = reads.record_in_steps(1, 200, 600, 1000, 500).unwrap();
        assert_eq!(quiet.0, quiet.1);
        assert_eq!(
            reads.record_in_steps(1, 600, 700, 1000, 500),
            Some((1200, 1700))
        );
    }

    #[test]
    fn slightly_reordered_reads_still_count_as_sequential() {
        let reads = SequentialReads::default();
        reads.record(1, 0, 100, 1000);
        reads.record(1, 200, 300, 1000);
        assert!(reads.record(1, 100, 200, 1000).is_some());
    }

    #[test]
    fn the_pool_runs_jobs() {
        let pool = WorkerPool::new(2);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..5 {
            let tx = tx.clone();
            assert!(pool.try_run(move || tx.send(i).unwrap()));
        }
        let mut got: Vec<i32> = (0..5).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
}
