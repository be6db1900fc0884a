//! The request path: route, choose the profile, inject the key, forward, stream back.
//!
//! Reads top to bottom. Everything it needs comes from one snapshot loaded once per request;
//! bodies are handed on as streams and never collected.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Version};
use http_body::Frame;
use http_body_util::{BodyExt as _, Either};
use hyper::body::Incoming;

use http_body::Body as _;
use http_body_util::Full;

use crate::access_log::{AccessRecord, REQUEST_ID};
use crate::admin;
use crate::body::{ClientFault, KeptBody, Outbound, ResponseBody, Streamed, UpstreamBody};
use crate::clients;
use crate::config::{DEFAULT_PROFILE, OPENROUTER_ENV};
use crate::error::{ErrorShape, LocalError};
use crate::forward::{forward, upstream_error};
use crate::headers::{is_event_stream, strip_hop_by_hop, strip_key_param, strip_request_headers};
use crate::keys::health::{rests_key, retry_after};
use crate::keys::{AllResting, Key, Profile};
use crate::refusal::{self, Refused};
use crate::routes::Route;
use crate::state::{Snapshot, State};
use crate::text::tilde;

pub const PROFILE_HEADER: &str = "x-keyproxy-profile";
const KEY_HEADER: &str = "x-keyproxy-key";

/// Per-connection facts the request path needs.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub local: SocketAddr,
    /// The worker thread serving it, whose upstream connection pool it uses.
    pub worker: usize,
}

pub async fn handle(state: &State, conn: Conn, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    if path == "/_keyproxy" || path.starts_with("/_keyproxy/") {
        return admin::handle(state, &req);
    }
    let mut record = AccessRecord::begin(req.method(), req.uri(), req.headers());
    if req.method() == Method::CONNECT {
        return reject(state, record, LocalError::Connect, ErrorShape::OpenAi);
    }
    if req.method() == Method::TRACE {
        return reject(state, record, LocalError::Trace, ErrorShape::OpenAi);
    }
    if let Some(target) = foreign_target(&req, conn.local) {
        return reject(
            state,
            record,
            LocalError::ForeignTarget { target },
            ErrorShape::OpenAi,
        );
    }

    let snapshot = state.load();
    let (mut parts, body) = req.into_parts();
    let Plan {
        route,
        profile,
        pool,
        mut key,
        client,
    } = match plan(&snapshot, &mut parts) {
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
    record.route = Some(route.name.clone());
    record.profile = Some(profile.clone());
    record.client = client.map(str::to_owned);
    // The upstream sees the same request id as the log and the client.
    parts
        .headers
        .entry(REQUEST_ID)
        .or_insert_with(|| record.request_id.clone());

    // With another key to fail over to, keep a copy of a small body as it streams past, so the
    // request can be sent again if the upstream refuses this key.
    let limit = snapshot.config.retry_body_limit;
    let fits = body.size_hint().upper().is_none_or(|n| n <= limit);
    let (body, kept) = if pool.keys().len() > 1 && fits {
        let (body, keeper) = KeptBody::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
        let again = (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        );
        (Outbound::Kept(body), Some((keeper, again)))
    } else {
        (Outbound::Stream(body), None)
    };
    let meter = || state.metrics.request_bytes.clone();
    let fault = Arc::new(ClientFault::default());
    let body =
        UpstreamBody::new(body, meter()).watched(snapshot.config.idle_timeout, fault.clone());

    let started = Instant::now();
    let deadline = snapshot.config.response_timeout;
    let mut sent = forward(route, conn.worker, parts, body, deadline, &fault).await;
    if let Ok(resp) = &sent {
        if rests_key(resp.status()) {
            rest(key, pool, &profile, route, resp);
            let retry = kept.and_then(|(keeper, again)| {
                let other = pool.pick_other(key)?;
                Some((other, keeper.take()?, again))
            });
            if let Some((other, body, (method, uri, headers))) = retry {
                tracing::info!(profile = %profile, from = key.fingerprint(), to = other.fingerprint(), "retrying on the next key");
                state.metrics.retried(&route.prefix, &profile);
                key = other;
                let mut parts = Request::new(()).into_parts().0;
                (parts.method, parts.uri, parts.headers) = (method, uri, headers);
                inject(route, key, &mut parts.headers);
                let body = UpstreamBody::new(Outbound::Replay(Full::new(body)), meter());
                sent = forward(
                    route,
                    conn.worker,
                    parts,
                    body,
                    deadline,
                    &ClientFault::done(),
                )
                .await;
                if let Ok(resp) = &sent {
                    if rests_key(resp.status()) {
                        rest(key, pool, &profile, route, resp);
                    }
                }
            }
        }
    }
    let upstream_time = started.elapsed();
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            let err = if fault.malformed() {
                LocalError::MalformedBody
            } else if fault.stalled() {
                LocalError::BodyStalled {
                    after: humantime::format_duration(snapshot.config.idle_timeout).to_string(),
                }
            } else {
                upstream_error(&route.upstream_label, &snapshot.config, &e)
            };
            tracing::warn!(
                route = %route.prefix, profile = %profile, upstream = %route.upstream_label,
                "{err}"
            );
            record.key = Some(key.fingerprint().into());
            return reject(state, record, err, route.error_shape);
        }
    };
    record.key = Some(key.fingerprint().into());

    route.latency.observe(upstream_time);
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // keyproxy strips Upgrade and forwards no protocol switch; passing the 101 on would
        // leave the client's connection in a state neither side can use.
        let err = LocalError::UpstreamUnreachable {
            upstream: route.upstream_label.clone(),
            cause:
                "it answered 101 Switching Protocols, and keyproxy does not proxy protocol upgrades"
                    .into(),
        };
        tracing::warn!(route = %route.prefix, upstream = %route.upstream_label, "{err}");
        return reject(state, record, err, route.error_shape);
    }
    let (mut parts, body) = resp.into_parts();
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let status = parts.status;
    snapshot.meters.count(
        &state.metrics,
        (route.index, &route.prefix),
        &profile,
        client.unwrap_or(""),
        status.as_u16(),
    );
    if status.is_success() {
        key.health().accepted();
    } else if rests_key(status) {
        // Tell the client which profile and key the upstream refused; never the key itself.
        if let Ok(v) = HeaderValue::from_str(&profile) {
            parts.headers.insert(PROFILE_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(key.fingerprint()) {
            parts.headers.insert(KEY_HEADER, v);
        }
    }
    if is_event_stream(&parts.headers) {
        // nginx in front of keyproxy would otherwise batch SSE events.
        parts
            .headers
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    let mut body = body;
    let mut head = None;
    if matches!(status.as_u16(), 401..=403) {
        let refused = Refused {
            provider: &route.provider_name,
            fingerprint: key.fingerprint(),
            profile: &profile,
            status: status.as_u16(),
            source: key.source(),
        };
        match refusal::read_small(&mut body, snapshot.config.idle_timeout).await {
            refusal::Read::Whole(bytes) => {
                let bytes = refusal::rewrite(&bytes, &refused).unwrap_or(bytes);
                parts.headers.remove(header::CONTENT_LENGTH);
                state.metrics.response_bytes.inc_by(bytes.len() as u64);
                record.answered(status.as_u16(), upstream_time.as_secs_f64() * 1e3);
                record.ended(bytes.len() as u64, "complete");
                parts.headers.insert(REQUEST_ID, record.request_id.clone());
                return Response::from_parts(parts, Either::Right(Full::new(bytes)));
            }
            refusal::Read::Partial(bytes) => head = Some(Frame::data(bytes)),
        }
    }
    if head.is_none() && !body.is_end_stream() {
        // hyper sends the head together with the first body bytes: an upstream that closes
        // right after its head would leave the client an empty reply, with no status line.
        // So the first frame is looked at before the head goes: at once for a stream, and,
        // for a body of known length, which follows its head at once, waited for.
        let first = if parts.headers.contains_key(header::CONTENT_LENGTH) {
            tokio::time::timeout(snapshot.config.idle_timeout, body.frame())
                .await
                .ok()
        } else {
            // One poll, no timer: what has already arrived, if anything.
            std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Some(frame)),
                Poll::Pending => Poll::Ready(None),
            })
            .await
        };
        match first {
            Some(Some(Ok(frame))) => head = Some(frame),
            Some(Some(Err(e))) => {
                let err = LocalError::UpstreamUnreachable {
                    upstream: route.upstream_label.clone(),
                    cause: format!("the connection broke after the response head: {e}"),
                };
                tracing::warn!(route = %route.prefix, upstream = %route.upstream_label, "{err}");
                return reject(state, record, err, route.error_shape);
            }
            Some(None) | None => {}
        }
    }
    record.answered(status.as_u16(), upstream_time.as_secs_f64() * 1e3);
    parts.headers.insert(REQUEST_ID, record.request_id.clone());
    let meter = state.metrics.response_bytes.clone();
    let body = Streamed::new(body, snapshot.config.idle_timeout, meter, record).with_head(head);
    Response::from_parts(parts, Either::Left(body))
}

/// What the request path decided for one request before anything is sent.
pub struct Plan<'s> {
    pub route: &'s Route,
    pub profile: String,
    pub pool: &'s Profile,
    pub key: &'s Key,
    /// The client's name, when clients are configured.
    pub client: Option<&'s str>,
}

/// Steps 2 to 5 of the request path, everything but I/O: picks the route, the profile and a
/// key, and rewrites `parts` into the upstream request (URI, version, headers, the key).
pub fn plan<'s>(snapshot: &'s Snapshot, parts: &mut Parts) -> Result<Plan<'s>, LocalError> {
    let Some(route) = snapshot.routes.find(parts.uri.path()) else {
        return Err(LocalError::NoRoute {
            path: parts.uri.path().to_owned(),
        });
    };
    let (profile, client) = choose_profile(snapshot, route, &parts.headers)?;
    let Some(pool) = snapshot.keys.profile(&profile) else {
        return Err(missing_key(snapshot, profile));
    };
    let key = pool
        .pick()
        .map_err(|all| all_resting(profile.clone(), all))?;
    let uri = route
        .upstream_uri(&parts.uri)
        .map_err(|e| LocalError::UpstreamUnreachable {
            upstream: route.upstream_label.clone(),
            cause: format!("cannot build the upstream URL: {e}"),
        })?;
    parts.uri = match route.key_in_query {
        true => strip_key_param(&uri).unwrap_or(uri),
        false => uri,
    };
    // The client picks HTTP/1.1 or HTTP/2 per upstream connection (ALPN); it needs 1.1 here.
    parts.version = Version::HTTP_11;
    strip_request_headers(&mut parts.headers, &route.header);
    for (name, value) in &route.default_headers {
        if !parts.headers.contains_key(name) {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in &route.add_headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    inject(route, key, &mut parts.headers);
    Ok(Plan {
        route,
        profile,
        pool,
        key,
        client,
    })
}

/// Writes `key` into the route's header, in the route's format, built once at load.
pub fn inject(route: &Route, key: &Key, headers: &mut HeaderMap) {
    if let Some(credential) = key.header(route.format) {
        headers.insert(route.header.clone(), credential.clone());
    }
}

/// Puts a key the upstream refused to rest, and says so. A refusal (401, 402, 403) rests a key
/// only while another key of its profile is awake: the last one keeps being forwarded, so that
/// topping up credit or a provider's passing error never locks an agent out for an hour.
fn rest(key: &Key, pool: &Profile, profile: &str, route: &Route, resp: &Response<Incoming>) {
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
    tracing::warn!(
        profile = %profile, key = key.fingerprint(), status = status.as_u16(),
        upstream = %route.upstream_label, rest_s = rest.as_secs(),
        "upstream refused the injected key; it rests"
    );
}

/// The profile for a request: the one it names in `x-keyproxy-profile`, else its client's, else
/// the route's. With clients configured, every request needs a known token and may name only
/// that client's profiles. Whatever the choice, the route must allow it: a key goes only to the
/// upstreams configured for it.
fn choose_profile<'s>(
    snapshot: &'s Snapshot,
    route: &'s Route,
    headers: &HeaderMap,
) -> Result<(String, Option<&'s str>), LocalError> {
    let named = headers
        .get(PROFILE_HEADER)
        .map(|v| v.to_str().unwrap_or_default());
    let clients = &snapshot.config.clients;
    let (chosen, client) = if clients.is_empty() {
        (named.unwrap_or(&route.profile), None)
    } else {
        let token = clients::presented(headers, &route.header).ok_or(LocalError::MissingToken)?;
        let client = clients.find(token).ok_or(LocalError::InvalidToken)?;
        let forbidden = |profile: &str| LocalError::ForbiddenProfile {
            client: client.name.clone(),
            profile: profile.to_owned(),
            allowed: client
                .profiles
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let chosen = match named {
            Some(p) if client.may_use(p) => p,
            Some(p) => return Err(forbidden(p)),
            None => client
                .profile_for(&route.profile, |p| route.allows(p))
                .ok_or_else(|| forbidden(&route.profile))?,
        };
        (chosen, Some(client.name.as_str()))
    };
    if !route.allows(chosen) {
        return Err(LocalError::ProfileNotOnRoute {
            route: route.prefix.clone(),
            profile: chosen.to_owned(),
        });
    }
    Ok((chosen.to_owned(), client))
}

/// The local 401: what to do first, where keyproxy looked after.
fn missing_key(snapshot: &Snapshot, profile: String) -> LocalError {
    let config = &snapshot.config;
    let todo = match config.keys_files.first() {
        Some(file) => format!("add one to {} or run keyproxy check", tilde(file)),
        None if !config.openclaw_state_dirs.is_empty() => {
            "add one with openclaw models auth paste-api-key or run keyproxy check".into()
        }
        None if profile == DEFAULT_PROFILE => format!(
            "set environment variable {OPENROUTER_ENV} where keyproxy runs or run keyproxy check"
        ),
        None => "add a keys file to keyproxy.toml or run keyproxy check".into(),
    };
    LocalError::MissingKey {
        looked: snapshot.keys.looked_for(&profile),
        todo,
        profile,
    }
}

fn all_resting(profile: String, all: AllResting) -> LocalError {
    LocalError::KeysResting {
        profile,
        why: "rate limited".into(),
        wakes_in_s: all.wakes_in.as_secs_f64().ceil() as u64,
    }
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
    let mut resp = err.into_response_shaped(shape);
    resp.headers_mut()
        .insert(REQUEST_ID, record.request_id.clone());
    resp
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
