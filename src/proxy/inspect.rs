//! The request side of a limited client's limits, before anything is forwarded: its models
//! checked in the path and the body, its tokens estimated for limits admission, and usage asked
//! for on its OpenAI-shaped streams. Only the body of a client with `models`, `budget_usd` or
//! `tokens_per_day` is read first (up to `retry_body_limit`, then sent on as read, as the bytes
//! checked); every other body streams, unread.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use super::error::LocalError;
use super::request_json::{count, Members, NotMembers};
use super::{include_usage, model_limit};
use crate::config::clients::Client;

/// A limited client's request, read and checked.
pub(super) struct Inspected {
    /// The body to send: the one read, or it with usage asked for.
    pub body: Bytes,
    /// At most how many tokens the request may use, when its body says: its output limit
    /// (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
    /// `generationConfig.maxOutputTokens`) plus its body's bytes / 4 for the prompt. For limits
    /// admission, which reserves it while the request is in flight.
    pub tokens_hint: Option<u64>,
    /// keyproxy asked for usage the client did not: the answer's usage-only event is kept from
    /// the client ([`include_usage::UsageHider`]).
    pub hides_usage: bool,
}

/// Does this client's request need its body read before forwarding?
pub(super) fn needed(client: &Client) -> bool {
    !client.models.is_empty() || counts_usage(client)
}

/// Limits that count what answers use.
fn counts_usage(client: &Client) -> bool {
    client.limits.budget.is_some() || client.limits.tokens_per_day.is_some()
}

/// Reads and checks `body` for `client`; `parts` is the upstream request (its path is the one
/// checked), and gets the new length when the body changes.
pub(super) async fn inspect(
    client: &Client,
    parts: &mut Parts,
    body: Incoming,
    limit: u64,
    stall: Duration,
) -> Result<Inspected, LocalError> {
    let limited_models = !client.models.is_empty();
    // The path first: a model refused there needs no body read.
    let path_named = match limited_models {
        true => model_limit::check_path(client, &parts.method, &parts.headers, parts.uri.path())?,
        false => false,
    };
    let unreadable = |why: String| match limited_models {
        true => LocalError::ModelUnreadable {
            client: client.name.clone(),
            why,
        },
        false => LocalError::RequestUnreadable {
            client: client.name.clone(),
            why,
        },
    };
    let body = read(body, limit, stall, &unreadable).await?;
    let mut inspected = Inspected {
        body,
        tokens_hint: None,
        hides_usage: false,
    };
    // No body asks for no model (a model list, say) and uses no tokens.
    if inspected.body.is_empty() {
        return Ok(inspected);
    }
    let text = std::str::from_utf8(&inspected.body).ok();
    let members = match text.map(Members::of) {
        Some(Ok(members)) => members,
        Some(Err(NotMembers::Twice(name))) => {
            return Err(unreadable(format!(
                "the request body names \"{name}\" twice, which upstreams read differently"
            )))
        }
        // Not JSON: a model limit cannot be checked; a budget counts it by its reservation.
        Some(Err(NotMembers::NotObject)) | None if limited_models => {
            return Err(unreadable("the request body is not a JSON object".into()))
        }
        Some(Err(NotMembers::NotObject)) | None => return Ok(inspected),
    };
    if limited_models {
        model_limit::check_body(client, &members, path_named)?;
    }
    if !counts_usage(client) {
        return Ok(inspected);
    }
    inspected.tokens_hint = tokens_hint(&members, inspected.body.len()).map_err(|name| {
        unreadable(format!(
            "the request's \"{name}\" names a member twice, which upstreams read differently"
        ))
    })?;
    let asked = text.and_then(|text| include_usage::ask(text, &members, parts.uri.path()));
    if let Some(asked) = asked {
        parts.headers.remove(TRANSFER_ENCODING);
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(asked.len()));
        inspected.body = Bytes::from(asked);
        inspected.hides_usage = true;
    }
    Ok(inspected)
}

/// The whole body, up to `limit` bytes.
async fn read(
    body: Incoming,
    limit: u64,
    stall: Duration,
    unreadable: &(dyn Fn(String) -> LocalError + Sync),
) -> Result<Bytes, LocalError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let read = tokio::time::timeout(stall, Limited::new(body, limit).collect()).await;
    match read {
        Err(_) => Err(LocalError::BodyStalled {
            after: humantime::format_duration(stall).to_string(),
        }),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(unreadable(format!(
            "the request body is larger than retry_body_limit ({limit} bytes)"
        ))),
        Ok(Err(_)) => Err(LocalError::MalformedBody),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The request's output limit (times the answers it asks for: `n`, `best_of`, Gemini's
/// `candidateCount`) plus its body's bytes / 4, when it has an output limit; Err names an object
/// keyproxy reads the limit from that names a member twice.
fn tokens_hint(body: &Members<'_>, len: usize) -> Result<Option<u64>, &'static str> {
    let mut most = None;
    let mut answers = 1;
    for name in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
        most = most.max(body.get(name).and_then(count));
    }
    for name in ["n", "best_of"] {
        answers = answers.max(body.get(name).and_then(count).unwrap_or(1));
    }
    // Gemini; its JSON takes snake_case too.
    for config in ["generationConfig", "generation_config"] {
        let Some(raw) = body.get(config) else {
            continue;
        };
        match Members::of_raw(raw) {
            Ok(config) => {
                for name in ["maxOutputTokens", "max_output_tokens"] {
                    most = most.max(config.get(name).and_then(count));
                }
                for name in ["candidateCount", "candidate_count"] {
                    answers = answers.max(config.get(name).and_then(count).unwrap_or(1));
                }
            }
            Err(NotMembers::Twice(_)) => return Err(config),
            Err(NotMembers::NotObject) => {}
        }
    }
    Ok(most.map(|n| n.saturating_mul(answers).saturating_add(len as u64 / 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(text: &str) -> Result<Option<u64>, &'static str> {
        tokens_hint(&Members::of(text).unwrap(), 400)
    }

    #[test]
    fn the_output_limit_plus_a_quarter_of_the_body() {
        assert_eq!(hint(r#"{"max_tokens":100}"#), Ok(Some(200)));
        assert_eq!(
            hint(r#"{"max_tokens":10,"max_completion_tokens":1000}"#),
            Ok(Some(1100))
        );
        assert_eq!(hint(r#"{"max_output_tokens":5}"#), Ok(Some(105)));
        assert_eq!(
            hint(r#"{"generationConfig":{"maxOutputTokens":50}}"#),
            Ok(Some(150))
        );
        assert_eq!(
            hint(r#"{"generation_config":{"max_output_tokens":7}}"#),
            Ok(Some(107))
        );
        assert_eq!(hint(r#"{"max_tokens":1e400}"#), Ok(None));
        assert_eq!(
            hint(r#"{"max_tokens":18446744073709551615}"#),
            Ok(Some(u64::MAX))
        );
        assert_eq!(hint(r#"{"model":"x"}"#), Ok(None));
        assert_eq!(hint(r#"{"max_tokens":100,"n":3}"#), Ok(Some(400)));
        assert_eq!(
            hint(r#"{"generationConfig":{"maxOutputTokens":10,"candidateCount":2}}"#),
            Ok(Some(120))
        );
        assert_eq!(
            hint(r#"{"generationConfig":{"maxOutputTokens":5,"maxOutputTokens":9}}"#),
            Err("generationConfig")
        );
    }
}
