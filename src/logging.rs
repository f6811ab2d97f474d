//! Logging: env_logger's filter (`-v`, `RUST_LOG`) and format on stderr. A background daemon
//! without `--log-file` has no terminal left once the mount is ready, so from then on its
//! lines go to syslog (facility daemon, ident `arrfs`).

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use log::{Level, Log, Metadata, Record};

static LOGGER: OnceLock<Logger> = OnceLock::new();
static TO_SYSLOG: AtomicBool = AtomicBool::new(false);

struct Logger {
    stderr: env_logger::Logger,
}

/// Installs the logger: `verbose` counts `-v` flags; `RUST_LOG` overrides.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(format!("arrfs={level}"));
    install(env_logger::Builder::from_env(env));
}

/// Installs `builder`'s logger, with millisecond timestamps, as this process's.
fn install(mut builder: env_logger::Builder) {
    let stderr = builder.format_timestamp_millis().build();
    let max_level = stderr.filter();
    let logger = LOGGER.get_or_init(|| Logger { stderr });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max_level);
    }
}

/// Environment of a worker process ([`crate::source::worker`]): the daemon's log filter.
pub const WORKER_LOG_ENV: &str = "ARRFS_WORKER_LOG";

/// [`WORKER_LOG_ENV`] for a worker of this process.
pub fn worker_env() -> String {
    log::max_level().to_string().to_lowercase()
}

/// In a worker: logs with its daemon's filter ([`worker_env`]) on stderr, a pipe the
/// daemon reads and hands on ([`forward`]).
pub fn init_worker() {
    let filter = std::env::var(WORKER_LOG_ENV).unwrap_or_else(|_| "warn".into());
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&format!("arrfs={filter}"));
    install(builder);
}

/// A line a worker logged, written where this process's own lines go now (stderr, or
/// syslog once a detached daemon has left its terminal).
pub fn forward(line: &str) {
    if !TO_SYSLOG.load(Ordering::Acquire) {
        eprintln!("{line}");
        return;
    }
    let Ok(line) = CString::new(line.replace('\0', "\\0")) else {
        return;
    };
    // SAFETY: a constant "%s" format with one valid C string argument.
    unsafe { libc::syslog(libc::LOG_WARNING, c"%s".as_ptr(), line.as_ptr()) };
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Sends every later line to syslog instead of stderr.
pub fn to_syslog() {
    // SAFETY: the ident is a static C string, as openlog requires (it keeps the pointer).
    unsafe { libc::openlog(c"arrfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    TO_SYSLOG.store(true, Ordering::Release);
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.stderr.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.stderr.matches(record) {
            return;
        }
        if TO_SYSLOG.load(Ordering::Acquire) {
            syslog(record)
        } else {
            self.stderr.log(record)
        }
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

fn syslog(record: &Record) {
    let text = format!("{}", record.args()).replace('\0', "\\0");
    let Ok(line) = CString::new(text) else {
        return;
    };
    // SAFETY: a constant "%s" format with one valid C string argument.
    unsafe { libc::syslog(priority(record.level()), c"%s".as_ptr(), line.as_ptr()) };
}

fn priority(level: Level) -> libc::c_int {
    match level {
        Level::Error => libc::LOG_ERR,
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    }
}
