//! The listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port, graceful shutdown, and
//! the reload task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::config::Origin;
use crate::keys::reload::{ReloadRequest, Reloader, StartError};
use crate::proxy::{self, Conn};
use crate::state::State;

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
    let addr = listen.unwrap_or(config.listen);
    if !addr.ip().is_loopback() && config.clients.is_empty() && !config.allow_unauthenticated {
        return Err(ServeError::Exposed { addr });
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;

    let (reload_tx, reload_rx) = mpsc::channel(16);
    let watcher = reloader.watch();
    tokio::spawn(reloader.run(watcher, reload_rx));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder.http2().timer(TokioTimer::new());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        builder,
        state.clone(),
        shutdown_rx,
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

async fn accept_loop(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            local: stream
                .local_addr()
                .unwrap_or_else(|_| listener_addr(&listener)),
        };
        let state = state.clone();
        let service = tower::ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                http::header::AUTHORIZATION,
                http::header::PROXY_AUTHORIZATION,
                http::header::COOKIE,
            ]))
            .service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(proxy::handle(&state, conn, req).await) }
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!(grace = %humantime::format_duration(grace), "shutting down: no new connections; waiting for requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace expired; closing the remaining connections"),
    }
}

fn listener_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}
