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
