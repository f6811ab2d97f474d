//! Mounts HDF5 files written by h5py and compares every virtual file with what h5py reads,
//! once through the direct chunk path and once with everything chunked read by libhdf5; both
//! again with libhdf5 reading the file through arrfs's driver (`ARRFS_HDF5_VFD=1`).

mod common;

use std::ffi::OsStr;

use common::{run_py, Mount, TempDir};

/// Writes the fixture, mounts it with `env`, checks every file (`mode`: extra arguments of
/// the check); returns the daemon's log.
fn check_every_dataset(name: &str, env: &[(&str, &str)], mode: &[&str]) -> String {
    let dir = TempDir::new(name);
    let fixture = dir.join("cases.h5");
    run_py("hdf5_cases.py", &[OsStr::new("write"), fixture.as_os_str()]);
    let mount = Mount::with_env(&fixture, &[], env);
    let mut args = vec![
        OsStr::new("check"),
        fixture.as_os_str(),
        mount.point.as_os_str(),
    ];
    args.extend(mode.iter().map(OsStr::new));
    let out = run_py("hdf5_cases.py", &args);
    assert!(out.contains("files checked"), "{out}");
    mount.stop()
}

#[test]
fn every_dataset_equals_np_save_of_h5py_reading() {
    let log = check_every_dataset("hdf5-cases", &[], &[]);
    for direct in [
        "/gzip3d",
        "/lzf2d",
        "/shuffle_i2",
        "/sparse",
        "/fletcher",
        "/masked",
        "/scaleoffset",
    ] {
        let fell_back = format!("{direct}: chunks read through libhdf5");
        assert!(!log.contains(&fell_back), "{fell_back}:\n{log}");
    }
}

#[test]
fn every_dataset_equals_np_save_of_h5py_reading_through_libhdf5() {
    let env = [("ARRFS_HDF5_FALLBACK", "1")];
    let log = check_every_dataset("hdf5-cases-fallback", &env, &["libhdf5"]);
    let fell_back = "/gzip3d: chunks read through libhdf5: ARRFS_HDF5_FALLBACK is set";
    assert!(log.contains(fell_back), "{fell_back}:\n{log}");
}

/// What the daemon logs when `ARRFS_HDF5_VFD=1` sends libhdf5 through arrfs's driver.
const THROUGH_DRIVER: &str = "ARRFS_HDF5_VFD is set: ";

#[test]
fn every_dataset_equals_np_save_of_h5py_reading_through_the_hdf5_driver() {
    let env = [("ARRFS_HDF5_VFD", "1")];
    let log = check_every_dataset("hdf5-cases-vfd", &env, &["driver"]);
    assert!(log.contains(THROUGH_DRIVER), "{log}");
    assert!(
        !log.contains("/gzip3d: chunks read through libhdf5"),
        "{log}"
    );
}

#[test]
fn every_dataset_equals_np_save_of_h5py_reading_through_libhdf5_and_the_hdf5_driver() {
    let env = [("ARRFS_HDF5_VFD", "1"), ("ARRFS_HDF5_FALLBACK", "1")];
    let log = check_every_dataset("hdf5-cases-vfd-fallback", &env, &["libhdf5", "driver"]);
    assert!(log.contains(THROUGH_DRIVER), "{log}");
    assert!(
        log.contains("/gzip3d: chunks read through libhdf5"),
        "{log}"
    );
}

/// Inode numbers of every path under `root`, without following symlinks.
fn inode_numbers(root: &std::path::Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path.clone());
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, meta.ino()));
        }
    }
    out.sort();
    out
}

#[test]
fn inode_numbers_are_stable_across_remounts_and_sigint_unmounts() {
    let dir = TempDir::new("hdf5-inodes");
    let fixture = dir.join("cases.h5");
    run_py(
        "hdf5_cases.py",
        &[std::ffi::OsStr::new("write"), fixture.as_os_str()],
    );
    let first = Mount::new(&fixture, &[]);
    let before = inode_numbers(&first.point);
    first.stop_with(libc::SIGINT);
    let second = Mount::new(&fixture, &[]);
    // Explore in another order: look one file up directly before listing anything.
    std::fs::metadata(second.path("numeric/be_f8.npy")).unwrap();
    let after = inode_numbers(&second.point);
    second.stop();
    assert!(before.len() > 40, "{before:?}");
    assert_eq!(before, after);
}

/// Reading a small file from its start pushes the small files after it into the kernel's
/// page cache (their first read needs no round trip), and what the kernel then holds is
/// exactly what h5py reads.
#[test]
fn small_files_after_a_read_are_pushed_into_the_page_cache() {
    let dir = TempDir::new("read-around");
    let fixture = dir.join("small.h5");
    run_py(
        "read_around_cases.py",
        &[OsStr::new("write"), fixture.as_os_str()],
    );
    let mount = Mount::new(&fixture, &[]);
    let args = [
        OsStr::new("check"),
        fixture.as_os_str(),
        mount.point.as_os_str(),
    ];
    let out = run_py("read_around_cases.py", &args);
    assert!(out.contains("pushed 64 files; 101 files checked"), "{out}");
    mount.stop();
}
