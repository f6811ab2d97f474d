//! The HDF5 worker (src/source/worker): a file that crashes libhdf5 when it is opened is
//! refused at mount with one clear line, and in a directory mount it is left out while the
//! rest stays readable; the daemon never dies.
//!
//! tests/fixtures/hdf5/segv_on_open.h5 is an h5py file with three bytes changed (found by
//! mutating files and running `arrfs ls -R` on each); it crashes the bundled libhdf5 (HDF5
//! 2.x) with SIGSEGV. (The one-byte mutant that crashed Debian's 1.10.8 no longer does.)
//! If a newer libhdf5 stops crashing on it, `the_fixture_still_crashes_libhdf5` fails:
//! find a new one the same way.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use common::{arrfs, Mount, TempDir};

fn crasher() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5/segv_on_open.h5")
}

#[test]
fn the_fixture_still_crashes_libhdf5() {
    let out = arrfs()
        .args(["ls", "-R", "-o", "no_hdf5_check"])
        .arg(crasher())
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "the fixture no longer crashes libhdf5 ({}): the worker tests below prove nothing",
        out.status
    );
}

#[test]
fn a_crashing_file_is_refused_at_mount_with_one_line() {
    let dir = TempDir::new("worker-refused");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for args in [&["-f"][..], &[]] {
        let stderr = common::assert_mount_fails(&crasher(), &mnt, args, "segv_on_open.h5");
        assert!(stderr.contains("libhdf5 crashed"), "{stderr}");
    }
}

/// The worker inherits `ARRFS_HDF5_VFD=1` and reads the file through arrfs's HDF5 driver.
#[test]
fn a_crashing_file_read_through_the_hdf5_driver_is_refused_too() {
    let dir = TempDir::new("worker-refused-vfd");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let env = [("ARRFS_HDF5_VFD", "1")];
    let stderr =
        common::assert_mount_fails_with_env(&crasher(), &mnt, &["-f"], &env, "segv_on_open.h5");
    assert!(stderr.contains("libhdf5 crashed"), "{stderr}");
}

/// What the worker protects from: libhdf5 crashes as soon as the tree is listed.
#[test]
fn without_the_worker_the_daemon_dies() {
    let mut mount = Mount::new(&crasher(), &["-o", "no_hdf5_check"]);
    let listed = walk(&mount.point);
    let status = mount.exit_status();
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGSEGV),
        "listing gave {listed:?}, arrfs: {status:?}"
    );
}

/// Lists the tree under `root`; the first error.
fn walk(root: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            walk(&path)?;
        }
    }
    Ok(())
}

#[test]
fn in_a_directory_the_crashing_file_is_left_out_and_the_rest_reads() {
    let dir = TempDir::new("worker-dir");
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(crasher(), src.join("bad.h5")).unwrap();
    common::run_py(
        "corrupt_cases.py",
        &[std::ffi::OsStr::new("write"), src.join("ok.h5").as_os_str()],
    );
    let mount = Mount::new(&src, &[]);
    let bad = std::fs::read_dir(mount.path("bad.h5")).unwrap().count();
    assert_eq!(bad, 0, "the crashing file lists as empty");
    let why = xattr(&mount.path("bad.h5"), "user.arrfs.skipped");
    assert!(why.contains("libhdf5 crashed"), "{why}");
    let good = std::fs::read(mount.path("ok.h5/good_contiguous.npy")).unwrap();
    assert!(good.starts_with(b"\x93NUMPY"));
    let log = mount.stop();
    assert!(
        log.contains("bad.h5") && log.contains("libhdf5 crashed"),
        "{log}"
    );
}

fn xattr(path: &std::path::Path, name: &str) -> String {
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .expect("getfattr runs (apt install attr)");
    common::assert_success("getfattr", &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
