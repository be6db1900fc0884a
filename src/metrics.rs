//! `/_keyproxy/metrics`: Prometheus metrics, encoded by prometheus-client.
//!
//! The request path touches only pre-resolved atomics: per-route counters and latency histograms
//! live in the route, resolved once when routes are built, so no request takes the families'
//! locks. The upstream latency histogram is a lock-free one of our own (`histogram.rs`); the
//! page's last hour is a ring of atomics (`traffic.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod histogram;
pub mod traffic;

pub use histogram::Histogram;
use histogram::LATENCY_BUCKETS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub profile: String,
    /// The client's name, empty without clients; bounded by the config.
    pub client: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub client: String,
    pub profile: String,
    /// `prompt` or `completion`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    pub client: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub route: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub profile: String,
    pub state: &'static str,
}

/// (route, profile, client) of request series; `pairs` gives (route, profile), (profile, client).
type Series = HashSet<(String, String, String)>;
type Pairs<'a> = HashSet<(&'a str, &'a str)>;
fn pairs(series: &Series) -> (Pairs<'_>, Pairs<'_>) {
    series
        .iter()
        .map(|(r, p, c)| ((r.as_str(), p.as_str()), (p.as_str(), c.as_str())))
        .unzip()
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Names to counters, looked up twice per request: foldhash rather than SipHash, the keys being
/// the config's names, never grown by a request.
type ByName<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Request counters for every (route, profile, client) a snapshot knows, resolved when it is
/// built, so counting a request is two hash lookups and an atomic add.
#[derive(Debug, Default)]
pub struct RequestMeters {
    by_profile: ByName<ByName<Vec<[Counter; 5]>>>,
}

impl RequestMeters {
    /// `series` are (profile, client) pairs, client empty for requests without one. Series of
    /// routes, profiles and clients the new snapshot no longer has stop being exported.
    pub fn build<'a>(
        metrics: &Metrics,
        routes: &[&str],
        series: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut by_profile: ByName<ByName<Vec<[Counter; 5]>>> = ByName::default();
        let mut live = HashSet::new();
        for (profile, client) in series {
            let per_route = routes
                .iter()
                .map(|route| {
                    live.insert((route.to_string(), profile.to_owned(), client.to_owned()));
                    metrics.request_counters(route, profile, client)
                })
                .collect();
            by_profile
                .entry(profile.to_owned())
                .or_default()
                .insert(client.to_owned(), per_route);
        }
        metrics.forget_all_but(&live, routes);
        Self { by_profile }
    }

    /// Counts an answer to a request on route number `route` (see `Route::index`).
    pub fn count(
        &self,
        metrics: &Metrics,
        route: (usize, &str),
        profile: &str,
        client: &str,
        status: u16,
    ) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let resolved = self
            .by_profile
            .get(profile)
            .and_then(|c| c.get(client))
            .and_then(|r| r.get(route.0));
        match resolved {
            Some(counters) => counters[class].inc(),
            // A profile no source knows: its requests are answered locally, rarely get here.
            None => metrics.request_counters(route.1, profile, client)[class].inc(),
        };
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    local: Family<ReasonLabel, Counter>,
    keys: Family<KeyLabels, Gauge>,
    retries: Family<RetryLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    /// The request series the current snapshot counts, so a reload can drop the rest.
    known: Mutex<Series>,
    pub request_bytes: Counter,
    pub response_bytes: Counter,
    pub reloads: Counter,
    pub reload_failures: Counter,
    /// The last hour per minute, for the page.
    pub traffic: traffic::Traffic,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyproxy");
        let m = Self {
            requests: Family::default(),
            latency: Family::default(),
            local: Family::default(),
            keys: Family::default(),
            retries: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            known: Default::default(),
            request_bytes: Counter::default(),
            response_bytes: Counter::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            traffic: traffic::Traffic::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests forwarded upstream, by route, profile and status class of the answer",
            m.requests.clone(),
        );
        registry.register(
            "local_responses",
            "Requests keyproxy answered itself, by reason (the x-keyproxy-error value)",
            m.local.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from sending a request upstream to its response head, by route",
            m.latency.clone(),
        );
        registry.register(
            "request_bytes",
            "Request body bytes streamed to upstreams",
            m.request_bytes.clone(),
        );
        registry.register(
            "response_bytes",
            "Response body bytes streamed to clients",
            m.response_bytes.clone(),
        );
        registry.register("reloads", "Reloads of config and keys", m.reloads.clone());
        registry.register(
            "reload_failures",
            "Reloads that kept the last good keys because a source failed",
            m.reload_failures.clone(),
        );
        registry.register(
            "keys",
            "Keys by profile and state (active, resting)",
            m.keys.clone(),
        );
        registry.register(
            "retries",
            "Requests sent again on another key after the upstream refused one, by route and profile",
            m.retries.clone(),
        );
        registry.register(
            "tokens",
            "Tokens the answers reported, by client, profile and direction (prompt, completion)",
            m.tokens.clone(),
        );
        registry.register(
            "cost_usd",
            "Cost in USD the answers reported (OpenRouter's usage.cost), by client and profile",
            m.cost.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts what one answer used; called off the request path by the usage ledger.
    pub fn used(&self, client: &str, profile: &str, prompt: u64, completion: u64, cost: f64) {
        for (direction, n) in [("prompt", prompt), ("completion", completion)] {
            let labels = TokenLabels {
                client: client.to_owned(),
                profile: profile.to_owned(),
                direction,
            };
            self.tokens.get_or_create(&labels).inc_by(n);
        }
        let labels = CostLabels {
            client: client.to_owned(),
            profile: profile.to_owned(),
        };
        self.cost.get_or_create(&labels).inc_by(cost);
    }

    /// The latency histogram of a route, kept across reloads.
    pub fn latency(&self, route: &str) -> Histogram {
        self.latency
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone()
    }

    fn request_counters(&self, route: &str, profile: &str, client: &str) -> [Counter; 5] {
        STATUS_CLASSES.map(|status| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    profile: profile.to_owned(),
                    client: client.to_owned(),
                    status,
                })
                .clone()
        })
    }

    /// Stops exporting series of what `live` no longer has (requests; latency of routes not in
    /// `routes`; usage and retries): a route, profile or client removed by a reload disappears.
    fn forget_all_but(&self, live: &Series, routes: &[&str]) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let ((old_retries, old_used), (live_retries, live_used)) = (pairs(&known), pairs(live));
        for &(profile, client) in old_used.difference(&live_used) {
            let mut tokens = TokenLabels {
                client: client.to_owned(),
                profile: profile.to_owned(),
                direction: "prompt",
            };
            self.tokens.remove(&tokens);
            tokens.direction = "completion";
            self.tokens.remove(&tokens);
            let (client, profile) = (tokens.client, tokens.profile);
            self.cost.remove(&CostLabels { client, profile });
        }
        for &(route, profile) in old_retries.difference(&live_retries) {
            let (route, profile) = (route.to_owned(), profile.to_owned());
            self.retries.remove(&RetryLabels { route, profile });
        }
        for (route, profile, client) in known.difference(live) {
            for status in STATUS_CLASSES {
                self.requests.remove(&RequestLabels {
                    route: route.clone(),
                    profile: profile.clone(),
                    client: client.clone(),
                    status,
                });
            }
            if !routes.contains(&route.as_str()) {
                self.latency.remove(&RouteLabel {
                    route: route.clone(),
                });
            }
        }
        *known = live.clone();
    }

    /// A retry on another key: rare, so the family's lock is fine here.
    pub fn retried(&self, route: &str, profile: &str) {
        self.retries
            .get_or_create(&RetryLabels {
                route: route.to_owned(),
                profile: profile.to_owned(),
            })
            .inc();
    }

    pub fn local(&self, reason: &'static str) {
        self.traffic.local(reason);
        self.local.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The text exposition, with the key gauges set from `keys`: (profile, awake, resting).
    pub fn render<'a>(&self, keys: impl IntoIterator<Item = (&'a str, usize, usize)>) -> String {
        self.keys.clear();
        for (profile, active, resting) in keys {
            for (state, n) in [("active", active), ("resting", resting)] {
                self.keys
                    .get_or_create(&KeyLabels {
                        profile: profile.to_owned(),
                        state,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
