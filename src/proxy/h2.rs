//! HTTP/2 connections to one TLS upstream from one worker, opened as streams need them: a new
//! stream goes to a connection below the server's `SETTINGS_MAX_CONCURRENT_STREAMS`, and when
//! every connection is at its limit another is opened. hyper-util's pool keeps one
//! connection per host and queues streams beyond the limit (hyperium/hyper#3623), so 1,000 agents'
//! streams to a server allowing 256 per connection would wait, silently, for others to end.
//!
//! RFC 9113 §9.1 asks clients not to open a second connection to a host; it also lets the
//! server cap streams per connection, and nginx, haproxy, Envoy and browsers all open another
//! when that cap is reached. So does keyproxy, and only then.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::ServiceExt as _;

use super::settings::{Limit, Watched};
use super::upload::{ClientFault, UpstreamBody};

type Io = Watched<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>;

/// What the upstream speaks, learnt from ALPN on the first connection.
const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// One HTTP/2 connection: its sender, the streams keyproxy has open on it, and the server's
/// current limit, which the task driving the connection keeps up to date.
struct H2Conn {
    send: http2::SendRequest<UpstreamBody>,
    open: AtomicUsize,
    limit: Arc<Limit>,
}

impl H2Conn {
    /// Takes a stream on this connection if it is below the server's limit.
    fn take(self: &Arc<Self>) -> Option<Lease> {
        if self.send.is_closed() {
            return None;
        }
        let limit = self.limit.streams();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Lease {
                h2: Some(self.clone()),
                h1: None,
            })
    }
}

/// A stream held open on a connection: until the response body ends (or is dropped), an
/// HTTP/2 connection counts it against the server's limit, and an HTTP/1.1 connection is not
/// lent to another request.
#[derive(Default)]
pub struct Lease {
    h2: Option<Arc<H2Conn>>,
    h1: Option<super::h1::Parked>,
}

impl Lease {
    pub(super) fn http1(parked: super::h1::Parked) -> Self {
        Self {
            h2: None,
            h1: Some(parked),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.h1.take());
        if let Some(conn) = self.h2.take() {
            conn.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the HTTP/2 path did not answer.
pub enum H2Failure {
    /// The upstream chose HTTP/1.1: send the request, handed back unsent, the other way.
    SpeaksHttp1(Box<Request<UpstreamBody>>),
    /// No connection: DNS, TCP or TLS failed.
    Connect(BoxError),
    Failed(BoxError),
}

/// The HTTP/2 connections to one upstream origin.
pub struct H2Origin {
    connector: HttpsConnector<HttpConnector>,
    /// Read lock-free on every request; replaced, under `opening`, when a connection is added or
    /// closed ones are dropped.
    conns: ArcSwap<Vec<Arc<H2Conn>>>,
    /// One connection is opened at a time: requests that find every connection full wait here,
    /// then look again, so a burst opens as few connections as its streams need.
    opening: tokio::sync::Mutex<()>,
    speaks: AtomicU8,
}

impl H2Origin {
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            connector,
            conns: ArcSwap::from_pointee(Vec::new()),
            opening: tokio::sync::Mutex::new(()),
            speaks: AtomicU8::new(UNKNOWN),
        }
    }

    /// Whether the upstream is known to answer HTTP/1.1 only, so the HTTP/1 client should be
    /// used from the start.
    pub fn speaks_http1(&self) -> bool {
        self.speaks.load(Ordering::Relaxed) == HTTP1
    }

    fn lease(&self) -> Option<Lease> {
        self.conns.load().iter().find_map(H2Conn::take)
    }

    /// Sends `req` on a connection with room for another stream, opening one if none has;
    /// `progress` is told which of the two it waits for.
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
        progress: &ClientFault,
    ) -> Result<(Response<Incoming>, Lease), H2Failure> {
        *req.version_mut() = Version::HTTP_2;
        // A connection may close between the look and the send; hyper then hands the request
        // back unsent, and it goes once more, on another connection.
        for _ in 0..2 {
            let lease = match self.lease() {
                Some(lease) => lease,
                None => {
                    progress.connecting();
                    // Boxed: opening (TCP, TLS, the HTTP/2 handshake) is a state machine of
                    // kilobytes that every request's future would otherwise carry and copy.
                    match Box::pin(self.open(req.uri())).await {
                        Ok(Some(lease)) => lease,
                        Ok(None) => return Err(H2Failure::SpeaksHttp1(Box::new(req))),
                        Err(e) => return Err(H2Failure::Connect(e)),
                    }
                }
            };
            progress.on_stream();
            let Some(conn) = lease.h2.as_ref() else {
                continue;
            };
            let mut send = conn.send.clone();
            match send.try_send_request(req).await {
                Ok(resp) => return Ok((resp, lease)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(H2Failure::Failed(Box::new(e.into_error()))),
                },
            }
        }
        Err(H2Failure::Failed(
            "the upstream closed its HTTP/2 connections before the request could be sent".into(),
        ))
    }

    /// Opens a connection, unless another opened meanwhile has room. `None`: the upstream
    /// answered ALPN with HTTP/1.1.
    async fn open(&self, uri: &Uri) -> Result<Option<Lease>, BoxError> {
        let _one_at_a_time = self.opening.lock().await;
        if let Some(lease) = self.lease() {
            return Ok(Some(lease));
        }
        if self.speaks_http1() {
            return Ok(None);
        }
        let io = self.connector.clone().oneshot(uri.clone()).await?;
        if !io.connected().is_negotiated_h2() {
            self.speaks.store(HTTP1, Ordering::Relaxed);
            return Ok(None);
        }
        self.speaks.store(HTTP2, Ordering::Relaxed);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            // A vanished upstream is found on a busy connection; an idle one is left to the
            // server to close.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(false);
        let limit = Arc::new(Limit::default());
        let (send, conn) = builder
            .handshake::<Io, UpstreamBody>(Watched::new(io, limit.clone()))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream HTTP/2 connection ended: {e}");
            }
        });
        // Until the server's preface says how many streams it allows, a burst would pile onto
        // this connection behind a limit not yet known.
        limit.known().await;
        if send.is_closed() || limit.streams() == 0 {
            return Err("the upstream closed the HTTP/2 connection before its SETTINGS".into());
        }
        let conn = Arc::new(H2Conn {
            send,
            open: AtomicUsize::new(0),
            limit,
        });
        let lease = conn.take();
        let mut conns: Vec<Arc<H2Conn>> = self
            .conns
            .load()
            .iter()
            .filter(|c| !c.send.is_closed())
            .cloned()
            .collect();
        conns.push(conn);
        self.conns.store(Arc::new(conns));
        Ok(lease)
    }
}
