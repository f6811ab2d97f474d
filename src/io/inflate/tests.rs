//! The oracle is flate2's encoder: random reads of what it compressed must give back the
//! original bytes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

/// A temporary file holding `prefix` junk then `data` deflated; removed on drop.
struct Fixture {
    path: PathBuf,
    file: Arc<SourceFile>,
    range: DeflateRange,
}

impl Fixture {
    fn new(data: &[u8], level: u32, prefix: usize) -> Fixture {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(data).unwrap();
        let compressed = encoder.finish().unwrap();
        Fixture::from_compressed(&compressed, data, prefix)
    }

    fn from_compressed(compressed: &[u8], data: &[u8], prefix: usize) -> Fixture {
        let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("arrfs-inflate-{}-{n}", std::process::id()));
        let mut bytes = vec![0xa5; prefix];
        bytes.extend_from_slice(compressed);
        std::fs::write(&path, &bytes).unwrap();
        let range = DeflateRange {
            start: prefix as u64,
            compressed_len: compressed.len() as u64,
            size: data.len() as u64,
            crc32: Some(crc32fast::hash(data)),
        };
        let file = Arc::new(SourceFile::open(&crate::io::Location::local(&path)).unwrap());
        Fixture { path, file, range }
    }

    fn stream(&self, store: &Arc<SeekPointStore>, interval: u64) -> SeekableInflate {
        SeekableInflate::new(
            self.file.clone(),
            self.range.clone(),
            "test".into(),
            store.clone(),
        )
        .with_interval(interval)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Compressible but not trivial: runs of repeated words mixed with noise.
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => out.extend_from_slice(&x.to_le_bytes()),
            _ => out.extend_from_slice(b"arrfs-npz "),
        }
    }
    out.truncate(len);
    out
}

fn read(stream: &SeekableInflate, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    stream.read_at(offset, &mut buf)?;
    Ok(buf)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(24)))]

    #[test]
    fn random_reads_equal_the_original(
        len in 0usize..400_000,
        seed in any::<u64>(),
        level in 0u32..10,
        interval_kib in 1u64..64,
        reads in prop::collection::vec((any::<u64>(), 1usize..70_000), 1..40),
    ) {
        let data = sample(len, seed);
        let fixture = Fixture::new(&data, level, 7);
        let store = SeekPointStore::new(1 << 20);
        let stream = fixture.stream(&store, interval_kib << 10);
        for (at, want) in reads {
            if data.is_empty() {
                break;
            }
            let offset = at % data.len() as u64;
            let n = want.min(data.len() - offset as usize);
            let got = read(&stream, offset, n).unwrap();
            prop_assert_eq!(&got[..], &data[offset as usize..offset as usize + n]);
        }
    }
}

#[test]
fn tiny_store_still_reads_correctly() {
    let data = sample(3 << 20, 42);
    let fixture = Fixture::new(&data, 6, 0);
    // Room for 8 snapshots only: seek points are evicted and reads fall back further.
    let store = SeekPointStore::new(0);
    let stream = fixture.stream(&store, 64 << 10);
    for offset in [3_000_000u64, 10, 2_000_000, 1_500_000, 3_145_000, 700_000] {
        let n = 4096.min(data.len() - offset as usize);
        assert_eq!(
            read(&stream, offset, n).unwrap(),
            data[offset as usize..][..n]
        );
    }
    assert!(store.entries.len() as u64 <= store.capacity());
}

#[test]
fn seek_points_bound_the_work_of_a_late_read() {
    let data = sample(4 << 20, 7);
    let fixture = Fixture::new(&data, 6, 0);
    let store = SeekPointStore::new(64 << 20);
    let stream = fixture.stream(&store, 1 << 20);
    read(&stream, (4 << 20) - 10, 10).unwrap();
    // The pass to the end left seek points at 1, 2 and 3 MiB.
    for k in 1..4 {
        assert!(store.contains(stream.id, k), "seek point {k}");
    }
    let from = stream.start_for((3 << 20) + 5);
    assert_eq!(from.out_pos, 3 << 20);
    assert_eq!(
        read(&stream, (3 << 20) + 5, 100).unwrap(),
        data[(3 << 20) + 5..][..100]
    );
}

#[test]
fn crc_mismatch_fails_the_read_that_reaches_the_end() {
    let data = sample(100_000, 3);
    let mut fixture = Fixture::new(&data, 6, 0);
    fixture.range.crc32 = Some(fixture.range.crc32.unwrap() ^ 1);
    let store = SeekPointStore::new(1 << 20);
    let stream = fixture.stream(&store, 1 << 20);
    let err = read(&stream, 0, 10).unwrap_err();
    assert!(err.to_string().contains("CRC-32 mismatch"), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert!(
        read(&stream, 0, 10).is_err(),
        "a corrupt stream stays failed"
    );
}

#[test]
fn truncated_stream_is_an_error_not_a_hang() {
    let data = sample(200_000, 5);
    let mut fixture = Fixture::new(&data, 6, 0);
    fixture.range.compressed_len /= 2;
    let store = SeekPointStore::new(1 << 20);
    let stream = fixture.stream(&store, 1 << 20);
    let err = read(&stream, 150_000, 10).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn garbage_is_an_error() {
    let junk = sample(50_000, 9);
    let noise: Vec<u8> = junk.iter().map(|b| b.wrapping_mul(31) ^ 0x5c).collect();
    let fixture = Fixture::from_compressed(&noise, &junk, 0);
    let store = SeekPointStore::new(1 << 20);
    let stream = fixture.stream(&store, 1 << 20);
    assert!(read(&stream, 0, 1000).is_err());
}

#[test]
fn output_beyond_the_declared_size_is_refused() {
    let data = vec![0u8; 5 << 20];
    let mut fixture = Fixture::new(&data, 9, 0);
    fixture.range.size = 1 << 20;
    fixture.range.crc32 = None;
    let store = SeekPointStore::new(1 << 20);
    let stream = fixture.stream(&store, 1 << 20);
    let err = read(&stream, (1 << 20) - 4, 4).unwrap_err();
    assert!(err.to_string().contains("more than the declared"), "{err}");
}

#[test]
fn scan_sniffs_and_counts() {
    let data = sample(300_000, 11);
    let fixture = Fixture::new(&data, 6, 3);
    let r = &fixture.range;
    let (head, _) = scan(&fixture.file, r.start, r.compressed_len, 6, false).unwrap();
    assert_eq!(head, data[..6]);
    let (_, size) = scan(&fixture.file, r.start, r.compressed_len, 0, true).unwrap();
    assert_eq!(size, data.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(64)))]

    /// Corrupt compressed bytes: every read ends with bytes or an error, never a panic or
    /// a hang, and a read that succeeds past the CRC check is the original.
    #[test]
    fn corrupt_streams_fail_cleanly(
        seed in any::<u64>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        reads in prop::collection::vec((any::<prop::sample::Index>(), 1usize..5000), 1..6),
    ) {
        let data = sample(60_000, seed);
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(&data).unwrap();
        let mut compressed = encoder.finish().unwrap();
        for (at, value) in edits {
            let i = at.index(compressed.len());
            compressed[i] = value;
        }
        let fixture = Fixture::from_compressed(&compressed, &data, 0);
        let store = SeekPointStore::new(1 << 20);
        let stream = fixture.stream(&store, 16 << 10);
        for (at, want) in reads {
            let offset = at.index(data.len());
            let n = want.min(data.len() - offset);
            let _ = read(&stream, offset as u64, n);
        }
        if let Ok(all) = read(&stream, 0, data.len()) {
            prop_assert_eq!(all, data);
        }
    }
}
