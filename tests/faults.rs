//! Faults while mounted: the source changes on disk, arrfs is killed, unmount while busy,
//! 10,000 files open at once, arrfs out of file descriptors.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{arrfs, is_mounted, run_py, Mount, TempDir};

/// The files to read in each fixture of `faults.py write`, all of 3.2 MB arrays.
const CASES: [(&str, &str); 5] = [
    ("data.h5", "contiguous.npy"),
    ("data.h5", "chunked.npy"),
    ("stored.npz", "a.npy"),
    ("deflated.npz", "a.npy"),
    ("data.pkl", "a.npy"),
];

fn fixtures(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    run_py("faults.py", &[OsStr::new("write"), dir.path().as_os_str()]);
    dir
}

/// Mounts each fixture, reads the start of each file, applies `change` to the source, then
/// reads ranges not read before: each must fail with EIO, and the log must say to remount.
fn reads_fail_after(name: &str, change: fn(&Path)) {
    let dir = fixtures(name);
    for (container, _) in CASES.iter().step_by(2).chain(&CASES[3..4]) {
        let source = dir.join(container);
        let mount = Mount::new(&source, &[]);
        let files: Vec<File> = CASES
            .iter()
            .filter(|(c, _)| c == container)
            .map(|(_, f)| File::open(mount.path(f)).unwrap())
            .collect();
        for file in &files {
            let mut head = [0u8; 4096];
            file.read_exact_at(&mut head, 0).unwrap();
        }
        change(&source);
        for (i, file) in files.iter().enumerate() {
            let mut fresh = [0u8; 4096];
            let offset = 1_000_000 + 500_000 * i as u64;
            let err = file.read_exact_at(&mut fresh, offset).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{container}: {err}");
        }
        drop(files);
        let log = mount.stop();
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains(container) && l.contains("remount")),
            "no remount line for {container}:\n{log}"
        );
    }
}

#[test]
fn truncated_source_reads_fail_with_eio() {
    reads_fail_after("fault-truncate", |path| {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len / 2).unwrap();
    });
}

#[test]
fn replaced_source_reads_fail_with_eio() {
    // Same bytes, new file: a rename over the source is a change even so.
    reads_fail_after("fault-replace", |path| {
        let copy = path.with_extension("new");
        std::fs::copy(path, &copy).unwrap();
        std::fs::rename(&copy, path).unwrap();
    });
}

#[test]
fn deleted_source_reads_fail_with_eio() {
    reads_fail_after("fault-delete", |path| std::fs::remove_file(path).unwrap());
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_with_auto_unmount_leaves_a_clean_mountpoint() {
    assert!(
        which("fusermount3"),
        "auto_unmount needs fusermount3 (scripts/setup installs fuse3)"
    );
    let dir = fixtures("fault-kill-auto");
    let mut mount = Mount::new(&dir.join("stored.npz"), &["-o", "auto_unmount"]);
    assert!(mount.path("a.npy").exists());
    mount.kill();
    wait_until("fusermount3 unmounts", || !is_mounted(&mount.point));
    assert!(std::fs::read_dir(&mount.point).unwrap().next().is_none());
}

#[test]
fn sigkill_without_auto_unmount_is_cleaned_by_unmount() {
    let dir = fixtures("fault-kill");
    for tool in ["arrfs", "fusermount"] {
        let mut mount = Mount::new(&dir.join("stored.npz"), &[]);
        mount.kill();
        let err = std::fs::metadata(mount.path("a.npy")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
        let out = match tool {
            "arrfs" => arrfs().arg("unmount").arg(&mount.point).output(),
            _ => std::process::Command::new("fusermount")
                .arg("-u")
                .arg(&mount.point)
                .output(),
        };
        common::assert_success(tool, &out.unwrap());
        assert!(!is_mounted(&mount.point), "{tool} left the dead mount");
    }
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn unmount_while_a_file_is_open_needs_lazy() {
    let dir = fixtures("fault-busy");
    let mount = Mount::new(&dir.join("stored.npz"), &[]);
    let open = File::open(mount.path("a.npy")).unwrap();
    let out = arrfs().arg("unmount").arg(&mount.point).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("busy") && stderr.contains("--lazy"),
        "{stderr}"
    );
    assert!(is_mounted(&mount.point));
    let out = arrfs()
        .args(["unmount", "--lazy"])
        .arg(&mount.point)
        .output()
        .unwrap();
    common::assert_success("arrfs unmount --lazy", &out);
    assert!(!is_mounted(&mount.point));
    let mut head = [0u8; 6];
    open.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(
        &head, b"\x93NUMPY",
        "an open file keeps reading after a lazy unmount"
    );
    drop(open);
    mount.stop();
}

#[test]
fn ten_thousand_files_open_at_once() {
    let dir = TempDir::new("fault-many-open");
    let npz = dir.join("many.npz");
    run_py(
        "faults.py",
        &[
            OsStr::new("write-many-members"),
            npz.as_os_str(),
            OsStr::new("10000"),
        ],
    );
    let mount = Mount::new(&npz, &[]);
    let out = run_py(
        "faults.py",
        &[
            OsStr::new("open-many"),
            npz.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("10000 files open at once"), "{out}");
    mount.stop();
}

/// Sets the soft limit of open files of process `pid` (prlimit(2), as `prlimit --pid`);
/// the hard limit stays, so the soft one can be raised again without privileges.
fn limit_open_files(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let pid = pid as libc::pid_t;
    // SAFETY: prlimit on a process we started, reading into a valid rlimit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above, with a valid new limit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The limit that leaves process `pid` exactly `spare` more descriptors: RLIMIT_NOFILE
/// bounds descriptor numbers, and a new descriptor takes the lowest free number.
fn limit_with_spare(pid: u32, spare: usize) -> u64 {
    let used: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    let free = (0u64..).filter(|n| !used.contains(n));
    free.take(spare).last().unwrap() + 1
}

/// `faults.py load` for `seconds`: its figures, checked for wrong bytes and unexpected errors.
fn load(src: &Path, mount: &Mount, seconds: &str) -> serde_json::Value {
    let args = [
        OsStr::new("load"),
        src.as_os_str(),
        mount.point.as_os_str(),
        OsStr::new(seconds),
    ];
    let out = run_py("faults.py", &args);
    eprintln!("{out}");
    let figures: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(figures["mismatches"], 0, "{out}");
    assert_eq!(figures["other_errors"], 0, "{out}");
    figures
}

#[test]
fn out_of_file_descriptors_fails_reads_and_recovers() {
    let dir = TempDir::new("fault-emfile");
    let src = dir.join("src");
    run_py(
        "faults.py",
        &[
            OsStr::new("write-containers"),
            src.as_os_str(),
            OsStr::new("40"),
        ],
    );
    let mount = Mount::new(&src, &[]);
    std::fs::read_dir(&mount.point).unwrap().for_each(drop);
    // One descriptor spare: opening a zip takes two, so every container fails to open.
    limit_open_files(mount.pid(), limit_with_spare(mount.pid(), 1));
    let starved = load(&src, &mount, "2");
    assert!(starved["expected_errors"].as_u64() > Some(0), "{starved}");
    // Two spare: one at a time gets by, concurrent readers sometimes run out.
    limit_open_files(mount.pid(), limit_with_spare(mount.pid(), 2));
    load(&src, &mount, "3");
    limit_open_files(mount.pid(), u64::MAX);
    let args = [
        OsStr::new("check-all"),
        src.as_os_str(),
        mount.point.as_os_str(),
    ];
    let out = run_py("faults.py", &args);
    assert!(out.contains("80 files read correctly"), "{out}");
    let log = mount.stop();
    assert!(log.contains("Too many open files"), "no log line:\n{log}");
}

/// libhdf5 out of file descriptors while a directory mount opens an HDF5 file: the listing
/// fails with EMFILE and is not remembered; once descriptors are back the file lists and
/// reads as h5py wrote it (it is not left out as broken for the life of the mount).
#[test]
fn out_of_file_descriptors_inside_libhdf5_is_not_remembered() {
    let dir = fixtures("fault-emfile-hdf5");
    // Without the check child, libhdf5's own open of the file is what runs out.
    let mount = Mount::new(dir.path(), &["-o", "no_hdf5_check"]);
    std::fs::read_dir(&mount.point).unwrap().for_each(drop);
    let list = |rel: &str| -> std::io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(mount.path(rel))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    };
    // One descriptor spare: arrfs opens the file, libhdf5's open of it fails.
    limit_open_files(mount.pid(), limit_with_spare(mount.pid(), 1));
    let err = list("data.h5").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
    limit_open_files(mount.pid(), u64::MAX);
    assert_eq!(list("data.h5").unwrap(), ["chunked.npy", "contiguous.npy"]);
    let skipped = xattr_of(&mount.path("data.h5"), "user.arrfs.skipped");
    assert_eq!(
        skipped.map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENODATA))
    );
    let args = [
        OsStr::new("check-all"),
        dir.path().as_os_str(),
        mount.point.as_os_str(),
    ];
    let out = run_py("faults.py", &args);
    assert!(out.contains("5 files read correctly"), "{out}");
    let log = mount.stop();
    assert!(log.contains("Too many open files"), "no log line:\n{log}");
}

/// The value of extended attribute `name` of `path`.
fn xattr_of(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let cname = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: NUL-terminated strings and a buffer writable for its length.
    let n = unsafe {
        libc::getxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// A read still in flight when arrfs is told to stop: arrfs exits 0 within 2 s, leaves no
/// mount, and the reader gets an error instead of hanging.
#[test]
fn sigterm_while_a_read_is_in_flight_ends_the_mount_within_two_seconds() {
    let dir = fixtures("fault-sigterm-busy");
    let delay = [(arrfs::vfs::READ_DELAY_ENV, "60000")];
    let mut mount = Mount::with_env(&dir.join("stored.npz"), &[], &delay);
    let path = mount.path("a.npy");
    let reader = std::thread::spawn(move || std::fs::read(path));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!reader.is_finished(), "the read did not wait");
    let asked = Instant::now();
    mount.signal_only(libc::SIGTERM);
    let status = mount.exit_status().expect("arrfs exits after SIGTERM");
    let took = asked.elapsed();
    assert!(status.success(), "arrfs exited with {status}");
    assert!(took < Duration::from_secs(2), "arrfs took {took:?} to stop");
    assert!(!is_mounted(&mount.point), "mount left behind");
    let read = reader.join().unwrap();
    assert!(read.is_err(), "the read in flight returned data");
    assert!(
        mount.log_text().contains("detached"),
        "{}",
        mount.log_text()
    );
}
