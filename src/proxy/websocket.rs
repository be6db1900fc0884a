//! WebSocket pass-through (DESIGN.md, WebSocket): an HTTP/1.1 `Upgrade: websocket` on a route
//! whose upstream offers WebSockets goes through the same plan as any request (route, client
//! token, profile, key, limits), is sent on an HTTP/1.1 connection of its own with the key
//! injected on the handshake, and after the upstream's `101` the two upgraded connections are
//! joined byte for byte until either side closes or nothing moves for `idle_timeout`. No frame
//! is parsed. Elsewhere the upgrade is answered 426 before anything is sent, so an agent (Codex
//! tries a WebSocket first) falls back to HTTPS at once instead of retrying for seconds.

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

use super::access_log::AccessRecord;
use super::body::ResponseBody;
use super::error::{LocalError, TimeoutPhase};
use super::forward::causes;
use super::plan::{plan, Plan};
use super::relay::Socket;
use super::routes::Route;
use super::state::{Snapshot, State};
use super::{limits, reject, respond};

/// Is this an HTTP/1.1 WebSocket handshake? One header lookup for every other request.
pub(super) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
            })
}

/// Forwards a WebSocket handshake, or refuses it; on `101`, relays the socket in a task of its
/// own, which writes the access record when the socket closes.
pub(super) async fn pass_through(
    state: &State,
    mut record: AccessRecord,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let snapshot = state.load();
    let client_side = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    let route = snapshot.routes.find(parts.uri.path());
    let shape = route.map(|r| r.error_shape).unwrap_or_default();
    if route.is_some_and(|r| !r.websocket) {
        return reject(state, record, LocalError::UpgradeUnsupported, shape);
    }
    // The handshake's own headers, which the plan may drop as hop-by-hop (`Connection` can name
    // them); the key and accept are the client's to check, so they pass as sent.
    let handshake: Vec<(HeaderName, HeaderValue)> = parts
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("sec-websocket-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let plan = match plan(&snapshot, &mut parts) {
        Ok(plan) => plan,
        Err(e) => return reject(state, record, e, shape),
    };
    record.planned(&plan);
    if let Err(e) = admit(&snapshot, &plan) {
        return reject(state, record, e, shape);
    }
    for (name, _) in &handshake {
        parts.headers.remove(name);
    }
    for (name, value) in handshake {
        parts.headers.append(name, value);
    }
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let route = plan.route;
    if route.key_in_query {
        // Gemini Live takes its key as `?key=` (its own clients send no header on a socket).
        match key_in_query(&parts.uri, parts.headers.remove(&route.header)) {
            Some(uri) => parts.uri = uri,
            None => return reject(state, record, unbuildable(route), shape),
        }
    }
    let config = &snapshot.config;
    let started = Instant::now();
    let answer = tokio::time::timeout(config.response_timeout, handshake_upstream(route, parts));
    let mut resp = match answer.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return reject(state, record, e.into_local(route, config), shape),
        Err(_) => {
            let e = LocalError::UpstreamTimeout {
                upstream: route.upstream_label.clone(),
                after: humantime::format_duration(config.response_timeout).to_string(),
                phase: TimeoutPhase::ResponseHead,
            };
            return reject(state, record, e, shape);
        }
    };
    let upstream_time = started.elapsed();
    record.key = Some(plan.key.fingerprint().into());
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused (a 401, a 404, a 426): the answer goes back as any answer does.
        let prepared =
            respond::prepare(state, &snapshot, &plan, plan.key, resp, upstream_time).await;
        return match prepared {
            Ok(answer) => respond::reply(state, &snapshot, answer, record, upstream_time, None),
            Err(e) => reject(state, record, e, shape),
        };
    }
    route.latency.observe(upstream_time);
    plan.key.health().accepted();
    snapshot.meters.count(
        &state.metrics,
        (route.index, &route.prefix),
        &plan.profile,
        plan.client.map_or("", |c| c.name.as_str()),
        StatusCode::SWITCHING_PROTOCOLS.as_u16(),
    );
    let minute = state.metrics.traffic.answered(101, upstream_time);
    plan.key.health().used_in(minute);
    record.answered(101, upstream_time.as_secs_f64() * 1e3, resp.headers());
    let upstream_side = hyper::upgrade::on(&mut resp);
    let socket = Socket::new(
        record,
        config.idle_timeout,
        &state.sockets,
        state.metrics.clone(),
    );
    tokio::spawn(socket.relay(client_side, upstream_side));
    let (mut head, _) = resp.into_parts();
    head.version = Version::HTTP_11;
    Response::from_parts(head, Either::Right(Full::new(Bytes::new())))
}

/// A client whose model list, budget or token limit keyproxy enforces per request is refused a
/// socket: the frames (a Responses `response.create` names its own model and runs a whole
/// turn) are relayed unread, so none of those limits could hold, and agents fall back to HTTPS
/// on a 426 at once. A client with only a rate limit counts the socket as one request.
fn admit(snapshot: &Snapshot, plan: &Plan<'_>) -> Result<(), LocalError> {
    let Some(client) = plan.client else {
        return Ok(());
    };
    let limits = &client.limits;
    if !client.models.is_empty() || limits.budget.is_some() || limits.tokens_per_day.is_some() {
        return Err(LocalError::UpgradeLimited {
            client: client.name.clone(),
        });
    }
    if let Some(used) = snapshot.limits.of(&client.name) {
        // Nothing to reserve: a socket is held by no budget or token limit here.
        let estimate = limits::Estimate {
            billable: false,
            tokens: None,
        };
        drop(limits::admit(client, used, estimate)?);
    }
    Ok(())
}

fn unbuildable(route: &Route) -> LocalError {
    LocalError::UpstreamUnreachable {
        upstream: route.upstream_label.clone(),
        cause: "cannot build the upstream URL".into(),
    }
}

/// `uri` with `key=` (the injected credential, percent-encoded) added to its query.
fn key_in_query(uri: &Uri, credential: Option<HeaderValue>) -> Option<Uri> {
    let credential = credential?;
    let mut key = String::with_capacity(credential.len());
    for &b in credential.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                key.push(b as char)
            }
            _ => key.push_str(&format!("%{b:02X}")),
        }
    }
    let pq = match uri.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}&key={key}", uri.path()),
        _ => format!("{}?key={key}", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Why the handshake got no answer.
enum Unanswered {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Failed(hyper::Error),
}

impl Unanswered {
    fn into_local(self, route: &Route, config: &crate::config::Config) -> LocalError {
        let (cause, timed_out) = match &self {
            Self::Connect(e) => causes(&**e),
            Self::Failed(e) => causes(e),
        };
        if timed_out && matches!(self, Self::Connect(_)) {
            return LocalError::UpstreamTimeout {
                upstream: route.upstream_label.clone(),
                after: humantime::format_duration(config.connect_timeout).to_string(),
                phase: TimeoutPhase::Connect,
            };
        }
        LocalError::UpstreamUnreachable {
            upstream: route.upstream_label.clone(),
            cause,
        }
    }
}

/// Sends the handshake on a new HTTP/1.1 connection (TLS with ALPN `http/1.1` only), which the
/// socket then owns: an upgraded connection goes back to no pool.
async fn handshake_upstream(route: &Route, parts: Parts) -> Result<Response<Incoming>, Unanswered> {
    let connector = route.origin.tls_http1.clone();
    let io = tower::ServiceExt::oneshot(connector, parts.uri.clone())
        .await
        .map_err(Unanswered::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(Unanswered::Failed)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("WebSocket upstream connection: {e}");
        }
    });
    let mut req = Request::from_parts(parts, Empty::<Bytes>::new());
    // This connection speaks to one origin: origin-form target, and Host from the route.
    let target = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if let Some(host) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    *req.uri_mut() = Uri::from(target);
    sender.send_request(req).await.map_err(Unanswered::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_http1_websocket_upgrade_is_one() {
        let req = |version, upgrade: &str| {
            Request::get("/v1/responses")
                .version(version)
                .header(header::UPGRADE, upgrade)
                .body(())
                .unwrap()
        };
        assert!(is_upgrade(&req(Version::HTTP_11, "websocket")));
        assert!(is_upgrade(&req(Version::HTTP_11, "foo, WebSocket")));
        assert!(!is_upgrade(&req(Version::HTTP_11, "h2c")));
        assert!(!is_upgrade(&req(Version::HTTP_2, "websocket")));
        assert!(!is_upgrade(&Request::get("/").body(()).unwrap()));
    }

    #[test]
    fn geminis_key_goes_into_the_query_percent_encoded() {
        let uri: Uri = "https://g/ws/Bidi?alt=1".parse().unwrap();
        let key = HeaderValue::from_static("AIza+k/1");
        assert_eq!(
            key_in_query(&uri, Some(key.clone())).unwrap().to_string(),
            "https://g/ws/Bidi?alt=1&key=AIza%2Bk%2F1"
        );
        let uri: Uri = "https://g/ws/Bidi".parse().unwrap();
        assert_eq!(
            key_in_query(&uri, Some(key)).unwrap().to_string(),
            "https://g/ws/Bidi?key=AIza%2Bk%2F1"
        );
    }
}
