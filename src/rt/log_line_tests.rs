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

/// The INFO line [`info_line`] would write, its time included.
pub(crate) fn info_text(
    target: &str,
    message: &str,
    fields: impl FnOnce(&mut Fields<'_>),
) -> Option<String> {
    let mut s = Scratch {
        line: String::new(),
        second: u64::MAX,
        prefix: String::new(),
    };
    format_info(&mut s, target, message, fields)?;
    Some(s.line)
}

/// What `log` writes at DEBUG and up without colours, in this format (`fast`) or in
/// tracing-subscriber's own.
pub(crate) fn logged(fast: bool, log: impl FnOnce()) -> String {
    let buf = Buf::default();
    let out = buf.clone();
    let builder = tracing_subscriber::fmt()
        .with_max_level(Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || out.clone());
    if fast {
        tracing::subscriber::with_default(builder.event_format(TextLine::default()).finish(), log);
    } else {
        tracing::subscriber::with_default(builder.finish(), log);
    }
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text
}

#[derive(Clone, Default)]
struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A line written directly is the line tracing writes for the same fields.
#[test]
fn direct_lines_match_tracing() {
    let direct = |message: &str, odd: &str| {
        info_text("keyproxy::access", message, |f| {
            f.str("request_id", "1fa6-1");
            f.display("method", &http::Method::POST);
            f.str("path", odd);
            f.u64("status", 200);
            f.f64("upstream_ms", 71.8);
            f.f64("ms", 1.0 / 3.0);
            f.u64("bytes", 0);
        })
        .map(|line| line[27..].to_owned())
    };
    let traced = |message: &str, odd: &str| {
        let text = logged(true, || {
            tracing::info!(target: "keyproxy::access", request_id = "1fa6-1",
                method = %http::Method::POST, path = odd, status = Some(200u16),
                upstream_ms = Some(71.8), ms = 1.0 / 3.0, bytes = 0u64, "{message}");
        });
        text[27..].to_owned()
    };
    for odd in ["/api/v1/chat", "/a \"b\" \\ c", "/caf\u{e9}", ""] {
        assert_eq!(
            direct("proxied", odd).as_deref(),
            Some(&*traced("proxied", odd))
        );
    }
    // A message with a control character is left to tracing.
    assert_eq!(direct("a\u{7}b", "/"), None);
}

/// The same lines as tracing-subscriber's default text format, but for the time.
#[test]
fn same_as_the_default_format() {
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
        logged(fast, events)
            .lines()
            .map(|l| l[27..].to_owned())
            .collect::<Vec<_>>()
    };
    let (fast, full) = (run(true), run(false));
    assert_eq!(fast.len(), 6);
    assert_eq!(fast, full);
}
