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

/// The environment that makes workers crash or hang on one object (src/source/worker/serve.rs).
const FAULT_ENV: &str = "ARRFS_TEST_WORKER_FAULT";

/// a.h5 and b.h5 (tests/py/worker_cases.py) in `dir`/src.
fn worker_cases(dir: &TempDir) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    common::run_py(
        "worker_cases.py",
        &[std::ffi::OsStr::new("write"), src.as_os_str()],
    );
    src
}

/// Each of `rels` under the mount equals h5py's reading of it.
fn check_against_h5py(src: &std::path::Path, mount: &Mount, rels: &[&str]) {
    let mut args = vec![
        "check".to_string(),
        src.display().to_string(),
        mount.point.display().to_string(),
    ];
    args.extend(rels.iter().map(|r| r.to_string()));
    common::run_py("worker_cases.py", &args);
}

fn assert_eio(path: &std::path::Path) {
    let read = std::fs::read(path);
    assert_eq!(
        read.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EIO),
        "{}: {:?}",
        path.display(),
        read.map(|b| b.len())
    );
}

/// A worker that crashes reading a dataset fails that read with EIO, and later reads of that
/// dataset at once; a new worker serves the rest of the file, with the keys the tree already
/// holds meaning the same datasets (each later read equals h5py's). After crashes on three
/// datasets the file is marked bad; the other file and the daemon never notice.
#[test]
fn a_worker_crash_fails_that_read_and_the_rest_reads_on() {
    let dir = TempDir::new("worker-crash-read");
    let src = worker_cases(&dir);
    let fault = "crash-reading:/g/boom,/h/v,/k/u";
    let mut mount = Mount::with_env(&src, &[], &[(FAULT_ENV, fault)]);
    walk(&mount.point).unwrap();
    check_against_h5py(&src, &mount, &["a.h5/g/y.npy"]);
    assert_eio(&mount.path("a.h5/g/boom.npy"));
    assert_eio(&mount.path("a.h5/g/boom.npy"));
    check_against_h5py(&src, &mount, &["a.h5/h/z.npy"]);
    assert_eio(&mount.path("a.h5/h/v.npy"));
    assert_eio(&mount.path("a.h5/k/u.npy"));
    // Third death: a.h5 is marked bad, even its datasets that have not crashed.
    assert_eio(&mount.path("a.h5/k/s.npy"));
    check_against_h5py(&src, &mount, &["b.h5/g/w.npy", "b.h5/h/t.npy"]);
    assert!(mount.exit_status().is_none(), "the daemon died");
    let log = mount.stop();
    assert!(
        log.contains("a.h5: /g/boom: libhdf5 crashed (signal 11) reading"),
        "{log}"
    );
    assert!(log.contains("a.h5: /h/v: libhdf5 crashed"), "{log}");
    assert!(log.contains("marked bad after 3"), "{log}");
}

/// A worker that crashes or hangs listing one group fails that listing with EIO (a hang
/// within the call limit); the file's other groups list and read on.
#[test]
fn a_worker_crash_or_hang_in_a_listing_fails_that_directory_only() {
    for (fault, cause) in [
        ("crash-listing:/h", "libhdf5 crashed (signal 11) listing"),
        ("hang-listing:/h", "did not finish listing within 2 s"),
    ] {
        let dir = TempDir::new("worker-listing");
        let src = worker_cases(&dir);
        let a = src.join("a.h5");
        let mount = Mount::with_env(&a, &["-o", "hdf5_check_timeout=2"], &[(FAULT_ENV, fault)]);
        for _ in 0..2 {
            let listed = std::fs::read_dir(mount.path("h"))
                .and_then(|d| d.collect::<std::io::Result<Vec<_>>>());
            assert_eq!(
                listed.as_ref().err().and_then(|e| e.raw_os_error()),
                Some(libc::EIO),
                "{fault}: {listed:?}"
            );
        }
        let k = std::fs::read_dir(mount.path("k")).unwrap().count();
        assert_eq!(k, 2, "{fault}");
        let mut args = vec![
            "check".to_string(),
            src.display().to_string(),
            mount.point.display().to_string(),
        ];
        args.extend(["g/y.npy", "k/u.npy"].map(|r| format!("a.h5/{r}")));
        // The mount is of a.h5 itself: its files are at the top, named as in a.h5.
        let flat = TempDir::new("worker-listing-view");
        std::os::unix::fs::symlink(&mount.point, flat.join("a.h5")).unwrap();
        args[2] = flat.path().display().to_string();
        common::run_py("worker_cases.py", &args);
        let log = mount.stop();
        assert!(
            log.contains("a.h5: /h: ") && log.contains(cause),
            "{fault}: {log}"
        );
    }
}

/// `arrfs ls -R` of a file whose worker crashes listing one group: one line, exit 1.
#[test]
fn ls_of_a_file_that_crashes_its_worker_says_so_in_one_line() {
    let dir = TempDir::new("worker-ls");
    let src = worker_cases(&dir);
    let out = arrfs()
        .args(["ls", "-R"])
        .arg(src.join("a.h5"))
        .env(FAULT_ENV, "crash-listing:/h")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("libhdf5 crashed (signal 11) listing"),
        "{stderr}"
    );
}

/// More readers than a worker has connections, while it crashes under them: every read
/// ends (EIO or h5py's bytes); none waits forever for a connection of the dead worker.
#[test]
fn readers_queued_for_a_crashing_worker_all_get_an_answer() {
    let dir = TempDir::new("worker-crowd");
    let src = worker_cases(&dir);
    let a = src.join("a.h5");
    let fault = "crash-reading:/g/boom";
    let mount = Mount::with_env(&a, &["--threads", "12"], &[(FAULT_ENV, fault)]);
    walk(&mount.point).unwrap();
    let files = ["g/y", "g/boom", "h/z", "h/v", "k/u", "k/s"];
    let (done, finished) = std::sync::mpsc::channel();
    for round in 0..3 {
        for file in files {
            let (path, done) = (mount.path(&format!("{file}.npy")), done.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 << 10];
                let at = (round * 40_000) as u64;
                let read = std::fs::File::open(&path)
                    .and_then(|fd| std::os::unix::fs::FileExt::read_at(&fd, &mut buf, at));
                let _ = done.send((path, read.map_err(|e| e.raw_os_error())));
            });
        }
    }
    drop(done);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut answered = 0;
    while answered < 3 * files.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (path, read) = finished
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{answered} of {} reads ended", 3 * files.len()));
        if let Err(errno) = read {
            assert_eq!(errno, Some(libc::EIO), "{}", path.display());
        }
        answered += 1;
    }
    assert!(std::fs::read_dir(&mount.point).is_ok(), "the mount answers");
}
