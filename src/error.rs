//! Typed errors, and `LocalError`: every reply keyproxy makes itself, in the OpenAI error shape
//! that agents display.

use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::json;

use crate::body::ResponseBody;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {message}", path.display(), line.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Validation { path: PathBuf, message: String },
}

/// A request keyproxy answers itself instead of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("keyproxy: no key for profile '{profile}' ({looked}). Add a key; it is picked up without a restart.")]
    MissingKey { profile: String, looked: String },
    #[error(
        "keyproxy: no route for path '{path}'; routes are configured by prefix in keyproxy.toml"
    )]
    NoRoute { path: String },
    #[error("keyproxy: upstream {upstream} could not be reached: {cause}")]
    UpstreamUnreachable { upstream: String, cause: String },
    #[error("keyproxy: upstream {upstream} did not accept a connection within {after}")]
    UpstreamTimeout { upstream: String, after: String },
    #[error("keyproxy: refusing to forward to '{target}': keyproxy forwards only to its configured upstreams and is not an open proxy")]
    ForeignTarget { target: String },
    #[error("keyproxy: CONNECT is not supported; keyproxy forwards only to its configured upstreams and is not an open proxy")]
    Connect,
    #[error(
        "keyproxy: unknown admin path '{path}'; try /_keyproxy/health, ready, status or metrics"
    )]
    UnknownAdminPath { path: String },
    #[error("keyproxy: this keyproxy serves only its configured clients; send your client token as the API key (Authorization: Bearer <token>)")]
    MissingToken,
    #[error("keyproxy: the client token matches no configured client; check the API key the agent sends")]
    InvalidToken,
    #[error(
        "keyproxy: client '{client}' may not use profile '{profile}'; its profiles are {allowed}"
    )]
    ForbiddenProfile {
        client: String,
        profile: String,
        allowed: String,
    },
    #[error("keyproxy: every key of profile '{profile}' is resting after the upstream refused it ({why}); the next is usable in {wakes_in_s} s")]
    KeysResting {
        profile: String,
        why: String,
        wakes_in_s: u64,
    },
    #[error("keyproxy: every key of profile '{profile}' was rejected by the upstream as invalid (401/403); the next is tried again in {wakes_in_s} s. Replace the key; it is picked up without a restart.")]
    KeysRejected { profile: String, wakes_in_s: u64 },
}

impl LocalError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey { .. }
            | Self::MissingToken
            | Self::InvalidToken
            | Self::KeysRejected { .. } => StatusCode::UNAUTHORIZED,
            Self::ForbiddenProfile { .. } => StatusCode::FORBIDDEN,
            Self::KeysResting { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NoRoute { .. } | Self::UnknownAdminPath { .. } => StatusCode::NOT_FOUND,
            Self::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ForeignTarget { .. } => StatusCode::BAD_REQUEST,
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
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
            Self::UnknownAdminPath { .. } => "unknown-admin-path",
            Self::MissingToken => "missing-token",
            Self::InvalidToken => "invalid-token",
            Self::ForbiddenProfile { .. } => "forbidden-profile",
            Self::KeysResting { .. } => "keys-resting",
            Self::KeysRejected { .. } => "keys-rejected",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::MissingKey { .. }
            | Self::MissingToken
            | Self::InvalidToken
            | Self::KeysRejected { .. } => "authentication_error",
            Self::ForbiddenProfile { .. } => "permission_error",
            Self::KeysResting { .. } => "rate_limit_error",
            Self::NoRoute { .. } | Self::UnknownAdminPath { .. } => "not_found_error",
            Self::UpstreamUnreachable { .. } => "upstream_error",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::ForeignTarget { .. } | Self::Connect => "invalid_request_error",
        }
    }

    fn profile(&self) -> Option<&str> {
        match self {
            Self::MissingKey { profile, .. }
            | Self::ForbiddenProfile { profile, .. }
            | Self::KeysResting { profile, .. }
            | Self::KeysRejected { profile, .. } => Some(profile),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let mut error = json!({
            "message": self.to_string(),
            "type": self.kind(),
            "code": status.as_u16(),
        });
        if let Some(profile) = self.profile() {
            error["profile"] = json!(profile);
        }
        let mut resp = json_response(status, &json!({ "error": error }));
        let headers = resp.headers_mut();
        headers.insert("x-keyproxy-error", HeaderValue::from_static(self.reason()));
        if let Some(profile) = self.profile().and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert("x-keyproxy-profile", profile);
        }
        if let Self::KeysResting { wakes_in_s, .. } | Self::KeysRejected { wakes_in_s, .. } = &self
        {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(*wakes_in_s));
        }
        if matches!(self, Self::Connect) {
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
mod tests {
    use super::*;

    #[test]
    fn missing_key_message_matches_the_contract() {
        let e = LocalError::MissingKey {
            profile: "openrouter:default".into(),
            looked: "keys file config/keys.toml: no such profile; env OPENROUTER_API_KEY: not set"
                .into(),
        };
        assert_eq!(
            e.to_string(),
            "keyproxy: no key for profile 'openrouter:default' (keys file config/keys.toml: no such profile; env OPENROUTER_API_KEY: not set). Add a key; it is picked up without a restart."
        );
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["x-keyproxy-error"], "missing-key");
        assert_eq!(resp.headers()["x-keyproxy-profile"], "openrouter:default");
    }
}
