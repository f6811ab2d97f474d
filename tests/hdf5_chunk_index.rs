//! Datasets under every HDF5 chunk index type (v1 B-tree; single chunk, implicit, fixed array,
//! extensible array, v2 B-tree), with and without filters, partial edge chunks and chunks
//! never written: every virtual file equals np.save of h5py's reading, through the direct
//! chunk path and through libhdf5 (and through libhdf5 reading the file through arrfs's
//! driver, `ARRFS_HDF5_VFD=1`). Both agreeing with h5py byte for byte makes all three equal.

mod common;

use std::ffi::OsStr;

use common::{run_py, Mount, TempDir};

/// The files `chunk_index_cases.py write` makes, with how many datasets each holds.
const FILES: [(&str, usize); 3] = [("index.h5", 26), ("index_v110.h5", 4), ("index_v1.h5", 6)];

/// Mounts each file with `env`, checks every dataset; returns the daemons' logs.
fn check_every_index(name: &str, env: &[(&str, &str)]) -> String {
    let dir = TempDir::new(name);
    run_py(
        "chunk_index_cases.py",
        &[OsStr::new("write"), dir.join("index.h5").as_os_str()],
    );
    let mut logs = String::new();
    for (file, count) in FILES {
        let fixture = dir.join(file);
        let mount = Mount::with_env(&fixture, &[], env);
        let out = run_py(
            "chunk_index_cases.py",
            &[
                OsStr::new("check"),
                fixture.as_os_str(),
                mount.point.as_os_str(),
            ],
        );
        assert!(
            out.contains(&format!("{count} files checked")),
            "{file}: {out}"
        );
        logs += &mount.stop();
    }
    logs
}

#[test]
fn every_chunk_index_reads_like_h5py_through_the_direct_path() {
    let log = check_every_index("index-direct", &[]);
    for sign in ["chunks read through libhdf5", "over its budget"] {
        assert!(!log.contains(sign), "{sign}:\n{log}");
    }
}

#[test]
fn every_chunk_index_reads_like_h5py_through_libhdf5() {
    let log = check_every_index("index-libhdf5", &[("ARRFS_HDF5_FALLBACK", "1")]);
    let fell_back = log.matches("chunks read through libhdf5: ARRFS_HDF5_FALLBACK is set");
    assert_eq!(fell_back.count(), 36, "{log}");
}

#[test]
fn every_chunk_index_reads_like_h5py_through_libhdf5_and_the_hdf5_driver() {
    let env = [("ARRFS_HDF5_FALLBACK", "1"), ("ARRFS_HDF5_VFD", "1")];
    let log = check_every_index("index-libhdf5-vfd", &env);
    assert_eq!(log.matches("ARRFS_HDF5_VFD is set: ").count(), 3, "{log}");
    let fell_back = log.matches("chunks read through libhdf5: ARRFS_HDF5_FALLBACK is set");
    assert_eq!(fell_back.count(), 36, "{log}");
}
