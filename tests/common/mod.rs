//! Shared by the mount tests: the Python that has numpy and h5py, temporary directories,
//! and a real FUSE mount of the built `arrfs` binary that is unmounted on drop.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod servers;

/// The Python with numpy and h5py: `$ARRFS_PYTHON`, else the repo's `.venv` (scripts/setup
/// makes it). A missing interpreter fails the test: it is never a skip.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ARRFS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with numpy/h5py at {} (run scripts/setup, or set ARRFS_PYTHON)",
        venv.display()
    );
    venv
}

/// Path of a helper script in tests/py.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Runs `tests/py/<name>` with `args`; panics with its output unless it exits 0.
pub fn run_py<S: AsRef<OsStr>>(name: &str, args: &[S]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .expect("python runs");
    assert_success(&format!("python {name}"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh, empty directory for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("arrfs-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn arrfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arrfs"))
}

pub fn is_mounted(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = canon.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(needle.as_str()))
}

/// Runs `arrfs ARGS SOURCE MOUNTPOINT` expecting the mount to fail as the README's "Bad input" says:
/// exit 1 within 20 s, exactly one line on stderr that contains `needle`, and the mountpoint
/// left as it was (nothing mounted, or the earlier mount untouched). Returns that line.
pub fn assert_mount_fails(source: &Path, mountpoint: &Path, args: &[&str], needle: &str) -> String {
    assert_mount_fails_with_env(source, mountpoint, args, &[], needle)
}

/// As [`assert_mount_fails`], with extra environment variables for arrfs.
pub fn assert_mount_fails_with_env(
    source: &Path,
    mountpoint: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    needle: &str,
) -> String {
    let was_mounted = is_mounted(mountpoint);
    let mut child = arrfs()
        .args(args)
        .envs(env.iter().copied())
        .arg(source)
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("arrfs kept running on {}", source.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line, got: {stderr}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    assert_eq!(
        is_mounted(mountpoint),
        was_mounted,
        "the mountpoint changed state"
    );
    stderr
}

/// `arrfs -f SOURCE MOUNTPOINT` running in the background; unmounted when dropped.
pub struct Mount {
    pub point: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Mount {
    /// Mounts `source` on a new directory and waits until the mount answers. Fails loudly if
    /// FUSE is not available.
    pub fn new(source: &Path, extra: &[&str]) -> Mount {
        Mount::with_env(source, extra, &[])
    }

    /// As [`Mount::new`], with extra environment variables for the daemon.
    pub fn with_env(source: &Path, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        // Tests of one binary run in parallel: each mount gets its own directory.
        static MOUNTS: AtomicUsize = AtomicUsize::new(0);
        let point = std::env::temp_dir().join(format!(
            "arrfs-mnt-{}-{}-{}",
            std::process::id(),
            MOUNTS.fetch_add(1, Ordering::SeqCst),
            source.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::create_dir_all(&point);
        let log = point.with_extension("log");
        let child = arrfs()
            .arg("-f")
            .args(extra)
            .arg(source)
            .arg(&point)
            .env("RUST_LOG", "arrfs=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("arrfs starts");
        let mut mount = Mount { point, child, log };
        mount.wait_until_mounted();
        mount
    }

    fn wait_until_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.point) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "arrfs exited ({status}) before mounting:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mount did not appear:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id of the arrfs daemon (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.point.join(rel)
    }

    /// Unmounts with SIGTERM, as `kill` or a service manager would; checks that arrfs exits
    /// 0 and leaves no mount behind. Returns what it logged.
    pub fn stop(self) -> String {
        self.stop_with(libc::SIGTERM)
    }

    /// As [`Mount::stop`], with another signal (SIGINT is Ctrl-C).
    pub fn stop_with(mut self, signal: i32) -> String {
        self.signal(signal);
        self.terminate();
        self.log_text()
    }

    /// SIGKILL, as the OOM killer would: the process is reaped, and the mount stays behind
    /// unless `-o auto_unmount` was given.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// How the arrfs process ended, once it has (waits up to 10 s); None if still running.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                _ if Instant::now() > deadline => return None,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sends `signal` to arrfs and returns at once (see [`Mount::exit_status`]).
    pub fn signal_only(&mut self, signal: i32) {
        self.signal(signal);
    }

    fn signal(&mut self, signal: i32) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(self.child.id() as i32, signal) };
        }
    }

    fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success() || std::thread::panicking(),
                    "arrfs exited with {status}"
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = Command::new("umount").arg("-l").arg(&self.point).status();
                panic!("arrfs did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !is_mounted(&self.point),
            "mount left behind at {}",
            self.point.display()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
        if is_mounted(&self.point) {
            // Left behind by a killed daemon or a failed test: detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
        let _ = std::fs::remove_dir(&self.point);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Fixtures of every format in subdirectories of `tmp/fixtures`, written by the libraries
/// that own the formats (torch's shipped ones copied).
pub fn every_format(tmp: &TempDir) -> PathBuf {
    let dir = tmp.join("fixtures");
    for sub in [
        "hdf5",
        "npz",
        "pickle",
        "pickle-compressed",
        "safetensors",
        "gguf",
        "torch",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let arg = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
    let h5 = dir.join("hdf5/cases.h5").to_string_lossy().into_owned();
    run_py("hdf5_cases.py", &["write", &h5]);
    run_py("npz_cases.py", &["write", &arg("npz")]);
    run_py("pickle_cases.py", &["write", &arg("pickle")]);
    run_py(
        "pickle_cases.py",
        &["write-compressed", &arg("pickle-compressed")],
    );
    run_py("checkpoint_cases.py", &["st-write", &arg("safetensors")]);
    run_py("checkpoint_cases.py", &["gguf-write", &arg("gguf")]);
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
    for name in ["dtypes.pt", "hostile.pt"] {
        std::fs::copy(torch.join(name), dir.join("torch").join(name)).unwrap();
    }
    dir
}

/// Every file under `dir`, as (its path relative to `dir`, `/`-separated; its path).
pub fn files_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.push((rel, path));
            }
        }
    }
    files
}

/// Peak resident memory of a mount: of its daemon `pid` and of the worker processes it
/// runs libhdf5 in (its children), from /proc/PID/status, summed.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let own = process_vm_hwm_kib(pid);
    own + children_of(pid)
        .into_iter()
        .map(process_vm_hwm_kib)
        .sum::<u64>()
}

fn process_vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:"));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The live children of process `pid` (of all its threads).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            listed
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    children
}
