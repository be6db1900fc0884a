//! `LocalError`: every reply keyproxy makes itself, in the error shape (OpenAI's, or Anthropic's
//! on Anthropic routes) that agents display.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::json;

use super::body::ResponseBody;
use crate::keys::{looked_list, LookedAt};

/// A request keyproxy answers itself instead of forwarding.
///
/// Agents show these messages through their own filters: OpenClaw keeps the provider's text only
/// in its log, masks what follows `...KEY: ` and cuts lines near 200 characters. So each message
/// starts with `keyproxy:`, says what is wrong and what to do before its first full stop, within
/// 180 characters, and never has the shape `NAME: value` with NAME ending in KEY, TOKEN, SECRET or
/// PASSWORD. Details (the places looked, a cause) come after that first sentence.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("keyproxy: no key for profile '{profile}'; {todo}. Looked in: {}.", looked_list(.looked))]
    MissingKey {
        profile: String,
        /// What to do, e.g. `add one to ~/.config/keyproxy/keys.toml or run keyproxy check`.
        todo: String,
        looked: Vec<LookedAt>,
    },
    #[error("keyproxy: no route for path '{}'; add a [[routes]] prefix covering it to keyproxy.toml.", shorten(.path))]
    NoRoute { path: String },
    #[error("keyproxy: cannot reach upstream {upstream}; check the network and the route's upstream in keyproxy.toml. Cause: {cause}.")]
    UpstreamUnreachable { upstream: String, cause: String },
    #[error("keyproxy: upstream {upstream} {} within {after}; {} in keyproxy.toml. Timed out: {}.", .phase.what(), .phase.todo(), .phase.name())]
    UpstreamTimeout {
        upstream: String,
        after: String,
        phase: TimeoutPhase,
    },
    #[error("keyproxy: refusing to forward to '{}'; send requests to keyproxy's own routes, it is not an open proxy.", shorten(.target))]
    ForeignTarget { target: String },
    #[error("keyproxy: the request body is malformed (a broken chunked encoding); fix the client's request. Nothing was answered by the upstream.")]
    MalformedBody,
    #[error("keyproxy: the client sent no request body bytes for {after}, so the request was cut; send the body without pausing, or raise idle_timeout in keyproxy.toml.")]
    BodyStalled { after: String },
    #[error("keyproxy: the client sent its request body slower than {rate} (after {grace}), so the request was cut; send the body faster, or lower min_upload_rate in keyproxy.toml.")]
    BodyTooSlow { rate: String, grace: String },
    #[error("keyproxy: TRACE is not forwarded, since an upstream that echoes the request would show the injected key; use another method.")]
    Trace,
    #[error("keyproxy: CONNECT is not supported; keyproxy forwards only to its configured upstreams and is not an open proxy.")]
    Connect,
    #[error("keyproxy: unknown admin path '{}'; try /_keyproxy/health, ready, me, status, usage or metrics.", shorten(.path))]
    UnknownAdminPath { path: String },
    #[error("keyproxy: this keyproxy serves only its configured clients; send your client token as the API key (Authorization: Bearer <token>).")]
    MissingToken,
    #[error("keyproxy: the client token matches no configured client; check the API key the agent sends.")]
    InvalidToken,
    #[error("keyproxy: {path} needs the admin token{}; send admin_token of keyproxy.toml as Authorization: Bearer <token>.", if *.presented { ", and the one sent matches none" } else { "" })]
    AdminTokenNeeded { path: String, presented: bool },
    #[error("keyproxy: {path} needs the admin token, not a client's; use the admin_token of keyproxy.toml, or read your own figures at /_keyproxy/me. This token is client '{}'.", shorten(.client))]
    AdminOnly { path: String, client: String },
    #[error("keyproxy: /_keyproxy/me describes a client, and {why}; ask /_keyproxy/usage for everyone's usage.")]
    NotAClient { why: &'static str },
    #[error("keyproxy: client '{client}' may not use profile '{profile}'; use one of its profiles: {allowed}.")]
    ForbiddenProfile {
        client: String,
        profile: String,
        allowed: String,
    },
    #[error("keyproxy: route '{route}' may not use profile '{profile}'; use one of its own profiles, or list it in the route's profiles in keyproxy.toml.")]
    ProfileNotOnRoute { route: String, profile: String },
    #[error("keyproxy: client '{client}' may not use model '{}'; ask for one of its models: {allowed}.", shorten(.model))]
    ModelNotAllowed {
        client: String,
        model: String,
        allowed: String,
    },
    #[error("keyproxy: client '{client}' has a model limit, and {why}. Nothing was forwarded.")]
    ModelUnreadable { client: String, why: String },
    #[error("keyproxy: client '{client}' has a budget or token limit, and {why}. Nothing was forwarded.")]
    RequestUnreadable { client: String, why: String },
    #[error("keyproxy: client '{client}' has used its {limit}; nothing was forwarded. It resets {}.", crate::text::resets(*.retry_after))]
    BudgetExhausted {
        client: String,
        limit: String,
        retry_after: u64,
    },
    #[error("keyproxy: client '{client}' is over its {limit}; retry in {retry_after} s.")]
    RateLimited {
        client: String,
        limit: String,
        retry_after: u64,
    },
    #[error("keyproxy: this route's upstream offers no WebSocket API, so the upgrade is refused; use HTTPS, or set websocket = true on the route in keyproxy.toml.")]
    UpgradeUnsupported,
    #[error("keyproxy: client '{client}' has a model list, budget or token limit, which keyproxy checks per request and cannot check inside a WebSocket; the agent should use HTTPS (it does after this answer).")]
    UpgradeLimited { client: String },
    #[error("keyproxy: client '{client}' has a budget or token limit kept in the shared store {store}, which does not answer; nothing was forwarded. Retry shortly.")]
    LimitsUnavailable { client: String, store: String },
    #[error("keyproxy: every key of profile '{profile}' rests after the upstream refused it ({why}); retry in {wakes_in_s} s or add another key.")]
    KeysResting {
        profile: String,
        why: String,
        wakes_in_s: u64,
    },
}

/// Which deadline an upstream missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// The TCP connect (`connect_timeout`).
    Connect,
    /// From sending the request to the response head: DNS, connect, TLS and the upstream's
    /// answer (`response_timeout`).
    ResponseHead,
    /// `response_timeout` passed while connecting: DNS, TCP, TLS, or the server's HTTP/2
    /// SETTINGS that never came.
    Connecting,
    /// `response_timeout` passed while the request waited for the server to allow another
    /// stream on its HTTP/2 connection.
    StreamSlot,
    /// `response_timeout` passed while an HTTP/1.1 upstream took none of the request body (it
    /// stopped reading).
    SendingBody,
    /// `response_timeout` passed while an HTTP/2 stream held part of the body: waiting for the
    /// server to open the stream or to open its flow-control window.
    StreamBody,
    /// `response_timeout` passed on an HTTP/2 stream whose body was handed over whole: waiting
    /// for a stream slot, the flow-control window or the response head.
    OnStream,
}

impl TimeoutPhase {
    fn what(self) -> &'static str {
        match self {
            Self::Connect => "did not accept a connection",
            Self::ResponseHead | Self::OnStream => "sent no response head",
            Self::Connecting => "did not finish connecting",
            Self::StreamSlot => "gave the request no stream",
            Self::SendingBody | Self::StreamBody => "took none of the request body",
        }
    }

    fn todo(self) -> &'static str {
        match self {
            Self::Connect => "check the network, or raise connect_timeout",
            Self::ResponseHead
            | Self::Connecting
            | Self::StreamSlot
            | Self::SendingBody
            | Self::StreamBody
            | Self::OnStream => "check the upstream, or raise response_timeout",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "TCP connect",
            Self::ResponseHead => "DNS, connect, TLS or the wait for the status line",
            Self::Connecting => "connect (DNS, TCP, TLS, the server's HTTP/2 SETTINGS)",
            Self::StreamSlot => "waiting for a stream slot",
            Self::SendingBody => "sending the body",
            Self::StreamBody => "sending the body (waiting for a stream slot or a flow-control window)",
            Self::OnStream => {
                "HTTP/2 stream (waiting for a stream slot, a flow-control window or the response head)"
            }
        }
    }
}

/// The shape of an error body: OpenAI's, which most agents display, or Anthropic's, which Claude
/// Code and the Anthropic SDKs display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    #[default]
    OpenAi,
    Anthropic,
}

/// Paths and targets come from the client; a long one must not push the advice out of sight.
fn shorten(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
        None => text.into(),
    }
}

impl LocalError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey { .. }
            | Self::MissingToken
            | Self::InvalidToken
            | Self::AdminTokenNeeded { .. } => StatusCode::UNAUTHORIZED,
            Self::AdminOnly { .. }
            | Self::ForbiddenProfile { .. }
            | Self::ProfileNotOnRoute { .. }
            | Self::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::ModelUnreadable { .. } | Self::RequestUnreadable { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::KeysResting { .. } | Self::BudgetExhausted { .. } | Self::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::NoRoute { .. } | Self::UnknownAdminPath { .. } | Self::NotAClient { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::LimitsUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ForeignTarget { .. } => StatusCode::BAD_REQUEST,
            Self::Connect | Self::Trace => StatusCode::METHOD_NOT_ALLOWED,
            Self::MalformedBody => StatusCode::BAD_REQUEST,
            Self::UpgradeUnsupported | Self::UpgradeLimited { .. } => StatusCode::UPGRADE_REQUIRED,
            Self::BodyStalled { .. } | Self::BodyTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The value of `x-keyproxy-error`, also the `reason` label in logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingKey { .. } => "missing-key",
            Self::NoRoute { .. } => "no-route",
            Self::UpstreamUnreachable { .. } => "upstream-unreachable",
            Self::UpstreamTimeout { .. } => "upstream-timeout",
            Self::ForeignTarget { .. } => "foreign-target",
            Self::Connect => "connect-refused",
            Self::Trace => "trace-refused",
            Self::MalformedBody => "malformed-body",
            Self::BodyStalled { .. } | Self::BodyTooSlow { .. } => "body-timeout",
            Self::UnknownAdminPath { .. } => "unknown-admin-path",
            Self::MissingToken => "missing-token",
            Self::InvalidToken => "invalid-token",
            Self::AdminTokenNeeded {
                presented: false, ..
            } => "missing-token",
            Self::AdminTokenNeeded {
                presented: true, ..
            } => "invalid-token",
            Self::AdminOnly { .. } => "admin-only",
            Self::NotAClient { .. } => "not-a-client",
            Self::ForbiddenProfile { .. } => "forbidden-profile",
            Self::ProfileNotOnRoute { .. } => "profile-not-on-route",
            Self::KeysResting { .. } => "keys-resting",
            Self::BudgetExhausted { .. } => "budget-exhausted",
            Self::RateLimited { .. } => "rate-limited",
            Self::LimitsUnavailable { .. } => "limits-unavailable",
            Self::ModelNotAllowed { .. } => "model-not-allowed",
            Self::ModelUnreadable { .. } => "model-unreadable",
            Self::RequestUnreadable { .. } => "request-unreadable",
            Self::UpgradeUnsupported | Self::UpgradeLimited { .. } => "upgrade-unsupported",
        }
    }

    fn kind(&self, shape: ErrorShape) -> &'static str {
        match self {
            Self::MissingKey { .. }
            | Self::MissingToken
            | Self::InvalidToken
            | Self::AdminTokenNeeded { .. } => "authentication_error",
            Self::AdminOnly { .. }
            | Self::ForbiddenProfile { .. }
            | Self::ProfileNotOnRoute { .. }
            | Self::ModelNotAllowed { .. } => "permission_error",
            Self::KeysResting { .. } | Self::BudgetExhausted { .. } | Self::RateLimited { .. } => {
                "rate_limit_error"
            }
            Self::NoRoute { .. } | Self::UnknownAdminPath { .. } | Self::NotAClient { .. } => {
                "not_found_error"
            }
            // Anthropic's own types for these, so its SDKs classify them.
            Self::UpstreamUnreachable { .. } if shape == ErrorShape::Anthropic => "api_error",
            Self::UpstreamTimeout { .. } if shape == ErrorShape::Anthropic => "timeout_error",
            Self::UpstreamUnreachable { .. } => "upstream_error",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::LimitsUnavailable { .. } => "api_error",
            Self::ForeignTarget { .. }
            | Self::Connect
            | Self::Trace
            | Self::MalformedBody
            | Self::ModelUnreadable { .. }
            | Self::RequestUnreadable { .. }
            | Self::UpgradeUnsupported
            | Self::UpgradeLimited { .. }
            | Self::BodyStalled { .. }
            | Self::BodyTooSlow { .. } => "invalid_request_error",
        }
    }

    /// Answers no retry can change: the agent should show them at once. The Anthropic and OpenAI
    /// SDKs (so Claude Code and Codex) honour `x-should-retry: false`; without it Claude Code
    /// retried a missing key's 401 for about three minutes before showing it.
    fn is_final(&self) -> bool {
        matches!(
            self,
            Self::MissingKey { .. }
                | Self::MissingToken
                | Self::InvalidToken
                | Self::ForbiddenProfile { .. }
                | Self::ProfileNotOnRoute { .. }
                | Self::ModelNotAllowed { .. }
                | Self::ModelUnreadable { .. }
                | Self::BudgetExhausted { .. }
                | Self::RequestUnreadable { .. }
                | Self::UpgradeUnsupported
                | Self::UpgradeLimited { .. }
        )
    }

    fn profile(&self) -> Option<&str> {
        match self {
            Self::MissingKey { profile, .. }
            | Self::ForbiddenProfile { profile, .. }
            | Self::ProfileNotOnRoute { profile, .. }
            | Self::KeysResting { profile, .. } => Some(profile),
            _ => None,
        }
    }

    /// The error object: message and type, plus the profile and the places looked for tools.
    fn body(&self, shape: ErrorShape) -> serde_json::Value {
        let status = self.status();
        let mut error = json!({
            "message": self.to_string(),
            "type": self.kind(shape),
        });
        if shape == ErrorShape::OpenAi {
            error["code"] = json!(status.as_u16());
        }
        if let Some(profile) = self.profile() {
            error["profile"] = json!(profile);
        }
        if let Self::MissingKey { looked, .. } = self {
            error["looked"] = json!(looked);
        }
        match shape {
            ErrorShape::OpenAi => json!({ "error": error }),
            ErrorShape::Anthropic => json!({ "type": "error", "error": error }),
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        self.into_response_shaped(ErrorShape::OpenAi)
    }

    pub fn into_response_shaped(self, shape: ErrorShape) -> Response<ResponseBody> {
        let status = self.status();
        let mut resp = json_response(status, &self.body(shape));
        let headers = resp.headers_mut();
        headers.insert("x-keyproxy-error", HeaderValue::from_static(self.reason()));
        if let Some(profile) = self.profile().and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert("x-keyproxy-profile", profile);
        }
        if self.is_final() {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Self::KeysResting { wakes_in_s: s, .. }
        | Self::BudgetExhausted { retry_after: s, .. }
        | Self::RateLimited { retry_after: s, .. } = &self
        {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(*s));
        }
        if matches!(self, Self::Connect | Self::Trace) {
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        resp
    }
}

/// A JSON reply built by keyproxy itself.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
