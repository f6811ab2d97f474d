//! The range reader over object_store's in-memory store, wrapped to count GETs and to make
//! them fail or stall: caches, coalescing, read-ahead, one fetch per block, changed
//! objects, the disk cache and its bound, streaming GETs. No network.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::*;

/// The in-memory store, counting GETs (ranges too) and failing or delaying them on demand.
#[derive(Debug, Default)]
struct TestStore {
    inner: InMemory,
    gets: AtomicU64,
    /// The next this many GETs fail as a 503 would after the client's retries.
    failing_gets: AtomicU64,
    /// Every GET waits this long first.
    delay_ms: AtomicU64,
    ranges: std::sync::Mutex<Vec<Range<u64>>>,
    bodies: Arc<Bodies>,
}

/// What happens to GET bodies: each is sent in `PIECE`s, one per poll, so how far a
/// reader polled one shows.
#[derive(Debug, Default)]
struct Bodies {
    /// Body bytes polled so far, all GETs.
    polled: AtomicU64,
    /// Bodies not dropped yet.
    open: AtomicU64,
    /// If not 0: the first poll of a body once this many bytes were polled in all fails
    /// (a dropped connection), or never answers if `cut_stalls` (a stalled store). Once.
    cut_after: AtomicU64,
    cut_stalls: AtomicBool,
}

const PIECE: usize = 16 << 10;

/// Counts a body open until it is dropped.
struct OpenBody(Arc<Bodies>);

impl Drop for OpenBody {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `data` as a body of `PIECE`s, under `bodies`' switches.
fn in_pieces(bodies: &Arc<Bodies>, data: Bytes) -> BoxStream<'static, object_store::Result<Bytes>> {
    bodies.open.fetch_add(1, Ordering::SeqCst);
    let guard = OpenBody(bodies.clone());
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(PIECE)
        .map(|at| data.slice(at..(at + PIECE).min(data.len())))
        .collect();
    futures::stream::iter(pieces)
        .then(move |piece| {
            let bodies = guard.0.clone();
            async move {
                let cut = bodies.cut_after.load(Ordering::SeqCst);
                if cut > 0
                    && bodies.polled.load(Ordering::SeqCst) >= cut
                    && bodies.cut_after.swap(0, Ordering::SeqCst) == cut
                {
                    if bodies.cut_stalls.load(Ordering::SeqCst) {
                        futures::future::pending::<()>().await;
                    }
                    return Err(object_store::Error::Generic {
                        store: "TestStore",
                        source: "connection reset by peer".into(),
                    });
                }
                bodies
                    .polled
                    .fetch_add(piece.len() as u64, Ordering::SeqCst);
                Ok(piece)
            }
        })
        .boxed()
}

impl fmt::Display for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestStore")
    }
}

#[async_trait]
impl ObjectStore for TestStore {
    async fn put_opts(
        &self,
        p: &Path,
        data: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(p, data, o).await
    }

    async fn put_multipart_opts(
        &self,
        p: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(p, o).await
    }

    async fn get_opts(&self, p: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        if !o.head {
            self.gets.fetch_add(1, Ordering::SeqCst);
            if let Some(object_store::GetRange::Bounded(r)) = &o.range {
                self.ranges.lock().unwrap().push(r.clone());
            }
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let failing = self.failing_gets.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_gets.store(failing - 1, Ordering::SeqCst);
                return Err(object_store::Error::Generic {
                    store: "TestStore",
                    source: "503 Service Unavailable after retries".into(),
                });
            }
        }
        if o.head {
            return self.inner.get_opts(p, o).await;
        }
        let result = self.inner.get_opts(p, o).await?;
        let (meta, range, attributes, extensions) = (
            result.meta.clone(),
            result.range.clone(),
            result.attributes.clone(),
            result.extensions.clone(),
        );
        let data = result.bytes().await?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(in_pieces(&self.bodies, data)),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    fn delete_stream(
        &self,
        paths: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(paths)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

impl TestStore {
    fn upload(&self, key: &str, data: &[u8]) {
        let payload = PutPayload::from(Bytes::copy_from_slice(data));
        futures::executor::block_on(self.inner.put(&Path::from(key), payload)).unwrap();
    }

    fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }
}

/// An empty directory for one test, removed on drop.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("arrfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BLOCK: u64 = 64 << 10;

fn options() -> RemoteOptions {
    RemoteOptions {
        block_size: BLOCK,
        read_ahead: 4 * BLOCK,
        memory_cache: 64 * BLOCK,
        timeout: Duration::from_millis(500),
        retry_timeout: Duration::from_millis(500),
        ..RemoteOptions::default()
    }
}

/// Bytes that differ at every offset of interest (no two blocks alike).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn connect(store: &Arc<TestStore>, url: &str, options: &RemoteOptions) -> Result<Arc<Remote>> {
    Remote::with_store(store.clone(), Location::parse(url).unwrap(), options)
}

/// A store with `data/file.bin` of `len` pattern bytes, and a Remote on it.
fn setup(
    len: usize,
    options: &RemoteOptions,
) -> (Arc<TestStore>, Arc<Remote>, RemoteObject, Vec<u8>) {
    let store = Arc::new(TestStore::default());
    let data = pattern(len, 7);
    store.upload("data/file.bin", &data);
    let remote = connect(&store, "s3://bucket/data/file.bin", options).unwrap();
    let object = remote.root_object().expect("an object URL");
    (store, remote, object, data)
}

fn read(object: &RemoteObject, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    object.read_at(offset, &mut buf).unwrap();
    buf
}

/// Reads the whole object front to back in `piece`-byte reads, as a sequential reader
/// would, checking every byte against `data`.
fn read_in_pieces(object: &RemoteObject, data: &[u8], piece: usize) {
    for offset in (0..data.len()).step_by(piece) {
        let n = piece.min(data.len() - offset);
        assert_eq!(read(object, offset as u64, n), data[offset..offset + n]);
    }
}

#[test]
fn reads_return_the_objects_bytes_and_cached_blocks_are_not_fetched_again() {
    let (store, remote, object, data) = setup(10 * BLOCK as usize + 123, &options());
    assert_eq!(object.len(), data.len() as u64);
    for (offset, len) in [
        (0, 10),
        (BLOCK - 5, 10),
        (3 * BLOCK + 7, 2 * BLOCK as usize),
        (data.len() as u64 - 9, 9),
    ] {
        assert_eq!(
            read(&object, offset, len),
            data[offset as usize..offset as usize + len]
        );
    }
    let gets = store.gets();
    assert_eq!(
        read(&object, BLOCK - 5, 10),
        data[BLOCK as usize - 5..BLOCK as usize + 5]
    );
    assert_eq!(store.gets(), gets, "both blocks were cached");
    assert!(remote.stats().memory_hits >= 2);
    assert_eq!(remote.stats().gets, gets);
}

#[test]
fn neighbouring_missing_blocks_are_fetched_by_one_get() {
    let (store, _remote, object, data) = setup(16 * BLOCK as usize, &options());
    let (offset, len) = (BLOCK + 100, 4 * BLOCK as usize);
    assert_eq!(
        read(&object, offset, len),
        data[offset as usize..offset as usize + len]
    );
    assert_eq!(store.gets(), 1);
    assert_eq!(*store.ranges.lock().unwrap(), vec![BLOCK..6 * BLOCK]);
}

#[test]
fn a_long_read_is_split_into_parallel_gets_of_bounded_size() {
    let options = RemoteOptions {
        block_size: 1 << 20,
        memory_cache: 64 << 20,
        ..options()
    };
    let (store, _remote, object, data) = setup(20 << 20, &options);
    assert_eq!(read(&object, 0, 20 << 20), data);
    let ranges = store.ranges.lock().unwrap().clone();
    assert!(ranges.len() >= 2, "{ranges:?}");
    assert!(
        ranges.iter().all(|r| r.end - r.start <= 17 << 20),
        "{ranges:?}"
    );
    assert_eq!(
        ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
        20 << 20
    );
}

#[test]
fn sequential_reads_are_read_ahead_and_every_byte_is_fetched_once() {
    let (store, remote, object, data) = setup(32 * BLOCK as usize, &options());
    let piece = 16 << 10;
    read_in_pieces(&object, &data, piece);
    let stats = remote.stats();
    assert_eq!(stats.get_bytes, data.len() as u64, "no block fetched twice");
    assert!(
        store.gets() < 32,
        "read-ahead fetches several blocks per GET: {}",
        store.gets()
    );
    let ranges = store.ranges.lock().unwrap().clone();
    assert!(ranges.iter().any(|r| r.end - r.start > BLOCK), "{ranges:?}");
}

#[test]
fn prefetched_ranges_are_fetched_once_in_few_gets_and_then_read_without_gets() {
    let (store, remote, object, data) = setup(32 * BLOCK as usize, &options());
    object.prefetch(3 * BLOCK + 10, 6 * BLOCK);
    object.prefetch(20 * BLOCK, 2 * BLOCK);
    object.prefetch(40 * BLOCK, BLOCK); // past the end: nothing
    for (offset, len) in [
        (3 * BLOCK + 10, 6 * BLOCK as usize),
        (20 * BLOCK, 2 * BLOCK as usize),
    ] {
        assert_eq!(
            read(&object, offset, len),
            data[offset as usize..offset as usize + len]
        );
    }
    assert_eq!(store.gets(), 2, "{:?}", store.ranges.lock().unwrap());
    assert_eq!(remote.stats().get_bytes, 9 * BLOCK);
}

#[test]
fn read_ahead_blocks_stay_cached_until_read_when_the_object_is_larger_than_the_cache() {
    let options = RemoteOptions {
        memory_cache: 64 * BLOCK,
        read_ahead: 16 * BLOCK,
        ..options()
    };
    let (_store, remote, object, data) = setup(256 * BLOCK as usize, &options);
    let piece = 16 << 10;
    read_in_pieces(&object, &data, piece);
    assert_eq!(
        remote.stats().get_bytes,
        data.len() as u64,
        "{:?}",
        remote.stats()
    );
}

#[test]
fn random_reads_are_not_read_ahead() {
    let (store, remote, object, _) = setup(32 * BLOCK as usize, &options());
    for block in [20, 3, 11, 27, 6] {
        read(&object, block * BLOCK + 1, 100);
    }
    assert_eq!(store.gets(), 5);
    assert_eq!(remote.stats().get_bytes, 5 * BLOCK);
}

#[test]
fn concurrent_readers_of_one_block_share_one_get() {
    let (store, _remote, object, data) = setup(4 * BLOCK as usize, &options());
    store.delay_ms.store(100, Ordering::SeqCst);
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let object = object.clone();
            std::thread::spawn(move || read(&object, BLOCK + i * 1000, 500))
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let at = BLOCK as usize + i * 1000;
        assert_eq!(reader.join().unwrap(), data[at..at + 500]);
    }
    assert_eq!(store.gets(), 1);
}

#[test]
fn a_replaced_object_fails_with_source_changed_for_good() {
    let (store, _remote, object, data) = setup(8 * BLOCK as usize, &options());
    read(&object, 0, 10);
    store.upload("data/file.bin", &pattern(data.len(), 99));
    let mut buf = vec![0; 10];
    let err = object.read_at(5 * BLOCK, &mut buf).unwrap_err();
    assert!(matches!(err, Error::SourceChanged { .. }), "{err}");
    assert!(
        err.to_string().contains("s3://bucket/data/file.bin"),
        "{err}"
    );
    let err = object.read_at(0, &mut buf).unwrap_err();
    assert!(
        matches!(err, Error::SourceChanged { .. }),
        "cached blocks too: {err}"
    );
    assert_eq!(err.errno(), libc::EIO);
}

#[test]
fn a_changed_size_is_a_changed_object_even_without_a_new_etag_check() {
    let (store, _remote, object, _) = setup(8 * BLOCK as usize, &options());
    store.upload("data/file.bin", &pattern(9 * BLOCK as usize, 1));
    let mut buf = vec![0; 10];
    assert!(matches!(
        object.read_at(0, &mut buf),
        Err(Error::SourceChanged { .. })
    ));
}

#[test]
fn a_failed_get_fails_that_read_and_a_later_read_recovers() {
    let (store, remote, object, data) = setup(8 * BLOCK as usize, &options());
    store.failing_gets.store(1, Ordering::SeqCst);
    let mut buf = vec![0; 10];
    let err = object.read_at(2 * BLOCK, &mut buf).unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.passes(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(
        read(&object, 2 * BLOCK, 10),
        data[2 * BLOCK as usize..2 * BLOCK as usize + 10]
    );
    assert_eq!(remote.stats().get_failures, 1);
}

#[test]
fn a_stalled_store_fails_the_read_after_the_wait_limit() {
    let options = RemoteOptions {
        timeout: Duration::from_millis(100),
        retry_timeout: Duration::from_millis(100),
        ..options()
    };
    let (store, _remote, object, data) = setup(4 * BLOCK as usize, &options);
    store.delay_ms.store(60_000, Ordering::SeqCst);
    let mut buf = vec![0; 10];
    let err = object.read_at(0, &mut buf).unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    store.delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(
        read(&object, 0, 10),
        data[..10],
        "the next read tries again"
    );
}

#[test]
fn reads_past_the_end_fail() {
    let (_store, _remote, object, _) = setup(1000, &options());
    let mut buf = vec![0; 10];
    assert!(object.read_at(995, &mut buf).is_err());
    assert!(object.read_at(u64::MAX, &mut buf).is_err());
    object.read_at(1000, &mut []).unwrap();
}

#[test]
fn a_second_remote_reads_from_the_disk_cache_without_gets() {
    let dir = ScratchDir::new("remote-disk-reuse");
    let options = RemoteOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..options()
    };
    let (store, first, object, data) = setup(10 * BLOCK as usize + 5, &options);
    assert_eq!(read(&object, 0, data.len()), data);
    assert_eq!(first.stats().disk_writes, 11);
    drop((object, first));
    let gets = store.gets();
    let second = connect(&store, "s3://bucket/data/file.bin", &options).unwrap();
    let object = second.root_object().unwrap();
    for (offset, len) in [(BLOCK * 3 + 5, 1000), (0, data.len())] {
        assert_eq!(
            read(&object, offset, len),
            data[offset as usize..offset as usize + len]
        );
    }
    assert_eq!(store.gets(), gets, "no data GETs");
    assert_eq!(second.stats().gets, 0);
    assert!(second.stats().disk_hits >= 11);
}

#[test]
fn the_disk_cache_does_not_serve_another_version() {
    let dir = ScratchDir::new("remote-disk-version");
    let options = RemoteOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..options()
    };
    let (store, first, object, data) = setup(4 * BLOCK as usize, &options);
    assert_eq!(read(&object, 0, data.len()), data);
    drop((object, first));
    let new = pattern(data.len(), 3);
    store.upload("data/file.bin", &new);
    let second = connect(&store, "s3://bucket/data/file.bin", &options).unwrap();
    assert_eq!(read(&second.root_object().unwrap(), 0, new.len()), new);
    assert_eq!(second.stats().disk_hits, 0);
}

#[test]
fn the_disk_cache_stays_within_its_bound() {
    let dir = ScratchDir::new("remote-disk-bound");
    let options = RemoteOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        disk_cache_size: 5 * BLOCK + 1000,
        ..options()
    };
    let (_store, remote, object, data) = setup(20 * BLOCK as usize, &options);
    for block in [0, 7, 3, 15, 9, 1, 12, 18, 4, 11, 19, 2] {
        read(&object, block * BLOCK, 10);
    }
    assert_eq!(read(&object, 0, data.len()), data);
    assert!(remote.stats().disk_writes >= 20);
    let on_disk: u64 = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= options.disk_cache_size,
        "{on_disk} bytes on disk"
    );
    assert!(on_disk >= 2 * BLOCK, "recent blocks stay: {on_disk}");
}

#[test]
fn the_memory_cache_stays_within_its_bound() {
    let options = RemoteOptions {
        memory_cache: 4 * BLOCK,
        ..options()
    };
    let (store, remote, object, _) = setup(16 * BLOCK as usize, &options);
    for round in 0..2 {
        for block in [0, 9, 3, 12, 6, 15, 1, 10, 4, 13, 7, 2, 11, 5, 14, 8] {
            read(&object, block * BLOCK, 10);
            let held = remote.core.blocks.memory_weight();
            assert!(
                held <= options.memory_cache,
                "round {round}: {held} bytes held"
            );
        }
    }
    assert!(
        store.gets() >= 16 + 12,
        "at most 4 blocks were kept: {} GETs",
        store.gets()
    );
}

#[test]
fn connect_finds_objects_prefixes_and_missing_keys() {
    let store = Arc::new(TestStore::default());
    store.upload("run7/a.h5", b"hdf");
    store.upload("run7/sub/b.npz", b"zip");
    let options = options();

    let remote = connect(&store, "s3://bucket/run7/", &options).unwrap();
    assert!(remote.root_object().is_none());
    let listing = remote.list("").unwrap();
    assert_eq!(listing.dirs, vec!["sub".to_string()]);
    assert_eq!(listing.objects, vec![("a.h5".to_string(), 3)]);
    assert_eq!(
        remote.list("sub").unwrap().objects,
        vec![("b.npz".to_string(), 3)]
    );
    assert_eq!(remote.open("sub/b.npz").unwrap().len(), 3);

    let remote = connect(&store, "s3://bucket/run7", &options).unwrap();
    assert!(remote.root_object().is_none(), "a key that is a prefix");
    assert_eq!(remote.list("").unwrap().objects.len(), 1);

    let remote = connect(&store, "s3://bucket/run7/a.h5", &options).unwrap();
    assert_eq!(remote.root_object().unwrap().url(), "s3://bucket/run7/a.h5");
    assert_eq!(
        remote.open("sub/b.npz").unwrap().len(),
        3,
        "keys beside the object"
    );

    let err = connect(&store, "s3://bucket/run7/missing.h5", &options)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("s3://bucket/run7/missing.h5") && text.contains("no such object"),
        "{text}"
    );
    assert!(!text.contains('\n'));
    let err = remote.open("nope").unwrap_err().to_string();
    assert!(
        err.contains("s3://bucket/run7/nope") && err.contains("no such object"),
        "{err}"
    );
}

#[test]
fn urls_are_recognised() {
    for url in [
        "s3://b/k",
        "gs://b/k",
        "az://c/k",
        "abfss://c@a.dfs.core.windows.net/k",
        "http://h/f",
        "https://h/f",
    ] {
        assert!(is_url(url), "{url}");
    }
    for text in ["/data/x.h5", "file.h5", "ftp://h/f", "s3:/b/k", "s3://"] {
        assert!(!is_url(text), "{text}");
    }
}

#[test]
fn a_read_that_joined_a_read_ahead_which_failed_fetches_again() {
    let (store, _remote, object, data) = setup(16 * BLOCK as usize, &options());
    read(&object, 0, 10);
    // The next read is sequential: it starts a read-ahead of blocks 1..5, which fails (slowly).
    store.delay_ms.store(300, Ordering::SeqCst);
    store.failing_gets.store(1, Ordering::SeqCst);
    read(&object, 10, 10);
    // Joins that read-ahead; once it fails, fetches block 1 itself and gets it.
    store.delay_ms.store(0, Ordering::SeqCst);
    let at = BLOCK as usize + 5;
    assert_eq!(read(&object, at as u64, 10), data[at..at + 10]);
}

/// A sequential read of 96 MiB in 1 MiB pieces, with `delay_ms` before every GET's answer;
/// the ranges the store was asked for. Without streaming GETs: read-ahead by ranged GETs
/// (what a sequential reader gets when every stream slot is taken).
fn sequential_read_ranges(delay_ms: u64) -> Vec<Range<u64>> {
    let options = RemoteOptions {
        block_size: 1 << 20,
        read_ahead: 64 << 20,
        memory_cache: 256 << 20,
        timeout: Duration::from_secs(10),
        stream_reads: false,
        ..options()
    };
    let (store, remote, object, data) = setup(96 << 20, &options);
    store.delay_ms.store(delay_ms, Ordering::SeqCst);
    let piece = 1 << 20;
    read_in_pieces(&object, &data, piece);
    assert_eq!(
        remote.stats().get_bytes,
        data.len() as u64,
        "no block fetched twice"
    );
    let ranges = store.ranges.lock().unwrap().clone();
    ranges
}

#[test]
fn read_ahead_gets_keep_their_usual_length_on_a_store_that_answers_at_once() {
    let ranges = sequential_read_ranges(0);
    assert!(
        ranges.iter().all(|r| r.end - r.start <= 17 << 20),
        "{ranges:?}"
    );
}

#[test]
fn read_ahead_gets_and_window_grow_when_the_first_byte_is_slow() {
    let slow = sequential_read_ranges(150);
    let fast = sequential_read_ranges(0);
    // Past the usual 16 MiB (+1 block), up to half the widest window (half the 256 MiB
    // memory cache): 64 MiB; the last one may end at the object's end.
    assert!(slow.iter().any(|r| r.end - r.start > 20 << 20), "{slow:?}");
    assert!(slow.iter().all(|r| r.end - r.start <= 65 << 20), "{slow:?}");
    assert!(slow.len() < fast.len(), "slow {slow:?}, fast {fast:?}");
}

/// GETs and bytes fetched by a sequential read of `len` bytes in 16 KiB pieces, with or
/// without streaming GETs.
fn sequential_read_cost(len: usize, stream_reads: bool) -> (u64, u64) {
    let options = RemoteOptions {
        read_ahead: 16 * BLOCK,
        memory_cache: 64 * BLOCK,
        stream_reads,
        ..options()
    };
    let (store, remote, object, data) = setup(len, &options);
    let piece = 16 << 10;
    read_in_pieces(&object, &data, piece);
    (store.gets(), remote.stats().get_bytes)
}

#[test]
fn without_streams_reading_4n_bytes_costs_about_4_times_the_gets_of_n() {
    let n = 64 * BLOCK as usize;
    let (gets, bytes) = sequential_read_cost(n, false);
    let (gets_4n, bytes_4n) = sequential_read_cost(4 * n, false);
    assert_eq!(
        (bytes, bytes_4n),
        (n as u64, 4 * n as u64),
        "every byte once"
    );
    assert!(gets >= 4, "read-ahead in steps, not one GET: {gets}");
    let ratio = gets_4n as f64 / gets as f64;
    assert!(
        (3.0..=4.5).contains(&ratio),
        "{gets} GETs for n, {gets_4n} for 4n"
    );
}

#[test]
fn cached_blocks_between_missing_ones_are_fetched_again_rather_than_split_the_get() {
    let options = RemoteOptions {
        block_size: 1 << 20,
        memory_cache: 64 << 20,
        ..options()
    };
    let mib = 1u64 << 20;
    let (store, _remote, object, data) = setup(16 << 20, &options);
    let slice = |from: u64, to: u64| data[from as usize..to as usize].to_vec();
    // Blocks 5 and 7 cached, one apart: one GET brings 2..10, blocks 5 and 7 again.
    assert_eq!(read(&object, 5 * mib, 10), slice(5 * mib, 5 * mib + 10));
    assert_eq!(read(&object, 7 * mib, 10), slice(7 * mib, 7 * mib + 10));
    assert_eq!(read(&object, 2 * mib, 8 << 20), slice(2 * mib, 10 * mib));
    let ranges = store.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[2], 2 * mib..10 * mib, "{ranges:?}");
    // Blocks 12 and 13 cached: a gap of 2 MiB is worth a second GET.
    assert_eq!(read(&object, 12 * mib, 2 << 20), slice(12 * mib, 14 * mib));
    assert_eq!(read(&object, 11 * mib, 4 << 20), slice(11 * mib, 15 * mib));
    let mut ranges = store.ranges.lock().unwrap().clone();
    ranges[4..].sort_by_key(|r| r.start);
    assert_eq!(
        ranges[4..],
        [11 * mib..12 * mib, 14 * mib..15 * mib],
        "{ranges:?}"
    );
}

#[test]
fn with_streams_reading_4n_bytes_costs_the_gets_of_n() {
    let n = 64 * BLOCK as usize;
    let (gets, bytes) = sequential_read_cost(n, true);
    let (gets_4n, bytes_4n) = sequential_read_cost(4 * n, true);
    assert_eq!(
        (bytes, bytes_4n),
        (n as u64, 4 * n as u64),
        "every byte once"
    );
    assert_eq!(
        (gets, gets_4n),
        (2, 2),
        "the first read's GET, then one stream"
    );
}

/// Options for the streaming tests: a 16-block read-ahead window in a 64-block cache.
fn stream_options() -> RemoteOptions {
    RemoteOptions {
        read_ahead: 16 * BLOCK,
        memory_cache: 64 * BLOCK,
        ..options()
    }
}

#[test]
fn a_sequential_reader_is_served_by_one_streaming_get_read_no_further_than_its_window() {
    let options = stream_options();
    let (store, remote, object, data) = setup(256 * BLOCK as usize, &options);
    let piece = 16 << 10;
    for offset in (0..data.len()).step_by(piece) {
        assert_eq!(
            read(&object, offset as u64, piece),
            data[offset..offset + piece]
        );
        // The body is polled only as far as the blocks handed to the stream: the reader's
        // block and the read-ahead window past it (plus one piece being cut into a block).
        let polled = store.bodies.polled.load(Ordering::SeqCst);
        let limit = offset as u64 + piece as u64 + options.read_ahead + 2 * BLOCK;
        assert!(
            polled <= limit,
            "{polled} bytes polled with the reader at {offset}"
        );
    }
    let ranges = store.ranges.lock().unwrap().clone();
    assert_eq!(
        ranges,
        [0..BLOCK, BLOCK..data.len() as u64],
        "the first read (not yet sequential), then one GET of the rest"
    );
    assert_eq!(
        remote.stats().get_bytes,
        data.len() as u64,
        "every byte once"
    );
    assert_eq!(remote.core.blocks.streams_alive(), 1);
    drop((object, remote));
    assert_eq!(
        store.bodies.open.load(Ordering::SeqCst),
        0,
        "unmounting drops the stream's GET"
    );
}

/// The bodies open once they are `expected` (a ranged GET drops its body just after
/// waking its readers), or after a few seconds.
fn open_bodies_soon(store: &TestStore, expected: u64) -> u64 {
    for _ in 0..500 {
        let open = store.bodies.open.load(Ordering::SeqCst);
        if open == expected {
            return open;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    store.bodies.open.load(Ordering::SeqCst)
}

#[test]
fn a_reader_that_jumps_away_drops_its_stream() {
    let options = stream_options();
    let (store, _remote, object, data) = setup(256 * BLOCK as usize, &options);
    let piece = 16 << 10;
    let read_from = |start: u64, blocks: u64| {
        for offset in (start..start + blocks * BLOCK).step_by(piece) {
            let at = offset as usize;
            assert_eq!(read(&object, offset, piece), data[at..at + piece]);
        }
    };
    read_from(0, 8);
    assert_eq!(open_bodies_soon(&store, 1), 1);
    // Forward, past what the stream would read through: a new stream from there; the old
    // one ends (its GET dropped) once it brought what it was handed.
    read_from(200 * BLOCK, 8);
    assert_eq!(open_bodies_soon(&store, 1), 1, "one GET open");
    let ranges = store.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 4, "{ranges:?}");
    assert_eq!(ranges[3], 201 * BLOCK..data.len() as u64, "{ranges:?}");
    // Back: a new stream from there; the old one ends with what it was handed.
    read_from(100 * BLOCK, 8);
    let ranges = store.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 6, "{ranges:?}");
    assert_eq!(ranges[5], 101 * BLOCK..data.len() as u64, "{ranges:?}");
    let polled = store.bodies.polled.load(Ordering::SeqCst);
    assert!(
        polled < 3 * (8 + 16 + 2) * BLOCK,
        "no stream read far past its reader: {polled} bytes"
    );
}

#[test]
fn a_random_read_a_little_ahead_of_a_stream_is_served_by_it() {
    let (store, remote, object, data) = setup(256 * BLOCK as usize, &stream_options());
    let piece = 16 << 10;
    for offset in (0..8 * BLOCK as usize).step_by(piece) {
        assert_eq!(
            read(&object, offset as u64, piece),
            data[offset..offset + piece]
        );
    }
    assert_eq!(store.gets(), 2);
    // Within the stream's reach (a 16-block window here): no GET of its own.
    let at = 30 * BLOCK as usize + 7;
    assert_eq!(read(&object, at as u64, 100), data[at..at + 100]);
    assert_eq!(store.gets(), 2, "{:?}", store.ranges.lock().unwrap());
    // Far ahead: a GET of its own; the stream is left alone.
    let at = 200 * BLOCK as usize + 7;
    assert_eq!(read(&object, at as u64, 100), data[at..at + 100]);
    let ranges = store.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[2], 200 * BLOCK..201 * BLOCK);
    assert_eq!(remote.core.blocks.streams_alive(), 1);
    assert_eq!(
        remote.stats().get_bytes,
        31 * BLOCK + BLOCK,
        "the stream read up to block 30, no further"
    );
}

/// A sequential read of `data` in 16 KiB pieces by a stream whose body breaks off (or
/// stalls) after 10 blocks: every read succeeds, its blocks fetched again by range.
fn read_through_a_cut(stalls: bool, options: &RemoteOptions) {
    let (store, remote, object, data) = setup(64 * BLOCK as usize, options);
    store.bodies.cut_stalls.store(stalls, Ordering::SeqCst);
    store.bodies.cut_after.store(10 * BLOCK, Ordering::SeqCst);
    read_in_pieces(&object, &data, 16 << 10);
    assert_eq!(store.bodies.cut_after.load(Ordering::SeqCst), 0, "cut");
    assert_eq!(remote.stats().get_failures, 1, "{:?}", remote.stats());
    let ranges = store.ranges.lock().unwrap().clone();
    assert_eq!(ranges[1], BLOCK..data.len() as u64, "a stream: {ranges:?}");
    assert!(ranges.len() >= 3, "then by range: {ranges:?}");
}

#[test]
fn a_stream_cut_mid_body_is_refetched_by_range() {
    read_through_a_cut(false, &stream_options());
}

#[test]
fn a_stalled_stream_is_refetched_by_range_and_never_hangs() {
    let options = RemoteOptions {
        timeout: Duration::from_millis(200),
        retry_timeout: Duration::from_millis(200),
        ..stream_options()
    };
    read_through_a_cut(true, &options);
}

#[test]
fn a_failed_streaming_get_fails_the_read_and_a_later_read_recovers() {
    let (store, _remote, object, data) = setup(64 * BLOCK as usize, &stream_options());
    read(&object, 0, 10);
    store.failing_gets.store(1, Ordering::SeqCst);
    // Sequential: block 0 is cached, so this read's GET is the stream's (for blocks 1..).
    let mut buf = vec![0; BLOCK as usize];
    let err = object.read_at(10, &mut buf).unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(
        read(&object, 10, BLOCK as usize),
        data[10..10 + BLOCK as usize]
    );
}

#[test]
fn an_object_replaced_mid_stream_fails_with_source_changed() {
    let (store, _remote, object, data) = setup(64 * BLOCK as usize, &stream_options());
    let piece = 16 << 10;
    for offset in (0..4 * BLOCK as usize).step_by(piece) {
        assert_eq!(
            read(&object, offset as u64, piece),
            data[offset..offset + piece]
        );
    }
    assert_eq!(
        store.ranges.lock().unwrap()[1],
        BLOCK..data.len() as u64,
        "a stream"
    );
    store.upload("data/file.bin", &pattern(data.len(), 99));
    // The stream's GET serves the version it was sent for (If-Match held when it was
    // sent): its blocks are still the opened object's. Once it breaks, the GETs that take
    // over meet the new version: EIO for good, never a mix of two versions.
    let polled = store.bodies.polled.load(Ordering::SeqCst);
    store.bodies.cut_after.store(polled + 1, Ordering::SeqCst);
    let mut failed = None;
    for offset in (4 * BLOCK as usize..data.len()).step_by(piece) {
        let mut buf = vec![0; piece];
        match object.read_at(offset as u64, &mut buf) {
            Ok(()) => assert_eq!(buf, data[offset..offset + piece], "at {offset}"),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("the replacement was noticed");
    assert!(matches!(err, Error::SourceChanged { .. }), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    let mut buf = vec![0; 10];
    let err = object.read_at(0, &mut buf).unwrap_err();
    assert!(
        matches!(err, Error::SourceChanged { .. }),
        "for good: {err}"
    );
}

#[test]
fn a_sequential_reader_on_a_warm_disk_cache_sends_no_gets() {
    let dir = ScratchDir::new("remote-disk-stream");
    let options = RemoteOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..stream_options()
    };
    let (store, first, object, data) = setup(128 * BLOCK as usize, &options);
    read_in_pieces(&object, &data, 16 << 10);
    assert_eq!(first.stats().disk_writes, 128);
    drop((object, first));
    let gets = store.gets();
    let second = connect(&store, "s3://bucket/data/file.bin", &options).unwrap();
    read_in_pieces(&second.root_object().unwrap(), &data, 16 << 10);
    assert_eq!(store.gets(), gets, "no data GETs");
    assert_eq!(second.stats().disk_hits, 128);
}
