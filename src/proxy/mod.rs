//! The request path: one request's fate, decided top to bottom in [`handle`].
//!
//! Everything a request needs comes from one snapshot loaded once; bodies are handed on as
//! streams and never collected; every local refusal goes out through [`reject`], which also
//! writes it into the access record.

mod access_log;
mod bill;
mod body;
pub(crate) mod error;
mod failover;
mod forward;
mod h1;
mod h2;
mod headers;
mod include_usage;
mod inspect;
mod kept;
pub mod limits;
mod model_limit;
mod plan;
mod readable;
mod refusal;
mod relay;
mod request_json;
mod respond;
mod routes;
mod settings;
pub mod shared;
mod state;
mod upload;
mod upstream;
mod websocket;

use std::net::{IpAddr, SocketAddr};

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

pub use access_log::{admin_record, new_request_id, usable_request_id, REQUEST_ID};
pub use body::ResponseBody;
pub use error::{json_response, ErrorShape, LocalError};
pub use forward::{ask_with_key, causes};
pub use plan::{plan, Plan, PROFILE_HEADER};
pub use readable::check_agent_readable;
pub use relay::Sockets;
pub use routes::{Route, Routes};
pub use state::{ReloadLog, Snapshot, State};
pub use upstream::UpstreamError;

use access_log::AccessRecord;

/// Answers one proxied request: refuse what is never forwarded, plan, send (once more on the
/// next key if the upstream refuses this one), then stream the answer back.
pub async fn handle(
    state: &State,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let mut record = AccessRecord::begin(req.method(), req.uri(), req.headers());
    if let Some(err) = never_forwarded(&req, local) {
        return reject(state, record, err, ErrorShape::OpenAi);
    }
    if websocket::is_upgrade(&req) {
        // Boxed, like anything rare and large: the common request's future stays small.
        return Box::pin(websocket::pass_through(state, record, req)).await;
    }
    let snapshot = state.load();
    let (mut parts, body) = req.into_parts();
    let plan = match plan(&snapshot, &mut parts) {
        Ok(plan) => plan,
        Err(e) => {
            let shape = snapshot
                .routes
                .find(parts.uri.path())
                .map(|r| r.error_shape)
                .unwrap_or_default();
            return reject(state, record, e, shape);
        }
    };
    record.planned(&plan);
    let route = plan.route;
    // Only a client with a model list, a budget or a token limit has its body read first.
    let (body, tokens_hint, hides_usage) = match plan.client.filter(|c| inspect::needed(c)) {
        None => (failover::ClientBody::Streaming(body), None, false),
        Some(client) => {
            let (limit, stall) = (
                snapshot.config.retry_body_limit,
                snapshot.config.idle_timeout,
            );
            match inspect::inspect(client, &mut parts, body, limit, stall).await {
                Ok(read) => (
                    failover::ClientBody::Read(read.body),
                    read.tokens_hint,
                    read.hides_usage,
                ),
                Err(e) => return reject(state, record, e, route.error_shape),
            }
        }
    };
    // Admitted after the body is read, so nothing is held while a body is read or refused.
    let mut bill = None;
    if let Some(client) = plan.client {
        if let Some(used) = snapshot.limits.of(&client.name) {
            // The most tokens this request may use, when its body says: what admission
            // reserves for it while it is in flight; else the client's reserve_tokens.
            let estimate = limits::Estimate {
                tokens: tokens_hint,
                ..limits::Estimate::of_method(&parts.method)
            };
            let admitted = match state.shared.get() {
                None => limits::admit(client, used, estimate),
                Some(shared) => shared::admit(shared, client, used, estimate).await,
            };
            match admitted {
                Ok(held) => {
                    bill = Some(bill::Bill::new(
                        state.usage.get().cloned(),
                        client.name.as_str().into(),
                        plan.profile.as_str().into(),
                        route.name.clone(),
                        Some(held),
                    ));
                }
                Err(e) => return reject(state, record, e, route.error_shape),
            }
        }
    }

    if let Some(b) = bill.as_mut() {
        b.forwarded();
    }
    let sent = failover::send_with_failover(state, &snapshot, &plan, parts, body).await;
    record.key = Some(sent.key.fingerprint().into());
    let answer = match sent.answer {
        Ok((resp, lease)) => {
            let upstream_time = sent.upstream_time;
            respond::prepare(state, &snapshot, &plan, sent.key, resp, upstream_time)
                .await
                .map(|answer| answer.leased(lease).hiding_usage(hides_usage))
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(answer) => respond::reply(state, &snapshot, answer, record, sent.upstream_time, bill),
        Err(err) => {
            // No answer: nothing to charge (the reservation is given back).
            if let Some(b) = bill {
                b.release();
            }
            tracing::warn!(
                route = %route.prefix, profile = %plan.profile, upstream = %route.upstream_label,
                "{err}"
            );
            reject(state, record, err, route.error_shape)
        }
    }
}

/// Requests refused whatever the config says: a forward-proxy tunnel, an echo of the request
/// (which would show the injected key), a target other than keyproxy itself.
fn never_forwarded(req: &Request<Incoming>, local: SocketAddr) -> Option<LocalError> {
    if req.method() == Method::CONNECT {
        return Some(LocalError::Connect);
    }
    if req.method() == Method::TRACE {
        return Some(LocalError::Trace);
    }
    foreign_target(req, local).map(|target| LocalError::ForeignTarget { target })
}

/// The one point where a local refusal becomes the reply and the access record.
fn reject(
    state: &State,
    mut record: AccessRecord,
    err: LocalError,
    shape: ErrorShape,
) -> Response<ResponseBody> {
    state.metrics.local(err.reason());
    record.local(err.status().as_u16(), err.reason());
    err.into_response_shaped(shape)
}

/// An HTTP/1 absolute-form target (`GET http://elsewhere/ HTTP/1.1`) is a forward-proxy request;
/// keyproxy accepts it only when it names keyproxy itself. (In HTTP/2 every request carries an
/// authority, the equivalent of Host, so there is nothing to tell apart.)
fn foreign_target(req: &Request<Incoming>, local: SocketAddr) -> Option<String> {
    if req.version() >= Version::HTTP_2 {
        return None;
    }
    let authority = req.uri().authority()?;
    let default_port = if req.uri().scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let port_ok = authority.port_u16().unwrap_or(default_port) == local.port();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host_ok = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip == local.ip() || (ip.is_loopback() && local.ip().is_loopback()));
    (!(port_ok && host_ok)).then(|| authority.to_string())
}
