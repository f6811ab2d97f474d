//! Bad input (README, "Files and the mount"): one clear line and exit 1 at mount, EIO plus
//! a log line at read time, and never a crash, a hang or a mount left behind.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::{arrfs, is_mounted, run_py, Mount, TempDir};

/// Runs `arrfs [-f] SOURCE MOUNTPOINT` expecting failure (see `common::assert_mount_fails`).
fn assert_mount_fails(source: &Path, mountpoint: &Path, foreground: bool, needle: &str) {
    let args: &[&str] = if foreground { &["-f"] } else { &[] };
    common::assert_mount_fails(source, mountpoint, args, needle);
}

fn dirs(name: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    (dir, mnt)
}

#[test]
fn missing_source() {
    let (dir, mnt) = dirs("missing-source");
    let source = dir.join("nope.h5");
    for fg in [true, false] {
        assert_mount_fails(&source, &mnt, fg, "nope.h5: No such file");
    }
}

#[test]
fn text_and_png_are_unknown_formats() {
    let (dir, mnt) = dirs("unknown-format");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "just some text\n").unwrap();
    let png = dir.join("image.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.resize(200, 0);
    std::fs::write(&png, bytes).unwrap();
    for (source, name) in [(&text, "notes.txt"), (&png, "image.png")] {
        for fg in [true, false] {
            assert_mount_fails(source, &mnt, fg, &format!("{name}: unknown format"));
        }
    }
}

#[test]
fn truncated_hdf5_fails_at_mount() {
    let (dir, mnt) = dirs("truncated-hdf5");
    let whole = dir.join("whole.h5");
    run_py("hdf5_cases.py", &[OsStr::new("write"), whole.as_os_str()]);
    let cut = dir.join("cut.h5");
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&cut, &bytes[..4096]).unwrap();
    assert_mount_fails(&cut, &mnt, true, "cut.h5");
    assert_mount_fails(&cut, &mnt, false, "cut.h5");
    // The same through arrfs's HDF5 driver (as for a remote file).
    let driver = [("ARRFS_HDF5_VFD", "1")];
    for args in [&["-f"][..], &[]] {
        common::assert_mount_fails_with_env(&cut, &mnt, args, &driver, "cut.h5");
    }
}

#[test]
fn bad_mountpoints() {
    let (dir, _mnt) = dirs("bad-mountpoint");
    let source = dir.join("ok.h5");
    run_py(
        "corrupt_cases.py",
        &[OsStr::new("write"), source.as_os_str()],
    );
    assert_mount_fails(&source, &dir.join("missing"), true, "missing: No such file");
    let file = dir.join("file");
    std::fs::write(&file, "x").unwrap();
    assert_mount_fails(&source, &file, false, "file: Not a directory");
}

#[test]
fn usage_errors_exit_2() {
    let out = arrfs().arg("only-one-arg").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn corrupt_chunk_is_eio_for_that_read_only() {
    let dir = TempDir::new("corrupt-chunk");
    let source = dir.join("corrupt.h5");
    run_py(
        "corrupt_cases.py",
        &[OsStr::new("write"), source.as_os_str()],
    );
    let mount = Mount::new(&source, &[]);
    run_py(
        "corrupt_cases.py",
        &[
            OsStr::new("check"),
            source.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    let log = mount.stop();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"));
    assert!(
        line.contains("corrupt.h5") && line.contains("/bad"),
        "{line}"
    );
    assert!(
        line.to_lowercase().contains("filter") || line.contains("inflate") || line.contains("read"),
        "{line}"
    );
}

#[test]
fn daemon_mode_returns_once_mounted_and_unmount_cleans_up() {
    let (dir, mnt) = dirs("daemon");
    let source = dir.join("ok.h5");
    run_py(
        "corrupt_cases.py",
        &[OsStr::new("write"), source.as_os_str()],
    );
    let out = arrfs().arg(&source).arg(&mnt).output().unwrap();
    common::assert_success("arrfs daemon mount", &out);
    assert!(is_mounted(&mnt), "returned before the mount answered");
    assert!(mnt.join("good_contiguous.npy").exists());
    let out = arrfs().arg("unmount").arg(&mnt).output().unwrap();
    common::assert_success("arrfs unmount", &out);
    assert!(!is_mounted(&mnt));
}

#[test]
fn busy_mountpoint_is_refused() {
    let (dir, mnt) = dirs("busy");
    let source = dir.join("ok.h5");
    run_py(
        "corrupt_cases.py",
        &[OsStr::new("write"), source.as_os_str()],
    );
    let first = Mount::new(&source, &[]);
    assert_mount_fails(&source, &first.point, true, "already a mount point");
    assert!(is_mounted(&first.point), "the first mount must survive");
    first.stop();
    drop(mnt);
}
