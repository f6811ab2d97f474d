//! Progress on long work (`arrfs cat --output`, `arrfs show --stats`, the metadata walk of a
//! mount): drawn on stderr only when stderr is a terminal, so scripts, pipes and logs never
//! see a bar.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `arrfs cat --output` shows a bar from this many bytes on (smaller files are done at once).
pub const CAT_BAR_BYTES: u64 = 64 << 20;

/// How long a metadata walk may take before a spinner says what is going on.
pub const WALK_SPINNER_DELAY: Duration = Duration::from_secs(2);

fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar over `len` bytes, labelled `what`; hidden when stderr is not a terminal.
pub fn bytes(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// A bar over `len` elements, labelled `what`; hidden when stderr is not a terminal.
pub fn elements(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target());
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} eta {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// A spinner that appears only if the work outlives `delay` (most walks take milliseconds,
/// and a flash of a spinner is noise), and goes away when this is dropped.
pub struct DelayedSpinner {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DelayedSpinner {
    pub fn start(delay: Duration, message: String) -> DelayedSpinner {
        if !std::io::stderr().is_terminal() {
            return DelayedSpinner {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if stopped.recv_timeout(delay) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            let spinner = ProgressBar::with_draw_target(None, draw_target());
            let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .expect("a valid template");
            spinner.set_style(style);
            spinner.set_message(message);
            spinner.enable_steady_tick(Duration::from_millis(100));
            // Either a stop or the sender dropped ends the wait.
            let _ = stopped.recv();
            spinner.finish_and_clear();
        });
        DelayedSpinner {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for DelayedSpinner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
