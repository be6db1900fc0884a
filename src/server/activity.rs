//! Deadlines for a client connection as a whole, whatever protocol it speaks.
//!
//! hyper's `header_read_timeout` covers HTTP/1 request heads only. An HTTP/2 client that sends
//! the preface and SETTINGS and then nothing, or a HEADERS frame it never finishes, or that keeps
//! an idle connection open (pinging it, so bytes move), would hold a socket for ever (found by
//! adversarial runs). So the connection counts its open streams, from a request's head to the
//! end of its response body, and is closed when it has not delivered a first request within
//! `header_read_timeout`, or has had no stream open for `idle_timeout`. A stream that is open
//! is bounded by the deadlines of its own body, both ways.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::rt::clock::now_ms;

/// What a connection has done lately; shared by its request handlers.
#[derive(Debug)]
pub struct Activity {
    /// When the last stream opened or closed.
    last_ms: AtomicU64,
    requested: AtomicBool,
    /// Streams open: from a request's head to the end (or drop) of its response body.
    open: AtomicUsize,
}

/// A stream of the connection that is open; closes when dropped.
pub struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            last_ms: AtomicU64::new(now_ms()),
            requested: AtomicBool::new(false),
            open: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A request head arrived: the connection has shown it is a client, not a squatter. The
    /// connection is not idle until the request's response body is done with.
    pub fn request(self: &Arc<Self>) -> Open {
        if !self.requested.load(Ordering::Relaxed) {
            self.requested.store(true, Ordering::Relaxed);
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    /// How long until the connection is due to be closed, or `None` when it is due now: no
    /// request within `first_request`, or no stream open for `idle`.
    pub fn due_in(
        &self,
        started: Instant,
        first_request: Duration,
        idle: Duration,
    ) -> Option<Duration> {
        if !self.requested.load(Ordering::Relaxed) {
            // Looked at again within `idle` at most: a request that arrives meanwhile starts
            // the idle clock, and the connection must not sleep past it.
            return first_request
                .checked_sub(started.elapsed())
                .filter(|d| !d.is_zero())
                .map(|d| d.min(idle));
        }
        if self.open.load(Ordering::Relaxed) > 0 {
            return Some(idle);
        }
        let quiet =
            Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)));
        idle.checked_sub(quiet).filter(|d| !d.is_zero())
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its stream counted as open until hyper is done with it.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        open: Open,
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, open: Open) -> Self {
        Self { body, open }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
