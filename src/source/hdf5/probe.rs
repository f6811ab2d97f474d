//! libhdf5 trusts the metadata it reads, and a crafted file can crash it. Before the daemon
//! opens an HDF5 file, a child process (`arrfs __probe FILE`, this same binary) opens it and
//! walks all of its metadata the way the mount would: every group, link, dataset, type and
//! attribute. A crash then kills the child, not the daemon, and the file is refused with
//! one clear line. Data chunks are decoded only at read time and are not covered.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::Location;
use crate::source::hdf5::Hdf5Source;
use crate::source::{EntryKind, Source, SourceOptions, ROOT};

/// The hidden first argument that makes `arrfs` a probe child.
pub const PROBE_ARG: &str = "__probe";
/// A walk slower than this is taken as a hang inside libhdf5.
const PROBE_TIMEOUT: Duration = Duration::from_secs(300);
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
    let walked = crate::connect::locate_in_probe(&path).and_then(|location| walk(&location));
    Some(match walked {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arrfs: probe: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Opens `location` as the mount would and lists every group; returns the objects seen.
/// Hard-linked groups are entered once, so a group linked into itself ends.
pub fn walk(location: &Location) -> Result<usize> {
    let source = match location.local_path() {
        Some(path) => Hdf5Source::open(path, &SourceOptions::default())?,
        None => Hdf5Source::open_location(location, &SourceOptions::default())?,
    };
    let mut entered = HashSet::new();
    let mut dirs = vec![ROOT];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(listing) = source.list(dir) else {
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
/// process. Fails if libhdf5 crashed or hung there; a plain error (not HDF5, truncated)
/// passes, for the daemon's own open to report.
pub fn check_hdf5(path: &Path) -> Result<()> {
    if PASSED.lock().unwrap().contains(path) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let child = Command::new(exe)
        .arg(PROBE_ARG)
        .arg(path)
        .envs(crate::connect::probe_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("arrfs probe process", e))?;
    let status = wait_with_timeout(child, path)?;
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

fn wait_with_timeout(mut child: Child, path: &Path) -> Result<ExitStatus> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
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
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::format(
                path,
                format!(
                    "libhdf5 did not finish reading this file's metadata in {} s in a check \
                     process: the file is corrupt or crafted, so it is not opened",
                    PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
