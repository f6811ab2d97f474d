//! Peak memory of reads that only libhdf5 can do (issue 16, "memory bounded on every
//! path"): the daemon reads such data in pieces of at most one FUSE request, so libhdf5
//! never allocates a whole selection. Files are written by h5py in the test run
//! (tests/py/memory_cases.py) and every byte is compared with h5py's own reading.

mod common;

use common::{run_py, vm_hwm_kib, Mount, TempDir};

const CACHE_MIB: u64 = 32;
/// `--cache-size` + 64 MiB + 64 MiB of documented per-chunk and per-entry bounds (the
/// campaign's bound, `scripts/fuzz-mounts`).
const BOUND_MIB: u64 = CACHE_MIB + 64 + 64;

/// A 256 MiB virtual dataset over four files of 1 KiB chunks, read in full (front to back,
/// at random offsets and by `np.load`) under `--cache-size 32M`.
#[test]
fn a_virtual_dataset_over_tiny_chunks_reads_in_full_within_the_memory_bound() {
    let tmp = TempDir::new("memory-vds");
    let virtual_bytes: u64 = run_py(
        "memory_cases.py",
        &["write_vds", tmp.path().to_str().unwrap()],
    )
    .trim()
    .parse()
    .unwrap();
    assert!(
        virtual_bytes > BOUND_MIB << 20,
        "the dataset ({virtual_bytes} bytes) must not fit in the bound, or the test proves nothing"
    );
    let mount = Mount::new(
        &tmp.join("vds.h5"),
        &["--cache-size", &format!("{CACHE_MIB}M")],
    );
    let dir = tmp.path().to_str().unwrap();
    let point = mount.point.to_str().unwrap();
    let out = run_py("memory_cases.py", &["check_vds", dir, point]);
    assert_eq!(out.trim(), "ok");
    let peak_mib = vm_hwm_kib(mount.pid()) / 1024;
    eprintln!(
        "VDS of {} MiB read in full: peak {peak_mib} MiB",
        virtual_bytes >> 20
    );
    assert!(
        peak_mib <= BOUND_MIB,
        "peak {peak_mib} MiB, bound {BOUND_MIB} MiB"
    );
    let log = mount.stop();
    assert!(!log.contains("ERROR"), "{log}");
}
