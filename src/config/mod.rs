//! The config: the validated types the request path uses without checking anything again,
//! defaults, discovery of the file, and its errors. The file as written is in `raw`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};

pub mod admin_token;
pub mod clients;
pub mod listen;
mod parse;
pub use parse::parse;
pub mod providers;
mod rate;
mod raw;
pub mod shared;

use clients::Clients;
use providers::Provider;
pub use rate::{parse_rate, rate_label};
pub use raw::parse_upstream;

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
    /// Bytes a second a request body must average, once `header_read_timeout` has been spent
    /// waiting on the client; 0: no minimum.
    pub min_upload_rate: u64,
    /// Open connections one client address may hold; `None`: 256 for other hosts, no cap for
    /// loopback (agents on this machine share 127.0.0.1).
    pub max_connections_per_ip: Option<u32>,
    /// Trust the system's CA certificates beside the bundled web PKI roots.
    pub system_roots: bool,
    /// Count what answers used (`usage`); off, answers are not read at all.
    pub usage: bool,
    /// Where usage is kept (`usage.sqlite3`); None when neither `state_dir`, `XDG_STATE_HOME`
    /// nor `HOME` says where, and usage is counted in memory only.
    pub state_dir: Option<PathBuf>,
    /// Threads serving connections, each with its own runtime and upstream connection pool.
    /// Read at start; a change needs a restart.
    pub workers: usize,
    pub routes: Vec<RouteConfig>,
    pub clients: Clients,
    /// `[shared]`: the Redis several replicas share windows, key health and usage through.
    /// Read at start; a change needs a restart.
    pub shared: Option<shared::SharedConfig>,
    /// `admin_token` / `admin_token_sha256`: see `has_admin`.
    pub admin_token: Option<admin_token::AdminToken>,
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
    /// Pass `Upgrade: websocket` through to the upstream; off, it is answered 426.
    pub websocket: bool,
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
                clients::provider_of(&self.profile)
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
    use clients::provider_of;
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

/// Connections a non-loopback address may hold open when the config sets no cap.
pub const CONNECTIONS_PER_IP: u32 = 256;

impl Config {
    /// The cap on open connections from `ip`, if any.
    pub fn connection_cap(&self, ip: std::net::IpAddr) -> Option<u32> {
        match self.max_connections_per_ip {
            Some(cap) => Some(cap),
            None if ip.is_loopback() => None,
            None => Some(CONNECTIONS_PER_IP),
        }
    }

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
            min_upload_rate: 1024,
            max_connections_per_ip: None,
            system_roots: true,
            usage: true,
            state_dir: Some(expand_vars("$XDG_STATE_HOME/keyproxy"))
                .filter(|d| !d.starts_with('$'))
                .map(PathBuf::from),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            clients: Clients::default(),
            shared: None,
            admin_token: None,
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
                websocket: false,
            }],
        }
    }
}

/// Paths in a config file are relative to the file's folder; `~/` means the home folder.
pub fn resolve(dir: &Path, path: &str) -> PathBuf {
    let expanded = expand_vars(path);
    let path = expanded.as_str();
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    dir.join(path)
}

/// `$VAR` and `${VAR}` as a shell would expand them, so the documented
/// `$XDG_CONFIG_HOME/keyproxy/keys.toml` can be copied. `XDG_CONFIG_HOME` and `XDG_STATE_HOME`
/// fall back to their XDG defaults under `$HOME`; any other unset variable is left as written,
/// so that the "not found" naming the path shows which one.
pub fn expand_vars(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match (!name.is_empty())
            .then(|| var_or_xdg_default(name))
            .flatten()
        {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[at..at + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

fn var_or_xdg_default(name: &str) -> Option<String> {
    if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
        return Some(v);
    }
    let home = std::env::var("HOME").ok().filter(|h| !h.is_empty())?;
    match name {
        "XDG_CONFIG_HOME" => Some(format!("{home}/.config")),
        "XDG_STATE_HOME" => Some(format!("{home}/.local/state")),
        "HOME" => Some(home),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
