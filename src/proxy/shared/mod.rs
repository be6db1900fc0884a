//! `[shared]`: several replicas keep their clients' windows, key health and usage totals in one
//! Redis (or Valkey). Nothing here exists without that table.
//!
//! Every call is bounded by `timeout`; the request path never waits on a reconnection: while the
//! store is marked down it is not asked at all, and a watcher (every quarter second) finds it
//! again, heartbeats this replica, counts the replicas seen in the last minute (for the local
//! share) and reads the keys other replicas rested (so choosing a key asks nothing).

mod health;
pub mod usage;
mod windows;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use health::{publish_rest, OnRested};
pub use windows::{admit, Hold};

use crate::config::shared::SharedConfig;

const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Admitting connections, picked by worker index; one that no worker uses never connects.
const PER_WORKER: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("[shared] redis at {store}: the URL is not one the Redis client accepts")]
    Url { store: String },
    #[error("[shared] ca_file {path}: {message}")]
    CaFile { path: String, message: String },
}

/// The client for `config`'s store: over TLS (`rediss://`, rustls) it trusts `ca_file` when
/// given, else the roots built into keyproxy (webpki-roots, as for upstreams).
fn client(config: &SharedConfig) -> Result<redis::Client, SharedError> {
    let url_error = |_| SharedError::Url {
        store: config.store.clone(),
    };
    // TCP_NODELAY (the crate's default is off): a call written while another is unanswered on
    // the same connection is sent at once, not held back for the first one's answer.
    let info = redis::IntoConnectionInfo::into_connection_info(config.url())
        .map_err(url_error)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let Some(path) = &config.ca_file else {
        return redis::Client::open(info).map_err(url_error);
    };
    let ca_error = |message: String| SharedError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(ca_error("no PEM certificate in the file".into()));
    }
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(info, certificates).map_err(url_error)
}

pub struct Shared {
    config: SharedConfig,
    /// For the watcher, usage, rests and settling off the workers: driven by the runtime that
    /// started.
    conn: ConnectionManager,
    /// One per worker, for admitting and settling its requests: each connects at the first
    /// request of its worker and is driven on that worker's thread, so a round trip wakes no
    /// other thread. With one connection shared by all, chat at 64 connections made 0.69-0.84
    /// of the req/s (KEYPROXY_BENCH_SHARED_BASELINE).
    per_worker: Vec<ConnectionManager>,
    up: AtomicBool,
    /// Replicas that heartbeat in the last minute, this one included; at least 1.
    replicas: AtomicU64,
    /// This replica's name in the heartbeat set.
    id: String,
    /// Rests a key (by fingerprint) that another replica rested, in this replica's view.
    on_rested: health::OnRested,
}

impl Shared {
    /// Sets up the (lazy) connection and starts the watcher on the current runtime; waits for
    /// nothing, so start-up does not depend on the store.
    pub fn start(
        config: &SharedConfig,
        on_rested: health::OnRested,
    ) -> Result<Arc<Self>, SharedError> {
        let url_error = || SharedError::Url {
            store: config.store.clone(),
        };
        let client = client(config)?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout))
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(500))))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(5));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())
            .map_err(|_| url_error())?;
        let per_worker = (0..PER_WORKER)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| url_error())?;
        let shared = Arc::new(Self {
            config: config.clone(),
            conn,
            per_worker,
            // Believed up until a call says otherwise, so the first request asks.
            up: AtomicBool::new(true),
            replicas: AtomicU64::new(1),
            id: replica_id(),
            on_rested,
        });
        tokio::spawn(watch(Arc::downgrade(&shared)));
        Ok(shared)
    }

    pub fn store(&self) -> &str {
        &self.config.store
    }

    /// Replicas that heartbeat in the last minute (as last seen).
    pub fn replicas(&self) -> u64 {
        self.replicas.load(Ordering::Relaxed)
    }

    pub fn reachable(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The connection of the worker this runs on.
    fn worker_conn(&self) -> ConnectionManager {
        self.per_worker[crate::rt::current_worker() % self.per_worker.len()].clone()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.config.prefix)
    }

    /// A call failed or took longer than `timeout`: said once, until it answers again.
    fn went_down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                store = %self.config.store,
                "shared store unreachable ({why}); limits follow on_failure, key health stays local, until it answers"
            );
        }
    }

    fn came_back(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(store = %self.config.store, "shared store reachable again; limits are shared again");
        }
    }

    /// Runs `f` against the store within `timeout`, marking it down when it fails.
    async fn call<T, F>(&self, f: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.config.timeout, f).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.went_down(&describe(&e));
                None
            }
            Err(_) => {
                self.went_down(&format!("no answer within {:?}", self.config.timeout));
                None
            }
        }
    }
}

impl Shared {
    /// As `call`, for a script on a connection that may have been idle since the store went
    /// away: `f` is sent once more, within the same `timeout`, when it failed because that
    /// connection was lost or could not be made (the manager makes a new one at once). Without
    /// it, every worker's first call after the store came back failed and said it was down.
    /// A script lost in flight may run twice: its reservation then counts twice until its
    /// period ends, the safe side for a limit.
    async fn call_fresh<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.call(async {
            match f().await {
                Err(e) if e.is_unrecoverable_error() => f().await,
                done => done,
            }
        })
        .await
    }
}

/// Adds the gauge `keyproxy_shared_store_up` (1 or 0) to the metrics text, before its end: a
/// series that exists only with `[shared]`.
pub fn metrics_text(text: &mut String, shared: &Shared) {
    let gauge = format!(
        "# HELP keyproxy_shared_store_up Whether the [shared] store answers (1) or not (0).\n# TYPE keyproxy_shared_store_up gauge\nkeyproxy_shared_store_up {}\n",
        u8::from(shared.reachable())
    );
    let at = text.rfind("# EOF").unwrap_or(text.len());
    text.insert_str(at, &gauge);
}

/// For `check`: whether the store in `config` answers a PING (connect included) within a
/// second or `timeout`, whichever is longer; the reason in words without the URL when not.
pub async fn ping(config: &SharedConfig) -> Result<(), String> {
    let client = client(config).map_err(|e| match e {
        SharedError::Url { .. } => "the URL is not one the Redis client accepts".to_owned(),
        other => other.to_string(),
    })?;
    let bound = config.timeout.max(Duration::from_secs(1));
    let go = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(bound, go).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {bound:?}")),
    }
}

/// A Redis error in words that hold no URL (and so no password).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".into()
    } else {
        format!("{:?}", e.kind())
    }
}

fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nanos}", std::process::id())
}

/// Until keyproxy ends: heartbeat, count replicas, read rested keys; finds the store again.
async fn watch(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Some(seen) = health::heartbeat(&shared).await {
            shared.came_back();
            shared
                .replicas
                .store(seen.replicas.max(1), Ordering::Relaxed);
            for (fingerprint, left, reason) in &seen.rested {
                (shared.on_rested)(fingerprint, *left, *reason);
            }
        }
    }
}
