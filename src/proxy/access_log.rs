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

/// A request id unique to this process run: the start time and a counter, in hex
/// (`18f3a2b4c5d-2a`), written by hand: `format!` cost about a thousand instructions per request.
pub fn new_request_id() -> HeaderValue {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // 11 digits of the start (zero-padded), a dash, and up to 16 of the counter.
    let mut id = [0u8; 28];
    hex(start & 0xfff_ffff_ffff, &mut id[..11]);
    id[11] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    hex(n, &mut id[12..12 + digits]);
    HeaderValue::from_bytes(&id[..12 + digits]).unwrap_or(HeaderValue::from_static("-"))
}

/// `n` in lowercase hex, right-aligned in `out` and zero-padded.
fn hex(mut n: u64, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
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

impl AccessRecord {
    fn message(&self) -> &'static str {
        match (self.reason, self.upstream_ms) {
            (Some(_), _) => "answered locally",
            (None, Some(_)) => "proxied",
            (None, None) => "client gone",
        }
    }

    /// The record's fields, in the order and with the omissions of the `tracing::info!` below
    /// (a test holds the two to each other).
    fn fields(&self, f: &mut crate::rt::log_line::Fields<'_>) {
        f.str("request_id", self.request_id.to_str().unwrap_or("-"));
        f.display("method", &self.method);
        f.str("path", self.uri.path());
        let text = [
            ("route", self.route.as_deref()),
            ("profile", self.profile.as_deref()),
            ("key", self.key.as_deref()),
            ("client", self.client.as_deref()),
            (
                "upstream_request_id",
                self.upstream_request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok()),
            ),
        ];
        for (name, value) in text {
            if let Some(value) = value {
                f.str(name, value);
            }
        }
        if let Some(status) = self.status {
            f.u64("status", status.into());
        }
        if let Some(reason) = self.reason {
            f.str("reason", reason);
        }
        if let Some(ms) = self.upstream_ms {
            f.f64("upstream_ms", (ms * 10.0).round() / 10.0);
        }
        f.u64("bytes", self.bytes);
        if let Some(sent) = self.sent {
            f.u64("sent", sent);
        }
        f.f64("ms", tenths_of_ms_since(self.started));
        f.str("outcome", self.outcome);
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let message = self.message();
        if tracing::enabled!(target: "keyproxy::access", tracing::Level::INFO)
            && crate::rt::log_line::info_line("keyproxy::access", message, |f| self.fields(f))
        {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::log_line::tests::{info_text, logged};

    /// The line written directly and the line of the `tracing::info!` beside it (JSON logs,
    /// colours) carry the same fields in the same order, every field set.
    #[test]
    fn the_direct_line_and_the_traced_line_agree() {
        let record = || {
            let ours = HeaderMap::from_iter([(REQUEST_ID, HeaderValue::from_static("t-1"))]);
            let theirs = HeaderMap::from_iter([(REQUEST_ID, HeaderValue::from_static("req_9"))]);
            let uri = Uri::from_static("/v1/chat/completions?x=1");
            let mut r = AccessRecord::begin(&Method::POST, &uri, &ours);
            r.route = Some("/v1".into());
            r.profile = Some("p".into());
            r.key = Some("sk-or-v1...11111111".into());
            r.client = Some("laptop".into());
            r.local(429, "budget-exhausted");
            r.answered(200, 71.84, &theirs);
            r.socket_ended(5, 220, "complete");
            r
        };
        // After the time; `ms` is read from the clock when each line is made.
        let fields = |line: &str| {
            line[27..]
                .split_whitespace()
                .filter(|w| !w.starts_with("ms="))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let direct = record();
        let direct = info_text("keyproxy::access", direct.message(), |f| direct.fields(f)).unwrap();
        let traced = logged(true, || drop(record()));
        assert_eq!(fields(&direct), fields(&traced));
        assert_eq!(fields(&direct).len(), 18, "{direct}");
    }

    #[test]
    fn request_ids_are_the_start_and_a_counter_in_hex() {
        let ids: Vec<String> = (0..20)
            .map(|_| new_request_id().to_str().unwrap().to_owned())
            .collect();
        for id in &ids {
            let (start, n) = id.split_once('-').unwrap();
            assert_eq!(start.len(), 11, "{id}");
            assert_eq!(start, &ids[0][..11]);
            assert!(u64::from_str_radix(start, 16).is_ok() && u64::from_str_radix(n, 16).is_ok());
            assert!(n.len() == 1 || !n.starts_with('0'), "{id}");
        }
        let counters: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(counters.len(), ids.len());
        let mut out = [0u8; 16];
        hex(u64::MAX, &mut out);
        assert_eq!(&out, b"ffffffffffffffff");
        hex(0xab, &mut out[..3]);
        assert_eq!(&out[..3], b"0ab");
    }
}
