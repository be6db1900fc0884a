//! The body keyproxy sends to a client. An enum rather than a boxed body: forwarding costs no
//! allocation, and a local reply is a single `Full` chunk.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

use super::access_log::AccessRecord;
use super::bill::Bill;
use super::h2::Lease;
use crate::rt::burst::Bursts;

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
        // The stream's place on its upstream HTTP/2 connection, given back when this drops.
        lease: Lease,
        // Reads what the answer used as it passes and charges it when the answer ends or is
        // dropped; boxed, so an answer without one costs a word.
        usage: Option<Box<Bill>>,
    }

    impl PinnedDrop for Streamed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(usage) = this.usage.take() {
                usage.done();
            }
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
            lease: Lease::default(),
            usage: None,
        }
    }
}

impl Streamed {
    /// Sends `head` before the rest of the body.
    pub fn with_head(mut self, head: Option<Frame<Bytes>>) -> Self {
        self.head = head.filter(|h| h.data_ref().is_none_or(|d| !d.is_empty()));
        self
    }

    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = lease;
        self
    }

    /// Reads the answer's usage, from its first bytes (already read) on.
    pub fn with_usage(mut self, usage: Option<Bill>) -> Self {
        self.usage = usage.map(Box::new);
        if let (Some(u), Some(data)) = (
            self.usage.as_mut(),
            self.head.as_ref().and_then(Frame::data_ref),
        ) {
            u.feed(data);
        }
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
                // Counted before the last bytes leave, so the client's next request sees it.
                if let Some(usage) = this.usage.take() {
                    usage.done();
                }
            }
            return Poll::Ready(Some(Ok(head)));
        }
        match Pin::new(&mut *this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                    if let Some(usage) = this.usage.as_mut() {
                        usage.feed(data);
                    }
                }
                // Reading the clock per frame is cheaper than re-arming the timer per frame:
                // the timer is moved only when it fires early.
                *this.last_frame = Instant::now();
                if this.inner.is_end_stream() {
                    *this.outcome = "complete";
                    // Counted before the last bytes leave, so the client's next request sees it.
                    if let Some(usage) = this.usage.take() {
                        usage.done();
                    }
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                *this.outcome = "upstream error";
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => {
                *this.outcome = "complete";
                // Counted before the last bytes leave, so the client's next request sees it.
                if let Some(usage) = this.usage.take() {
                    usage.done();
                }
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
