//! The body types on either side of keyproxy. Enums rather than boxed bodies: forwarding costs no
//! allocation, and a local reply is a single `Full` chunk.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

use crate::access_log::AccessRecord;
use crate::burst::Bursts;

/// What keyproxy sends to a client: the upstream's body as it streams in, or a local reply.
pub type ResponseBody = Either<Streamed, Full<Bytes>>;

pin_project_lite::pin_project! {
    /// An upstream response body on its way to the client: counted, closed when the upstream
    /// sends nothing for `idle_timeout`, and logged once when it ends. Chunks that arrive
    /// together are written together ([`Bursts`]).
    pub struct Streamed {
        inner: Bursts<Incoming>,
        // Bytes read from the upstream before streaming began, sent first.
        head: Option<Frame<Bytes>>,
        #[pin]
        idle: Sleep,
        idle_for: Duration,
        last_frame: Instant,
        bytes: u64,
        outcome: &'static str,
        meter: Counter,
        record: AccessRecord,
    }

    impl PinnedDrop for Streamed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.meter.inc_by(*this.bytes);
            // The record is written when it drops, right after this.
            this.record.ended(*this.bytes, this.outcome);
        }
    }
}

impl Streamed {
    pub fn new(inner: Incoming, idle_for: Duration, meter: Counter, record: AccessRecord) -> Self {
        let now = Instant::now();
        Self {
            inner: Bursts::new(inner),
            head: None,
            idle: tokio::time::sleep_until((now + idle_for).into()),
            idle_for,
            last_frame: now,
            bytes: 0,
            // Until the end is seen: a client that hangs up mid-stream leaves it so.
            outcome: "client gone",
            meter,
            record,
        }
    }
}

impl Streamed {
    /// Sends `head` before the rest of the body.
    pub fn with_head(mut self, head: Option<Frame<Bytes>>) -> Self {
        self.head = head.filter(|h| h.data_ref().is_none_or(|d| !d.is_empty()));
        self
    }
}

/// The upstream sent nothing for `idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}; closing the stream")]
pub struct IdleTimeout(Duration);

impl Body for Streamed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Some(head) = this.head.take() {
            *this.bytes += head.data_ref().map_or(0, |d| d.len() as u64);
            if this.inner.is_end_stream() {
                *this.outcome = "complete";
            }
            return Poll::Ready(Some(Ok(head)));
        }
        match Pin::new(&mut *this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // Reading the clock per frame is cheaper than re-arming the timer per frame:
                // the timer is moved only when it fires early.
                *this.last_frame = Instant::now();
                if this.inner.is_end_stream() {
                    *this.outcome = "complete";
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                *this.outcome = "upstream error";
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => {
                *this.outcome = "complete";
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        while this.idle.as_mut().poll(cx).is_ready() {
            let deadline = *this.last_frame + *this.idle_for;
            if Instant::now() >= deadline {
                *this.outcome = "idle timeout";
                tracing::warn!(
                    route = this.record.route.as_deref(),
                    request_id = this.record.request_id.to_str().unwrap_or("-"),
                    "{}",
                    IdleTimeout(*this.idle_for)
                );
                return Poll::Ready(Some(Err(Box::new(IdleTimeout(*this.idle_for)))));
            }
            this.idle.as_mut().reset(deadline.into());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.head {
            None => self.inner.size_hint(),
            Some(h) => {
                let rest = self.inner.size_hint();
                let n = h.data_ref().map_or(0, |d| d.len() as u64);
                let mut hint = SizeHint::new();
                // Upper first: set_lower asserts lower <= upper.
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(n));
                }
                hint.set_lower(rest.lower().saturating_add(n));
                hint
            }
        }
    }
}

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

#[derive(Default)]
struct Copy {
    chunks: Vec<Bytes>,
    len: usize,
    /// The whole body went through: the copy can stand in for it.
    complete: bool,
    /// Larger than the limit, or with trailers: there is no usable copy.
    given_up: bool,
}

/// A request body that streams to the upstream as it arrives while keeping a copy of up to
/// `limit` bytes. The chunks are shared `Bytes`, so keeping them copies no data.
pub struct KeptBody {
    inner: Incoming,
    limit: usize,
    copy: Arc<Mutex<Copy>>,
}

/// The handle to a [`KeptBody`]'s copy, held by the request path while the body is in flight.
#[derive(Clone)]
pub struct Keeper(Arc<Mutex<Copy>>);

impl KeptBody {
    pub fn new(inner: Incoming, limit: usize) -> (Self, Keeper) {
        let copy = Copy {
            complete: inner.is_end_stream(),
            ..Copy::default()
        };
        let copy = Arc::new(Mutex::new(copy));
        let keeper = Keeper(copy.clone());
        (Self { inner, limit, copy }, keeper)
    }
}

impl Keeper {
    /// The whole body, if it was sent in full and was small enough to keep.
    pub fn take(&self) -> Option<Bytes> {
        let copy = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        if !copy.complete || copy.given_up {
            return None;
        }
        if copy.chunks.len() == 1 {
            return copy.chunks.into_iter().next();
        }
        let mut all = BytesMut::with_capacity(copy.len);
        for c in &copy.chunks {
            all.extend_from_slice(c);
        }
        Some(all.freeze())
    }
}

impl Body for KeptBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            let limit = self.limit;
            let end = self.inner.is_end_stream();
            let mut copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
            match frame {
                Some(Ok(f)) => match f.data_ref() {
                    Some(data) if !copy.given_up && copy.len + data.len() <= limit => {
                        copy.len += data.len();
                        copy.chunks.push(data.clone());
                    }
                    _ => {
                        copy.given_up = true;
                        copy.chunks.clear();
                    }
                },
                Some(Err(_)) => copy.given_up = true,
                None => copy.complete = true,
            }
            copy.complete |= end;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
