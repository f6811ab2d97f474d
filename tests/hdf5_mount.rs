//! Mounts HDF5 files written by h5py and compares every virtual file with what h5py reads.

mod common;

use common::{run_py, Mount, TempDir};

#[test]
fn every_dataset_equals_np_save_of_h5py_reading() {
    let dir = TempDir::new("hdf5-cases");
    let fixture = dir.join("cases.h5");
    run_py(
        "hdf5_cases.py",
        &[std::ffi::OsStr::new("write"), fixture.as_os_str()],
    );
    let mount = Mount::new(&fixture, &[]);
    let out = run_py(
        "hdf5_cases.py",
        &[
            std::ffi::OsStr::new("check"),
            fixture.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("files checked"), "{out}");
    mount.stop();
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
