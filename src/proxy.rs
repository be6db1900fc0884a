//! The request path: route, choose the profile, inject the key, forward, stream back.
//!
//! Reads top to bottom. Everything it needs comes from one snapshot loaded once per request;
//! bodies are handed on as streams and never collected.

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::admin;
use crate::body::ResponseBody;
use crate::error::LocalError;
use crate::state::State;

pub const PROFILE_HEADER: &str = "x-keyproxy-profile";
const KEY_HEADER: &str = "x-keyproxy-key";

/// Per-connection facts the request path needs.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub local: SocketAddr,
}

pub async fn handle(state: &State, conn: Conn, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    if path == "/_keyproxy" || path.starts_with("/_keyproxy/") {
        return admin::handle(state, &req);
    }
    if req.method() == Method::CONNECT {
        return reject(&req, LocalError::Connect);
    }
    if let Some(target) = foreign_target(&req, conn.local) {
        return reject(&req, LocalError::ForeignTarget { target });
    }

    let snapshot = state.load();
    let Some(route) = snapshot.routes.find(req.uri().path()) else {
        let err = LocalError::NoRoute {
            path: req.uri().path().to_owned(),
        };
        return reject(&req, err);
    };
    let profile = match req.headers().get(PROFILE_HEADER) {
        Some(v) => v.to_str().unwrap_or_default(),
        None => route.profile.as_str(),
    };
    let Some(key) = snapshot.keys.profile(profile).and_then(|p| p.pick()) else {
        let err = LocalError::MissingKey {
            profile: profile.to_owned(),
            looked: snapshot.keys.looked_for(profile),
        };
        return reject(&req, err);
    };
    let Some(credential) = key.header(route.format) else {
        // A snapshot renders every key in every route format, so this is a bug, not a user error.
        tracing::error!(route = %route.prefix, "key has no rendering for the route's format");
        return reject(
            &req,
            LocalError::NoRoute {
                path: route.prefix.clone(),
            },
        );
    };
    let profile = profile.to_owned();

    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let uri = match route.upstream_uri(&parts.uri) {
        Ok(uri) => uri,
        Err(e) => {
            let err = LocalError::UpstreamUnreachable {
                upstream: route.upstream_label.clone(),
                cause: format!("cannot build the upstream URL: {e}"),
            };
            return reject_parts(&method, &path, err);
        }
    };
    parts.uri = uri;
    // The client picks HTTP/1.1 or HTTP/2 per upstream connection (ALPN); it needs 1.1 here.
    parts.version = Version::HTTP_11;
    strip_request_headers(&mut parts.headers, &route.header);
    parts
        .headers
        .insert(route.header.clone(), credential.clone());

    let started = Instant::now();
    let upstream = route
        .client
        .request(Request::from_parts(parts, Either::Left(body)))
        .await;
    let upstream_ms = started.elapsed().as_secs_f64() * 1e3;
    let resp = match upstream {
        Ok(resp) => resp,
        Err(e) => {
            let err = upstream_error(&route.upstream_label, &snapshot.config.connect_timeout, &e);
            tracing::warn!(
                route = %route.prefix, profile = %profile, upstream = %route.upstream_label,
                "{err}"
            );
            return reject_parts(&method, &path, err);
        }
    };

    let (mut parts, body) = resp.into_parts();
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let status = parts.status;
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        if let Ok(v) = HeaderValue::from_str(&profile) {
            parts.headers.insert(PROFILE_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(key.fingerprint()) {
            parts.headers.insert(KEY_HEADER, v);
        }
        tracing::warn!(
            profile = %profile, key = key.fingerprint(), status = status.as_u16(),
            upstream = %route.upstream_label,
            "upstream rejected the injected key"
        );
    }
    if is_event_stream(&parts.headers) {
        // nginx in front of keyproxy would otherwise batch SSE events.
        parts
            .headers
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    tracing::info!(
        %method, path = %path, route = %route.prefix, profile = %profile,
        status = status.as_u16(), upstream_ms = format_args!("{upstream_ms:.1}"),
        "proxied"
    );
    Response::from_parts(parts, Either::Left(body))
}

fn reject(req: &Request<Incoming>, err: LocalError) -> Response<ResponseBody> {
    reject_parts(req.method(), req.uri().path(), err)
}

fn reject_parts(method: &Method, path: &str, err: LocalError) -> Response<ResponseBody> {
    tracing::info!(
        %method, path = %path, status = err.status().as_u16(), reason = err.reason(),
        "answered locally"
    );
    err.into_response()
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

/// RFC 9110 section 7.6.1: hop-by-hop headers, and the ones `Connection` names, are not forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Also removes what the client sent as its own credential, keyproxy's control headers and Host
/// (the client sets it from the upstream URI).
fn strip_request_headers(headers: &mut HeaderMap, credential: &HeaderName) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    headers.remove(credential);
    while let Some(name) = headers
        .keys()
        .find(|k| k.as_str().starts_with("x-keyproxy-"))
        .cloned()
    {
        headers.remove(name);
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// 504 for a connect timeout, 502 for anything else, naming the upstream and the cause.
fn upstream_error(
    upstream: &str,
    connect_timeout: &std::time::Duration,
    e: &hyper_util::client::legacy::Error,
) -> LocalError {
    let mut causes: Vec<String> = Vec::new();
    let mut timed_out = false;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        let text = s.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = s.source();
    }
    if timed_out && e.is_connect() {
        return LocalError::UpstreamTimeout {
            upstream: upstream.to_owned(),
            after: humantime::format_duration(*connect_timeout).to_string(),
        };
    }
    if causes.is_empty() {
        causes.push(e.to_string());
    }
    LocalError::UpstreamUnreachable {
        upstream: upstream.to_owned(),
        cause: causes.join(": "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        h.insert("x-api-key", HeaderValue::from_static("client"));
        h.insert("x-keyproxy-profile", HeaderValue::from_static("p"));
        h.insert("x-keyproxy-other", HeaderValue::from_static("p"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_request_headers(&mut h, &HeaderName::from_static("x-api-key"));
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type"]);
    }
}
