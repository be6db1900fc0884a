//! A provider's refusal of an injected key (401, 402, 403), told in words the agent shows.
//!
//! Agents display the error body, not keyproxy's `x-keyproxy-key` header, and a bare
//! `401 User not found` does not say which of the user's keys, held by keyproxy, was refused.
//! So a small JSON error body (OpenAI's, OpenRouter's or Anthropic's shape) gets its message
//! rewritten to start with `keyproxy:` and name the provider, the key's fingerprint, the profile
//! and what to do, with the provider's own words after that. Status, headers and every other
//! field stay as the provider sent them; a body that is not small JSON passes untouched.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::Value;

/// Error bodies are a few hundred bytes; anything larger is not one to rewrite.
pub const LIMIT: usize = 64 * 1024;

/// Who refused which key, for the rewritten message.
pub struct Refused<'a> {
    pub provider: &'a str,
    pub fingerprint: &'a str,
    pub profile: &'a str,
    pub status: u16,
    /// Where the key came from, as `check` shows it.
    pub source: &'a str,
}

/// What reading the start of a refusal's body gave.
pub enum Read {
    /// The whole body, at most [`LIMIT`] bytes.
    Whole(Bytes),
    /// The body is larger, or failed, or stalled: what was read, to be sent before the rest.
    Partial(Bytes),
}

/// Reads up to [`LIMIT`] bytes of `body`, waiting at most `patience` for all of it.
pub async fn read_small(body: &mut Incoming, patience: Duration) -> Read {
    let mut got = BytesMut::new();
    let whole = tokio::time::timeout(patience, async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
                if got.len() > LIMIT {
                    return false;
                }
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if whole {
        Read::Whole(got.freeze())
    } else {
        Read::Partial(got.freeze())
    }
}

/// The body with its error message rewritten, or `None` when it is not a JSON error keyproxy
/// recognises.
pub fn rewrite(body: &[u8], refused: &Refused<'_>) -> Option<Bytes> {
    let mut root: Value = serde_json::from_slice(body).ok()?;
    let said = message_of(&mut root)?;
    let theirs = said.as_str()?.trim().to_owned();
    *said = Value::String(message(refused, &theirs));
    let mut out = serde_json::to_vec(&root).ok()?;
    if body.ends_with(b"\n") {
        out.push(b'\n');
    }
    Some(Bytes::from(out))
}

/// `error.message` (OpenAI, OpenRouter, Anthropic), `error` as a string, or a top-level
/// `message`.
fn message_of(root: &mut Value) -> Option<&mut Value> {
    let obj = root.as_object_mut()?;
    if obj.get("error").is_some_and(Value::is_string) {
        return obj.get_mut("error");
    }
    if obj
        .get("error")
        .and_then(|e| e.get("message"))
        .is_some_and(Value::is_string)
    {
        return obj.get_mut("error")?.get_mut("message");
    }
    obj.get_mut("message").filter(|m| m.is_string())
}

/// What to do comes before the provider's words, so an agent that cuts the line keeps it.
pub fn message(r: &Refused<'_>, theirs: &str) -> String {
    let fix = replace_hint(r.source);
    let todo = match r.status {
        402 => format!("top up its credit, or {fix}"),
        403 => format!("check what the key may do, or {fix}"),
        _ => fix,
    };
    let mut text = format!(
        "keyproxy: {} refused key {} of profile '{}' ({}); {todo}.",
        r.provider, r.fingerprint, r.profile, r.status
    );
    if !theirs.is_empty() {
        // A provider may quote the key it refused; the agent must not learn it from keyproxy.
        let theirs = crate::text::mask_key_shapes(theirs);
        text.push_str(&format!(" {} said: {theirs}", r.provider));
    }
    text
}

/// How to replace a key, by where it came from.
fn replace_hint(source: &str) -> String {
    if source.starts_with("OpenClaw") {
        "replace it with openclaw models auth paste-api-key".into()
    } else if let Some(var) = source.strip_prefix("env ") {
        format!("replace environment variable {var}")
    } else if source.starts_with("keys file") || source.starts_with("key_file") {
        // The path is the user's; keep the sentence short when it is long.
        if source.len() <= 80 {
            format!("replace it in {source}")
        } else {
            "replace it in its keys file (keyproxy check shows which)".into()
        }
    } else {
        "replace it where keyproxy reads it (keyproxy check shows where)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> Refused<'static> {
        Refused {
            provider: "openrouter",
            fingerprint: "sk-or-v1...968304f4",
            profile: "openrouter:default",
            status,
            source: "keys file ~/.config/keyproxy/keys.toml",
        }
    }

    #[test]
    fn openrouter_and_openai_shapes_keep_every_other_field() {
        let body = br#"{"error":{"message":"User not found.","code":401,"metadata":{"x":1}}}"#;
        let out: Value = serde_json::from_slice(&rewrite(body, &refused(401)).unwrap()).unwrap();
        assert_eq!(
            out["error"]["message"],
            "keyproxy: openrouter refused key sk-or-v1...968304f4 of profile 'openrouter:default' (401); replace it in keys file ~/.config/keyproxy/keys.toml. openrouter said: User not found."
        );
        assert_eq!(out["error"]["code"], 401);
        assert_eq!(out["error"]["metadata"]["x"], 1);
    }

    #[test]
    fn anthropic_shape_and_402_advice() {
        let body = br#"{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low"}}"#;
        let out: Value = serde_json::from_slice(&rewrite(body, &refused(402)).unwrap()).unwrap();
        let msg = out["error"]["message"].as_str().unwrap();
        assert!(msg.contains("(402); top up its credit"), "{msg}");
        assert_eq!(out["error"]["type"], "billing_error");
        assert_eq!(out["type"], "error");
    }

    #[test]
    fn bodies_that_are_not_json_errors_are_left_alone() {
        assert!(rewrite(b"<html>401</html>", &refused(401)).is_none());
        assert!(rewrite(br#"{"detail":"nope"}"#, &refused(401)).is_none());
        assert!(rewrite(br#"[1,2]"#, &refused(401)).is_none());
    }
}
