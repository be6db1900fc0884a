//! The config file: serde types, defaults, discovery, and validation into types the request path
//! can use without checking anything again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use toml::Spanned;

use crate::clients::{Clients, RawClient};
use crate::error::ConfigError;
use crate::providers::Provider;
use crate::text::{redact_quoted, LineIndex};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_PROFILE: &str = "openrouter:default";
pub const DEFAULT_UPSTREAM: &str = "https://openrouter.ai";
pub const OPENROUTER_ENV: &str = "OPENROUTER_API_KEY";
pub const CONFIG_ENV: &str = "KEYPROXY_CONFIG";
/// More threads than this would only cost memory: each holds a runtime and connection pools.
const MAX_WORKERS: usize = 256;

/// A validated configuration. Everything the request path reads is already parsed here.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from; `None` for the embedded default.
    pub path: Option<PathBuf>,
    pub listen: SocketAddr,
    pub keys_files: Vec<PathBuf>,
    /// dotenv files whose variables count as environment for `OPENROUTER_API_KEY` and `key_env`.
    pub env_files: Vec<PathBuf>,
    /// OpenClaw state folders (`~/.openclaw`) whose SQLite key store is read, never written.
    pub openclaw_state_dirs: Vec<PathBuf>,
    /// Legacy OpenClaw auth stores (`auth-profiles.json`) whose key profiles are served as they
    /// are named.
    pub openclaw_auth_profiles: Vec<PathBuf>,
    pub allow_unauthenticated: bool,
    pub shutdown_grace: Duration,
    pub connect_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// From sending a request to the upstream's response head, DNS and TLS included.
    pub response_timeout: Duration,
    pub poll_interval: Duration,
    /// Requests with bodies up to this many bytes are kept so they can be retried on another key.
    pub retry_body_limit: u64,
    /// Threads serving connections, each with its own runtime and upstream connection pool.
    /// Read at start; a change needs a restart.
    pub workers: usize,
    pub routes: Vec<RouteConfig>,
    pub clients: Clients,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub prefix: String,
    pub upstream: Upstream,
    pub profile: String,
    /// Other profiles this route may inject; empty: those of `profile`'s provider.
    pub profiles: Vec<String>,
    pub header: HeaderName,
    pub format: KeyFormat,
    pub strip_prefix: bool,
    pub ca_file: Option<PathBuf>,
    pub provider: Option<Provider>,
    /// Set on every forwarded request, replacing the client's value.
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
    /// Set when the client did not send them (the provider's required headers).
    pub default_headers: Vec<(HeaderName, HeaderValue)>,
}

impl RouteConfig {
    /// May this route inject `profile`? Its own, the ones it lists, or, when it lists none,
    /// every profile of its own profile's provider. Anything else would let an agent steer a
    /// key to an upstream it was not configured for.
    pub fn allows(&self, profile: &str) -> bool {
        route_allows(&self.profile, &self.profiles, profile)
    }

    /// The profiles it may inject, as `check` lists them.
    pub fn allowed_label(&self) -> String {
        if self.profiles.is_empty() {
            format!(
                "'{}' and every '{}:*'",
                self.profile,
                crate::clients::provider_of(&self.profile)
            )
        } else {
            let mut all = vec![format!("'{}'", self.profile)];
            all.extend(self.profiles.iter().map(|p| format!("'{p}'")));
            all.join(", ")
        }
    }
}

impl Config {
    /// Would serving this config on `addr` let anyone who can reach it spend the keys? A
    /// non-loopback address needs client tokens, or an explicit `allow_unauthenticated`.
    pub fn exposes(&self, addr: SocketAddr) -> bool {
        !addr.ip().is_loopback() && self.clients.is_empty() && !self.allow_unauthenticated
    }
}

/// [`RouteConfig::allows`], for the built route too.
pub fn route_allows(own: &str, listed: &[String], profile: &str) -> bool {
    use crate::clients::provider_of;
    profile == own
        || if listed.is_empty() {
            provider_of(profile) == provider_of(own)
        } else {
            listed.iter().any(|p| p == profile)
        }
}

/// Where a route forwards to: scheme and authority, plus a base path that is put in front of the
/// forwarded path (`https://host/v1` + `/chat` = `https://host/v1/chat`).
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Without a trailing slash; empty for the root.
    pub base_path: String,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// How a key becomes a header value: the text around the single `{key}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyFormat {
    pub before: String,
    pub after: String,
}

impl KeyFormat {
    pub const BEARER: &'static str = "Bearer {key}";

    pub fn parse(template: &str) -> Result<Self, String> {
        let Some((before, after)) = template.split_once("{key}") else {
            return Err(format!("format {template:?} has no {{key}} placeholder"));
        };
        if after.contains("{key}") {
            return Err(format!("format {template:?} has more than one {{key}}"));
        }
        if http::HeaderValue::from_str(&format!("{before}x{after}")).is_err() {
            return Err(format!(
                "format {template:?} has characters not allowed in a header value"
            ));
        }
        Ok(Self {
            before: before.to_owned(),
            after: after.to_owned(),
        })
    }

    pub fn render(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.before.len() + key.len() + self.after.len());
        out.push_str(&self.before);
        out.push_str(key);
        out.push_str(&self.after);
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
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
    workers: Option<Spanned<usize>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    clients: Vec<Spanned<RawClient>>,
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
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(|_| {
        D::Error::custom(format!(
            "listen {s:?} is not an address like \"127.0.0.1:8787\""
        ))
    })
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

/// Where the config came from, for `check`, `status` and the log line at start.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    File(PathBuf),
    Embedded { looked: Vec<PathBuf> },
}

/// Finds the config file: `--config` / `KEYPROXY_CONFIG` (passed in as `explicit`), then
/// `./keyproxy.toml`, then `$XDG_CONFIG_HOME/keyproxy/keyproxy.toml`.
pub fn discover(explicit: Option<&Path>) -> Origin {
    if let Some(path) = explicit {
        return Origin::File(path.to_path_buf());
    }
    let mut looked = vec![PathBuf::from("keyproxy.toml")];
    if let Some(dir) = config_home() {
        looked.push(dir.join("keyproxy").join("keyproxy.toml"));
    }
    match looked.iter().find(|p| p.is_file()) {
        Some(found) => Origin::File(found.clone()),
        None => Origin::Embedded { looked },
    }
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn config_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".config")),
    }
}

pub fn default_keys_file() -> Option<PathBuf> {
    config_home().map(|dir| dir.join("keyproxy").join("keys.toml"))
}

pub fn load(origin: &Origin) -> Result<Config, ConfigError> {
    match origin {
        Origin::File(path) => load_file(path),
        Origin::Embedded { .. } => Ok(Config::embedded()),
    }
}

pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses config text; `path` names the file in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: e.span().map(|s| LineIndex::new(text).line_of(s.start)),
        message: redact_quoted(e.message()),
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    Config::from_raw(raw, Some(path.to_path_buf()), dir, text)
}

impl Config {
    /// The no-config default: loopback, one route to OpenRouter, `openrouter:default`.
    pub fn embedded() -> Self {
        let upstream = parse_upstream(DEFAULT_UPSTREAM).unwrap_or_else(|_| unreachable!());
        Self {
            path: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            keys_files: default_keys_file().into_iter().collect(),
            env_files: Vec::new(),
            openclaw_state_dirs: Vec::new(),
            openclaw_auth_profiles: Vec::new(),
            allow_unauthenticated: false,
            shutdown_grace: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            response_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(2),
            retry_body_limit: 1024 * 1024,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            clients: Clients::default(),
            routes: vec![RouteConfig {
                prefix: "/".into(),
                upstream,
                profile: DEFAULT_PROFILE.into(),
                profiles: Vec::new(),
                header: http::header::AUTHORIZATION,
                format: KeyFormat::parse(KeyFormat::BEARER).unwrap_or_else(|_| unreachable!()),
                strip_prefix: false,
                ca_file: None,
                provider: None,
                add_headers: Vec::new(),
                default_headers: Vec::new(),
            }],
        }
    }

    fn from_raw(
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
        Ok(Self {
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
            workers,
            routes,
            clients,
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
    })
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

/// Paths in a config file are relative to the file's folder; `~/` means the home folder.
pub fn resolve(dir: &Path, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    dir.join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("conf/keyproxy.toml"))
    }

    #[test]
    fn unknown_field_names_the_field_and_line() {
        let err =
            parse_str("listen = \"127.0.0.1:1\"\n\n[[routes]]\nprefix = \"/\"\nupstrem = \"x\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("conf/keyproxy.toml:5:"), "{err}");
        assert!(err.contains("unknown field `upstrem`"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = parse_str(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9/v1/\"\nprofile = \"p\"\nca_file = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.keys_files, vec![PathBuf::from("conf/keys.toml")]);
        assert_eq!(c.routes[0].ca_file, Some(PathBuf::from("conf/ca.pem")));
        assert_eq!(c.routes[0].upstream.base_path, "/v1");
        assert_eq!(c.routes[0].header, http::header::AUTHORIZATION);
        assert_eq!(c.routes[0].format.render("k"), "Bearer k");
    }

    #[test]
    fn bad_values_name_the_line() {
        let err =
            parse_str("[[routes]]\nprefix = \"/\"\nupstream = \"ftp://x\"\nprofile = \"p\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("conf/keyproxy.toml:3:"), "{err}");
        assert!(err.contains("http:// or https://"), "{err}");
        let err = parse_str("connect_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1:"), "{err}");
        let err = parse_str("[[routes]]\nprefix = \"/\"\nupstream = \"http://a\"\nprofile = \"p\"\nformat = \"Bearer\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("{key}"), "{err}");
    }

    #[test]
    fn a_config_without_routes_keeps_the_embedded_route() {
        let c = parse_str("openclaw_state_dirs = [\"~/.openclaw\"]\n").unwrap();
        assert_eq!(c.routes, Config::embedded().routes);
        assert_eq!(c.routes[0].profile, DEFAULT_PROFILE);
    }

    #[test]
    fn durations_are_positive_and_bounded_so_nothing_can_overflow() {
        for bad in [
            "poll_interval = \"0s\"",
            "idle_timeout = \"0ms\"",
            "header_read_timeout = \"500000000000y\"",
            "idle_timeout = \"31days\"",
        ] {
            let err = parse_str(&format!("{bad}\n")).unwrap_err().to_string();
            assert!(err.starts_with("conf/keyproxy.toml:1:"), "{bad}: {err}");
        }
        assert_eq!(
            parse_str("shutdown_grace = \"0s\"\n")
                .unwrap()
                .shutdown_grace,
            Duration::ZERO
        );
        let c = parse_str("idle_timeout = \"2s\"\n").unwrap();
        assert_eq!(
            c.response_timeout,
            Duration::from_secs(2),
            "defaults to idle_timeout"
        );
        let c = parse_str("idle_timeout = \"2s\"\nresponse_timeout = \"9s\"\n").unwrap();
        assert_eq!(c.response_timeout, Duration::from_secs(9));
    }

    #[test]
    fn workers_default_to_one_per_cpu_and_must_be_positive() {
        let route = "[[routes]]\nprefix = \"/\"\nupstream = \"http://a\"\nprofile = \"p\"\n";
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(parse_str(route).unwrap().workers, cpus);
        assert_eq!(
            parse_str(&format!("workers = 3\n{route}")).unwrap().workers,
            3
        );
        let err = parse_str(&format!("\nworkers = 0\n{route}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("conf/keyproxy.toml:2:"), "{err}");
        assert!(err.contains("workers = 0: must be 1 to 256"), "{err}");
    }

    #[test]
    fn format_renders_around_the_placeholder() {
        let f = KeyFormat::parse("Token {key}; v=1").unwrap();
        assert_eq!(f.render("abc"), "Token abc; v=1");
        assert!(KeyFormat::parse("{key}{key}").is_err());
    }
}
