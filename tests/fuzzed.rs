//! Regression tests for mutants the fuzz campaign found (tests/fixtures/hdf5/fuzzed/README.md
//! says where each came from): a damaged variable-length string dataset is left out with its
//! reason, the mount comes up (the hang was in libhdf5's global heap parser, inside the HDF5
//! check), and the daemon's peak memory stays within `--cache-size` + 64 MiB + 64 MiB of
//! documented bounds (libhdf5 used to allocate what a damaged length said: up to 2.9 GB).

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;

use common::{vm_hwm_kib, Mount};

const CACHE_MIB: u64 = 32;
const BOUND_MIB: u64 = CACHE_MIB + 64 + 64;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5/fuzzed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("h5")))
        // The others there have tests of their own (the README says which).
        .filter(|p| p.to_string_lossy().contains("vlen_string"))
        .collect();
    files.sort();
    files
}

#[test]
fn damaged_vlen_string_datasets_are_left_out_within_the_memory_bound() {
    let files = fixtures();
    assert_eq!(files.len(), 4, "{files:?}");
    for file in files {
        // Mount::new fails the test if the mount does not answer within its deadline.
        let mount = Mount::new(&file, &["--cache-size", &format!("{CACHE_MIB}M")]);
        let listed: Vec<_> = std::fs::read_dir(&mount.point).unwrap().collect();
        assert!(listed.is_empty(), "{}: {listed:?}", file.display());
        let skipped = xattr(&mount.point, "user.arrfs.skipped");
        assert!(
            skipped.contains("global heap collection"),
            "{}: {skipped}",
            file.display()
        );
        let peak_mib = vm_hwm_kib(mount.pid()) / 1024;
        assert!(
            peak_mib <= BOUND_MIB,
            "{}: peak {peak_mib} MiB",
            file.display()
        );
        mount.stop();
    }
}

fn xattr(path: &std::path::Path, name: &str) -> String {
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
