//! The config file as written: serde types with their field checks, and their validation into
//! a [`Config`], presets applied. Every error names the file and line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Scheme, Uri};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::admin_token::AdminToken;
use super::clients::{Clients, RawClient};
use super::providers::Provider;
use super::*;
use crate::text::LineIndex;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default, deserialize_with = "socket_addr")]
    listen: Option<SocketAddr>,
    keys_files: Option<Vec<String>>,
    #[serde(default)]
    env_files: Vec<String>,
    #[serde(default)]
    openclaw_state_dirs: Vec<String>,
    #[serde(default)]
    openclaw_auth_profiles: Vec<String>,
    #[serde(default)]
    allow_unauthenticated: bool,
    #[serde(default, deserialize_with = "duration_or_zero")]
    shutdown_grace: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    header_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    response_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    poll_interval: Option<Duration>,
    retry_body_limit: Option<u64>,
    #[serde(default, deserialize_with = "rate")]
    min_upload_rate: Option<u64>,
    max_connections_per_ip: Option<u32>,
    system_roots: Option<bool>,
    state_dir: Option<String>,
    usage: Option<bool>,
    shared: Option<Spanned<super::shared::RawShared>>,
    workers: Option<Spanned<usize>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    clients: Vec<Spanned<RawClient>>,
    admin_token: Option<Spanned<String>>,
    admin_token_sha256: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(deserialize_with = "prefix")]
    prefix: String,
    #[serde(default, deserialize_with = "upstream")]
    upstream: Option<Upstream>,
    profile: Option<String>,
    #[serde(default)]
    profiles: Vec<String>,
    provider: Option<Provider>,
    #[serde(default)]
    add_headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "header_name")]
    header: Option<HeaderName>,
    #[serde(default, deserialize_with = "key_format")]
    format: Option<KeyFormat>,
    #[serde(default)]
    strip_prefix: bool,
    ca_file: Option<String>,
    websocket: Option<bool>,
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    super::listen::listen_address(&s)
        .map(Some)
        .map_err(D::Error::custom)
}

/// No timeout or interval keyproxy uses is longer than this; a larger one would overflow the
/// clock arithmetic of the request path (`Instant + Duration`) or mean "never" by accident.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A duration that must be more than zero: a zero timeout or poll interval makes no sense.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = duration_or_zero(d)?;
    if value == Some(Duration::ZERO) {
        return Err(D::Error::custom("must be more than zero"));
    }
    Ok(value)
}

fn duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    let value = humantime::parse_duration(&s).map_err(|e| {
        D::Error::custom(format!(
            "{s:?} is not a duration like \"250ms\", \"10s\" or \"5m\": {e}"
        ))
    })?;
    if value > MAX_DURATION {
        return Err(D::Error::custom(format!(
            "{s:?} is longer than the most keyproxy accepts, 30 days"
        )));
    }
    Ok(Some(value))
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_rate(&s).map(Some).map_err(D::Error::custom)
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !s.starts_with('/') {
        return Err(D::Error::custom(format!(
            "prefix {s:?} must start with '/'"
        )));
    }
    if s.starts_with("/_keyproxy") {
        return Err(D::Error::custom("prefix /_keyproxy is keyproxy's own"));
    }
    Ok(s)
}

fn upstream<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Upstream>, D::Error> {
    let s = String::deserialize(d)?;
    parse_upstream(&s).map(Some).map_err(D::Error::custom)
}

pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("upstream {s:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => {
            return Err(format!(
                "upstream {s:?} must start with http:// or https://"
            ))
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("upstream {s:?} has no host"))?;
    if uri.query().is_some() {
        return Err(format!("upstream {s:?} must not have a query"));
    }
    Ok(Upstream {
        scheme,
        authority,
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

fn header_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderName>, D::Error> {
    let s = String::deserialize(d)?;
    HeaderName::from_bytes(s.as_bytes())
        .map(Some)
        .map_err(|_| D::Error::custom(format!("header {s:?} is not a valid header name")))
}

fn key_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyFormat>, D::Error> {
    let s = String::deserialize(d)?;
    KeyFormat::parse(&s).map(Some).map_err(D::Error::custom)
}

impl Config {
    pub(super) fn from_raw(
        raw: RawConfig,
        path: Option<PathBuf>,
        dir: &Path,
        text: &str,
    ) -> Result<Self, ConfigError> {
        let base = Self::embedded();
        let name = path.clone().unwrap_or_default();
        let at = |span: std::ops::Range<usize>, message: String| ConfigError::Invalid {
            path: name.clone(),
            line: Some(LineIndex::new(text).line_of(span.start)),
            message,
        };
        let keys_files = match raw.keys_files {
            Some(files) => files.iter().map(|f| resolve(dir, f)).collect(),
            None => base.keys_files,
        };
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
        for r in raw.routes {
            let span = r.span();
            let r = r.into_inner();
            if routes.iter().any(|x| x.prefix == r.prefix) {
                return Err(at(span, format!("two routes have prefix {:?}", r.prefix)));
            }
            let route = route_from_raw(r, dir).map_err(|m| at(span, m))?;
            routes.push(route);
        }
        // A config that only names key sources keeps the embedded route to OpenRouter.
        if routes.is_empty() {
            routes = base.routes;
        }
        let workers = match raw.workers {
            None => base.workers,
            Some(w) if (1..=MAX_WORKERS).contains(w.get_ref()) => w.into_inner(),
            Some(w) => {
                let message = format!(
                    "workers = {}: must be 1 to {MAX_WORKERS}; leave it out for one per CPU",
                    w.get_ref()
                );
                return Err(at(w.span(), message));
            }
        };
        let spans: Vec<_> = raw.clients.iter().map(Spanned::span).collect();
        let clients = Clients::build(raw.clients.into_iter().map(Spanned::into_inner).collect())
            .map_err(|(i, m)| at(spans[i].clone(), m))?;
        let shared = match raw.shared {
            None => None,
            Some(s) => {
                let span = s.span();
                Some(super::shared::from_raw(s.into_inner(), dir).map_err(|m| at(span, m))?)
            }
        };
        let admin_span = raw
            .admin_token
            .as_ref()
            .or(raw.admin_token_sha256.as_ref())
            .map_or(0..0, Spanned::span);
        let admin_token = AdminToken::from_raw(
            raw.admin_token.map(Spanned::into_inner),
            raw.admin_token_sha256.map(Spanned::into_inner),
        )
        .map_err(|m| at(admin_span.clone(), m))?;
        if let Some(name) = admin_token
            .as_ref()
            .and_then(|a| a.client_with_it(&clients))
        {
            let message = format!("admin_token is also client '{name}''s token; give the admin a token of its own, or set admin = true on that client");
            return Err(at(admin_span, message));
        }
        Ok(Self {
            shared,
            path,
            listen: raw.listen.unwrap_or(base.listen),
            keys_files,
            env_files: raw.env_files.iter().map(|f| resolve(dir, f)).collect(),
            openclaw_state_dirs: raw
                .openclaw_state_dirs
                .iter()
                .map(|f| resolve(dir, f))
                .collect(),
            openclaw_auth_profiles: raw
                .openclaw_auth_profiles
                .iter()
                .map(|f| resolve(dir, f))
                .collect(),
            allow_unauthenticated: raw.allow_unauthenticated,
            shutdown_grace: raw.shutdown_grace.unwrap_or(base.shutdown_grace),
            connect_timeout: raw.connect_timeout.unwrap_or(base.connect_timeout),
            header_read_timeout: raw.header_read_timeout.unwrap_or(base.header_read_timeout),
            idle_timeout: raw.idle_timeout.unwrap_or(base.idle_timeout),
            response_timeout: raw
                .response_timeout
                .or(raw.idle_timeout)
                .unwrap_or(base.response_timeout),
            poll_interval: raw.poll_interval.unwrap_or(base.poll_interval),
            retry_body_limit: raw.retry_body_limit.unwrap_or(base.retry_body_limit),
            min_upload_rate: raw.min_upload_rate.unwrap_or(base.min_upload_rate),
            max_connections_per_ip: raw.max_connections_per_ip.or(base.max_connections_per_ip),
            system_roots: raw.system_roots.unwrap_or(base.system_roots),
            usage: raw.usage.unwrap_or(base.usage),
            state_dir: raw
                .state_dir
                .map_or(base.state_dir, |d| Some(resolve(dir, &d))),
            workers,
            routes,
            clients,
            admin_token,
        })
    }
}

/// A route with its provider preset applied; explicit fields win over the preset.
fn route_from_raw(r: RawRoute, dir: &Path) -> Result<RouteConfig, String> {
    let preset = r.provider;
    let upstream = match (r.upstream, preset.and_then(Provider::upstream)) {
        (Some(u), _) => u,
        (None, Some(u)) => parse_upstream(u)?,
        (None, None) => {
            return Err(match preset {
                Some(p) => format!(
                    "route {:?}: provider {:?} needs an upstream (your resource's URL)",
                    r.prefix,
                    p.name()
                ),
                None => format!("route {:?} has no upstream", r.prefix),
            })
        }
    };
    let profile = match (r.profile, preset) {
        (Some(p), _) => p,
        (None, Some(p)) => format!("{}:default", p.name()),
        (None, None) => return Err(format!("route {:?} has no profile", r.prefix)),
    };
    let header = match (r.header, preset) {
        (Some(h), _) => h,
        (None, Some(p)) => HeaderName::from_static(p.header()),
        (None, None) => http::header::AUTHORIZATION,
    };
    let format = match r.format {
        Some(f) => f,
        None => KeyFormat::parse(preset.map_or(KeyFormat::BEARER, Provider::format))?,
    };
    let mut add_headers = Vec::with_capacity(r.add_headers.len());
    for (k, v) in &r.add_headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("add_headers: {k:?} is not a valid header name"))?;
        if name == header || name.as_str().starts_with("x-keyproxy-") || is_managed(&name) {
            return Err(format!("add_headers: {k:?} is set by keyproxy itself"));
        }
        let value = HeaderValue::from_str(v)
            .map_err(|_| format!("add_headers: the value of {k:?} is not a valid header value"))?;
        add_headers.push((name, value));
    }
    let default_headers = preset
        .map(Provider::default_headers)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect();
    let upstream_host = upstream.authority.host().to_ascii_lowercase();
    let upstream_host = upstream_host.as_str();
    Ok(RouteConfig {
        prefix: r.prefix,
        upstream,
        profile,
        profiles: r.profiles,
        header,
        format,
        strip_prefix: r.strip_prefix,
        ca_file: r.ca_file.map(|f| resolve(dir, &f)),
        provider: preset,
        add_headers,
        default_headers,
        websocket: r.websocket.unwrap_or(match preset {
            Some(p) => p.websocket(),
            None => offers_websocket(upstream_host),
        }),
    })
}

/// A route with no preset to an upstream known for its WebSocket endpoints (xAI has no preset).
fn offers_websocket(host: &str) -> bool {
    [
        "api.openai.com",
        "api.x.ai",
        "generativelanguage.googleapis.com",
    ]
    .contains(&host)
        || host.ends_with(".openai.azure.com")
}

/// Headers keyproxy sets or removes on every request, which `add_headers` may not touch.
fn is_managed(name: &HeaderName) -> bool {
    use http::header::*;
    [
        HOST,
        CONNECTION,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHORIZATION,
        CONTENT_LENGTH,
    ]
    .contains(name)
}
