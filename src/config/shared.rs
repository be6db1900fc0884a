//! `[shared]`: the Redis (or Valkey) that several keyproxy replicas keep their clients' windows,
//! key health and usage totals in. The URL may hold a password, so it is kept apart from what
//! is printed: [`SharedConfig::store`] (host:port) is what status, check, logs and errors show.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{expand_vars, resolve};

/// What budgets and token limits do while the shared store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse with a local 503 `limits-unavailable`.
    #[default]
    Closed,
    /// Each replica enforces its share: the limit divided by the replicas seen in the last minute.
    Local,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShared {
    redis: String,
    prefix: Option<String>,
    timeout: Option<String>,
    ca_file: Option<String>,
    #[serde(default)]
    on_failure: OnFailure,
}

#[derive(Clone, PartialEq)]
pub struct SharedConfig {
    /// The URL with `$VAR` expanded; it may hold a password: never print it.
    url: String,
    /// `host:port` of the store, for every message.
    pub store: String,
    pub prefix: String,
    /// Every call to the store; past it a request is decided as `on_failure` says.
    pub timeout: Duration,
    pub on_failure: OnFailure,
    /// `rediss://` only: the CA (PEM) the store's certificate is checked against, instead of
    /// the roots built into keyproxy.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfig")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SharedConfig {
    /// The URL to connect with (password included): for the Redis client only.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `dir` is the config file's folder, which a relative `ca_file` is read from.
pub(super) fn from_raw(raw: RawShared, dir: &Path) -> Result<SharedConfig, String> {
    let url = expand_vars(&raw.redis);
    let store = store_of(&url).ok_or_else(|| {
        "[shared] redis must be a redis:// or rediss:// URL, like \"redis://127.0.0.1:6379/0\""
            .to_owned()
    })?;
    let timeout = match raw.timeout {
        None => Duration::from_millis(100),
        Some(t) => humantime::parse_duration(&t)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("[shared] timeout = {t:?}: write a duration like \"100ms\""))?,
    };
    let ca_file = raw.ca_file.map(|f| resolve(dir, &f));
    if ca_file.is_some() && !url.starts_with("rediss://") {
        return Err(
            "[shared] ca_file is for TLS: write the URL as rediss://, or drop ca_file".to_owned(),
        );
    }
    Ok(SharedConfig {
        url,
        store,
        prefix: raw.prefix.unwrap_or_else(|| "keyproxy:".to_owned()),
        timeout,
        on_failure: raw.on_failure,
        ca_file,
    })
}

/// `host:port` of a redis URL, without user or password; `None` when it is not one.
fn store_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "redis" && scheme != "rediss" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return None;
    }
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !host.ends_with(']');
    Some(if has_port {
        host.to_owned()
    } else {
        format!("{host}:6379")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_named_without_its_password() {
        assert_eq!(
            store_of("rediss://user:s3cret@cache.internal:6380/0").as_deref(),
            Some("cache.internal:6380")
        );
        assert_eq!(
            store_of("redis://10.0.0.5").as_deref(),
            Some("10.0.0.5:6379")
        );
        assert_eq!(store_of("http://x"), None);
        let raw = || RawShared {
            redis: "redis://:pw@h:1/0".into(),
            prefix: None,
            timeout: None,
            ca_file: None,
            on_failure: OnFailure::Closed,
        };
        let c = from_raw(raw(), Path::new("conf")).unwrap();
        assert!(!format!("{c:?}").contains("pw"));
        assert_eq!(c.timeout, Duration::from_millis(100));
        let plain_with_ca = RawShared {
            ca_file: Some("ca.pem".into()),
            ..raw()
        };
        let e = from_raw(plain_with_ca, Path::new("conf")).unwrap_err();
        assert!(e.contains("rediss://"), "{e}");
        let tls = RawShared {
            redis: "rediss://h:6380".into(),
            ca_file: Some("ca.pem".into()),
            ..raw()
        };
        let c = from_raw(tls, Path::new("conf")).unwrap();
        assert_eq!(c.ca_file, Some(PathBuf::from("conf/ca.pem")));
    }
}
