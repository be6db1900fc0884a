//! Routes: path prefixes mapped to an upstream, the header to inject and a default profile.

use std::collections::HashMap;
use std::path::PathBuf;

use http::header::{HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};

use super::error::ErrorShape;
use super::upstream::{self, Origin, UpstreamError, Upstreams};
use crate::config::providers::Provider;
use crate::config::{route_allows, Config, KeyFormat, Upstream};
use crate::keys::FormatId;
use crate::metrics::{Histogram, Metrics};

pub struct Route {
    /// Position in config order, for per-route tables such as the request counters.
    pub index: usize,
    pub prefix: String,
    /// `prefix`, shared with the access log of every response on this route.
    pub name: std::sync::Arc<str>,
    pub upstream: Upstream,
    /// `upstream` as text, made once for logs and errors.
    pub upstream_label: String,
    pub profile: String,
    /// Other profiles it may inject (see [`crate::config::RouteConfig::allows`]).
    pub profiles: Vec<String>,
    pub header: HeaderName,
    pub format: FormatId,
    pub strip_prefix: bool,
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
    pub default_headers: Vec<(HeaderName, HeaderValue)>,
    /// The upstream's connections, shared by routes with the same upstream and CA file.
    pub origin: std::sync::Arc<Origin>,
    pub latency: Histogram,
    /// The shape of keyproxy's own errors on this route, so the agent's SDK displays them.
    pub error_shape: ErrorShape,
    /// Who refuses keys on this route, as messages name it: the preset, else the profile's
    /// provider prefix, else the upstream's host.
    pub provider_name: String,
    /// Gemini takes a key as `?key=`, which a client's must not carry through.
    pub key_in_query: bool,
    /// An `Upgrade: websocket` is passed through (`proxy/websocket.rs`), else answered 426.
    pub websocket: bool,
}

impl Route {
    /// May this route inject `profile`?
    pub fn allows(&self, profile: &str) -> bool {
        route_allows(&self.profile, &self.profiles, profile)
    }

    /// Does `prefix` cover `path`? Whole segments only: `/anthropic` covers `/anthropic` and
    /// `/anthropic/v1`, not `/anthropicx`.
    fn covers(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || self.prefix.ends_with('/') || rest.starts_with('/'),
            None => false,
        }
    }

    /// The upstream URI for a request URI: base path, then the (possibly stripped) path and query.
    pub fn upstream_uri(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let pq = if self.upstream.base_path.is_empty() && !self.strip_prefix {
            match uri.path_and_query() {
                // The common case reuses the parsed path: no copy.
                Some(pq) => pq.clone(),
                None => PathAndQuery::from_static("/"),
            }
        } else {
            let rest = if self.strip_prefix {
                pq.strip_prefix(self.prefix.trim_end_matches('/'))
                    .unwrap_or(pq)
            } else {
                pq
            };
            let sep = if rest.starts_with('/') { "" } else { "/" };
            format!("{}{sep}{rest}", self.upstream.base_path).parse()?
        };
        Uri::builder()
            .scheme(self.upstream.scheme.clone())
            .authority(self.upstream.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// How agents of one API style call a provider: the style's name and the upstream path its SDKs
/// take as their base URL (OpenAI's SDKs append `/chat/completions` or `/responses` to `.../v1`;
/// Anthropic's append `/v1/messages`; Gemini's `/v1beta/models/...`).
fn api_roots(provider: &str) -> &'static [(&'static str, &'static str)] {
    match provider {
        "openrouter" => &[("OpenAI", "/api/v1"), ("Anthropic", "/api")],
        "openai" => &[("OpenAI", "/v1")],
        "azure" => &[("OpenAI", "/openai/v1")],
        "anthropic" => &[("Anthropic", "")],
        "gemini" => &[("Gemini", ""), ("OpenAI", "/v1beta/openai")],
        _ => &[],
    }
}

impl Route {
    /// The base URL to give agents of each API style this route serves, on keyproxy at
    /// `listen` (`http://host:port`): the client path that this route turns into the style's
    /// upstream path. A route of unknown provider gets its prefix.
    pub fn agent_base_urls(&self, listen: &str) -> Vec<(&'static str, String)> {
        let prefix = self.prefix.trim_end_matches('/');
        let roots = api_roots(&self.provider_name);
        if roots.is_empty() {
            return vec![("any", format!("{listen}{prefix}"))];
        }
        roots
            .iter()
            .filter_map(|(style, root)| {
                let rest = root.strip_prefix(self.upstream.base_path.trim_end_matches('/'))?;
                let path = match self.strip_prefix {
                    true => format!("{prefix}{rest}"),
                    false if rest.starts_with(prefix) || rest.is_empty() && prefix.is_empty() => {
                        rest.to_owned()
                    }
                    false => return None,
                };
                Some((*style, format!("{listen}{path}")))
            })
            .collect()
    }
}

/// All routes of a config, longest prefix first, and the formats their keys are rendered in.
pub struct Routes {
    routes: Vec<Route>,
    formats: Vec<KeyFormat>,
}

impl Routes {
    pub fn build(config: &Config, metrics: &Metrics) -> Result<Self, UpstreamError> {
        let mut formats: Vec<KeyFormat> = Vec::new();
        let mut upstreams_by_ca: HashMap<Option<PathBuf>, Upstreams> = HashMap::new();
        let mut origins: HashMap<(Option<PathBuf>, String), std::sync::Arc<Origin>> =
            HashMap::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            let format = match formats.iter().position(|f| *f == r.format) {
                Some(i) => FormatId(i),
                None => {
                    formats.push(r.format.clone());
                    FormatId(formats.len() - 1)
                }
            };
            let upstreams = match upstreams_by_ca.get(&r.ca_file) {
                Some(u) => u.clone(),
                None => {
                    let u = upstream::clients(
                        r.ca_file.as_deref(),
                        config.system_roots,
                        config.connect_timeout,
                        config.workers,
                    )?;
                    upstreams_by_ca.insert(r.ca_file.clone(), u.clone());
                    u
                }
            };
            let tls = r.upstream.scheme == http::uri::Scheme::HTTPS;
            let origin = origins
                .entry((
                    r.ca_file.clone(),
                    r.upstream.authority.to_string() + if tls { "s" } else { "" },
                ))
                .or_insert_with(|| std::sync::Arc::new(Origin::new(&upstreams, tls)))
                .clone();
            routes.push(Route {
                origin,
                index,
                name: r.prefix.as_str().into(),
                latency: metrics.latency(&r.prefix),
                prefix: r.prefix.clone(),
                upstream_label: r.upstream.to_string(),
                upstream: r.upstream.clone(),
                profile: r.profile.clone(),
                profiles: r.profiles.clone(),
                header: r.header.clone(),
                format,
                strip_prefix: r.strip_prefix,
                add_headers: r.add_headers.clone(),
                default_headers: r.default_headers.clone(),
                error_shape: match r.provider {
                    Some(Provider::Anthropic) => ErrorShape::Anthropic,
                    _ => ErrorShape::OpenAi,
                },
                key_in_query: r.provider == Some(Provider::Gemini)
                    || r.upstream.authority.host().ends_with("googleapis.com"),
                websocket: r.websocket,
                provider_name: match (r.provider, r.profile.split_once(':')) {
                    (Some(p), _) => p.name().to_owned(),
                    (None, Some((prefix, _))) => prefix.to_owned(),
                    (None, None) => r.upstream.authority.host().to_owned(),
                },
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes, formats })
    }

    /// The route with the longest prefix covering `path`.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.covers(path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Prefixes in config order (by `Route::index`).
    pub fn prefixes(&self) -> Vec<&str> {
        let mut by_index: Vec<&Route> = self.routes.iter().collect();
        by_index.sort_by_key(|r| r.index);
        by_index.into_iter().map(|r| r.prefix.as_str()).collect()
    }

    pub fn formats(&self) -> &[KeyFormat] {
        &self.formats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn routes(toml: &str) -> Routes {
        Routes::build(&parse(toml, Path::new("k.toml")).unwrap(), &Metrics::new()).unwrap()
    }

    const TWO: &str = r#"
[[routes]]
prefix = "/"
upstream = "https://openrouter.ai"
profile = "openrouter:default"
[[routes]]
prefix = "/anthropic"
upstream = "https://api.anthropic.com/base"
profile = "anthropic:default"
strip_prefix = true
format = "{key}"
"#;

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let r = routes(TWO);
        assert_eq!(
            r.find("/anthropic/v1/messages").unwrap().prefix,
            "/anthropic"
        );
        assert_eq!(r.find("/anthropic").unwrap().prefix, "/anthropic");
        assert_eq!(r.find("/anthropicx").unwrap().prefix, "/");
        assert_eq!(r.formats().len(), 2);
    }

    #[test]
    fn each_route_names_the_base_url_of_its_agents() {
        let r = routes(
            r#"
[[routes]]
prefix = "/"
provider = "openrouter"
[[routes]]
prefix = "/anthropic"
provider = "anthropic"
strip_prefix = true
[[routes]]
prefix = "/gemini"
provider = "gemini"
strip_prefix = true
[[routes]]
prefix = "/v1"
provider = "openai"
"#,
        );
        let at = |path: &str| r.find(path).unwrap().agent_base_urls("http://h:1");
        assert_eq!(
            at("/api"),
            vec![
                ("OpenAI", "http://h:1/api/v1".to_owned()),
                ("Anthropic", "http://h:1/api".to_owned())
            ]
        );
        assert_eq!(
            at("/anthropic"),
            vec![("Anthropic", "http://h:1/anthropic".to_owned())]
        );
        assert_eq!(at("/gemini")[0], ("Gemini", "http://h:1/gemini".to_owned()));
        assert_eq!(at("/v1"), vec![("OpenAI", "http://h:1/v1".to_owned())]);
    }

    #[test]
    fn upstream_uri_joins_base_path_and_strips_prefix() {
        let r = routes(TWO);
        let a = r.find("/anthropic/v1/messages").unwrap();
        let uri = a
            .upstream_uri(&"/anthropic/v1/messages?x=1".parse().unwrap())
            .unwrap();
        assert_eq!(uri, "https://api.anthropic.com/base/v1/messages?x=1");
        let uri = a.upstream_uri(&"/anthropic?x=1".parse().unwrap()).unwrap();
        assert_eq!(uri, "https://api.anthropic.com/base/?x=1");
        let o = r.find("/api/v1/chat/completions").unwrap();
        let uri = o
            .upstream_uri(&"/api/v1/chat/completions".parse().unwrap())
            .unwrap();
        assert_eq!(uri, "https://openrouter.ai/api/v1/chat/completions");
    }
}
