//! The range reader over object_store's in-memory store, wrapped to count GETs and to make
//! them fail or stall: caches, coalescing, read-ahead, one fetch per block, changed
//! objects, the disk cache and its bound. No network.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
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
        self.inner.get_opts(p, o).await
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
/// the ranges the store was asked for.
fn sequential_read_ranges(delay_ms: u64) -> Vec<Range<u64>> {
    let options = RemoteOptions {
        block_size: 1 << 20,
        read_ahead: 64 << 20,
        memory_cache: 256 << 20,
        timeout: Duration::from_secs(10),
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

/// GETs and bytes fetched by a sequential read of `len` bytes in 16 KiB pieces.
fn sequential_read_cost(len: usize) -> (u64, u64) {
    let options = RemoteOptions {
        read_ahead: 16 * BLOCK,
        memory_cache: 64 * BLOCK,
        ..options()
    };
    let (store, remote, object, data) = setup(len, &options);
    let piece = 16 << 10;
    read_in_pieces(&object, &data, piece);
    (store.gets(), remote.stats().get_bytes)
}

#[test]
fn reading_4n_bytes_costs_about_4_times_the_gets_of_n() {
    let n = 64 * BLOCK as usize;
    let (gets, bytes) = sequential_read_cost(n);
    let (gets_4n, bytes_4n) = sequential_read_cost(4 * n);
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
