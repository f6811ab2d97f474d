//! libhdf5 trusts the metadata it reads, and a crafted file can crash it. Before the daemon
//! opens an HDF5 file, a child process (`arrfs __probe FILE`, this same binary) opens it and
//! walks all of its metadata the way the mount would: every group, link, dataset, type and
//! attribute. A crash then kills the child, not the daemon, and the file is refused with
//! one clear line. Data chunks are decoded only at read time and are not covered.
//!
//! The child reports each step of its walk (opening the file, listing one group) on its
//! stdout; one step slower than `-o hdf5_check_timeout` is taken as a hang. The child is
//! killed with the daemon (`PR_SET_PDEATHSIG`), so a daemon killed mid-check leaves no
//! libhdf5 process behind.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::Location;
use crate::source::hdf5::Hdf5Source;
use crate::source::{EntryKind, Source, SourceOptions, ROOT, STEP_LIMIT_OPTION};

/// The hidden first argument that makes `arrfs` a probe child.
pub const PROBE_ARG: &str = "__probe";
/// A whole walk slower than this is taken as a hang inside libhdf5.
const PROBE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of `-o hdf5_check_timeout`: one step of the walk (opening the file, listing one
/// group) slower than this is taken as a hang. Listing a group of 100,000 datasets takes
/// about 0.1 s here when arrfs reads their headers itself, about 2 s when libhdf5 must
/// describe them (attributes, chunks, newer headers).
pub const DEFAULT_STEP_LIMIT: Duration = Duration::from_secs(60);
/// How often the parent looks at the child while it waits.
const POLL: Duration = Duration::from_millis(5);
/// Objects walked at most: enough for any real file, bounded for looping ones.
const MAX_OBJECTS: usize = 10_000_000;

/// Files that passed in this process: a directory mount reopens containers after closing
/// them, and one check per file is enough.
static PASSED: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);

/// `arrfs __probe FILE`: walks FILE and exits 0, or 1 with the error on stderr. None when
/// this process is not a probe child. `main` calls it before parsing the command line.
pub fn run_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != PROBE_ARG {
        return None;
    }
    let path = PathBuf::from(args.next()?);
    let walked = crate::connect::locate_in_probe(&path)
        .and_then(|location| walk(&location, &mut report_step));
    Some(match walked {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arrfs: probe: {e}");
            ExitCode::FAILURE
        }
    })
}

/// In the child: tells the parent one step is done (one byte on stdout). A parent gone
/// leaves nobody to tell, so a failed write is ignored.
fn report_step() {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b".").and_then(|()| out.flush());
}

/// Opens `location` as the mount would and lists every group, calling `step` after the
/// open and after each listing; returns the objects seen. Hard-linked groups are entered
/// once, so a group linked into itself ends.
pub fn walk(location: &Location, step: &mut dyn FnMut()) -> Result<usize> {
    let source = match location.local_path() {
        Some(path) => Hdf5Source::open(path, &SourceOptions::default())?,
        None => Hdf5Source::open_location(location, &SourceOptions::default())?,
    };
    step();
    let mut entered = HashSet::new();
    let mut dirs = vec![ROOT];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        let listed = source.list(dir);
        step();
        let Ok(listing) = listed else {
            // The mount shows this as EIO on that directory: not a crash.
            continue;
        };
        for entry in listing.entries {
            seen += 1;
            let first_visit = entry.identity.is_none_or(|id| entered.insert(id));
            if matches!(entry.kind, EntryKind::Dir) && first_visit && seen < MAX_OBJECTS {
                dirs.push(entry.key);
            }
        }
    }
    Ok(seen)
}

/// Runs the probe of `path` (a local path, or the URL of a remote object) in a child
/// process. Fails if libhdf5 crashed there, or hung: one step of the walk took longer than
/// `step_limit`, or the whole walk longer than [`PROBE_TIMEOUT`]. A plain error (not HDF5,
/// truncated) passes, for the daemon's own open to report.
pub fn check_hdf5(path: &Path, step_limit: Duration) -> Result<()> {
    if PASSED.lock().unwrap().contains(path) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let parent = std::process::id();
    let mut command = Command::new(exe);
    command
        .arg(PROBE_ARG)
        .arg(path)
        .envs(crate::connect::probe_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec; it only makes the
    // async-signal-safe system calls prctl(2) and getppid(2) and allocates nothing.
    unsafe { command.pre_exec(move || die_with_parent(parent)) };
    let child = command
        .spawn()
        .map_err(|e| Error::io("arrfs probe process", e))?;
    let status = wait_for(child, path, step_limit)?;
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return Err(Error::format(
            path,
            format!(
                "libhdf5 crashed (signal {signal}) reading this file's metadata in a check \
                 process: the file is corrupt or crafted, so it is not opened"
            ),
        ));
    }
    PASSED.lock().unwrap().insert(path.to_path_buf());
    Ok(())
}

/// Whether SIGINT or SIGTERM is waiting: the mount blocks them until it serves, and a user
/// who presses Ctrl-C during a long check must not wait for the check to end.
fn stop_requested() -> bool {
    // SAFETY: sigpending fills a local set, which is only read afterwards.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending) == 0
            && (libc::sigismember(&pending, libc::SIGINT) == 1
                || libc::sigismember(&pending, libc::SIGTERM) == 1)
    }
}

/// In the child, between fork and exec: asks the kernel for SIGKILL when the parent dies,
/// so a daemon killed (even with SIGKILL) mid-check leaves no libhdf5 process behind. The
/// signal comes when the *thread* that forked ends; that thread waits for the child in
/// [`wait_for`], so it outlives it.
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes only a setting of
    // this (child) process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The parent may have died between fork and prctl: then no signal will ever come, and
    // the child has been handed to init (another parent id).
    // SAFETY: getppid(2) has no arguments and cannot fail.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// The child's steps as they are reported: one message per byte it writes on stdout. The
/// channel closes when the child closes its stdout (it exited).
fn steps_of(mut stdout: ChildStdout) -> Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0; 64];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            for _ in 0..n {
                if tx.send(()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Waits for the child's exit; kills it if one step takes longer than `step_limit`, the
/// whole walk longer than [`PROBE_TIMEOUT`], or the user asks to stop.
fn wait_for(mut child: Child, path: &Path, step_limit: Duration) -> Result<ExitStatus> {
    let steps = child.stdout.take().map(steps_of);
    let started = Instant::now();
    let mut step_started = started;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::io(path, e))? {
            return Ok(status);
        }
        if stop_requested() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Mount(format!(
                "interrupted while checking {}",
                path.display()
            )));
        }
        let hung = if step_started.elapsed() > step_limit {
            Some(format!(
                "one step (opening the file or listing one group) in {} s",
                step_limit.as_secs_f64()
            ))
        } else if started.elapsed() > PROBE_TIMEOUT {
            Some(format!("in {} s", PROBE_TIMEOUT.as_secs()))
        } else {
            None
        };
        if let Some(hung) = hung {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::format(
                path,
                format!(
                    "libhdf5 did not finish reading this file's metadata {hung} in a check \
                     process (-o {STEP_LIMIT_OPTION}SECONDS): the file is corrupt or crafted, or \
                     its store stalled, so it is not opened"
                ),
            ));
        }
        match steps.as_ref().map(|s| s.recv_timeout(POLL)) {
            Some(Ok(())) => step_started = Instant::now(),
            Some(Err(RecvTimeoutError::Timeout)) => {}
            Some(Err(RecvTimeoutError::Disconnected)) | None => std::thread::sleep(POLL),
        }
    }
}
