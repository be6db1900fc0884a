//! Sending a request upstream, and once more on the profile's next key when the upstream
//! refuses the first. A small body is copied as it streams past so the retry can replay it; a
//! large one, or a profile with one key, streams with no copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;

use super::error::LocalError;
use super::forward::{forward, upstream_error};
use super::h2::Lease;
use super::kept::{Keeper, KeptBody};
use super::plan::{inject, Plan};
use super::state::{Snapshot, State};
use super::upload::{ClientFault, Outbound, UploadLimits, UpstreamBody};
use crate::keys::health::{rests_key, retry_after};
use crate::keys::{Key, Profile};

/// What came of sending: the key last used, the upstream's answer or why there was none, and
/// the time to the response head.
pub(super) struct Sent<'s> {
    pub key: &'s Key,
    /// The answer, with its stream's place on an upstream HTTP/2 connection.
    pub answer: Result<(Response<Incoming>, Lease), LocalError>,
    pub upstream_time: Duration,
}

/// The client's request body: streaming in, or already read whole (a model limit was checked).
pub(super) enum ClientBody {
    Streaming(Incoming),
    Read(Bytes),
}

pub(super) async fn send_with_failover<'s>(
    state: &State,
    snapshot: &Snapshot,
    plan: &Plan<'s>,
    parts: Parts,
    body: ClientBody,
) -> Sent<'s> {
    let (config, route, pool) = (&snapshot.config, plan.route, plan.pool);
    let mut key = plan.key;
    let limit = config.retry_body_limit;
    let pooled = pool.keys().len() > 1;
    let (body, kept) = match body {
        ClientBody::Read(read) => {
            let kept = pooled.then(|| (Keeper::whole(read.clone()), head_copy(&parts)));
            (Outbound::Replay(Full::new(read)), kept)
        }
        ClientBody::Streaming(body)
            if pooled && body.size_hint().upper().is_none_or(|n| n <= limit) =>
        {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let (body, keeper) = KeptBody::new(body, limit);
            (Outbound::Kept(body), Some((keeper, head_copy(&parts))))
        }
        ClientBody::Streaming(body) => (Outbound::Stream(body), None),
    };
    let meter = || state.metrics.request_bytes.clone();
    let fault = Arc::new(ClientFault::default());
    let limits = UploadLimits {
        stall: config.idle_timeout,
        min_rate: config.min_upload_rate,
        grace: config.header_read_timeout,
    };
    let body = UpstreamBody::new(body, meter()).watched(limits, fault.clone());

    let started = Instant::now();
    let deadline = config.response_timeout;
    let mut sent = forward(route, parts, body, deadline).await;
    if let Ok((resp, _)) = &sent {
        if rests_key(resp.status()) {
            rest(state, key, pool, plan, resp);
            let retry = kept.and_then(|(keeper, copy)| {
                let other = pool.pick_other(key)?;
                Some((other, keeper.take()?, copy))
            });
            if let Some((other, body, copy)) = retry {
                tracing::info!(profile = %plan.profile, from = key.fingerprint(), to = other.fingerprint(), "retrying on the next key");
                state.metrics.retried(&route.prefix, &plan.profile);
                key = other;
                let (mut parts, ()) = copy.into_parts();
                inject(route, key, &mut parts.headers);
                let body = UpstreamBody::new(Outbound::Replay(Full::new(body)), meter());
                sent = forward(route, parts, body, deadline).await;
                if let Ok((resp, _)) = &sent {
                    if rests_key(resp.status()) {
                        rest(state, key, pool, plan, resp);
                    }
                }
            }
        }
    }
    let answer = sent.map_err(|e| {
        if fault.malformed() {
            LocalError::MalformedBody
        } else if fault.stalled() {
            LocalError::BodyStalled {
                after: humantime::format_duration(config.idle_timeout).to_string(),
            }
        } else if fault.too_slow() {
            LocalError::BodyTooSlow {
                rate: crate::config::rate_label(config.min_upload_rate),
                grace: humantime::format_duration(config.header_read_timeout).to_string(),
            }
        } else {
            upstream_error(&route.upstream_label, config, &e)
        }
    });
    Sent {
        key,
        answer,
        upstream_time: started.elapsed(),
    }
}

/// The upstream request's head, kept to send again: the version is HTTP/1.1 as `plan` set it,
/// and the extensions hyper put on the client's request have no meaning for a new one.
fn head_copy(parts: &Parts) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.headers_mut() = parts.headers.clone();
    copy
}

/// Puts a key the upstream refused to rest, and says so. A refusal (401, 402, 403) rests a key
/// only while another key of its profile is awake: the last one keeps being forwarded, so that
/// topping up credit or a provider's passing error never locks an agent out for an hour.
fn rest(state: &State, key: &Key, pool: &Profile, plan: &Plan<'_>, resp: &Response<Incoming>) {
    let (profile, route) = (&plan.profile, plan.route);
    let status = resp.status();
    let refused = status != http::StatusCode::TOO_MANY_REQUESTS;
    if refused && pool.pick_other(key).is_none() {
        tracing::warn!(
            profile = %profile, key = key.fingerprint(), status = status.as_u16(),
            upstream = %route.upstream_label,
            "upstream refused the injected key; it is the profile's last key awake, so it stays in use"
        );
        return;
    }
    let rest = key.health().rest(status, retry_after(resp.headers()));
    if let Some(shared) = state.shared.get() {
        crate::proxy::shared::publish_rest(shared, key.fingerprint(), rest, status.as_u16());
    }
    tracing::warn!(
        profile = %profile, key = key.fingerprint(), status = status.as_u16(),
        upstream = %route.upstream_label, rest_s = rest.as_secs(),
        "upstream refused the injected key; it rests"
    );
}
