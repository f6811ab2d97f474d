//! The worker process: `arrfs __worker SOURCE ...` opens SOURCE as a source of its format
//! (isolation off: it is the isolation) and answers the daemon's requests on fd 3, with
//! read payloads in the shared slots on fd 4, on a few threads so reads decode in parallel.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use super::slots::Slots;
use super::wire::{self, Answer, Request, WireError, HELLO};
use super::{WORKER_ARG, WORKER_SHM_FD, WORKER_SOCKET_FD};
use crate::error::{Error, Result};
use crate::io::inflate::SeekPointStore;
use crate::source::{self, Source, SourceOptions};

/// Threads answering requests: one per CPU, as the daemon has FUSE threads (more would
/// only add malloc arenas, each keeping freed memory of its own: 16 threads doubled the
/// peak memory of a read through libhdf5).
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// `arrfs __worker ...`: serves until the daemon closes the socket. None when this process
/// is not a worker. `main` calls it before parsing the command line.
pub fn run_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WORKER_ARG {
        return None;
    }
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    // SAFETY: the daemon passes the socket as fd 3 and the memfd as fd 4 (dup2 before
    // exec); nothing else in this process owns them.
    let (socket, shm) = unsafe {
        (
            UnixStream::from_raw_fd(WORKER_SOCKET_FD),
            File::from_raw_fd(WORKER_SHM_FD),
        )
    };
    crate::logging::init_worker();
    Some(match serve(&args, socket, shm) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("worker: {e}");
            ExitCode::FAILURE
        }
    })
}

/// The source's options from the worker's arguments ([`super::worker_args`]), and SOURCE.
fn parse(args: &[String]) -> Result<(SourceOptions, PathBuf)> {
    // The daemon lists the root as soon as the worker is ready ([`super::open`]).
    let mut options = SourceOptions {
        root_listed_at_open: true,
        ..SourceOptions::default()
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--cache-size" => {
                options.cache_size = rest
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| Error::Usage("--cache-size N".into()))?
            }
            "--attrs-json" => options.attrs_json = true,
            "--external-links-any" => options.external_links_any = true,
            "--root" => options.root = rest.next().map(PathBuf::from),
            "--" => break,
            other => return Err(Error::Usage(format!("worker: unknown argument {other}"))),
        }
    }
    let source = rest
        .next()
        .ok_or_else(|| Error::Usage("worker: no SOURCE".into()))?;
    Ok((options, PathBuf::from(source)))
}

fn serve(args: &[String], socket: UnixStream, shm: File) -> Result<()> {
    let io = |e| Error::io("worker socket", e);
    let mut input = socket.try_clone().map_err(io)?;
    let output = Arc::new(Mutex::new(socket));
    let slots = Arc::new(Slots::map(shm)?);
    let opened = parse(args).and_then(|(options, path)| {
        let location = crate::connect::locate_in_worker(&path, options.cache_size)?;
        source::open_container(
            &location,
            source::detect(&location)?,
            &options,
            &SeekPointStore::new(options.cache_size),
        )
    });
    let source = match opened {
        Ok(source) => {
            answer(&output, HELLO, &Answer::Ready);
            source
        }
        Err(e) => {
            answer(&output, HELLO, &Answer::Failed(WireError::from(&e)));
            return Ok(());
        }
    };
    let (tx, rx) = mpsc::channel::<(u64, Request)>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..threads() {
        let (source, slots, output, rx) =
            (source.clone(), slots.clone(), output.clone(), rx.clone());
        std::thread::spawn(move || work(&*source, &slots, &output, &rx));
    }
    while let Some((id, request)) = wire::receive::<Request>(&mut input).map_err(io)? {
        if tx.send((id, request)).is_err() {
            break;
        }
    }
    Ok(())
}

/// One answering thread: takes requests until the channel closes.
fn work(
    source: &dyn Source,
    slots: &Slots,
    output: &Mutex<UnixStream>,
    requests: &Mutex<Receiver<(u64, Request)>>,
) {
    loop {
        let next = requests.lock().unwrap().recv();
        let Ok((id, request)) = next else { return };
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(source, slots, request)
        }))
        .unwrap_or_else(|panic| {
            Answer::Failed(WireError::Other(format!(
                "panic in the worker: {}",
                crate::logging::panic_message(&*panic)
            )))
        });
        answer(output, id, &answered);
    }
}

fn handle(source: &dyn Source, slots: &Slots, request: Request) -> Answer {
    injected_fault(source, &request);
    let done = match request {
        Request::List { dir } => source.list(dir).map(Answer::Listing),
        Request::Name { key } => Ok(Answer::Name(source.name_of(key))),
        Request::Read {
            file,
            offset,
            len,
            slot,
        } => {
            // SAFETY: the daemon gave this slot to this request alone and waits for the
            // answer before using or reusing it.
            match unsafe { slots.bytes(slot, len as usize) } {
                Some(buf) => {
                    // Sources write only the bytes they have: the rest must read as zeros.
                    buf.fill(0);
                    source.read(file, offset, buf).map(|()| Answer::Read)
                }
                None => Err(Error::Internal(format!("slot {slot} of {len} bytes"))),
            }
        }
    };
    done.unwrap_or_else(|e| Answer::Failed(WireError::from(&e)))
}

/// `ARRFS_TEST_WORKER_FAULT=crash-reading:OBJECT[,OBJECT...]` (or `crash-listing:`,
/// `hang-reading:`, `hang-listing:`): the worker crashes with SIGSEGV, or hangs, when asked
/// for one of the OBJECTs (the source's name for it, e.g. an HDF5 path). For the tests of what the daemon does when a
/// worker dies or hangs on one object of a file, with the rest of the file fine.
const FAULT_ENV: &str = "ARRFS_TEST_WORKER_FAULT";

fn injected_fault(source: &dyn Source, request: &Request) {
    static FAULT: std::sync::LazyLock<Option<(String, String)>> = std::sync::LazyLock::new(|| {
        let given = std::env::var(FAULT_ENV).ok()?;
        let (kind, object) = given.split_once(':')?;
        Some((kind.to_string(), object.to_string()))
    });
    let Some((kind, object)) = FAULT.as_ref() else {
        return;
    };
    let (doing, key) = match request {
        Request::List { dir } => ("listing", *dir),
        Request::Read { file, .. } => ("reading", *file),
        Request::Name { .. } => return,
    };
    let Some(name) = source.name_of(key) else {
        return;
    };
    if !object.split(',').any(|o| o == name) {
        return;
    }
    match kind.strip_suffix(doing).and_then(|k| k.strip_suffix('-')) {
        // SAFETY: signal(2) restores SIGSEGV's default action (Rust's runtime handles it
        // to report stack overflows, and returns on a raised one), then raise(2) sends it.
        Some("crash") => unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        },
        Some("hang") => loop {
            std::thread::park();
        },
        _ => {}
    }
}

/// Sends one answer; a daemon gone leaves nobody to answer, and the read loop then ends.
fn answer(output: &Mutex<UnixStream>, id: u64, answer: &Answer) {
    let _ = wire::send(&mut *output.lock().unwrap(), id, answer);
}
