//! The worker process: `arrfs __worker --connections N ... SOURCE` opens SOURCE as a source
//! of its format (isolation off: it is the isolation) and answers the daemon's requests on
//! N connections (fds 4 to 4+N-1), one thread each, with read payloads in the shared slots
//! (fd 3).

use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use super::slots::Slots;
use super::wire::{self, Answer, Request, WireError};
use super::{WORKER_ARG, WORKER_FIRST_CONNECTION_FD, WORKER_SHM_FD};
use crate::error::{Error, Result};
use crate::io::inflate::SeekPointStore;
use crate::source::{self, Source, SourceOptions};

/// `arrfs __worker ...`: serves until the daemon closes its connections. None when this
/// process is not a worker. `main` calls it before parsing the command line.
pub fn run_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WORKER_ARG {
        return None;
    }
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    crate::logging::init_worker();
    keep_freed_memory();
    Some(match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("worker: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Decoded chunks are a few MiB each, allocated and freed all the time: above glibc's
/// default threshold each is a fresh mmap whose pages fault in and are zeroed again (a
/// third of the worker's CPU on a 1 GiB gzip read). Served from the heap and kept there
/// instead, they reuse warm pages; the chunk cache bounds how many are alive.
fn keep_freed_memory() {
    // SAFETY: mallopt only changes malloc's tunables of this process, before any thread
    // but this one exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// The source's options from the worker's arguments ([`super::worker_args`]), and SOURCE.
fn parse(args: &[String]) -> Result<(SourceOptions, usize, PathBuf)> {
    // The daemon lists the root as soon as the worker is ready ([`super::open`]).
    let mut options = SourceOptions {
        root_listed_at_open: true,
        ..SourceOptions::default()
    };
    let mut connections = 0;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--connections" => {
                connections = rest
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=60).contains(n))
                    .ok_or_else(|| Error::Usage("--connections N".into()))?
            }
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
    if connections == 0 {
        return Err(Error::Usage("worker: no --connections N".into()));
    }
    let source = rest
        .next()
        .ok_or_else(|| Error::Usage("worker: no SOURCE".into()))?;
    Ok((options, connections, PathBuf::from(source)))
}

fn serve(args: &[String]) -> Result<()> {
    let (options, connections, path) = parse(args)?;
    // SAFETY: the daemon passes the memfd as fd 3 and the connections from fd 4 on (dup2
    // before exec); nothing else in this process owns them.
    let (shm, connections) = unsafe {
        let shm = File::from_raw_fd(WORKER_SHM_FD);
        let connections: Vec<UnixStream> = (0..connections as i32)
            .map(|i| UnixStream::from_raw_fd(WORKER_FIRST_CONNECTION_FD + i))
            .collect();
        (shm, connections)
    };
    let slots = Slots::map(shm)?;
    // A remote file's blocks and its decoded chunks share the cache: half each (both
    // whole, the worker with the daemon passed `--cache-size` + 64 MiB on R3: 342 MB).
    let block_cache = options.cache_size / 2;
    let opened = crate::connect::locate_in_worker(&path, block_cache).and_then(|location| {
        source::open_container(
            &location,
            source::detect(&location)?,
            &options,
            &SeekPointStore::new(options.cache_size),
        )
    });
    let mut first = &connections[0];
    let source = match opened {
        Ok(source) => source,
        Err(e) => {
            let _ = wire::send(&mut first, &Answer::Failed(WireError::from(&e)));
            return Ok(());
        }
    };
    let _ = wire::send(&mut first, &Answer::Ready);
    std::thread::scope(|threads| {
        for connection in &connections {
            threads.spawn(|| answer_all(&*source, &slots, connection));
        }
    });
    Ok(())
}

/// Answers the requests of one connection, one at a time, until the daemon closes it.
fn answer_all(source: &dyn Source, slots: &Slots, mut connection: &UnixStream) {
    while let Ok(Some(request)) = wire::receive::<Request>(&mut connection) {
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(source, slots, request)
        }))
        .unwrap_or_else(|panic| {
            Answer::Failed(WireError::Other(format!(
                "panic in the worker: {}",
                crate::logging::panic_message(&*panic)
            )))
        });
        if wire::send(&mut connection, &answered).is_err() {
            return;
        }
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
