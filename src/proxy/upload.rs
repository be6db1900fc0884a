//! The body keyproxy sends to an upstream: the client's, as it streams in, possibly with a copy
//! kept for a retry, or that copy replayed. Its faults are the client's, told apart from the
//! upstream's; and it says who owes the next move, so that the request path knows, when its
//! deadline passes, whether the upstream or the client is holding the request up.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

use super::error::TimeoutPhase;
use super::kept::KeptBody;
use crate::rt::clock;

/// What keyproxy sends to an upstream; the bytes sent are counted when it is dropped. A client
/// body that breaks (bad chunked encoding), stalls for `idle_timeout` or comes slower than
/// `min_upload_rate` ends the request, and [`ClientFault`] tells the request path it was the
/// client's fault, not the upstream's.
pub struct UpstreamBody {
    kind: Outbound,
    sent: u64,
    meter: Counter,
    watch: Option<Watch>,
    fault: Arc<ClientFault>,
}

/// The client's deadlines for its body. Only the time keyproxy spends waiting on the client
/// counts: while the upstream is not taking the body (no stream slot, no flow-control window),
/// the upstream's deadline runs instead.
struct Watch {
    sleep: Pin<Box<Sleep>>,
    limits: UploadLimits,
    /// Time spent so far waiting for the client's bytes.
    waited: Duration,
    /// Since when the client owes the next bytes, if it does.
    waiting_since: Option<tokio::time::Instant>,
}

/// How slow a client's upload may be: no pause longer than `stall`, and, once `grace` has been
/// spent waiting on it, on average at least `min_rate` bytes a second (`grace` plus a second
/// per `min_rate` bytes received, as Apache's mod_reqtimeout `MinRate`). 0: no minimum.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub stall: Duration,
    pub min_rate: u64,
    pub grace: Duration,
}

impl UploadLimits {
    /// The client's time allowed for `received` bytes.
    fn allowed(&self, received: u64) -> Duration {
        match self.min_rate {
            0 => Duration::MAX,
            rate => self
                .grace
                .saturating_add(Duration::from_millis(received.saturating_mul(1000) / rate)),
        }
    }
}

/// What went wrong with the client's request body, if anything, whether it was all sent, and
/// how far the request got: the request path's deadline reads it to say which phase the
/// upstream missed.
#[derive(Debug, Default)]
pub struct ClientFault {
    fault: AtomicU8,
    body_done: AtomicBool,
    /// Where the body is: [`NOT_POLLED`], [`WAITING_CLIENT`] or [`HANDED_ON`].
    body: AtomicU8,
    /// When the body last handed on a frame or ended, in `rt::clock` milliseconds (0: never).
    moved_ms: AtomicU64,
    /// How far the upstream connection got: [`HANDED`], [`CONNECTING`] or [`ON_STREAM`].
    stage: AtomicU8,
}

const NOT_POLLED: u8 = 0;
const WAITING_CLIENT: u8 = 1;
const HANDED_ON: u8 = 2;

const HANDED: u8 = 0;
const CONNECTING: u8 = 1;
const ON_STREAM: u8 = 2;

/// Who holds a request up when its deadline passes.
pub enum Owed {
    /// The client has not sent the rest of its body: its own deadlines apply.
    Client,
    /// The upstream, in `phase`, since `since_ms` (`rt::clock`; 0: since the request was
    /// handed over).
    Upstream { phase: TimeoutPhase, since_ms: u64 },
}

impl ClientFault {
    const MALFORMED: u8 = 1;
    const STALLED: u8 = 2;
    const TOO_SLOW: u8 = 3;

    fn set(&self, fault: u8) {
        self.fault.store(fault, Ordering::Relaxed);
        self.sent();
    }

    fn sent(&self) {
        self.body_done.store(true, Ordering::Relaxed);
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

    pub fn too_slow(&self) -> bool {
        self.fault.load(Ordering::Relaxed) == Self::TOO_SLOW
    }

    /// The request waits for a connection to the upstream to be made.
    pub fn connecting(&self) {
        self.stage.store(CONNECTING, Ordering::Relaxed);
    }

    /// The request has a stream on a connection (it may still wait for the server to open it).
    pub fn on_stream(&self) {
        self.stage.store(ON_STREAM, Ordering::Relaxed);
    }

    /// The request goes through the HTTP/1.1 client, which connects on its own.
    pub fn handed(&self) {
        self.stage.store(HANDED, Ordering::Relaxed);
    }

    /// Who holds the request up now.
    pub fn owed(&self) -> Owed {
        let stage = self.stage.load(Ordering::Relaxed);
        let moved = self.moved_ms.load(Ordering::Relaxed);
        let upstream = |phase, since_ms| Owed::Upstream { phase, since_ms };
        if stage == CONNECTING {
            return upstream(TimeoutPhase::Connecting, 0);
        }
        if self.body_done() {
            // hyper hands an HTTP/2 body to h2 whole, whatever the window, and h2 opens the
            // stream when the server allows: from here, which of the three it waits for is
            // h2's to know, not keyproxy's.
            let phase = match stage {
                ON_STREAM => TimeoutPhase::OnStream,
                _ => TimeoutPhase::ResponseHead,
            };
            return upstream(phase, moved);
        }
        match self.body.load(Ordering::Relaxed) {
            WAITING_CLIENT => Owed::Client,
            // On HTTP/2 a stream not yet opened and a shut window look the same from here: the
            // first chunk in hyper's hands, waiting for capacity.
            HANDED_ON if stage == ON_STREAM => upstream(TimeoutPhase::StreamBody, moved),
            HANDED_ON => upstream(TimeoutPhase::SendingBody, moved),
            // hyper polls a body as soon as its stream is made; one on a stream and never
            // polled waits in hyper's queue behind the server's stream limit.
            NOT_POLLED if stage == ON_STREAM => upstream(TimeoutPhase::StreamSlot, 0),
            _ => upstream(TimeoutPhase::Connecting, 0),
        }
    }
}

/// The client sent no body bytes for `idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
pub struct BodyStalled(Duration);

/// The client sent its body slower than `min_upload_rate`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent its request body slower than {0} bytes a second")]
pub struct BodyTooSlow(u64);

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
            watch: None,
            fault: Arc::default(),
        }
    }

    /// Cuts the body when the client is slower than `limits`; faults are noted in `fault`.
    pub fn watched(mut self, limits: UploadLimits, fault: Arc<ClientFault>) -> Self {
        if !matches!(self.kind, Outbound::Replay(_)) && !self.is_end_stream() {
            self.watch = Some(Watch {
                sleep: Box::pin(tokio::time::sleep(limits.stall)),
                limits,
                waited: Duration::ZERO,
                waiting_since: None,
            });
        } else {
            fault.sent();
        }
        self.fault = fault;
        self
    }

    /// What the request path reads to tell who holds the request up.
    pub fn progress(&self) -> Arc<ClientFault> {
        self.fault.clone()
    }
}

impl Watch {
    /// The client delivered: the time it kept keyproxy waiting is added up.
    fn delivered(&mut self, now: tokio::time::Instant) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
    }

    /// The client owes bytes: `Some` when it has owed them too long.
    fn overdue(&mut self, cx: &mut Context<'_>, received: u64) -> Option<u8> {
        let this = self;
        let since = match this.waiting_since {
            Some(since) => since,
            None => {
                let now = tokio::time::Instant::now();
                this.waiting_since = Some(now);
                let left = this
                    .limits
                    .allowed(received)
                    .saturating_sub(this.waited)
                    .min(this.limits.stall);
                this.sleep.as_mut().reset(now + left);
                now
            }
        };
        if this.sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        Some(match since.elapsed() >= this.limits.stall {
            true => ClientFault::STALLED,
            false => ClientFault::TOO_SLOW,
        })
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
                if let Some(watch) = &mut this.watch {
                    let now = Instant::now();
                    watch.delivered(now.into());
                    this.fault.moved_ms.store(clock::ms(now), Ordering::Relaxed);
                }
                this.fault.body.store(HANDED_ON, Ordering::Relaxed);
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
                if this.watch.is_some() {
                    this.fault
                        .moved_ms
                        .store(clock::now_ms(), Ordering::Relaxed);
                }
                this.fault.sent();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.fault.body.store(WAITING_CLIENT, Ordering::Relaxed);
                let Some(watch) = &mut this.watch else {
                    return Poll::Pending;
                };
                let Some(fault) = watch.overdue(cx, this.sent) else {
                    return Poll::Pending;
                };
                this.fault.set(fault);
                let error: Self::Error = match fault {
                    ClientFault::STALLED => Box::new(BodyStalled(watch.limits.stall)),
                    _ => Box::new(BodyTooSlow(watch.limits.min_rate)),
                };
                Poll::Ready(Some(Err(error)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(owed: Owed) -> Option<TimeoutPhase> {
        match owed {
            Owed::Client => None,
            Owed::Upstream { phase, .. } => Some(phase),
        }
    }

    #[test]
    fn the_phase_follows_the_request_and_its_body() {
        let f = ClientFault::default();
        assert_eq!(phase(f.owed()), Some(TimeoutPhase::Connecting));
        f.on_stream();
        assert_eq!(phase(f.owed()), Some(TimeoutPhase::StreamSlot));
        f.body.store(WAITING_CLIENT, Ordering::Relaxed);
        assert_eq!(phase(f.owed()), None, "the client owes its body");
        f.body.store(HANDED_ON, Ordering::Relaxed);
        assert_eq!(phase(f.owed()), Some(TimeoutPhase::StreamBody));
        f.handed();
        assert_eq!(phase(f.owed()), Some(TimeoutPhase::SendingBody));
        f.on_stream();
        f.sent();
        assert_eq!(phase(f.owed()), Some(TimeoutPhase::OnStream));
        f.handed();
        assert_eq!(phase(f.owed()), Some(TimeoutPhase::ResponseHead));
    }

    #[test]
    fn a_slow_upload_gets_the_grace_and_a_second_per_min_rate_bytes() {
        let limits = UploadLimits {
            stall: Duration::from_secs(300),
            min_rate: 1024,
            grace: Duration::from_secs(30),
        };
        assert_eq!(limits.allowed(0), Duration::from_secs(30));
        assert_eq!(limits.allowed(10 * 1024), Duration::from_secs(40));
        let none = UploadLimits {
            min_rate: 0,
            ..limits
        };
        assert_eq!(none.allowed(0), Duration::MAX);
    }
}
