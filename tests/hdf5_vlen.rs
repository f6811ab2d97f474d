//! Variable-length strings outside contiguous datasets (tests/py/vlen_cases.py, written by
//! h5py in the test run): chunked (plain and gzip) and compact datasets, attributes, and
//! compound members in every layout, with object headers of versions 1 and 2, read as h5py
//! reads them; and, with their global heap
//! damaged, checked before libhdf5 follows them (src/source/hdf5/heap.rs, ohdr.rs). Before
//! that check covered them, a collection with a free-space object of size 0 made libhdf5
//! spin forever and a damaged length made it allocate 2 GB.

mod common;

use common::{run_py, vm_hwm_kib, Mount, TempDir};

const CACHE_MIB: u64 = 32;
/// `--cache-size` + 64 MiB + 64 MiB of documented bounds, as in `scripts/fuzz-mounts`.
const BOUND_MIB: u64 = CACHE_MIB + 64 + 64;

#[test]
fn strings_in_chunks_compact_datasets_and_attributes_read_as_h5py_reads_them() {
    let tmp = TempDir::new("vlen-good");
    run_py("vlen_cases.py", &["write", tmp.path().to_str().unwrap()]);
    let mount = Mount::new(&tmp.join("good"), &[]);
    let out = run_py(
        "vlen_cases.py",
        &[
            "check",
            tmp.path().to_str().unwrap(),
            mount.point.to_str().unwrap(),
        ],
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn damaged_strings_in_chunks_compact_datasets_and_attributes_are_left_out_within_the_bound() {
    let tmp = TempDir::new("vlen-damaged");
    let names = run_py("vlen_cases.py", &["write", tmp.path().to_str().unwrap()]);
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 23, "{names:?}");
    for name in names {
        let file = tmp.join(name);
        // Mount::new fails the test if the mount does not answer within its deadline (the
        // HDF5 check would hang on the spinning collection).
        let mount = Mount::new(&file, &["--cache-size", &format!("{CACHE_MIB}M")]);
        let out = run_py(
            "vlen_cases.py",
            &[
                "check_damaged",
                file.to_str().unwrap(),
                mount.point.to_str().unwrap(),
            ],
        );
        assert_eq!(out.trim(), "ok", "{name}");
        let peak_mib = vm_hwm_kib(mount.pid()) / 1024;
        eprintln!("{name}: peak {peak_mib} MiB");
        assert!(peak_mib <= BOUND_MIB, "{name}: peak {peak_mib} MiB");
        mount.stop();
    }
}
