//! HTTP/1.1 connections to one upstream origin: per worker thread, a stack of idle connections,
//! each driven by the worker that opened it. A connection goes back on its thread's stack when
//! the answer on it has been read to the end (its [`Lease`] drops), and is taken again only when
//! hyper says it is ready. This replaces hyper-util's pooled client, whose checkout hashes the
//! origin (SipHash) and takes a mutex, and which spawns a task per request to learn when a
//! connection is free again.
//!
//! Last in, first out, as hyper-util's pool: the connection used last is taken first, and the
//! others, left alone, are closed by the upstream's idle timeout (uvicorn's is 5 s) and let go
//! here. First in, first out would keep every connection of a past burst just alive, each taken
//! when it is the oldest, the one the upstream is about to close as a request goes out on it: a
//! 502 for a POST, which cannot be sent again.
//!
//! [`Lease`]: super::h2::Lease

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use thread_local::ThreadLocal;
use tower::ServiceExt as _;

use super::upload::{ClientFault, UpstreamBody};
use super::upstream::SendError;

/// An idle connection is closed after this long unused, as hyper-util's pool did.
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Idle connections kept per worker thread and origin; past it a freed connection is closed.
const IDLE_MAX: usize = 256;

struct Idle {
    send: SendRequest<UpstreamBody>,
    since: Instant,
}

/// The idle connections of one origin, one stack per thread (each worker is one thread), the
/// one used last on top. Only its own thread touches a stack, so it needs no lock.
pub struct H1Pool {
    idle: ThreadLocal<RefCell<VecDeque<Idle>>>,
    connector: HttpsConnector<HttpConnector>,
}

/// A connection lent to one request until its answer has been read: then it goes back to the
/// idle stack of the thread that lets it go (the worker's, whose runtime drives it).
pub struct Parked {
    send: Option<SendRequest<UpstreamBody>>,
    pool: Arc<H1Pool>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        let Some(mut send) = self.send.take() else {
            return;
        };
        if send.is_ready() {
            self.pool.park(send);
            return;
        }
        // An answer cut short closes its connection; one read to the end may not have been
        // seen by its connection's task yet, or the request body is still going: it is parked
        // once ready.
        if send.is_closed() {
            return;
        }
        let pool = self.pool.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if send.ready().await.is_ok() {
                    pool.park(send);
                }
            });
        }
    }
}

impl H1Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            idle: ThreadLocal::new(),
            connector,
        }
    }

    /// Puts `send` on top of this thread's stack. The bottom, idle longest, is let go once
    /// closed by the upstream or past the idle limit, so a stack left alone does not hold
    /// connections open forever. Full: `send` is dropped, which closes it.
    fn park(&self, send: SendRequest<UpstreamBody>) {
        let Ok(mut stack) = self.idle.get_or_default().try_borrow_mut() else {
            return;
        };
        let now = Instant::now();
        while stack
            .front()
            .is_some_and(|old| old.send.is_closed() || now.duration_since(old.since) >= IDLE_FOR)
        {
            stack.pop_front();
        }
        if stack.len() < IDLE_MAX {
            stack.push_back(Idle { send, since: now });
        }
    }

    /// The idle connection of this thread used last that is ready, dropping the closed and
    /// the stale on the way.
    fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut stack = self.idle.get()?.try_borrow_mut().ok()?;
        while let Some(idle) = stack.pop_back() {
            if idle.send.is_ready() && idle.since.elapsed() < IDLE_FOR {
                return Some(idle.send);
            }
        }
        None
    }

    /// Sends `req` (an absolute URI) on an idle connection of this worker, else on a new one.
    /// A connection that closed just before the request went out hands it back unsent, and it
    /// goes on the next. The returned `Parked` must live as long as the answer's body;
    /// `progress` is told while a connection is being made, for the deadline's sake.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
        progress: &ClientFault,
    ) -> Result<(Response<Incoming>, Parked), SendError> {
        let origin = origin_form(&mut req);
        while let Some(mut send) = self.checkout() {
            match send.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.parked(send))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(failed(e.into_error())),
                },
            }
        }
        progress.connecting();
        let mut send = Box::pin(self.open(origin)).await?;
        progress.handed();
        match send.send_request(req).await {
            Ok(resp) => Ok((resp, self.parked(send))),
            Err(e) => Err(failed(e)),
        }
    }

    fn parked(self: &Arc<Self>, send: SendRequest<UpstreamBody>) -> Parked {
        Parked {
            send: Some(send),
            pool: self.clone(),
        }
    }

    async fn open(&self, origin: Origin) -> Result<SendRequest<UpstreamBody>, SendError> {
        let mut target = http::uri::Parts::default();
        target.scheme = origin.0;
        target.authority = origin.1;
        target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let target = Uri::from_parts(target).map_err(|e| SendError {
            connect: true,
            error: Box::new(e),
        })?;
        let io = self
            .connector
            .clone()
            .oneshot(target)
            .await
            .map_err(|error| SendError {
                connect: true,
                error,
            })?;
        let (send, conn) = http1::Builder::new()
            .handshake::<_, UpstreamBody>(io)
            .await
            .map_err(|e| SendError {
                connect: true,
                error: Box::new(e),
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream HTTP/1.1 connection ended: {e}");
            }
        });
        Ok(send)
    }
}

fn failed(e: hyper::Error) -> SendError {
    SendError {
        connect: false,
        error: Box::new(e),
    }
}

type Origin = (Option<http::uri::Scheme>, Option<http::uri::Authority>);

/// Puts `Host` (unless the request has one) and the origin-form target (`/path?query`) on the
/// request, as HTTP/1.1 wants them, and returns the scheme and authority to connect to.
fn origin_form(req: &mut Request<UpstreamBody>) -> Origin {
    let parts = std::mem::take(req.uri_mut()).into_parts();
    if let Some(authority) = &parts.authority {
        if !req.headers().contains_key(HOST) {
            let secure = parts.scheme.as_ref() == Some(&http::uri::Scheme::HTTPS);
            let host = match authority.port_u16() {
                Some(443) if secure => authority.host(),
                Some(80) if !secure => authority.host(),
                _ => authority.as_str(),
            };
            if let Ok(value) = HeaderValue::from_str(host) {
                req.headers_mut().insert(HOST, value);
            }
        }
    }
    *req.uri_mut() = parts.path_and_query.map_or_else(Uri::default, Uri::from);
    (parts.scheme, parts.authority)
}
