//! Usage for OpenAI-shaped streams the client did not ask usage of. An OpenAI chat or
//! completions stream carries usage only when the request says
//! `stream_options.include_usage = true`, and a budget or token limit cannot count a stream that
//! does not say what it used. So for a limited client that did not ask, keyproxy asks
//! ([`ask`]), reads the usage, and keeps from the client what asking added ([`UsageHider`]): the
//! extra usage-only event (`"choices":[]` with a `usage` object) and the `"usage":null` member
//! OpenAI then puts in every other event. The client sees the stream it asked for.

use std::borrow::Cow;

use bytes::Bytes;

use super::request_json::{is_true, offset_in, Members};

/// The body with `stream_options.include_usage = true`, for a streaming chat or completions
/// request (`path`, as sent upstream) that did not ask for usage itself; None when nothing is to
/// change: not such a request, or the client asked (then its stream passes untouched).
pub(super) fn ask(text: &str, body: &Members<'_>, path: &str) -> Option<String> {
    if !path.ends_with("/completions") || !body.get("stream").is_some_and(is_true) {
        return None;
    }
    const ASKED: &str = r#"{"include_usage":true}"#;
    let Some(options) = body.get("stream_options") else {
        // After the object's `{`: it has members (`stream` at least), so a comma follows.
        let at = text.len() - text.trim_start().len() + 1;
        return Some(format!(
            "{}\"stream_options\":{ASKED},{}",
            &text[..at],
            &text[at..]
        ));
    };
    let replacement = if options.get() == "null" {
        ASKED.to_owned()
    } else {
        // A stream_options naming a member twice is left alone: the upstream decides.
        Members::of_raw(options).ok()?;
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(options.get()).ok()?;
        if map.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
            return None;
        }
        map.insert("include_usage".into(), true.into());
        serde_json::to_string(&map).ok()?
    };
    let at = offset_in(text, options)?;
    let end = at + options.get().len();
    Some(format!("{}{replacement}{}", &text[..at], &text[end..]))
}

/// Longest event held while it is read; a longer one (a huge tool-call argument) passes as it
/// arrives, unchanged.
const EVENT: usize = 256 * 1024;

/// Takes out of an SSE stream what [`ask`] added. Holds back at most the event being read.
#[derive(Debug, Default)]
pub struct UsageHider {
    /// The event read so far: its whole lines, then the line being read.
    event: Vec<u8>,
    /// Where the line being read starts in `event`.
    line_start: usize,
    /// The event outgrew `EVENT` and passes unchanged to its end; true while at a line's start.
    passing: Option<bool>,
    /// The stream ended and what was held was handed on.
    finished: bool,
}

impl UsageHider {
    /// What of `chunk` goes to the client now.
    pub fn filter(&mut self, mut chunk: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(chunk.len());
        while !chunk.is_empty() {
            let (line, ended) = match memchr::memchr(b'\n', chunk) {
                Some(end) => (&chunk[..=end], true),
                None => (chunk, false),
            };
            chunk = &chunk[line.len()..];
            if let Some(at_start) = self.passing {
                out.extend_from_slice(line);
                let blank = at_start && is_blank(line);
                self.passing = (!blank).then_some(ended);
                continue;
            }
            self.event.extend_from_slice(line);
            if ended && is_blank(&self.event[self.line_start..]) {
                out.extend_from_slice(&without_added_usage(&self.event));
                self.event.clear();
                self.line_start = 0;
            } else if self.event.len() > EVENT {
                out.append(&mut self.event);
                self.line_start = 0;
                self.passing = Some(ended);
            } else if ended {
                self.line_start = self.event.len();
            }
        }
        out.into()
    }

    /// What is left when the stream ends: an event with no blank line after it.
    pub fn finish(&mut self) -> Bytes {
        self.finished = true;
        let event = std::mem::take(&mut self.event);
        self.line_start = 0;
        Bytes::from(without_added_usage(&event).into_owned())
    }
}

impl UsageHider {
    /// `frame` as the client gets it; `ended`: the stream's last.
    pub fn hide(&mut self, frame: http_body::Frame<Bytes>, ended: bool) -> http_body::Frame<Bytes> {
        match frame.into_data() {
            Ok(data) => {
                let out = self.filter(&data);
                match ended {
                    true => self.ending(http_body::Frame::data(out)),
                    false => http_body::Frame::data(out),
                }
            }
            // Trailers pass.
            Err(frame) => frame,
        }
    }

    /// The stream's last frame, with what was held back after it.
    pub fn ending(&mut self, frame: http_body::Frame<Bytes>) -> http_body::Frame<Bytes> {
        let rest = self.finish();
        if rest.is_empty() {
            return frame;
        }
        match frame.into_data() {
            Ok(data) => {
                let mut out = Vec::with_capacity(data.len() + rest.len());
                out.extend_from_slice(&data);
                out.extend_from_slice(&rest);
                http_body::Frame::data(out.into())
            }
            Err(trailers) => trailers,
        }
    }
}

impl UsageHider {
    /// The stream has ended: its body must not be polled again.
    pub fn finished(&self) -> bool {
        self.finished
    }
}

fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"\n" | b"\r\n")
}

/// One whole event, without what asking for usage added: nothing of a usage-only event, and no
/// `"usage":null` member in any other.
fn without_added_usage(event: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memmem::find(event, b"\"usage\"").is_none() {
        return Cow::Borrowed(event);
    }
    let mut out = Vec::with_capacity(event.len());
    for line in event.split_inclusive(|&b| b == b'\n') {
        let Some(data) = line.strip_prefix(b"data:") else {
            out.extend_from_slice(line);
            continue;
        };
        if usage_only(data) {
            return Cow::Owned(Vec::new());
        }
        out.extend_from_slice(&without_null_usage(line));
    }
    Cow::Owned(out)
}

/// The event OpenAI adds when usage is asked for: no choices, a usage object.
fn usage_only(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
        return false;
    };
    v["usage"].is_object() && v["choices"].as_array().is_some_and(Vec::is_empty)
}

/// The line without its `"usage":null` member (and the comma that joined it). Inside a JSON
/// string a quote is escaped, so `"usage"` with both quotes bare is a member name.
fn without_null_usage(line: &[u8]) -> Cow<'_, [u8]> {
    let Some(name) = memchr::memmem::find(line, b"\"usage\"") else {
        return Cow::Borrowed(line);
    };
    let after_name = &line[name + 7..];
    let value = after_name.trim_ascii_start().strip_prefix(b":");
    let Some(rest) = value
        .map(<[u8]>::trim_ascii_start)
        .and_then(|v| v.strip_prefix(b"null"))
    else {
        return Cow::Borrowed(line);
    };
    let end = line.len() - rest.len();
    let before = line[..name].trim_ascii_end();
    let (cut_from, cut_to) = if before.ends_with(b",") {
        (before.len() - 1, end)
    } else {
        match rest.trim_ascii_start().strip_prefix(b",") {
            Some(after) => (name, line.len() - after.len()),
            None => return Cow::Borrowed(line),
        }
    };
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..cut_from]);
    out.extend_from_slice(&line[cut_to..]);
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "include_usage_tests.rs"]
mod tests;
