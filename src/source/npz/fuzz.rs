//! Random mutations of a real small zip (written here by the `zip` crate: stored and
//! deflated `.npy` members, a subdirectory, a raw member): opening, listing and reading
//! must end with data or an error, never a panic, a hang or an allocation of the declared
//! sizes.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use proptest::prelude::*;
use zip::write::SimpleFileOptions;

use super::*;
use crate::npy::{ByteOrder, Dtype, NpyHeader};
use crate::source::ROOT;

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

fn npy(n: u64) -> Vec<u8> {
    let header = NpyHeader::new(Dtype::plain('f', ByteOrder::Little, 8), vec![n]);
    let mut bytes = header.encode();
    bytes.extend((0..n).flat_map(|i| (i as f64).to_le_bytes()));
    bytes
}

/// np.savez-like archive: `a.npy` stored, `b.npy` and `sub/c.npy` deflated, `notes` raw.
static ARCHIVE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    let members = [
        ("a.npy", stored, npy(40)),
        ("b.npy", deflated, npy(3000)),
        ("sub/c.npy", deflated, npy(10)),
        ("notes", stored, b"not an array".to_vec()),
    ];
    for (name, options, bytes) in members {
        zip.start_file(name, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
});

/// Opens `bytes` as a zip source and reads the head and tail of every member.
fn exercise(bytes: &[u8]) {
    let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("arrfs-zipfuzz-{}-{n}.zip", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    if let Ok(source) = ZipSource::open(&Location::local(&path), &SourceOptions::default()) {
        read_tree(&source, ROOT);
    }
    std::fs::remove_file(&path).unwrap();
}

fn read_tree(source: &ZipSource, dir: Key) {
    let Ok(listing) = source.list(dir) else {
        return;
    };
    for entry in listing.entries {
        match entry.kind {
            EntryKind::Dir => read_tree(source, entry.key),
            EntryKind::Blob { size } => {
                let n = size.min(4096);
                let mut buf = vec![0; n as usize];
                let _ = source.read(entry.key, 0, &mut buf);
                let _ = source.read(entry.key, size - n, &mut buf);
            }
            _ => {}
        }
    }
}

/// Byte positions: anywhere, or in the central directory at the end.
fn position() -> impl Strategy<Value = prop::sample::Index> {
    any::<prop::sample::Index>()
}

#[test]
fn the_unmutated_archive_reads_back() {
    let path = std::env::temp_dir().join(format!("arrfs-zipfuzz-{}-plain.zip", std::process::id()));
    std::fs::write(&path, &*ARCHIVE).unwrap();
    let source = ZipSource::open(&Location::local(&path), &SourceOptions::default()).unwrap();
    let names: Vec<String> = source
        .list(ROOT)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a.npy", "b.npy", "sub", "notes"]);
    let mut buf = vec![0; npy(3000).len()];
    source.read(2, 0, &mut buf).unwrap();
    assert_eq!(buf, npy(3000));
    std::fs::remove_file(&path).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(300)))]

    #[test]
    fn mutated_archives_never_panic(
        edits in prop::collection::vec((position(), any::<bool>(), any::<u8>()), 1..8),
        cut in prop::option::weighted(0.2, position()),
    ) {
        let mut bytes = ARCHIVE.clone();
        let len = bytes.len();
        for (at, near_end, value) in edits {
            // Half the edits hit the last 200 bytes: the central directory and its end.
            let i = if near_end { len - 1 - at.index(200.min(len)) } else { at.index(len) };
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(len));
        }
        exercise(&bytes);
    }
}
