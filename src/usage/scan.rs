//! Reads what an answer cost — the `usage` object and the model — from its bytes as they pass,
//! never holding them back: a JSON answer keeps its first and last few KiB, an SSE stream the
//! line being read; either is bounded whatever the answer's length.

use serde_json::Value;

/// What one answer used. Fields an answer did not report stay 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Used {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// USD, as OpenRouter reports it (`usage.cost`).
    pub cost: f64,
    /// An answer that carried a usage object.
    pub reported: bool,
}

/// The model is near the start of a JSON answer, `usage` near its end.
const HEAD: usize = 4 * 1024;
const TAIL: usize = 16 * 1024;
/// Longest SSE line read; a longer one (a huge tool-call argument) is skipped, not kept.
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
        line: Vec<u8>,
        skipping: bool,
        used: Used,
    },
}

impl Scanner {
    /// A scanner for an answer of `content_type`, or None for one that carries no usage.
    pub fn for_content_type(content_type: &str) -> Option<Self> {
        let ct = content_type.to_ascii_lowercase();
        if ct.starts_with("text/event-stream") {
            Some(Self::Sse {
                line: Vec::new(),
                skipping: false,
                used: Used::default(),
            })
        } else if ct.starts_with("application/json") {
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
                chunk = &chunk[room..];
                if chunk.len() >= TAIL {
                    *dropped |= chunk.len() > TAIL || !tail.is_empty();
                    tail.clear();
                    tail.extend_from_slice(&chunk[chunk.len() - TAIL..]);
                } else {
                    let drop = (tail.len() + chunk.len()).saturating_sub(TAIL);
                    *dropped |= drop > 0;
                    tail.drain(..drop);
                    tail.extend_from_slice(chunk);
                }
            }
            Self::Sse {
                line,
                skipping,
                used,
            } => {
                while let Some(end) = memchr::memchr(b'\n', chunk) {
                    // A line whole in this chunk is read where it is; only a line split across
                    // chunks is copied.
                    if line.is_empty() && !*skipping {
                        sse_line(&chunk[..end], used);
                    } else if !*skipping {
                        line.extend_from_slice(&chunk[..end]);
                        sse_line(line, used);
                    }
                    line.clear();
                    *skipping = false;
                    chunk = &chunk[end + 1..];
                }
                if !*skipping {
                    if line.len() + chunk.len() > LINE {
                        line.clear();
                        *skipping = true;
                    } else {
                        line.extend_from_slice(chunk);
                    }
                }
            }
        }
    }

    /// What the answer used, once it has ended.
    pub fn finish(self) -> Used {
        match self {
            Self::Sse { line, mut used, .. } => {
                sse_line(&line, &mut used);
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
                    if let Ok(v) = serde_json::from_slice::<Value>(&head) {
                        merge(&v, &mut used);
                    }
                    return used;
                }
                if let Some(model) = string_after(&head, b"\"model\"") {
                    used.model = model;
                }
                if let Some(v) = object_after(&tail, b"\"usage\"") {
                    merge(&serde_json::json!({ "usage": v }), &mut used);
                }
                used
            }
        }
    }
}

/// One SSE line: a `data:` line that mentions usage is parsed; others cost one substring search.
fn sse_line(line: &[u8], used: &mut Used) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    // OpenAI sends `"usage":null` in every chunk when usage is asked for; only the last has one.
    static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    if USAGE.find(data).is_none() || contains(data, b"\"usage\":null") {
        return;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data.trim_ascii_start()) {
        merge(&v, used);
    }
}

/// Takes what an event or answer says; usage events are cumulative, so later values win.
/// OpenAI/OpenRouter: `model`, `usage.{prompt_tokens, completion_tokens, cost}`. Anthropic:
/// `message.{model, usage}` in `message_start`, `usage.output_tokens` in `message_delta`.
fn merge(v: &Value, used: &mut Used) {
    let message = &v["message"];
    for m in [&v["model"], &message["model"]] {
        if let Some(m) = m.as_str().filter(|m| !m.is_empty()) {
            used.model = m.to_owned();
        }
    }
    for u in [&v["usage"], &message["usage"]] {
        if !u.is_object() {
            continue;
        }
        used.reported = true;
        let n = |f: &str| u[f].as_u64();
        let input = n("input_tokens").map(|i| {
            i + n("cache_creation_input_tokens").unwrap_or(0)
                + n("cache_read_input_tokens").unwrap_or(0)
        });
        if let Some(p) = n("prompt_tokens").or(input) {
            used.prompt_tokens = p;
        }
        if let Some(c) = n("completion_tokens").or(n("output_tokens")) {
            used.completion_tokens = c;
        }
        if let Some(cost) = u["cost"].as_f64() {
            used.cost = cost;
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

/// The JSON string after `"key"` and its colon.
fn string_after(hay: &[u8], key: &[u8]) -> Option<String> {
    let at = find(hay, key)? + key.len();
    let rest = &hay[at..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let rest = rest[colon + 1..].trim_ascii_start();
    let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<String>();
    de.next()?.ok()
}

/// The JSON object after the last `"key"` and its colon.
fn object_after(hay: &[u8], key: &[u8]) -> Option<Value> {
    let at = rfind(hay, key)? + key.len();
    let rest = &hay[at..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let rest = rest[colon + 1..].trim_ascii_start();
    let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
    de.next()?.ok().filter(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(content_type: &str, chunks: &[&[u8]]) -> Used {
        let mut s = Scanner::for_content_type(content_type).unwrap();
        for c in chunks {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn a_json_completion_with_openrouter_cost() {
        let body = br#"{"id":"x","model":"openai/gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"cost":0.00042}}"#;
        let used = scan(
            "application/json; charset=utf-8",
            &[&body[..20], &body[20..]],
        );
        assert_eq!(used.model, "openai/gpt-4o-mini");
        assert_eq!((used.prompt_tokens, used.completion_tokens), (12, 34));
        assert!((used.cost - 0.00042).abs() < 1e-12);
    }

    #[test]
    fn a_large_json_answer_is_read_from_its_ends() {
        let pad = "x".repeat(100_000);
        let body = format!(
            r#"{{"model":"m1","choices":[{{"text":"{pad}"}}],"usage":{{"prompt_tokens":1,"completion_tokens":2}}}}"#
        );
        let chunks: Vec<&[u8]> = body.as_bytes().chunks(7000).collect();
        let used = scan("application/json", &chunks);
        assert_eq!(
            (
                used.model.as_str(),
                used.prompt_tokens,
                used.completion_tokens
            ),
            ("m1", 1, 2)
        );
    }

    #[test]
    fn an_sse_usage_event_split_across_chunks() {
        let stream = b"data: {\"model\":\"openai/gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"model\":\"openai/gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9,\"cost\":0.5}}\r\n\r\ndata: [DONE]\n\n";
        for split in [1, 5, 60, 100, 130] {
            let used = scan("text/event-stream", &[&stream[..split], &stream[split..]]);
            assert_eq!(used.model, "openai/gpt-4o", "split at {split}");
            assert_eq!(
                (used.prompt_tokens, used.completion_tokens),
                (7, 9),
                "split at {split}"
            );
            assert!((used.cost - 0.5).abs() < 1e-12);
        }
    }

    #[test]
    fn anthropic_streams_and_answers() {
        let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        let used = scan("text/event-stream", &[stream]);
        assert_eq!(used.model, "claude-sonnet-4-5");
        assert_eq!((used.prompt_tokens, used.completion_tokens), (30, 15));
        let body = br#"{"type":"message","model":"claude-haiku","content":[],"usage":{"input_tokens":3,"output_tokens":4}}"#;
        let used = scan("application/json", &[body]);
        assert_eq!(
            (
                used.model.as_str(),
                used.prompt_tokens,
                used.completion_tokens
            ),
            ("claude-haiku", 3, 4)
        );
    }

    #[test]
    fn a_huge_line_is_skipped_not_kept() {
        let mut s = Scanner::for_content_type("text/event-stream").unwrap();
        let big = vec![b'a'; LINE + 10];
        s.feed(b"data: ");
        s.feed(&big);
        if let Scanner::Sse { line, .. } = &s {
            assert!(line.len() <= LINE);
        }
        s.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n");
        assert_eq!(s.finish().prompt_tokens, 1);
        assert!(Scanner::for_content_type("text/plain").is_none());
    }
}
