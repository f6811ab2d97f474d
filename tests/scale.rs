//! Costs grow linearly with the size of a container: reading a chunked dataset of 4n chunks
//! does about 4 times the chunk-index work of n chunks (a lookup per chunk through libhdf5
//! 1.10 made it 16 times). Work is counted, never timed. One test per binary: the counters
//! are process-wide.

mod common;

use std::ffi::OsStr;

use arrfs::source::{self, EntryKind, SourceOptions, ROOT};
use common::{run_py, TempDir};

/// Reads dataset `x` of an h5py file with `n` gzip chunks through the HDF5 source in 128 KiB
/// pieces, checks every byte against h5py's reading, and returns the chunk-table work done.
fn chunk_work_reading(dir: &TempDir, n: u64) -> u64 {
    let h5 = dir.join(&format!("chunks{n}.h5"));
    let npy = dir.join(&format!("chunks{n}.npy"));
    let n_arg = n.to_string();
    run_py(
        "scale_cases.py",
        &[
            OsStr::new("chunks"),
            OsStr::new(&n_arg),
            h5.as_os_str(),
            npy.as_os_str(),
        ],
    );
    let expected = std::fs::read(&npy).unwrap();
    let before = arrfs::source::hdf5::chunk_table_work();
    let src = source::open(&arrfs::io::Location::local(&h5), &SourceOptions::default()).unwrap();
    let listing = src.list(ROOT).unwrap();
    let entry = &listing.entries[0];
    let EntryKind::Array(header) = &entry.kind else {
        panic!("x is not an array: {:?}", entry.kind)
    };
    let len = header.payload_len();
    let mut payload = vec![0u8; len as usize];
    for (i, piece) in payload.chunks_mut(128 << 10).enumerate() {
        src.read(entry.key, i as u64 * (128 << 10), piece).unwrap();
    }
    assert!(
        expected.ends_with(&payload),
        "payload differs from h5py's reading"
    );
    arrfs::source::hdf5::chunk_table_work() - before
}

#[test]
fn reading_4n_chunks_costs_about_4_times_n() {
    let dir = TempDir::new("scale-chunks");
    let n = 2_000;
    let small = chunk_work_reading(&dir, n);
    let large = chunk_work_reading(&dir, 4 * n);
    assert!(
        small >= n,
        "the work counter counted {small} for {n} chunks"
    );
    let ratio = large as f64 / small as f64;
    assert!(
        ratio <= 4.5,
        "chunk-table work {small} for {n} chunks, {large} for {}: x{ratio:.1}",
        4 * n
    );
}

/// A PyTables index that a flipped bit made 4,294,967,297 rows of 1-row chunks, two of them
/// written (tests/fixtures/hdf5/fuzzed/006733-flip-indexes_2_1.h5): a read far from the
/// written chunks is filled at once, without looking up each of its 131,072 chunks (it was
/// served at 4 MB/s chunk by chunk), and equals h5py's reading.
#[test]
fn a_read_of_never_written_chunks_does_not_visit_them_one_by_one() {
    let dir = TempDir::new("scale-unwritten");
    let h5 = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hdf5/fuzzed/006733-flip-indexes_2_1.h5");
    let (start, rows) = (4_194_304u64, 65_536u64);
    let expected_path = dir.join("rows.bin");
    let (a, b) = (start.to_string(), (start + rows).to_string());
    run_py(
        "scale_cases.py",
        &[
            OsStr::new("rows"),
            h5.as_os_str(),
            OsStr::new("_i_table1/var2/indices"),
            OsStr::new(&a),
            OsStr::new(&b),
            expected_path.as_os_str(),
        ],
    );
    let expected = std::fs::read(&expected_path).unwrap();
    let src = source::open(&arrfs::io::Location::local(&h5), &SourceOptions::default()).unwrap();
    let mut dir_key = ROOT;
    for name in ["_i_table1", "var2"] {
        let listing = src.list(dir_key).unwrap();
        dir_key = listing.entries.iter().find(|e| e.name == name).unwrap().key;
    }
    let listing = src.list(dir_key).unwrap();
    let indices = listing
        .entries
        .iter()
        .find(|e| e.name == "indices.npy")
        .unwrap();
    let mut got = vec![0u8; expected.len()];
    src.read(indices.key, 0, &mut [0u8; 16]).unwrap();
    let before = arrfs::source::hdf5::chunk_table_work();
    src.read(indices.key, start * 16, &mut got).unwrap();
    let work = arrfs::source::hdf5::chunk_table_work() - before;
    assert!(got == expected, "the rows differ from h5py's reading");
    assert!(work < 1_000, "{work} chunk-table probes for one 1 MiB read");
}
