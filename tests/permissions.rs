//! Who may use a mount: by default only the mounting user (FUSE refuses everyone else);
//! with `-o allow_other` everyone may read, under `default_permissions` (modes 0444/0555
//! enforced by the kernel), and nobody may write. The other user is a real unprivileged
//! account created here, so this test needs root (it fails, not skips, without it).

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use common::{run_py, Mount, TempDir};

const OTHER_USER: &str = "arrfs-test-user";

fn ensure_other_user() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test creates a user and runs commands as it: run it as root"
    );
    let exists = Command::new("id").arg(OTHER_USER).output().unwrap();
    if exists.status.success() {
        return;
    }
    let out = Command::new("useradd")
        .args(["-M", "-s", "/bin/sh", OTHER_USER])
        .output()
        .expect("useradd runs");
    // A parallel test may have created it in between.
    let exists = Command::new("id").arg(OTHER_USER).output().unwrap();
    assert!(exists.status.success(), "useradd failed: {out:?}");
}

/// `args` run as the other user.
fn as_other(args: &[&OsStr]) -> Output {
    Command::new("runuser")
        .args(["-u", OTHER_USER, "--"])
        .args(args)
        .output()
        .expect("runuser runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fixture(dir: &TempDir) -> std::path::PathBuf {
    let source = dir.join("ok.h5");
    run_py(
        "corrupt_cases.py",
        &[OsStr::new("write"), source.as_os_str()],
    );
    source
}

fn file_of(mount: &Mount) -> std::path::PathBuf {
    mount.path("good_contiguous.npy")
}

#[test]
fn other_users_are_refused_by_default() {
    ensure_other_user();
    let dir = TempDir::new("perm-default");
    let mount = Mount::new(&fixture(&dir), &[]);
    let file = file_of(&mount);
    assert!(file.exists(), "the mounting user reads");
    for cmd in ["stat", "cat"] {
        let out = as_other(&[OsStr::new(cmd), file.as_os_str()]);
        assert!(!out.status.success(), "{cmd} as {OTHER_USER} succeeded");
        assert!(
            stderr(&out).contains("Permission denied"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    mount.stop();
}

#[test]
fn allow_other_lets_others_read_but_not_write() {
    ensure_other_user();
    let dir = TempDir::new("perm-allow-other");
    let mount = Mount::new(&fixture(&dir), &["-o", "allow_other"]);
    let file = file_of(&mount);
    let out = as_other(&[OsStr::new("cat"), file.as_os_str()]);
    common::assert_success("cat as the other user", &out);
    assert_eq!(out.stdout, std::fs::read(&file).unwrap());
    let listing = as_other(&[OsStr::new("ls"), mount.point.as_os_str()]);
    common::assert_success("ls as the other user", &listing);
    refuses_writes(&mount.point, &file);
    mount.stop();
}

fn refuses_writes(point: &Path, file: &Path) {
    let new = point.join("new.npy");
    let append = format!("echo x >> '{}'", file.display());
    let attempts: [&[&OsStr]; 3] = [
        &[OsStr::new("touch"), new.as_os_str()],
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&append)],
        &[OsStr::new("rm"), OsStr::new("-f"), file.as_os_str()],
    ];
    for args in attempts {
        let out = as_other(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let why = stderr(&out);
        assert!(
            why.contains("Permission denied") || why.contains("Read-only file system"),
            "{args:?}: {why}"
        );
    }
    assert!(!new.exists() && file.exists());
}
