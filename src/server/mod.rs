//! The listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port, connections handed to
//! the worker threads, graceful shutdown, and the reload task.

mod activity;
mod conn;
mod peers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Origin;
use crate::ops::reload::{ReloadRequest, Reloader, StartError};
use crate::proxy::State;
use crate::rt::burst::CountedExecutor;
use crate::rt::workers::{Job, Workers};
use conn::Serving;

/// Request heads: at most this many bytes (HTTP/1 buffer, HTTP/2 header list). Agents send a
/// dozen headers; nginx's default buffers are 8 KiB. An HTTP/1 head has at most 100 header
/// fields, hyper's default: setting that number (even to 100) makes hyper allocate and fill its
/// two header arrays on the heap for every request instead of keeping them on the stack.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(
        "refusing to listen on {addr}: it is not a loopback address, so anyone who can reach it \
         could spend your keys; configure [[clients]] with tokens, listen on 127.0.0.1, or set \
         allow_unauthenticated = true in the config if something else guards this port"
    )]
    Exposed { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    #[error("{0}")]
    Shared(String),
}

/// A running keyproxy: its address, its state, and the handles to reload or stop it.
pub struct Running {
    pub local_addr: SocketAddr,
    pub state: Arc<State>,
    reload: mpsc::Sender<ReloadRequest>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Reloads config and keys, and returns when a reload that began after this call is done.
    pub async fn reload(&self, reason: &'static str) {
        let (tx, rx) = oneshot::channel();
        let req = ReloadRequest {
            reason,
            done: Some(tx),
        };
        if self.reload.send(req).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// A sender for reload requests (the SIGHUP handler, file watchers).
    pub fn reloader(&self) -> mpsc::Sender<ReloadRequest> {
        self.reload.clone()
    }

    /// Stops accepting, lets requests in flight finish up to `shutdown_grace`, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(ledger) = self.state.usage.get().cloned() {
            // Usage counted since the last write reaches the database before the process ends.
            let _ = tokio::task::spawn_blocking(move || ledger.flush()).await;
        }
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Loads config and keys, binds, and serves in the background.
pub async fn start(origin: Origin, listen: Option<SocketAddr>) -> Result<Running, ServeError> {
    let mut reloader = Reloader::start(origin)?;
    let state = reloader.state().clone();
    let config = state.load().config.clone();
    if config.usage {
        let ledger = crate::usage::Ledger::open(config.state_dir.as_deref(), state.metrics.clone());
        // A restart must not give a client its budget again: seed from what the ledger kept.
        // Every limited client, since a reload may give one with only a rate a budget.
        let snapshot = state.load();
        if !snapshot.limits.is_empty() {
            snapshot.limits.seed(&ledger.rows());
        }
        let _ = state.usage.set(ledger);
    }
    if let Some(shared) = &config.shared {
        let shared = start_shared(shared, &state)?;
        if let Some(ledger) = state.usage.get() {
            ledger.share_with(crate::proxy::shared::usage::outlet(&shared));
        }
        let _ = state.shared.set(shared);
    }
    let addr = listen.unwrap_or(config.listen);
    if config.exposes(addr) {
        return Err(ServeError::Exposed { addr });
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;

    let workers = Workers::start(config.workers).map_err(ServeError::Workers)?;

    reloader.listening_on(local_addr);
    let (reload_tx, reload_rx) = mpsc::channel(16);
    reloader
        .spawn(&reload_tx, reload_rx)
        .map_err(ServeError::Workers)?;

    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // Both: the buffer bound refuses a head still incomplete at 64 KiB, the header bound a
        // complete one larger than that which arrived in one read.
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES);
    let mut http2 = hyper::server::conn::http2::Builder::new(CountedExecutor);
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        // Pings find a vanished peer on a busy connection; an idle one is closed by the
        // connection's idle deadline first (see `activity`), so pings do not keep it alive.
        .keep_alive_interval(config.idle_timeout.checked_mul(2))
        .keep_alive_timeout(Duration::from_secs(20));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let serving = Arc::new(Serving {
        reload: reload_tx.clone(),
        state: state.clone(),
        http1,
        http2,
        shutdown: shutdown_rx,
        first_bytes_within: config.header_read_timeout,
        local_addr,
    });
    let task = tokio::spawn(accept_loop(
        listener,
        workers,
        serving,
        config.shutdown_grace,
    ));
    Ok(Running {
        local_addr,
        state,
        reload: reload_tx,
        shutdown: shutdown_tx,
        task,
    })
}

/// Connects (lazily) to the `[shared]` store; a key another replica rests is rested in the
/// current snapshot's view, found by fingerprint.
fn start_shared(
    config: &crate::config::shared::SharedConfig,
    state: &Arc<crate::proxy::State>,
) -> Result<Arc<crate::proxy::shared::Shared>, ServeError> {
    let weak = Arc::downgrade(state);
    let on_rested: crate::proxy::shared::OnRested = Box::new(move |fingerprint, left, reason| {
        let Some(state) = weak.upgrade() else {
            return;
        };
        let snapshot = state.load();
        for (_, profile) in snapshot.keys.profiles() {
            for key in profile
                .keys()
                .iter()
                .filter(|k| k.fingerprint() == fingerprint)
            {
                key.health().rest_for(left, reason);
            }
        }
    });
    crate::proxy::shared::Shared::start(config, on_rested)
        .map_err(|e| ServeError::Shared(e.to_string()))
}

async fn accept_loop(
    listener: TcpListener,
    mut workers: Workers,
    serving: Arc<Serving>,
    grace: Duration,
) {
    let mut shutdown = serving.shutdown.clone();
    let graceful = GracefulShutdown::new();
    let peers = Arc::new(peers::Peers::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let cap = serving.state.load().config.connection_cap(peer.ip());
        let Some(slot) = peers.admit(peer.ip(), cap) else {
            tracing::debug!(%peer, "refused a connection: this address has max_connections_per_ip open already");
            continue;
        };
        // Leaves this runtime's reactor, to join the worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, "cannot hand the connection to a worker: {e}");
                continue;
            }
        };
        let serving = serving.clone();
        let watcher = graceful.watcher();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => return tracing::warn!(%peer, "cannot serve the connection: {e}"),
                };
                serving.serve(stream, peer, watcher).await;
                drop(slot);
            })
        });
        workers.run(job);
    }
    drop(listener);
    tracing::info!(grace = %humantime::format_duration(grace), "shutting down: no new connections; waiting for requests in flight");
    // An upgraded connection (a WebSocket) has left hyper's watch: wait for those too.
    let sockets = serving.state.sockets.clone();
    let finished = async { tokio::join!(graceful.shutdown(), sockets.all_closed()) };
    tokio::select! {
        _ = finished => tracing::info!("all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace expired; closing the remaining connections"),
    }
    // Each socket still open writes its access record as it is cut.
    sockets.cut(Duration::from_secs(1)).await;
    // Only now may the workers stop, taking what is left with them.
    drop(workers);
}
