//! The shared state: one `ArcSwap` holding the current snapshot (config, routes, keys), and the
//! reload log that `status` reports.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::routes::Routes;
use crate::config::{Config, Origin};
use crate::keys::files::ReadProbe;
use crate::keys::KeyStore;
use crate::metrics::{Metrics, RequestMeters};

/// Everything a request needs, immutable once built. A request loads it once.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: Arc<Routes>,
    pub keys: KeyStore,
    pub meters: RequestMeters,
    /// Budget and rate-limit counters of the clients that have limits.
    pub limits: Arc<super::limits::Limits>,
}

impl Snapshot {
    pub fn new(
        config: Arc<Config>,
        routes: Arc<Routes>,
        keys: KeyStore,
        metrics: &Metrics,
    ) -> Self {
        let defaults = config.routes.iter().map(|r| r.profile.as_str());
        let profiles: Vec<&str> = keys
            .profiles()
            .map(|(name, _)| name)
            .chain(defaults)
            .collect();
        let without_client = profiles.iter().map(|p| (*p, ""));
        let of_clients = config.clients.iter().flat_map(|c| {
            c.profiles
                .iter()
                .map(move |p| (p.as_str(), c.name.as_str()))
        });
        let meters = RequestMeters::build(
            metrics,
            &routes.prefixes(),
            without_client.chain(of_clients),
        );
        let limits = Arc::new(super::limits::Limits::build(&config.clients, None, || None));
        Self {
            config,
            routes,
            keys,
            meters,
            limits,
        }
    }

    /// Keeps `old`'s limit counters for the clients both have (by token, else by name), so a
    /// reload resets no budget; a client new to limits starts from what `ledger` kept.
    pub fn with_limits_of(mut self, old: &Snapshot, ledger: Option<&crate::usage::Ledger>) -> Self {
        let rows = || ledger.map(crate::usage::Ledger::rows);
        let limits = super::limits::Limits::build(&self.config.clients, Some(&old.limits), rows);
        self.limits = Arc::new(limits);
        self
    }

    /// Default profiles of routes that have no key, each named once, in route order.
    pub fn profiles_without_key(&self) -> Vec<&str> {
        let mut missing: Vec<&str> = Vec::new();
        for route in self.config.routes.iter() {
            if self.keys.profile(&route.profile).is_none()
                && !missing.contains(&route.profile.as_str())
            {
                missing.push(&route.profile);
            }
        }
        missing
    }

    /// Profiles with keys but no provider part (`default`, not `openrouter:default`) that no
    /// route may inject and no client names: most likely meant as `provider:name`. One warning
    /// sentence each.
    pub fn profiles_without_provider(&self) -> Vec<String> {
        let provider = self.config.routes.first().map_or("openrouter", |r| {
            crate::config::clients::provider_of(&r.profile)
        });
        self.keys
            .profiles()
            .map(|(name, _)| name)
            .filter(|name| !name.contains(':'))
            .filter(|name| !self.config.routes.iter().any(|r| r.allows(name)))
            .filter(|name| !self.config.clients.iter().any(|c| c.profiles.iter().any(|p| p == name)))
            .map(|name| format!("profile '{name}' has no provider part, so no route injects its keys; name it '{provider}:{name}' (provider:name) in the keys file"))
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReloadLog {
    /// Start-up is reload 0.
    pub count: u64,
    pub last_ok_at: Option<SystemTime>,
    pub last_error: Option<(SystemTime, String)>,
    /// What caused the last reload: `start`, `SIGHUP`, `file change`, `poll`.
    pub last_trigger: &'static str,
}

pub struct State {
    snapshot: ArcSwap<Snapshot>,
    log: Mutex<ReloadLog>,
    /// The reload count, for whoever must wait for a reload (tests, benches, `status`).
    reloads: watch::Sender<u64>,
    pub origin: Origin,
    pub metrics: Arc<Metrics>,
    /// What the reloader is reading, so `status` can name a source that does not answer.
    pub reading: Arc<ReadProbe>,
    /// When this keyproxy started, for `status`.
    pub started: std::time::SystemTime,
    /// Usage accounting; set when keyproxy serves (not for `check`).
    pub usage: std::sync::OnceLock<crate::usage::Ledger>,
    /// Open WebSockets, which shutdown waits for and then cuts.
    pub sockets: super::relay::Sockets,
    /// `[shared]`: set at start when the config has it (read at start only).
    pub shared: std::sync::OnceLock<Arc<crate::proxy::shared::Shared>>,
}

impl State {
    pub fn new(
        origin: Origin,
        snapshot: Snapshot,
        log: ReloadLog,
        metrics: Arc<Metrics>,
        reading: Arc<ReadProbe>,
    ) -> Self {
        Self {
            metrics,
            snapshot: ArcSwap::from_pointee(snapshot),
            reloads: watch::Sender::new(log.count),
            log: Mutex::new(log),
            origin,
            reading,
            started: std::time::SystemTime::now(),
            usage: std::sync::OnceLock::new(),
            sockets: Default::default(),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// The current snapshot; the request path calls this once per request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn store(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The reload log is touched by reloads and the status page only, never by proxied requests.
    pub fn log(&self) -> ReloadLog {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn record(&self, f: impl FnOnce(&mut ReloadLog)) {
        let count = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut log);
            log.count
        };
        self.reloads.send_replace(count);
    }

    /// Sees the reload count change; `wait_for(|n| *n > seen)` waits for the next reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }
}
