//! A client's model limit (`models` on `[[clients]]`): the request's top-level `model`, read
//! from its JSON body before anything is forwarded. Only the body of a client with a limit is
//! read first (up to `retry_body_limit`, then sent on as read); every other body streams.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::LocalError;
use crate::config::clients::Client;

#[derive(Deserialize)]
struct Head {
    model: Option<serde_json::Value>,
}

/// The whole body when `client` may ask for the model it names; else why not. A request with no
/// body asks for no model (a model list, say) and passes.
pub(super) async fn check(
    client: &Client,
    body: Incoming,
    limit: u64,
    stall: Duration,
) -> Result<Bytes, LocalError> {
    let unreadable = |why: String| LocalError::ModelUnreadable {
        client: client.name.clone(),
        why,
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let read = tokio::time::timeout(stall, Limited::new(body, limit).collect()).await;
    let body = match read {
        Err(_) => {
            return Err(LocalError::BodyStalled {
                after: humantime::format_duration(stall).to_string(),
            })
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(unreadable(format!(
                "the request body is larger than retry_body_limit ({limit} bytes)"
            )))
        }
        Ok(Err(_)) => return Err(LocalError::MalformedBody),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if body.is_empty() {
        return Ok(body);
    }
    let head: Head = serde_json::from_slice(&body)
        .map_err(|_| unreadable("the request body is not a JSON object".into()))?;
    let model = match head.model {
        Some(serde_json::Value::String(model)) => model,
        _ => {
            return Err(unreadable(
                "the request body has no top-level \"model\" string".into(),
            ))
        }
    };
    if client.may_ask_for(&model) {
        Ok(body)
    } else {
        Err(LocalError::ModelNotAllowed {
            client: client.name.clone(),
            model,
            allowed: client.models.join(", "),
        })
    }
}
