//! Mounting: options, the background daemon (as sshfs: return once the mount answers),
//! signals, and unmounting.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::cli::MountArgs;
use crate::connect::{self, CacheArgs};
use crate::error::{Error, Result};
use crate::fuse::{self, FuseAdapter, PASSTHROUGH_OPTION};
use crate::io::remote::RemoteOptions;
use crate::progress::{DelayedSpinner, WALK_SPINNER_DELAY};
use crate::source::{self, SourceOptions};
use crate::vfs::Fs;

/// Set in the daemon's environment: it prints this line on stdout once the mount answers.
const READY_ENV: &str = "ARRFS_DAEMON_READY";
const READY_LINE: &str = "arrfs-ready";

/// Mounts and serves until unmounted. Without `--foreground`, starts the daemon and returns
/// once the mount answers (or with the daemon's error).
pub fn mount(args: &MountArgs) -> Result<()> {
    let (source_path, mountpoint) = paths(args)?;
    check_mountpoint(mountpoint)?;
    if !connect::is_remote(source_path) {
        std::fs::metadata(source_path).map_err(|e| Error::io(source_path, e))?;
    }
    source_options(args)?;
    remote_options(args)?;
    if args.foreground || is_daemon() {
        serve(args, source_path, mountpoint)
    } else {
        start_daemon()
    }
}

fn paths(args: &MountArgs) -> Result<(&Path, &Path)> {
    match (&args.source, &args.mountpoint) {
        (Some(s), Some(m)) => Ok((s, m)),
        _ => Err(Error::Usage("SOURCE and MOUNTPOINT are required".into())),
    }
}

fn check_mountpoint(mountpoint: &Path) -> Result<()> {
    let meta = std::fs::metadata(mountpoint).map_err(|e| Error::io(mountpoint, e))?;
    if !meta.is_dir() {
        let not_dir = std::io::Error::from_raw_os_error(libc::ENOTDIR);
        return Err(Error::io(mountpoint, not_dir));
    }
    if is_mount_point(mountpoint) {
        return Err(Error::Mount(format!(
            "{} is already a mount point: unmount it first (arrfs unmount)",
            mountpoint.display()
        )));
    }
    Ok(())
}

/// Whether something is mounted on `path` (from `/proc/self/mountinfo`).
pub fn is_mount_point(path: &Path) -> bool {
    mount_device(path).is_some()
}

/// The `major:minor` device of the mount on `path`, from `/proc/self/mountinfo` (not from
/// `stat`, which would ask our own FUSE session before it serves).
fn mount_device(path: &Path) -> Option<String> {
    let canon = std::fs::canonicalize(path).ok()?;
    let needle = canon.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .rev() // the last mount on a path is the visible one
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.get(4) == Some(&needle.as_str()))
        .and_then(|fields| fields.get(2).map(|dev| dev.to_string()))
}

/// Kernel read-ahead for the mount, in KiB: the kernel then sends 1 MiB reads (the largest
/// our `max_write` allows) instead of 128 KiB, so fewer requests per byte.
const KERNEL_READ_AHEAD_KB: u32 = 1024;

/// Raises the read-ahead of the mount's backing device info. Only root may; best effort.
fn raise_kernel_read_ahead(mountpoint: &Path) {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let Some(device) = mount_device(mountpoint) else {
        log::warn!(
            "no device found for {}: read-ahead left as is",
            mountpoint.display()
        );
        return;
    };
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    match std::fs::write(&knob, KERNEL_READ_AHEAD_KB.to_string()) {
        Ok(()) => log::debug!("{knob} set to {KERNEL_READ_AHEAD_KB}"),
        Err(e) => log::warn!("cannot raise kernel read-ahead ({knob}): {e}"),
    }
}

/// Re-runs this program as the daemon and waits until it says the mount answers, or exits.
/// Errors of the daemon reach the user's terminal through its inherited stderr.
fn start_daemon() -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("arrfs daemon", e))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, ready) = mpsc::channel();
    std::thread::spawn(move || {
        let said_ready = BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .any(|line| line == READY_LINE);
        let _ = tx.send(said_ready);
    });
    if wait_ready(&mut child, &ready)? {
        return Ok(());
    }
    let status = child.wait().map_err(|e| Error::io("arrfs daemon", e))?;
    match status.code() {
        // The daemon already told the user why, on the stderr it inherited.
        Some(code) if code != 0 => std::process::exit(code),
        _ => Err(Error::Mount(format!("the mount did not start ({status})"))),
    }
}

/// Whether the daemon said ready before it exited. Its exit is watched too, not only the end
/// of its stdout: a helper it started (fusermount3 with auto_unmount) may keep that pipe
/// open after the daemon died.
fn wait_ready(child: &mut std::process::Child, ready: &mpsc::Receiver<bool>) -> Result<bool> {
    loop {
        match ready.recv_timeout(Duration::from_millis(50)) {
            Ok(said_ready) => return Ok(said_ready),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let exited = child.try_wait().map_err(|e| Error::io("arrfs daemon", e))?;
        if exited.is_some() {
            return Ok(ready.try_recv() == Ok(true));
        }
    }
}

/// The options of the tree: the `-o` source options (the mount checks HDF5 files unless
/// `no_hdf5_check`); the others are the mount's.
fn source_options(args: &MountArgs) -> Result<SourceOptions> {
    let mut options = SourceOptions {
        cache_size: args.cache_size,
        attrs_json: args.attrs_json,
        hdf5_worker: true,
        ..SourceOptions::default()
    };
    for opt in &args.options {
        if SourceOptions::is_source_option(opt) {
            options.apply(opt)?;
        }
    }
    Ok(options)
}

/// How the mount reaches a remote source and caches it (unused for local sources).
fn remote_options(args: &MountArgs) -> Result<RemoteOptions> {
    let cache = CacheArgs {
        memory: args.cache_size,
        dir: args.cache_dir.clone(),
        disk_size: args.disk_cache_size,
    };
    connect::remote_options(&args.options, &cache)
}

/// Opens the source, mounts it, and serves requests until unmounted or signalled.
fn serve(args: &MountArgs, source_path: &Path, mountpoint: &Path) -> Result<()> {
    // First, so that every thread started from here on (sources start decode workers)
    // leaves these signals to the one thread that waits for them.
    let signals = block_signals();
    let options = source_options(args)?;
    // The metadata walk (and the crash-safe HDF5 probe) can take seconds on big files.
    let walk = DelayedSpinner::start(
        WALK_SPINNER_DELAY,
        format!("reading the metadata of {}", source_path.display()),
    );
    let location = connect::locate(source_path, &remote_options(args)?);
    let source = location.and_then(|location| {
        let mtime = connect::modified(&location)?;
        Ok((source::open(&location, &options)?, mtime))
    });
    drop(walk);
    let (source, mtime) = source?;
    let fs = Arc::new(Fs::new(source, mtime));
    let config = fuse_config(args, source_path)?;
    let daemon_log = open_daemon_log(args)?;
    // Resolved before mounting: once mounted, resolving it would ask this very session.
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| Error::io(mountpoint, e))?;
    let passthrough = args.options.iter().any(|o| o == PASSTHROUGH_OPTION);
    let (adapter, pushes) = FuseAdapter::new(fs.clone(), passthrough);
    let mut session = fuser::Session::new(adapter, mountpoint, &config)
        .map_err(|e| Error::Mount(format!("cannot mount on {}: {e}", mountpoint.display())))?;
    let notifier = session.notifier();
    std::thread::spawn(move || fuse::push_small_files(&fs, &notifier, &pushes));
    let connection = FuseConnection::of(&canonical);
    let mut unmounter = session.unmount_callable();
    let (tx, rx) = mpsc::channel();
    let ended = tx.clone();
    std::thread::spawn(move || ended.send(Event::Ended(session.run())));
    raise_kernel_read_ahead(mountpoint);
    std::thread::spawn(move || loop {
        if tx.send(Event::Signal(wait_signal(&signals))).is_err() {
            break;
        }
    });
    announce_ready(daemon_log);
    log::info!(
        "mounted {} on {}",
        source_path.display(),
        mountpoint.display()
    );
    loop {
        match rx.recv() {
            Ok(Event::Signal(sig)) => {
                log::info!("signal {sig}: unmounting {}", mountpoint.display());
                if unmounter.unmount().is_ok() {
                    continue;
                }
                // Busy: files are open or reads in flight. Fail those reads now and detach
                // the mount, rather than keep serving after being told to stop.
                connection.abort();
                if let Err(e) = unmount(mountpoint, true) {
                    log::error!("unmount of {} failed: {e}", mountpoint.display());
                }
                return wait_for_end(&rx, mountpoint);
            }
            Ok(Event::Ended(result)) => {
                log::info!("{} unmounted", mountpoint.display());
                return result.map_err(|e| Error::io(mountpoint, e));
            }
            Err(_) => return Ok(()),
        }
    }
}

enum Event {
    Signal(i32),
    Ended(std::io::Result<()>),
}

/// How long an aborted session may take to wind down before the process exits anyway (a
/// worker thread may still be inside a long decode or libhdf5 call).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Waits for the aborted session to end, at most [`SHUTDOWN_GRACE`].
fn wait_for_end(rx: &mpsc::Receiver<Event>, mountpoint: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(Event::Ended(_)) | Err(_) => break,
            Ok(Event::Signal(_)) => {}
        }
    }
    log::info!("{} detached; reads in flight failed", mountpoint.display());
    Ok(())
}

/// The kernel's control file of one FUSE mount (`/sys/fs/fuse/connections/N`, N the mount's
/// device minor): writing to its `abort` fails every request in flight and every later one,
/// so no reader waits on a daemon that is going away.
struct FuseConnection {
    dir: Option<std::path::PathBuf>,
}

impl FuseConnection {
    const CONTROL: &'static str = "/sys/fs/fuse/connections";

    /// The connection of the FUSE mount at `mountpoint` (canonical), found from
    /// /proc/self/mountinfo (a `stat` of the mountpoint would ask our own session).
    fn of(mountpoint: &Path) -> FuseConnection {
        let minor = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|info| mount_minor(&info, mountpoint));
        FuseConnection {
            dir: minor.map(|m| Path::new(Self::CONTROL).join(m.to_string())),
        }
    }

    fn abort(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        if !Path::new(Self::CONTROL).join("version").exists() {
            // fusectl is not mounted (containers): mount it, best effort (needs root).
            let _ = Command::new("mount")
                .args(["-t", "fusectl", "fusectl", Self::CONTROL])
                .status();
        }
        if let Err(e) = std::fs::write(dir.join("abort"), "1") {
            log::warn!("cannot abort FUSE connection {}: {e}", dir.display());
        }
    }
}

/// The device minor of the last mount at `mountpoint` in a mountinfo listing. Fields:
/// id, parent, major:minor, root, mount point, ... (spaces in paths escaped as `\040`).
fn mount_minor(mountinfo: &str, mountpoint: &Path) -> Option<u32> {
    let wanted = mountpoint.to_str()?.replace(' ', "\\040");
    mountinfo.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let point = fields.nth(1)?;
        (point == wanted).then(|| dev.split(':').nth(1)?.parse().ok())?
    })
}

fn fuse_config(args: &MountArgs, source_path: &Path) -> Result<Config> {
    let mut config = Config::default();
    let mut opts = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::Subtype("arrfs".into()),
    ];
    let mut fsname = Some(source_path.display().to_string());
    for opt in &args.options {
        match opt.as_str() {
            "allow_other" => {
                config.acl = SessionACL::All;
                opts.push(MountOption::DefaultPermissions);
            }
            "allow_root" => config.acl = SessionACL::RootAndOwner,
            "auto_unmount" => opts.push(MountOption::AutoUnmount),
            "default_permissions" => opts.push(MountOption::DefaultPermissions),
            "ro" | "" | PASSTHROUGH_OPTION => {}
            o if SourceOptions::is_source_option(o) || connect::is_remote_option(o) => {}
            o if o.starts_with("fsname=") => fsname = Some(o["fsname=".len()..].to_string()),
            "rw" => {
                return Err(Error::Usage(
                    "arrfs mounts are read-only: -o rw is refused".into(),
                ))
            }
            o => opts.push(MountOption::CUSTOM(o.to_string())),
        }
    }
    if opts.contains(&MountOption::AutoUnmount) && config.acl == SessionACL::Owner {
        // fusermount3 implements auto_unmount and needs one of the allow_* options.
        config.acl = SessionACL::RootAndOwner;
    }
    opts.extend(fsname.map(MountOption::FSName));
    opts.dedup();
    config.mount_options = opts;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    config.n_threads = Some(args.threads.unwrap_or(cpus).max(1));
    config.clone_fd = true;
    Ok(config)
}

fn is_daemon() -> bool {
    std::env::var_os(READY_ENV).is_some()
}

/// The daemon's `--log-file`, opened before mounting so that a bad path is reported on the
/// terminal; None in the foreground or without the option (then: syslog).
fn open_daemon_log(args: &MountArgs) -> Result<Option<std::fs::File>> {
    let Some(path) = args.log_file.as_ref().filter(|_| is_daemon()) else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(file))
}

/// Tells the waiting parent that the mount answers, then detaches from its terminal: stdin
/// and stdout to /dev/null, stderr (and so the log) to the log file, or the log to syslog.
fn announce_ready(log_file: Option<std::fs::File>) {
    // Under systemd with `Type=notify` (NOTIFY_SOCKET set), units ordered after ours start
    // only now; elsewhere this does nothing.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        log::warn!("cannot tell systemd the mount is ready: {e}");
    }
    if !is_daemon() {
        return;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();
    if log_file.is_none() {
        crate::logging::to_syslog();
    }
    let Ok(devnull) = std::fs::File::open("/dev/null") else {
        return;
    };
    let stderr = log_file.as_ref().unwrap_or(&devnull);
    // SAFETY: dup2 onto our own standard descriptors; setsid detaches from the terminal.
    unsafe {
        libc::dup2(devnull.as_raw_fd(), 0);
        libc::dup2(devnull.as_raw_fd(), 1);
        libc::dup2(stderr.as_raw_fd(), 2);
        libc::setsid();
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts, so that one
/// thread can wait for them with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: set was initialised by block_signals.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Unmounts `mountpoint`: umount2 as root, else fusermount3 / fusermount.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let c_path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Usage("mountpoint contains NUL".into()))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: c_path is a valid C string.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EBUSY) => Err(Error::Mount(format!(
            "{} is busy: files under it are open. Close them, or detach now with `arrfs unmount --lazy`",
            mountpoint.display()
        ))),
        Some(libc::EPERM) => fusermount(mountpoint, lazy),
        _ => Err(Error::io(mountpoint, err)),
    }
}

fn fusermount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let flag = if lazy { "-uz" } else { "-u" };
    for tool in ["fusermount3", "fusermount"] {
        if let Ok(status) = Command::new(tool).arg(flag).arg(mountpoint).status() {
            if status.success() {
                return Ok(());
            }
            return Err(Error::Mount(format!(
                "{tool} {flag} {} failed",
                mountpoint.display()
            )));
        }
    }
    Err(Error::Mount(
        "not permitted, and fusermount3 is not installed (apt install fuse3)".into(),
    ))
}
