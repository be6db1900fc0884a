//! The body keyproxy sends to an upstream: the client's, as it streams in, possibly with a copy
//! kept for a retry, or that copy replayed. Its faults are the client's, told apart from the
//! upstream's.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

use super::kept::KeptBody;

/// What keyproxy sends to an upstream; the bytes sent are counted when it is dropped. A client
/// body that breaks (bad chunked encoding) or stalls for `idle_timeout` ends the request, and
/// [`ClientFault`] tells the request path it was the client's fault, not the upstream's.
pub struct UpstreamBody {
    kind: Outbound,
    sent: u64,
    meter: Counter,
    stall: Option<(Pin<Box<Sleep>>, Duration)>,
    fault: Arc<ClientFault>,
}

/// What went wrong with the client's request body, if anything, and whether it was all sent:
/// the response deadline counts from then, so a slow upload is bounded by its own stall timer.
#[derive(Debug, Default)]
pub struct ClientFault {
    fault: AtomicU8,
    body_done: AtomicBool,
}

impl ClientFault {
    const MALFORMED: u8 = 1;
    const STALLED: u8 = 2;

    fn set(&self, fault: u8) {
        self.fault.store(fault, Ordering::Relaxed);
        self.sent();
    }

    fn sent(&self) {
        self.body_done.store(true, Ordering::Relaxed);
    }

    /// A body already sent in full, as a retry's kept copy is.
    pub fn done() -> Self {
        let f = Self::default();
        f.sent();
        f
    }

    /// The body has ended, or failed: nothing more is coming from the client.
    pub fn body_done(&self) -> bool {
        self.body_done.load(Ordering::Relaxed)
    }

    pub fn malformed(&self) -> bool {
        self.fault.load(Ordering::Relaxed) == Self::MALFORMED
    }

    pub fn stalled(&self) -> bool {
        self.fault.load(Ordering::Relaxed) == Self::STALLED
    }
}

/// The client sent no body bytes for `idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
pub struct BodyStalled(Duration);

pub enum Outbound {
    /// The client's body as it streams in.
    Stream(Incoming),
    /// The same, with a copy kept so the request can be retried on another key.
    Kept(KeptBody),
    /// A retry: the kept copy.
    Replay(Full<Bytes>),
}

impl UpstreamBody {
    pub fn new(kind: Outbound, meter: Counter) -> Self {
        Self {
            kind,
            sent: 0,
            meter,
            stall: None,
            fault: Arc::default(),
        }
    }

    /// Cuts the body when the client sends nothing for `after`; faults are noted in `fault`.
    pub fn watched(mut self, after: Duration, fault: Arc<ClientFault>) -> Self {
        if !matches!(self.kind, Outbound::Replay(_)) && !self.is_end_stream() {
            self.stall = Some((Box::pin(tokio::time::sleep(after)), after));
        } else {
            fault.sent();
        }
        self.fault = fault;
        self
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.meter.inc_by(self.sent);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Outbound::Stream(b) => Pin::new(b).poll_frame(cx),
            Outbound::Kept(b) => Pin::new(b).poll_frame(cx),
            Outbound::Replay(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if let Some((sleep, after)) = &mut this.stall {
                    let at = tokio::time::Instant::now() + *after;
                    sleep.as_mut().reset(at);
                }
                if this.is_end_stream() {
                    this.fault.sent();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fault.set(ClientFault::MALFORMED);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.fault.sent();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some((sleep, after)) = &mut this.stall else {
                    return Poll::Pending;
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.fault.set(ClientFault::STALLED);
                Poll::Ready(Some(Err(Box::new(BodyStalled(*after)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Outbound::Stream(b) => b.is_end_stream(),
            Outbound::Kept(b) => b.inner.is_end_stream(),
            Outbound::Replay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Outbound::Stream(b) => b.size_hint(),
            Outbound::Kept(b) => b.inner.size_hint(),
            Outbound::Replay(b) => b.size_hint(),
        }
    }
}
