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
    let meta = event.metadata();
    line.push_str(match *meta.level() {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    });
    line.push_str(meta.target());
    line.push_str(": ");
    let mut fields = Fields {
        line,
        first: true,
        plain: true,
    };
    event.record(&mut fields);
    if !fields.plain {
        return None;
    }
    line.push('\n');
    Some(())
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
    let mut digits = [b'0'; 20];
    let (mut n, mut i) = (n, digits.len());
    while n > 0 || i == digits.len() {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    for _ in (digits.len() - i)..width {
        out.push('0');
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// The fields as tracing-subscriber's `DefaultVisitor` writes them without colours: separated
/// by a space, the message bare, the rest `name=value` with values as `Debug` shows them.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    /// False once a field needs what only the default format does.
    plain: bool,
}

impl Fields<'_> {
    /// The separator and `name=`; false when the field is written by the default format only.
    fn start(&mut self, field: &Field) -> Option<bool> {
        let name = field.name();
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
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let Some(message) = self.start(field) else {
            return;
        };
        // One pass: printable ASCII, and whether a quote or backslash needs escaping.
        let (mut printable, mut escapes) = (true, false);
        for b in value.bytes() {
            if !(0x20..0x7f).contains(&b) {
                printable = false;
                break;
            }
            escapes |= b == b'"' || b == b'\\';
        }
        match (message, printable) {
            (true, true) => self.line.push_str(value),
            (true, false) => self.plain = false,
            (false, true) if !escapes => {
                self.line.push('"');
                self.line.push_str(value);
                self.line.push('"');
            }
            (false, _) => {
                let _ = write!(self.line, "{value:?}");
            }
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) == Some(false) {
            push_padded(self.line, value, 0);
        } else {
            self.plain = false;
        }
    }

    /// Times rounded to tenths (the access record's) without `core::fmt`: `Debug` writes the
    /// shortest text that reads back as the same number, which for tenths is `int.tenth`.
    fn record_f64(&mut self, field: &Field, value: f64) {
        let tenths = (value * 10.0).round();
        if value.is_sign_positive() && tenths < 1e15 && tenths / 10.0 == value {
            if self.start(field) == Some(false) {
                let tenths = tenths as u64;
                push_padded(self.line, tenths / 10, 0);
                self.line.push('.');
                push_padded(self.line, tenths % 10, 0);
            } else {
                self.plain = false;
            }
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        self.plain = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let Some(message) = self.start(field) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        let at = |secs| {
            let mut s = String::new();
            write_second(&mut s, secs).unwrap();
            s
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.");
        assert_eq!(at(1_796_571_295), "2026-12-06T15:34:55.");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.");
    }

    #[test]
    fn micros_are_padded() {
        let mut s = String::new();
        push_padded(&mut s, 42, 6);
        push_padded(&mut s, 0, 6);
        push_padded(&mut s, 999_999, 6);
        assert_eq!(s, "000042000000999999");
    }

    /// The same lines as tracing-subscriber's default text format, but for the time.
    #[test]
    fn same_as_the_default_format() {
        use std::io;
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        fn events() {
            let id = http::HeaderValue::from_static("1fa6-1");
            tracing::info!(target: "keyproxy::access", request_id = id.to_str().ok(), method = %"POST",
                path = "/api/v1/chat", route = Some("/api/v1"), profile = None::<&str>,
                status = Some(200u16), upstream_ms = Some(71.8), bytes = 220u64, ms = 0.1, big = 1e20,
                zero = 0.0, neg = -0.0, whole = 220.0, third = 1.0 / 3.0, nan = f64::NAN, max = u64::MAX,
                outcome = "complete", "{}", "proxied");
            tracing::warn!(
                quoted = "a \"b\" \\ c",
                unicode = "caf\u{e9}",
                ctl = "x\u{1b}[31m",
                n = -3i64,
                yes = true,
                "plain message"
            );
            tracing::error!("message with \u{1b}[31m colour");
            tracing::info!(r#type = "raw", "raw name");
            tracing::debug!(e = %std::io::Error::other("boom"), "an error shown");
            tracing::info!("caf\u{e9} \u{85} end");
        }
        let run = |fast: bool| {
            let buf = Buf::default();
            let out = buf.clone();
            let builder = tracing_subscriber::fmt()
                .with_max_level(Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || out.clone());
            if fast {
                tracing::subscriber::with_default(
                    builder.event_format(TextLine::default()).finish(),
                    events,
                );
            } else {
                tracing::subscriber::with_default(builder.finish(), events);
            }
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| l[27..].to_owned()).collect::<Vec<_>>()
        };
        let (fast, full) = (run(true), run(false));
        assert_eq!(fast.len(), 6);
        assert_eq!(fast, full);
    }
}
