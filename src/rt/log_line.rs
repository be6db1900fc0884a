//! The text log line, written the way tracing-subscriber's default (`Full`) format writes it, byte
//! for byte, at a fraction of the cost.
//!
//! Every proxied request logs one access record, and the default format spent about 18,000
//! instructions on it (callgrind, one chat request: a sixth of the whole request): colour
//! styles painted as empty strings, the date worked out from scratch, every value through
//! `core::fmt`. This one keeps the date of the current second per thread, writes printable
//! values as they are, and hands anything unusual (colours, spans, events from the `log` crate,
//! a message with control characters) to the default format, so the output is the same.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The default text format, made cheaper for plain lines.
#[derive(Default)]
pub struct TextLine {
    full: Format<Full>,
}

struct Scratch {
    line: String,
    /// The second `prefix` was written for, and `YYYY-MM-DDTHH:MM:SS.` for it.
    second: u64,
    prefix: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { line: String::new(), second: u64::MAX, prefix: String::new() })
    };
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let plain = !writer.has_ansi_escapes()
            && event.parent().is_none()
            && (!event.is_contextual() || ctx.lookup_current().is_none());
        if plain {
            let written = SCRATCH.with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                let s = &mut *s;
                s.line.clear();
                line(s, event)?;
                writer.write_str(&s.line).ok()
            });
            if written.is_some() {
                return Ok(());
            }
        }
        self.full.format_event(ctx, writer, event)
    }
}

/// The whole line into `s.line`; `None` when the default format must write it.
fn line(s: &mut Scratch, event: &Event<'_>) -> Option<()> {
    let meta = event.metadata();
    let mut fields = start_line(s, *meta.level(), meta.target())?;
    event.record(&mut fields);
    fields.end()
}

/// The time, level and target of a line into `s.line`, and the writer of its fields.
fn start_line<'a>(s: &'a mut Scratch, level: Level, target: &str) -> Option<Fields<'a>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    if now.as_secs() != s.second {
        s.second = now.as_secs();
        s.prefix.clear();
        write_second(&mut s.prefix, now.as_secs()).ok()?;
    }
    let line = &mut s.line;
    line.push_str(&s.prefix);
    push_padded(line, now.subsec_micros().into(), 6);
    line.push_str("Z ");
    line.push_str(match level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    });
    line.push_str(target);
    line.push_str(": ");
    Some(Fields {
        line,
        first: true,
        plain: true,
    })
}

/// Whether the request path may write its routine lines itself ([`info_line`]): set when
/// logging is set up with this text format and no colours.
static DIRECT: AtomicBool = AtomicBool::new(false);

pub fn write_directly(on: bool) {
    DIRECT.store(on, Ordering::Relaxed);
}

/// Writes an INFO line of `target` as this format would, without tracing's dispatch and its
/// visitor, calling `fields` to write the fields (the access record: about 3,000 instructions
/// less per request). False when it cannot, and the line must go through tracing: logging is
/// not set up for it, or a value needs what only the default format does. The caller has
/// checked that the line is enabled.
pub fn info_line(target: &str, message: &str, fields: impl FnOnce(&mut Fields<'_>)) -> bool {
    if !DIRECT.load(Ordering::Relaxed) {
        return false;
    }
    SCRATCH
        .with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let s = &mut *s;
            s.line.clear();
            format_info(s, target, message, fields)?;
            super::log_buffer::routine(s.line.as_bytes());
            Some(())
        })
        .is_some()
}

fn format_info(
    s: &mut Scratch,
    target: &str,
    message: &str,
    fields: impl FnOnce(&mut Fields<'_>),
) -> Option<()> {
    let mut line = start_line(s, Level::INFO, target)?;
    line.str("message", message);
    fields(&mut line);
    line.end()
}

/// `YYYY-MM-DDTHH:MM:SS.` for a second since the epoch (UTC), by humantime, which keyproxy
/// already links; done once a second per thread.
fn write_second(out: &mut String, secs: u64) -> fmt::Result {
    let at = UNIX_EPOCH + std::time::Duration::from_secs(secs);
    write!(out, "{}", humantime::format_rfc3339_seconds(at))?;
    out.pop(); // the `Z`; the micros and their `Z` follow
    out.push('.');
    Ok(())
}

fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Bytes a quoted value may hold as they are: printable ASCII but `"` and `\`.
static BARE: [bool; 256] = {
    let mut bare = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        bare[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    bare
};

/// The fields as tracing-subscriber's `DefaultVisitor` writes them without colours: separated
/// by a space, the message bare, the rest `name=value` with values as `Debug` shows them.
pub struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    /// False once a field needs what only the default format does.
    plain: bool,
}

impl Fields<'_> {
    /// The separator and `name=`; false when the field is written by the default format only.
    fn start(&mut self, name: &str) -> Option<bool> {
        if name.starts_with("log.") || name.starts_with("r#") {
            self.plain = false;
            return None;
        }
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        let message = name == "message";
        if !message {
            self.line.push_str(name);
            self.line.push('=');
        }
        Some(message)
    }

    /// The line's end; `None` when the default format must write it.
    fn end(self) -> Option<()> {
        if !self.plain {
            return None;
        }
        self.line.push('\n');
        Some(())
    }

    /// A string field (`name = "value"`, or the message).
    pub fn str(&mut self, name: &str, value: &str) {
        let Some(message) = self.start(name) else {
            return;
        };
        // The common value is printable ASCII with no quote or backslash: one lookup per byte.
        let bare = value.bytes().all(|b| BARE[usize::from(b)]);
        let printable = bare || value.bytes().all(|b| (0x20..0x7f).contains(&b));
        match (message, printable) {
            (true, true) => self.line.push_str(value),
            (true, false) => self.plain = false,
            (false, true) if bare => {
                self.line.push('"');
                self.line.push_str(value);
                self.line.push('"');
            }
            (false, _) => {
                let _ = write!(self.line, "{value:?}");
            }
        }
    }

    /// A field recorded with `%` (Display), written bare.
    pub fn display(&mut self, name: &str, value: &dyn fmt::Display) {
        self.debug(name, &format_args!("{value}"));
    }

    pub fn u64(&mut self, name: &str, value: u64) {
        if self.start(name) == Some(false) {
            push_padded(self.line, value, 0);
        } else {
            self.plain = false;
        }
    }

    /// Times rounded to tenths (the access record's) without `core::fmt`: `Debug` writes the
    /// shortest text that reads back as the same number, which for tenths is `int.tenth`.
    pub fn f64(&mut self, name: &str, value: f64) {
        let tenths = (value * 10.0).round();
        if value.is_sign_positive() && tenths < 1e15 && tenths / 10.0 == value {
            if self.start(name) == Some(false) {
                let tenths = tenths as u64;
                push_padded(self.line, tenths / 10, 0);
                self.line.push('.');
                push_padded(self.line, tenths % 10, 0);
            } else {
                self.plain = false;
            }
        } else {
            self.debug(name, &value);
        }
    }

    fn debug(&mut self, name: &str, value: &dyn fmt::Debug) {
        let Some(message) = self.start(name) else {
            return;
        };
        let from = self.line.len();
        let _ = write!(self.line, "{value:?}");
        // The default format escapes these in a message (terminal control sequences).
        if message
            && self.line[from..].chars().any(|c| {
                matches!(
                    c,
                    '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
                )
            })
        {
            self.plain = false;
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.str(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.u64(field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.f64(field.name(), value);
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        self.plain = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.debug(field.name(), value);
    }
}

#[cfg(test)]
#[path = "log_line_tests.rs"]
pub(crate) mod tests;
