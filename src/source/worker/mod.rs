//! A source run in a worker process, so that a library that trusts what it reads (libhdf5)
//! cannot take the mount down. [`IsolatedSource`] is a [`Source`] whose every call is a
//! request to `arrfs __worker SOURCE` ([`serve`]), which opens SOURCE itself; listings and
//! errors come back over a socket ([`wire`]), read bytes through shared memory ([`slots`]).
//!
//! A worker that crashes, or takes longer than the call limit (`-o hdf5_check_timeout`) to
//! answer, is killed; the requests it held fail with EIO and a log line naming the file,
//! the object and the cause; the next request starts a new worker, which lists again what
//! the dead one had listed, in the same order, so every key means what it meant
//! ([`Listed`]). An object a worker crashed on fails at once when asked again; a file whose
//! workers die [`DEATHS_BEFORE_BAD`] times is marked bad: every later request fails at
//! once. The mount and every other file stay up throughout.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::Location;
use crate::source::{Key, Listing, Source, SourceOptions, ROOT, STEP_LIMIT_OPTION};

mod serve;
mod slots;
mod wire;

pub use serve::run_if_requested;
use slots::{Slots, SLOT_BYTES};
use wire::{Answer, Request};

/// The hidden first argument that makes `arrfs` a worker.
pub const WORKER_ARG: &str = "__worker";
/// The shared slots' memfd, as the worker finds it.
const WORKER_SHM_FD: i32 = 3;
/// The worker's end of its first connection; the others follow.
const WORKER_FIRST_CONNECTION_FD: i32 = WORKER_SHM_FD + 1;
/// Default of `-o hdf5_check_timeout`: one call (opening the file, one listing, one read)
/// slower than this is taken as a hang. Listing a group of 100,000 datasets that libhdf5
/// must describe takes about 2 s here.
pub const DEFAULT_CALL_LIMIT: Duration = Duration::from_secs(60);
/// Workers of one file that may die before the file is marked bad for the mount's life.
pub const DEATHS_BEFORE_BAD: u32 = 3;
/// How often a wait for the worker's first answer looks for SIGINT/SIGTERM.
const POLL: Duration = Duration::from_millis(20);

pub struct IsolatedSource {
    /// SOURCE as the worker is given it, and as errors name it.
    name: PathBuf,
    args: Vec<OsString>,
    limit: Duration,
    slots: Arc<Slots>,
    current: Mutex<Option<Arc<Worker>>>,
    deaths: AtomicU32,
    /// Why the file is marked bad, once it is.
    bad: Mutex<Option<String>>,
    /// Objects a worker crashed on (name, cause): asked again, they fail at once rather than
    /// crash the next worker. A hang is not remembered: a stalled store comes back.
    crashed_on: Mutex<HashMap<Key, (String, String)>>,
    listed: Mutex<Vec<Listed>>,
    /// The root's listing, made when the file was opened, until the tree asks for it.
    first_root: Mutex<Option<Listing>>,
    /// Held through each listing: listings run one at a time, so [`IsolatedSource::listed`]
    /// holds them in the order the worker made their keys.
    listing_turn: Mutex<()>,
}

/// One listing a worker made: a new worker makes it again, and must give the same keys.
struct Listed {
    dir: Key,
    keys: u64,
}

/// One worker process and its connections: one request at a time on each, each served by
/// a thread of its own in the worker, so a request wakes one thread there and its answer
/// the one thread that waits for it (a reader thread handing answers out cost two more
/// wake-ups per read, each late behind the decoding threads on a busy machine: 0.8 ms).
struct Worker {
    child: Mutex<Child>,
    idle: Mutex<Vec<UnixStream>>,
    returned: Condvar,
    /// Requests being answered now.
    in_flight: AtomicUsize,
    /// How many were in flight when one of them found the worker gone.
    in_flight_at_end: OnceLock<usize>,
    /// The daemon killed it (a call over the limit), rather than it dying of its own.
    stopped: AtomicBool,
    /// A connection failed (the worker died or hung): no request may wait for one.
    failed: AtomicBool,
}

/// Why a worker gave no answer.
enum Fault {
    /// Its connection closed: it died.
    Gone,
    TimedOut,
}

/// Connections per worker: requests in flight at once (the FUSE threads, one per CPU, the
/// page-cache pusher, and some to spare).
fn connections() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .max(4)
}

/// Opens `location` in a worker process; fails as opening it in this process would, or
/// with the reason the worker died or hung while opening it.
pub fn open(location: &Location, options: &SourceOptions) -> Result<IsolatedSource> {
    let name = location.display();
    let source = IsolatedSource {
        args: worker_args(&name, options),
        name,
        limit: options.hdf5_call_limit,
        slots: Arc::new(Slots::new()?),
        current: Mutex::new(None),
        deaths: AtomicU32::new(0),
        bad: Mutex::new(None),
        crashed_on: Mutex::default(),
        listed: Mutex::default(),
        first_root: Mutex::new(None),
        listing_turn: Mutex::new(()),
    };
    let started = Instant::now();
    let worker = source.start("opening the file")?;
    *source.current.lock().unwrap() = Some(worker);
    let opened = started.elapsed();
    // The root is listed now, so a file that crashes libhdf5 as soon as it is looked at
    // is refused when it is opened (at mount), not mounted empty.
    let root = source.list(ROOT)?;
    log::debug!(
        "{}: worker opened it in {:.1} ms, listed its root ({} entries) in {:.1} ms",
        source.name.display(),
        opened.as_secs_f64() * 1e3,
        root.entries.len(),
        (started.elapsed() - opened).as_secs_f64() * 1e3
    );
    *source.first_root.lock().unwrap() = Some(root);
    Ok(source)
}

/// The worker's command line after [`WORKER_ARG`] (parsed by `serve::parse`).
fn worker_args(name: &std::path::Path, options: &SourceOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> =
        vec!["--cache-size".into(), options.cache_size.to_string().into()];
    if options.attrs_json {
        args.push("--attrs-json".into());
    }
    if options.external_links_any {
        args.push("--external-links-any".into());
    }
    if let Some(root) = &options.root {
        args.extend(["--root".into(), root.into()]);
    }
    args.extend(["--".into(), name.into()]);
    args
}

impl IsolatedSource {
    /// The worker to ask, started (and the listings made again) if the last one died.
    fn worker(&self) -> Result<Arc<Worker>> {
        let mut current = self.current.lock().unwrap();
        if let Some(worker) = current.as_ref() {
            return Ok(worker.clone());
        }
        if let Some(why) = self.bad.lock().unwrap().as_ref() {
            return Err(Error::format(&self.name, why.clone()));
        }
        let worker = self.start("starting again")?;
        self.replay(&worker)?;
        *current = Some(worker.clone());
        Ok(worker)
    }

    /// Starts a worker and waits for it to open the file; `doing` names that in errors.
    fn start(&self, doing: &str) -> Result<Arc<Worker>> {
        let worker = Worker::spawn(&self.args, &self.slots)?;
        let started = Instant::now();
        let answer = loop {
            match worker.hello(POLL) {
                Ok(answer) => break answer,
                Err(Fault::TimedOut) if started.elapsed() < self.limit => {
                    if stop_requested() {
                        worker.end();
                        return Err(Error::Mount(format!(
                            "interrupted while opening {}",
                            self.name.display()
                        )));
                    }
                }
                Err(fault) => return Err(self.failed_new(&worker, fault, doing)),
            }
        };
        match answer {
            Answer::Ready => Ok(worker),
            Answer::Failed(e) => {
                worker.end();
                Err(e.into())
            }
            other => Err(Error::Internal(format!("worker said {other:?}"))),
        }
    }

    /// A worker not yet current died or hung: it counts as a death of this file's workers.
    fn failed_new(&self, worker: &Worker, fault: Fault, doing: &str) -> Error {
        let cause = self.end_with(worker, fault, doing);
        self.count_death(&cause);
        Error::format(&self.name, cause)
    }

    /// Lists again, in a new worker, what the dead ones had listed; any other keys than
    /// before and the file is marked bad (its keys would no longer mean the same objects).
    fn replay(&self, worker: &Worker) -> Result<()> {
        let listed: Vec<(Key, u64)> = self
            .listed
            .lock()
            .unwrap()
            .iter()
            .map(|l| (l.dir, l.keys))
            .collect();
        for (dir, keys) in listed {
            let again = match self.ask(worker, Request::List { dir }) {
                Ok(Answer::Listing(listing)) => keys_of(&listing) == keys,
                Ok(Answer::Failed(e)) => return Err(e.into()),
                Ok(_) => false,
                Err(fault) => return Err(self.failed_new(worker, fault, "listing again")),
            };
            if !again {
                worker.end();
                return Err(
                    self.mark_bad("its listing came out different in a new libhdf5 worker".into())
                );
            }
        }
        Ok(())
    }

    /// Sends `request` and waits for its answer, at most the call limit.
    fn ask(&self, worker: &Worker, request: Request) -> Result<Answer, Fault> {
        worker.ask(&request, self.limit)
    }

    /// `request` (about object `key`) of the current worker.
    fn request(&self, request: Request, key: Key) -> Result<Answer> {
        if let Some((what, cause)) = self.crashed_on.lock().unwrap().get(&key) {
            return Err(Error::read(&self.name, what, cause));
        }
        let worker = self.worker()?;
        let doing = match &request {
            Request::List { .. } => "listing",
            _ => "reading",
        };
        match self.ask(&worker, request) {
            Ok(Answer::Failed(e)) => Err(e.into()),
            Ok(answer) => Ok(answer),
            Err(fault) => {
                let gone = matches!(fault, Fault::Gone);
                let cause = self.failed_current(&worker, fault, doing);
                let what = self.name_of_key(key);
                // Remembered only when it was the worker's one request: of several in
                // flight, any may have crashed it.
                let alone = worker.in_flight_at_end.get() == Some(&1);
                if gone && alone && worker.crashed(worker.end()).is_some() {
                    let remembered = (what.clone(), cause.clone());
                    self.crashed_on.lock().unwrap().insert(key, remembered);
                }
                Err(Error::read(&self.name, what, cause))
            }
        }
    }

    /// The current worker died or hung: ends it, counts the death once (however many
    /// requests it failed), and says what happened.
    fn failed_current(&self, worker: &Worker, fault: Fault, doing: &str) -> String {
        let cause = self.end_with(worker, fault, doing);
        let mut current = self.current.lock().unwrap();
        let was_current = current.as_ref().is_some_and(|w| std::ptr::eq(&**w, worker));
        if was_current {
            *current = None;
            drop(current);
            self.count_death(&cause);
        }
        cause
    }

    /// Kills and reaps `worker`; why it gave no answer while `doing`.
    fn end_with(&self, worker: &Worker, fault: Fault, doing: &str) -> String {
        let status = worker.end();
        let stopped = status.and_then(|s| s.signal()).is_some() && worker.crashed(status).is_none();
        if matches!(fault, Fault::Gone) && stopped {
            return format!(
                "the libhdf5 worker process was stopped while {doing}: another request on this \
                 file did not finish within {} s",
                self.limit.as_secs_f64()
            );
        }
        match (fault, worker.crashed(status)) {
            (Fault::TimedOut, _) => format!(
                "libhdf5 did not finish {doing} within {} s in its worker process (-o \
                 {STEP_LIMIT_OPTION}SECONDS): the file is corrupt or crafted, or its store stalled",
                self.limit.as_secs_f64()
            ),
            (Fault::Gone, Some(signal)) => format!(
                "libhdf5 crashed (signal {signal}) {doing} this file in its worker process: the \
                 file is corrupt or crafted"
            ),
            (Fault::Gone, None) => format!("the libhdf5 worker process ended while {doing}"),
        }
    }

    fn count_death(&self, cause: &str) {
        if self.deaths.fetch_add(1, Ordering::AcqRel) + 1 >= DEATHS_BEFORE_BAD {
            self.mark_bad(format!(
                "{cause}; marked bad after {DEATHS_BEFORE_BAD} such failures"
            ));
        }
    }

    fn mark_bad(&self, why: String) -> Error {
        log::error!(
            "{}: {why}: every later read of it fails",
            self.name.display()
        );
        *self.bad.lock().unwrap() = Some(why.clone());
        Error::format(&self.name, why)
    }

    /// The source's name for `key` (from a new worker), or the key itself.
    fn name_of_key(&self, key: Key) -> String {
        let named =
            self.worker()
                .ok()
                .and_then(|worker| match self.ask(&worker, Request::Name { key }) {
                    Ok(Answer::Name(name)) => name,
                    Ok(_) => None,
                    Err(fault) => {
                        self.failed_current(&worker, fault, "naming an object");
                        None
                    }
                });
        named.unwrap_or_else(|| format!("object {key}"))
    }
}

impl Source for IsolatedSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        let _turn = self.listing_turn.lock().unwrap();
        if dir == ROOT {
            if let Some(root) = self.first_root.lock().unwrap().take() {
                return Ok(root);
            }
        }
        let Answer::Listing(listing) = self.request(Request::List { dir }, dir)? else {
            return Err(Error::Internal(
                "worker answered a listing with something else".into(),
            ));
        };
        self.listed.lock().unwrap().push(Listed {
            dir,
            keys: keys_of(&listing),
        });
        Ok(listing)
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        for piece in buf.chunks_mut(SLOT_BYTES) {
            let slot = self.slots.take();
            let request = Request::Read {
                file,
                offset: offset + done,
                len: piece.len() as u32,
                slot: slot.index,
            };
            self.request(request, file)?;
            // SAFETY: we hold the slot, and its worker has answered: nobody writes it now.
            let bytes = unsafe { self.slots.bytes(slot.index, piece.len()) };
            piece.copy_from_slice(bytes.ok_or_else(|| Error::Internal("slot".into()))?);
            done += piece.len() as u64;
        }
        Ok(())
    }

    fn name_of(&self, key: Key) -> Option<String> {
        Some(self.name_of_key(key))
    }
}

/// A listing's keys, folded into one number (FNV-1a over their bytes).
fn keys_of(listing: &Listing) -> u64 {
    listing
        .entries
        .iter()
        .flat_map(|e| e.key.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

impl Worker {
    /// Starts `arrfs __worker ARGS` with one end of each of its connections and the slots.
    fn spawn(args: &[OsString], slots: &Slots) -> Result<Arc<Worker>> {
        let io = |e| Error::io("libhdf5 worker process", e);
        let pairs = (0..connections())
            .map(|_| UnixStream::pair())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io)?;
        let (ours, theirs): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
        let mut command = Command::new(exe);
        command
            .arg(WORKER_ARG)
            .arg("--connections")
            .arg(theirs.len().to_string())
            .args(args)
            .envs(crate::connect::remote_env())
            .env(crate::logging::WORKER_LOG_ENV, crate::logging::worker_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Not the daemon's own stderr: a worker must not hold the terminal (or the pipe
            // a parent waits on) once the daemon has left it.
            .stderr(Stdio::piped());
        let mut fds: Vec<i32> = vec![slots.fd()];
        fds.extend(theirs.iter().map(|s| s.as_raw_fd()));
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and makes only the
        // async-signal-safe calls fcntl, dup2, sigprocmask, prctl and getppid; `fds` was
        // allocated before the fork and is only read.
        unsafe { command.pre_exec(move || prepare_child(&fds, parent)) };
        let mut child = spawn(command).map_err(io)?;
        drop(theirs);
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                    let Ok(line) = line else { return };
                    crate::logging::forward(&line);
                }
            });
        }
        Ok(Arc::new(Worker {
            child: Mutex::new(child),
            idle: Mutex::new(ours),
            returned: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            in_flight_at_end: OnceLock::new(),
            stopped: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        }))
    }

    /// The worker's first answer (on its first connection), waiting at most `wait`: Ready
    /// once the source is open.
    fn hello(&self, wait: Duration) -> Result<Answer, Fault> {
        let idle = self.idle.lock().unwrap();
        let first = idle.first().ok_or(Fault::Gone)?;
        first
            .set_read_timeout(Some(wait))
            .map_err(|_| Fault::Gone)?;
        // Small frames arrive whole: a wait that ends early has read nothing.
        receive(&mut &*first)
    }

    /// Sends `request` on an idle connection and waits at most `limit` for the answer.
    fn ask(&self, request: &Request, limit: Duration) -> Result<Answer, Fault> {
        let mut conn = self.take().ok_or(Fault::Gone)?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let answered = conn
            .set_read_timeout(Some(limit))
            .map_err(|_| Fault::Gone)
            .and_then(|()| wire::send(&mut conn, request).map_err(|_| Fault::Gone))
            .and_then(|()| receive(&mut conn));
        if answered.is_err() {
            self.in_flight_at_end
                .get_or_init(|| self.in_flight.load(Ordering::Acquire));
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut idle = self.idle.lock().unwrap();
        match answered {
            Ok(_) => {
                idle.push(conn);
                self.returned.notify_one();
            }
            Err(_) => {
                self.failed.store(true, Ordering::Release);
                self.returned.notify_all();
            }
        }
        answered
    }

    /// An idle connection, waiting for one if all are in use; None once one has failed (a
    /// failed connection is not given back, so waiting for it would never end).
    fn take(&self) -> Option<UnixStream> {
        let mut idle = self.idle.lock().unwrap();
        loop {
            if self.failed.load(Ordering::Acquire) {
                return None;
            }
            if let Some(conn) = idle.pop() {
                return Some(conn);
            }
            idle = self.returned.wait(idle).unwrap();
        }
    }

    /// Kills the worker (if it still runs) and reaps it; its exit status.
    fn end(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap();
        if let Ok(None) = child.try_wait() {
            self.stopped.store(true, Ordering::Release);
            let _ = child.kill();
        }
        child.wait().ok()
    }

    /// Whether it died of a signal of its own (a crash), not of the daemon's SIGKILL.
    fn crashed(&self, status: Option<std::process::ExitStatus>) -> Option<i32> {
        let signal = status?.signal()?;
        let killed = signal == libc::SIGKILL && self.stopped.load(Ordering::Acquire);
        (!killed).then_some(signal)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.end();
    }
}

/// One answer from `conn`: a wait past its read timeout is [`Fault::TimedOut`], a closed or
/// broken connection [`Fault::Gone`].
fn receive(conn: &mut impl std::io::Read) -> Result<Answer, Fault> {
    match wire::receive::<Answer>(conn) {
        Ok(Some(answer)) => Ok(answer),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(Fault::TimedOut)
        }
        Ok(None) | Err(_) => Err(Fault::Gone),
    }
}

/// Starts `command` from one long-lived thread: a worker is killed when the *thread* that
/// started it ends (`PR_SET_PDEATHSIG`), and request threads come and go.
fn spawn(command: Command) -> std::io::Result<Child> {
    type Job = (Command, SyncSender<std::io::Result<Child>>);
    static SPAWNER: LazyLock<Mutex<mpsc::Sender<Job>>> = LazyLock::new(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut command, done) in rx {
                let _ = done.send(command.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (done, spawned) = mpsc::sync_channel(1);
    SPAWNER
        .lock()
        .unwrap()
        .send((command, done))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    spawned
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// In the child, between fork and exec: the slots and the connections at their fixed
/// numbers ([`WORKER_SHM_FD`], then one each from [`WORKER_FIRST_CONNECTION_FD`]), no
/// signal blocked (the daemon blocks SIGINT/SIGTERM), and SIGKILL when the daemon dies.
fn prepare_child(fds: &[i32], parent: u32) -> std::io::Result<()> {
    let top = WORKER_SHM_FD + fds.len() as i32;
    // Any may sit at another's fixed number: all move above them first (no allocation
    // here, between fork and exec: a fixed array).
    let mut moved = [0; 64];
    let moved = moved
        .get_mut(..fds.len())
        .ok_or(std::io::ErrorKind::InvalidInput)?;
    for (slot, &fd) in moved.iter_mut().zip(fds) {
        *slot = move_above(fd, top)?;
    }
    for (at, &fd) in (WORKER_SHM_FD..).zip(moved.iter()) {
        // SAFETY: dup2 on descriptors of this (child) process; the copy has no CLOEXEC.
        if unsafe { libc::dup2(fd, at) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: sigprocmask with an empty set only changes this (child) process's mask.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    die_with_parent(parent)
}

/// A copy of `fd` numbered at least `top` (closed on exec).
fn move_above(fd: i32, top: i32) -> std::io::Result<i32> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor of this (child) process.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, top) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(copy)
}

/// Asks the kernel for SIGKILL when the parent dies, so a daemon killed (even with SIGKILL)
/// leaves no libhdf5 process behind.
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes only a setting of
    // this (child) process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The parent may have died between fork and prctl: then no signal will ever come, and
    // the child has been handed to another parent.
    // SAFETY: getppid(2) has no arguments and cannot fail.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM is waiting: the mount blocks them until it serves, and a user
/// who presses Ctrl-C while a file opens must not wait for it.
fn stop_requested() -> bool {
    // SAFETY: sigpending fills a local set, which is only read afterwards.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending) == 0
            && (libc::sigismember(&pending, libc::SIGINT) == 1
                || libc::sigismember(&pending, libc::SIGTERM) == 1)
    }
}
