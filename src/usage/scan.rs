//! Reads what an answer cost — its usage and its model — from its bytes as they pass, never
//! holding them back: a JSON answer keeps its first and last few KiB, an SSE stream the line
//! being read (of a very long line, its ends); either is bounded whatever the answer's length.
//!
//! The shapes read: OpenAI and OpenRouter `usage.{prompt_tokens, completion_tokens, cost}`
//! (chat, completions, embeddings; the last SSE event that has it), the Responses API
//! (`usage.{input_tokens, output_tokens}`, in SSE inside `response.completed`), Anthropic
//! Messages (`message_start`'s `message.usage`, then `message_delta`'s `usage`), and Gemini
//! `usageMetadata` (JSON, and every SSE event of `streamGenerateContent?alt=sse`, the last
//! winning).

use super::shape;
use crate::text::starts_with_ignoring_case;

/// What one answer used. Fields an answer did not report stay 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Used {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// USD, as OpenRouter reports it (`usage.cost`).
    pub cost: f64,
    /// The answer said what it used (a token count or a cost was read): when false, what it
    /// used is unknown, not zero.
    pub reported: bool,
}

/// The model is near the start of a JSON answer, `usage` near its end.
const HEAD: usize = 4 * 1024;
const TAIL: usize = 16 * 1024;
/// Longest SSE line parsed whole; of a longer one (a huge tool-call argument, a Responses
/// `response.completed` repeating a long answer) only the ends are kept and read.
const LINE: usize = 256 * 1024;

#[derive(Debug)]
pub enum Scanner {
    Json {
        head: Vec<u8>,
        tail: Vec<u8>,
        /// Bytes between head and tail were let go: only the ends can be read.
        dropped: bool,
    },
    Sse {
        /// The line being read; of a long line, its first HEAD bytes.
        line: Vec<u8>,
        /// Of a long line, its last TAIL bytes so far.
        tail: Vec<u8>,
        long: bool,
        used: Used,
    },
}

impl Scanner {
    /// A scanner for an answer of `content_type`, or None for one that carries no usage.
    pub fn for_content_type(content_type: &str) -> Option<Self> {
        let starts = |prefix| starts_with_ignoring_case(content_type, prefix);
        if starts("text/event-stream") {
            Some(Self::Sse {
                line: Vec::new(),
                tail: Vec::new(),
                long: false,
                used: Used::default(),
            })
        } else if starts("application/json") {
            Some(Self::Json {
                head: Vec::new(),
                tail: Vec::new(),
                dropped: false,
            })
        } else {
            None
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        match self {
            Self::Json {
                head,
                tail,
                dropped,
            } => {
                let room = HEAD.saturating_sub(head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..room]);
                *dropped |= keep_tail(tail, &chunk[room..]);
            }
            Self::Sse {
                line,
                tail,
                long,
                used,
            } => {
                while let Some(end) = memchr::memchr(b'\n', chunk) {
                    // A line whole in this chunk is read where it is; only a line split across
                    // chunks is copied.
                    if *long {
                        keep_tail(tail, &chunk[..end]);
                        long_line(line, tail, used);
                    } else if line.is_empty() {
                        sse_line(&chunk[..end], used);
                    } else {
                        line.extend_from_slice(&chunk[..end]);
                        sse_line(line, used);
                    }
                    line.clear();
                    tail.clear();
                    *long = false;
                    chunk = &chunk[end + 1..];
                }
                if *long {
                    keep_tail(tail, chunk);
                } else if line.len() + chunk.len() > LINE {
                    // From here on the line is kept by its ends.
                    if line.len() > HEAD {
                        keep_tail(tail, &line[HEAD..]);
                        line.truncate(HEAD);
                    }
                    let room = HEAD.saturating_sub(line.len()).min(chunk.len());
                    line.extend_from_slice(&chunk[..room]);
                    keep_tail(tail, &chunk[room..]);
                    *long = true;
                } else {
                    line.extend_from_slice(chunk);
                }
            }
        }
    }

    /// What the answer used, once it has ended.
    pub fn finish(self) -> Used {
        match self {
            Self::Sse {
                line,
                tail,
                long,
                mut used,
            } => {
                match long {
                    true => long_line(&line, &tail, &mut used),
                    false => sse_line(&line, &mut used),
                }
                used
            }
            Self::Json {
                mut head,
                tail,
                dropped,
            } => {
                let mut used = Used::default();
                if !dropped {
                    head.extend_from_slice(&tail);
                    shape::answer(&head, &mut used);
                    return used;
                }
                from_ends(&head, &tail, &mut used);
                used
            }
        }
    }
}

/// Keeps the last TAIL bytes of what `tail` and `more` make; true when some were let go.
fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) -> bool {
    if more.len() >= TAIL {
        let dropped = more.len() > TAIL || !tail.is_empty();
        tail.clear();
        tail.extend_from_slice(&more[more.len() - TAIL..]);
        dropped
    } else {
        let drop = (tail.len() + more.len()).saturating_sub(TAIL);
        tail.drain(..drop);
        tail.extend_from_slice(more);
        drop > 0
    }
}

/// A line too long to parse whole, read from its ends as a large JSON answer is.
fn long_line(head: &[u8], tail: &[u8], used: &mut Used) {
    if let Some(data) = head.strip_prefix(b"data:") {
        from_ends(data, tail, used);
    }
}

/// An answer of which only the ends are kept: the model near the start (near the end for
/// embeddings and Gemini), the usage near the end.
fn from_ends(head: &[u8], tail: &[u8], used: &mut Used) {
    let model = string_after(head, b"\"model\"")
        .or_else(|| string_after_last(tail, b"\"model\""))
        .or_else(|| string_after_last(tail, b"\"modelVersion\""));
    if let Some(model) = model.filter(|m| !m.is_empty()) {
        used.model = model;
    }
    if let Some(u) = raw_after_last(tail, b"\"usage\"") {
        shape::openai_or_anthropic(u, used, true);
    }
    if let Some(u) = raw_after_last(tail, b"\"usageMetadata\"") {
        shape::gemini(u, used, true);
    }
}

/// One SSE line: a `data:` line that mentions usage is parsed; others cost one substring search.
fn sse_line(line: &[u8], used: &mut Used) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    // `"usage` finds `usage` and Gemini's `usageMetadata`. OpenAI sends `"usage":null` in every
    // chunk when usage is asked for (and the Responses API in its first events); only the last
    // has one.
    static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage"));
    if USAGE.find(data).is_none() || contains(data, b"\"usage\":null") {
        return;
    }
    shape::event(data.trim_ascii_start(), used);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// The JSON string after the first `"key"` and its colon.
fn string_after(hay: &[u8], key: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(hay, key)? + key.len();
    value_after(&hay[at..])
}

/// The JSON string after the last `"key"` and its colon.
fn string_after_last(hay: &[u8], key: &[u8]) -> Option<String> {
    let at = memchr::memmem::rfind(hay, key)? + key.len();
    value_after(&hay[at..])
}

/// The JSON value after the last `"key"` and its colon, as written.
fn raw_after_last<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let at = memchr::memmem::rfind(hay, key)? + key.len();
    let rest = hay[at..]
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    let end = super::fields::value_end(rest, 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The JSON value after a colon (and spaces) that starts `rest`.
fn value_after<T: serde::de::DeserializeOwned>(rest: &[u8]) -> Option<T> {
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
    de.next()?.ok()
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
