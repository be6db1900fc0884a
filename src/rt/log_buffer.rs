//! Where log lines go: stderr, with the worker threads' routine lines (the access log) collected
//! per thread and written [`DELAY`] after the first of them, or at once when [`LIMIT`] bytes
//! have gathered.
//!
//! A write to stderr per request costs the request path a syscall, and a writer thread woken per
//! line (tracing-appender) costs a context switch per request and spins while it waits, which on
//! a 2-core machine takes time from the threads that serve requests. Collecting per thread needs
//! no lock and no wake-up. Writing when the thread went idle cost one write per request at low
//! load (a request, then idle): about 40 us of a one-connection round trip. So the first line
//! collected starts a timer task on the same thread, and everything gathered by then goes in one
//! write. Warnings and errors, and every line from other threads, are written at once, after
//! what the thread had collected, so lines keep their order.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Collected bytes are written once a thread has this many.
const LIMIT: usize = 16 * 1024;

/// Routine lines wait at most this long.
pub const DELAY: std::time::Duration = std::time::Duration::from_millis(50);

thread_local! {
    /// `None` on threads that write through.
    static COLLECTED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// From now on, routine lines logged on this thread are collected until [`flush`].
pub fn collect_on_this_thread() {
    COLLECTED.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.get_or_insert_with(|| Vec::with_capacity(LIMIT));
        }
    });
}

/// Writes what this thread has collected.
pub fn flush() {
    COLLECTED.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if let Some(buf) = c.as_mut() {
                write_out(buf);
            }
        }
    });
}

/// A task on this thread's runtime (one worker thread each, so it runs here) that writes the
/// batch out after [`DELAY`]; without a runtime, the batch goes at once.
fn flush_later() {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async {
                tokio::time::sleep(DELAY).await;
                flush();
            });
        }
        Err(_) => flush(),
    }
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        // Nowhere to report a failed write to stderr; the lines are dropped, as with any logger.
        let _ = io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// A routine line (not a warning or an error) written without tracing, collected as tracing's are.
pub fn routine(line: &[u8]) {
    let _ = Line { urgent: false }.write(line);
}

/// The `MakeWriter` for tracing-subscriber.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

pub struct Line {
    urgent: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // None: not collected here; Some(true): the first line of a new batch.
        let collected = COLLECTED.with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            let buf = c.as_mut()?;
            let first = buf.is_empty();
            buf.extend_from_slice(data);
            if self.urgent || buf.len() >= LIMIT {
                write_out(buf);
                return Some(false);
            }
            Some(first)
        });
        match collected {
            None => io::stderr().lock().write_all(data)?,
            Some(true) => flush_later(),
            Some(false) => {}
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
