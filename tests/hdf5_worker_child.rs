//! The HDF5 worker process (src/source/worker) never outlives the daemon, and opening a file
//! that does not end refuses the file within the per-call limit.
//!
//! The slow case is real: an h5py file served over HTTP through tests/py/proxy.py, which
//! lets the daemon's HEAD through and stalls the worker's (each process opens the
//! object itself), so the worker waits on the store for as long as the proxy holds it.
//!
//! This binary makes itself a child subreaper (orphans of its children become its own) to
//! learn how the worker ended; its own binary, so no other test's orphans land here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::servers::{Proxy, RangeServer};
use common::{arrfs, run_py, TempDir};

/// A served h5py file behind a proxy that will stall from the second HEAD on (the first is
/// the daemon's, the second the worker's).
struct Stalled {
    tmp: TempDir,
    _server: RangeServer,
    proxy: Proxy,
    url: PathBuf,
}

fn stalled_store(name: &str) -> Stalled {
    let tmp = TempDir::new(name);
    let served = tmp.join("served");
    std::fs::create_dir_all(&served).unwrap();
    run_py(
        "corrupt_cases.py",
        &["write", served.join("ok.h5").to_str().unwrap()],
    );
    let server = RangeServer::start(&served);
    let proxy = Proxy::start(server.port);
    proxy.stall_from_head(2);
    let url = PathBuf::from(format!("{}/ok.h5", proxy.endpoint()));
    Stalled {
        tmp,
        _server: server,
        proxy,
        url,
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.proxy.set_mode("ok");
    }
}

#[test]
fn an_open_that_does_not_end_refuses_the_file_within_the_call_limit() {
    let store = stalled_store("worker-step-limit");
    let mnt = store.tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let args = ["-f", "-o", "hdf5_check_timeout=2"];
    let line = common::assert_mount_fails(&store.url, &mnt, &args, "ok.h5");
    assert!(
        line.contains("within 2 s") && line.contains("hdf5_check_timeout"),
        "{line}"
    );
    assert!(
        store.proxy.stats().heads >= 2,
        "the child reached the store"
    );
}

#[test]
fn the_worker_dies_with_the_daemon() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes a setting of this process.
    let set = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    let store = stalled_store("worker-dies-with-daemon");
    let mnt = store.tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut daemon = arrfs()
        .arg("-f")
        .arg(&store.url)
        .arg(&mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let worker = wait_for_stalled_worker(&mut daemon, &store.proxy);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // The orphaned child is now ours to reap: it must have been killed, not have gone on
    // waiting for the store (without PR_SET_PDEATHSIG it exits 1 after the remote
    // client's timeouts, or 0 once the proxy lets go).
    let mut status = 0;
    // SAFETY: waitpid on a process this one reaps (subreaper), into a local int.
    let reaped = unsafe { libc::waitpid(worker, &mut status, 0) };
    assert_eq!(reaped, worker, "{}", std::io::Error::last_os_error());
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the worker outlived the daemon and ended with status {status:#x}"
    );
}

/// The pid of `daemon`'s `arrfs __worker` child, once its request is held by the proxy.
fn wait_for_stalled_worker(daemon: &mut std::process::Child, proxy: &Proxy) -> libc::pid_t {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!("arrfs ended ({status}) before its worker was seen");
        }
        assert!(Instant::now() < deadline, "no stalled worker appeared");
        let child = worker_child_of(daemon.id());
        if let Some(pid) = child.filter(|_| proxy.stats().heads >= 2) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process whose parent is `parent` and whose command line holds `__worker`.
fn worker_child_of(parent: u32) -> Option<libc::pid_t> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let proc_dir = Path::new("/proc").join(pid.to_string());
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        // Field 4, after the parenthesised command name (which may hold spaces).
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let is_worker = cmdline.split(|b| *b == 0).any(|arg| arg == b"__worker");
        if ppid == Some(parent) && is_worker {
            return Some(pid);
        }
    }
    None
}
