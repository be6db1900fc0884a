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
use super::include_usage::UsageHider;
use crate::rt::burst::Bursts;

/// What keyproxy sends to a client: the upstream's body as it streams in, or a local reply.
/// A streamed body is boxed: the response is moved through hyper's dispatcher and every future
/// above it several times per request, and `Streamed` is most of a kilobyte.
pub type ResponseBody = Either<Pin<Box<Streamed>>, Full<Bytes>>;

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
        // Keeps from the client the usage keyproxy asked for on its behalf.
        hider: Option<Box<UsageHider>>,
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
            hider: None,
        }
    }
}

impl Streamed {
    /// Sends `head` before the rest of the body.
    pub fn with_head(&mut self, head: Option<Frame<Bytes>>) -> &mut Self {
        self.head = head.filter(|h| h.data_ref().is_none_or(|d| !d.is_empty()));
        self
    }

    pub fn with_lease(&mut self, lease: Lease) -> &mut Self {
        self.lease = lease;
        self
    }

    /// Reads the answer's usage, from its first bytes (already read) on.
    pub fn with_usage(&mut self, usage: Option<Bill>) -> &mut Self {
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

impl Streamed {
    /// Keeps from the client what asking for usage on its behalf added, from the first bytes
    /// (already read, and already seen by the usage meter) on.
    pub(super) fn hiding_usage(&mut self, hide: bool) -> &mut Self {
        if hide {
            let mut hider = Box::<UsageHider>::default();
            self.head = self.head.take().map(|head| hider.hide(head, false));
            self.hider = Some(hider);
        }
        self
    }
}

fn is_empty(frame: &Frame<Bytes>) -> bool {
    frame.data_ref().is_some_and(Bytes::is_empty)
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
        loop {
            // What the hider held was the last frame: the upstream body has already ended.
            if this.hider.as_ref().is_some_and(|h| h.finished()) {
                return Poll::Ready(None);
            }
            if let Some(head) = this.head.take() {
                let ended = this.inner.is_end_stream();
                let head = match this.hider.as_mut() {
                    Some(hider) if ended => hider.ending(head),
                    _ => head,
                };
                *this.bytes += head.data_ref().map_or(0, |d| d.len() as u64);
                if ended {
                    *this.outcome = "complete";
                    // Counted before the last bytes leave, so the client's next request sees it.
                    if let Some(usage) = this.usage.take() {
                        usage.done();
                    }
                }
                match (is_empty(&head), ended) {
                    (false, _) => return Poll::Ready(Some(Ok(head))),
                    (true, true) => return Poll::Ready(None),
                    (true, false) => {}
                }
            }
            match Pin::new(&mut *this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(usage), Some(data)) = (this.usage.as_mut(), frame.data_ref()) {
                        usage.feed(data);
                    }
                    // Reading the clock per frame is cheaper than re-arming the timer per frame:
                    // the timer is moved only when it fires early.
                    *this.last_frame = Instant::now();
                    let ended = this.inner.is_end_stream();
                    let frame = match this.hider.as_mut() {
                        Some(hider) => hider.hide(frame, ended),
                        None => frame,
                    };
                    *this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if ended {
                        *this.outcome = "complete";
                        // Counted before the last bytes leave, so the client's next request sees it.
                        if let Some(usage) = this.usage.take() {
                            usage.done();
                        }
                    }
                    match (is_empty(&frame), ended) {
                        (false, _) => return Poll::Ready(Some(Ok(frame))),
                        (true, true) => return Poll::Ready(None),
                        // Everything in it was kept from the client: read on.
                        (true, false) => continue,
                    }
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
                    let rest = this.hider.as_mut().map(|h| h.finish()).unwrap_or_default();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    *this.bytes += rest.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
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
            return Poll::Pending;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.hider.is_some() {
            // What it keeps from the client is unknown until read: no length to promise.
            return SizeHint::default();
        }
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
