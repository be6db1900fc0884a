//! One access record per request: created when the request arrives, filled in as the request
//! path decides, and written exactly once when it is dropped, whatever the outcome (answered,
//! answered locally, upstream error, the client gone before the answer, a stream cut), as flat
//! fields with numbers as numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::plan::Plan;

/// A name made once rather than parsed from text at every lookup.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id unique to this process run: the start time and a counter, in hex.
pub fn new_request_id() -> HeaderValue {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{:011x}-{n:x}", start & 0xfff_ffff_ffff))
        .unwrap_or(HeaderValue::from_static("-"))
}

/// The client's `x-request-id`, when it is one a log can carry: not empty, at most 200 bytes.
pub fn usable_request_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
}

/// Milliseconds since `started`, to a tenth, as the access record writes them.
fn tenths_of_ms_since(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

/// The access record of a request to keyproxy's own endpoints (`/_keyproxy/...`), written when
/// its response head is ready: message `admin`, the status, `reason` (`x-keyproxy-error`) when
/// refused, `bytes` when the body's length is known. Health and readiness probes, and the page's
/// data it asks for every 5 s while open, are written at debug level: an orchestrator asks every
/// few seconds, and info would be mostly probes.
pub fn admin_record<B: http_body::Body>(
    request_id: Option<&HeaderValue>,
    method: &Method,
    uri: &Uri,
    resp: &http::Response<B>,
    started: Instant,
) {
    let path = uri.path();
    let bytes = http_body::Body::size_hint(resp.body()).exact();
    let reason = resp
        .headers()
        .get("x-keyproxy-error")
        .and_then(|v| v.to_str().ok());
    let request_id = request_id.and_then(|v| v.to_str().ok());
    let ms = tenths_of_ms_since(started);
    macro_rules! record {
        ($level:expr) => {
            tracing::event!(
                target: "keyproxy::access",
                $level,
                request_id,
                method = %method,
                path,
                status = resp.status().as_u16(),
                reason,
                bytes,
                ms,
                outcome = "complete",
                "admin"
            )
        };
    }
    if matches!(
        path,
        "/_keyproxy/health" | "/_keyproxy/ready" | "/_keyproxy/ui/data"
    ) {
        record!(tracing::Level::DEBUG);
    } else {
        record!(tracing::Level::INFO);
    }
}

#[derive(Debug)]
pub struct AccessRecord {
    pub request_id: HeaderValue,
    method: Method,
    /// As the client sent it; a clone shares the bytes, so nothing is copied per request.
    uri: Uri,
    started: Instant,
    pub route: Option<Arc<str>>,
    pub profile: Option<String>,
    pub key: Option<Box<str>>,
    pub client: Option<String>,
    /// The upstream's own `x-request-id`, when it answered with one of its own (OpenAI does).
    upstream_request_id: Option<HeaderValue>,
    status: Option<u16>,
    reason: Option<&'static str>,
    upstream_ms: Option<f64>,
    bytes: u64,
    /// Bytes the client sent through a WebSocket; `bytes` are those it received.
    sent: Option<u64>,
    outcome: &'static str,
}

impl AccessRecord {
    /// The request's `x-request-id` (the server's request-id layer gave it one), else a new one.
    pub fn begin(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        let request_id = usable_request_id(headers)
            .cloned()
            .unwrap_or_else(new_request_id);
        Self {
            request_id,
            method: method.clone(),
            uri: uri.clone(),
            started: Instant::now(),
            route: None,
            profile: None,
            key: None,
            client: None,
            upstream_request_id: None,
            status: None,
            reason: None,
            upstream_ms: None,
            bytes: 0,
            sent: None,
            outcome: "client gone before the answer",
        }
    }

    /// What the plan decided: route, profile, client.
    pub fn planned(&mut self, plan: &Plan<'_>) {
        self.route = Some(plan.route.name.clone());
        self.profile = Some(plan.profile.clone());
        self.client = plan.client.map(|c| c.name.clone());
    }

    /// keyproxy answered itself with `status`, for `reason` (the `x-keyproxy-error` value).
    pub fn local(&mut self, status: u16, reason: &'static str) {
        self.status = Some(status);
        self.reason = Some(reason);
        self.outcome = "answered locally";
    }

    /// The upstream's response head came after `upstream_ms`.
    pub fn answered(&mut self, status: u16, upstream_ms: f64, headers: &HeaderMap) {
        self.upstream_request_id = headers
            .get(&REQUEST_ID)
            .filter(|theirs| **theirs != self.request_id)
            .cloned();
        self.status = Some(status);
        self.upstream_ms = Some(upstream_ms);
        self.outcome = "client gone mid-answer";
    }

    /// The answer's body ended: `outcome` says how, after `bytes`.
    pub fn ended(&mut self, bytes: u64, outcome: &'static str) {
        self.bytes = bytes;
        self.outcome = outcome;
    }

    /// A WebSocket relayed `sent` bytes from the client and `received` to it, then ended.
    pub fn socket_ended(&mut self, sent: u64, received: u64, outcome: &'static str) {
        self.sent = Some(sent);
        self.bytes = received;
        self.outcome = outcome;
    }

    pub fn outcome(&self) -> &'static str {
        self.outcome
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let message = match (self.reason, self.upstream_ms) {
            (Some(_), _) => "answered locally",
            (None, Some(_)) => "proxied",
            (None, None) => "client gone",
        };
        tracing::info!(
            target: "keyproxy::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = %self.method,
            path = self.uri.path(),
            route = self.route.as_deref(),
            profile = self.profile.as_deref(),
            key = self.key.as_deref(),
            client = self.client.as_deref(),
            upstream_request_id = self.upstream_request_id.as_ref().and_then(|v| v.to_str().ok()),
            status = self.status,
            reason = self.reason,
            upstream_ms = self.upstream_ms.map(|ms| (ms * 10.0).round() / 10.0),
            bytes = self.bytes,
            sent = self.sent,
            ms = tenths_of_ms_since(self.started),
            outcome = self.outcome,
            "{message}"
        );
    }
}
