//! One client connection: served once its first bytes come in time, closed when nothing moves
//! for `idle_timeout`, its requests dispatched to the admin endpoints or the request path
//! with its request id.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::sync::watch;

use super::activity::{Activity, Tracked};
use crate::ops::reload::ReloadRequest;
use crate::ops::{admin, page};
use crate::proxy::{self, usable_request_id, State, REQUEST_ID};
use crate::rt::burst::CountedExecutor;

/// How long a connection closed for idleness may take to end after its GOAWAY.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// What every connection is served with.
pub(super) struct Serving {
    pub state: Arc<State>,
    pub http1: http1::Builder,
    pub http2: http2::Builder<CountedExecutor>,
    pub shutdown: watch::Receiver<bool>,
    pub first_bytes_within: Duration,
    pub local_addr: SocketAddr,
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
}

impl Serving {
    /// Serves an accepted connection, once its first bytes come in time.
    pub(super) async fn serve(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
    ) {
        let started = Instant::now();
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(self.local_addr);
        let mut stopping = self.shutdown.clone();
        let spoke = tokio::select! {
            spoke = first_bytes(&stream, self.first_bytes_within) => spoke,
            _ = stopping.changed() => None,
        };
        let Some(protocol) = spoke else {
            tracing::debug!(%peer, "closed: sent no request within {:?}", self.first_bytes_within);
            return;
        };
        let state = self.state.clone();
        let reload = self.reload.clone();
        let activity = Activity::new();
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |mut req| {
            let (state, reload) = (state.clone(), reload.clone());
            let open = seen.request();
            let id = request_id(&mut req);
            async move {
                let mut resp = dispatch(&state, &reload, local, req).await;
                // The provider's own id (OpenAI sends one) is kept; else the client sees ours.
                if !resp.headers().contains_key(&REQUEST_ID) {
                    resp.headers_mut().insert(REQUEST_ID, id);
                }
                Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, open)))
            }
        });
        // The first bytes told the protocol, so the connection is hyper's own for it: no
        // hyper-util `auto` layer reading the version and rewinding it under every read.
        let io = TokioIo::new(stream);
        match protocol {
            Protocol::Http2 => {
                let connection = self.http2.serve_connection(io, service);
                self.drive(started, &activity, peer, connection, |c| {
                    c.graceful_shutdown()
                })
                .await;
            }
            Protocol::Http1 => {
                let connection = self.http1.serve_connection(io, service).with_upgrades();
                self.drive(started, &activity, peer, connection, |c| {
                    c.graceful_shutdown()
                })
                .await;
            }
        }
        drop(watcher);
    }

    /// Runs `connection` until it ends, closing it (`graceful`: GOAWAY for HTTP/2, close after
    /// the response in flight for HTTP/1) when idle or shutting down, and dropping it when the
    /// peer does not let it end in time. Its deadlines count from `started` and its `activity`;
    /// `peer` names it in the log.
    async fn drive<C, E>(
        &self,
        started: Instant,
        activity: &Activity,
        peer: SocketAddr,
        connection: C,
        graceful: impl Fn(Pin<&mut C>),
    ) where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let idle = self.state.load().config.idle_timeout;
        let mut stopping = self.shutdown.clone();
        tokio::pin!(connection);
        // Closing: by when the connection is dropped if the peer does not let it end.
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            let wait = match closing {
                Some(by) => by.saturating_duration_since(tokio::time::Instant::now()),
                None => match activity.due_in(started, self.first_bytes_within, idle) {
                    Some(wait) => wait,
                    None => {
                        tracing::debug!(%peer, "closing: no request within {:?}, or no stream open for {:?}", self.first_bytes_within, idle);
                        graceful(connection.as_mut());
                        // An idle client needs one round trip to let an HTTP/2 connection end
                        // (the PING that follows the GOAWAY); a squatter gets no longer.
                        closing = Some(tokio::time::Instant::now() + CLOSE_WITHIN);
                        continue;
                    }
                },
            };
            tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    break;
                }
                () = tokio::time::sleep(wait) => {
                    if closing.is_some_and(|by| tokio::time::Instant::now() >= by) {
                        tracing::debug!(%peer, "closed: the peer kept the connection after GOAWAY");
                        break;
                    }
                }
                _ = stopping.changed(), if closing.is_none() => {
                    // Shutting down: requests in flight finish, within shutdown_grace (the
                    // accept loop waits for this watcher that long).
                    graceful(connection.as_mut());
                    closing = Some(tokio::time::Instant::now() + Duration::from_secs(30 * 24 * 3600));
                }
            }
        }
    }
}

/// What a client's first bytes say it speaks.
enum Protocol {
    Http1,
    /// They are the HTTP/2 connection preface.
    Http2,
}

/// `/_keyproxy/` is keyproxy's own; everything else is proxied.
async fn dispatch(
    state: &State,
    reload: &tokio::sync::mpsc::Sender<ReloadRequest>,
    local: SocketAddr,
    req: Request<Incoming>,
) -> http::Response<proxy::ResponseBody> {
    let path = req.uri().path();
    if path == "/_keyproxy" || path.starts_with("/_keyproxy/") {
        let started = Instant::now();
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let id = usable_request_id(req.headers()).cloned();
        let resp = admin_answer(state, reload, req).await;
        proxy::admin_record(id.as_ref(), &method, &uri, &resp, started);
        return resp;
    }
    // Boxed: hyper keeps room for the service's future in every connection for as long as it
    // is open, and the request path's state machine is kilobytes; a box is freed as soon as
    // the response head is out (1,000 open streams: 55 -> 47 MiB).
    Box::pin(proxy::handle(state, local, req)).await
}

/// keyproxy's own endpoints under `/_keyproxy/`.
async fn admin_answer(
    state: &State,
    reload: &tokio::sync::mpsc::Sender<ReloadRequest>,
    req: Request<Incoming>,
) -> http::Response<proxy::ResponseBody> {
    let path = req.uri().path();
    if page::is_page(path) || (path == "/_keyproxy/me" && page::wants_page(&req)) {
        return page::serve(state, &req).await;
    }
    match path {
        "/_keyproxy/reload" => admin::reload(state, &req, reload).await,
        "/_keyproxy/usage" => admin::usage(state, &req).await,
        "/_keyproxy/me" => admin::me(state, &req).await,
        _ => admin::handle(state, &req),
    }
}

/// The request's id: the client's `x-request-id` when a log can carry it, else a new one set on
/// the request, so the upstream and the access record see the same. Two header operations
/// instead of tower-http's request-id layers, which cost a future wrapper, a `RequestId`
/// extension and a header clone per request.
///
/// The id is marked sensitive, which only HTTP/2 reads: its HPACK encoder then sends it as a
/// literal instead of adding it to the connection's table. An id is new with every request, so
/// indexed, each one went into the table, evicted the headers that repeat (content type, user
/// agent) and lengthened the chain of ids the encoder compares the next one against: about
/// 7,000 instructions per request over an HTTP/2 upstream (callgrind).
fn request_id(req: &mut Request<Incoming>) -> http::HeaderValue {
    if usable_request_id(req.headers()).is_some() {
        if let Some(id) = req.headers_mut().get_mut(&REQUEST_ID) {
            id.set_sensitive(true);
            return id.clone();
        }
    }
    let mut id = proxy::new_request_id();
    id.set_sensitive(true);
    req.headers_mut().insert(REQUEST_ID, id.clone());
    id
}

/// hyper's header read timeout starts once hyper has read a request's first bytes, so a client
/// that connects and sends nothing (or a few bytes of the HTTP/2 preface) would hold its
/// connection forever. Waits, at most `within`, until the first bytes decide the protocol; None
/// when they do not come in time.
async fn first_bytes(stream: &tokio::net::TcpStream, within: Duration) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; PREFACE.len()];
    loop {
        // timeout_at polls the peek first, and a peek over unread bytes is ready at once: without
        // this check, a client that sends "P" and hangs up would never meet the deadline.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) if buf[..n] != PREFACE[..n] => return Some(Protocol::Http1),
            Ok(Ok(n)) if n == PREFACE.len() => return Some(Protocol::Http2),
            // Part of the HTTP/2 preface: peek returns at once until more arrives.
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
