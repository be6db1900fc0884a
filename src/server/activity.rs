//! Deadlines for a client connection as a whole, whatever protocol it speaks.
//!
//! hyper's `header_read_timeout` covers HTTP/1 request heads only. An HTTP/2 client that sends
//! the preface and SETTINGS and then nothing, or a HEADERS frame it never finishes, or that keeps
//! an idle connection open, would hold a socket for ever (found by adversarial runs). So every
//! connection's socket is wrapped in [`Active`], which notes when bytes last moved either way and
//! whether a request has begun, and the connection is closed when it has not delivered a first
//! request within `header_read_timeout`, or has moved no byte for `idle_timeout`. A stream that
//! is sending is never idle: its writes count.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a connection has done lately; shared by its socket and its request handler.
#[derive(Debug)]
pub struct Activity {
    last_ms: AtomicU64,
    requested: AtomicBool,
    /// Requests waiting for their response head: an upstream may think for a while.
    waiting: AtomicUsize,
}

/// A request of the connection that is waiting for its response head; ends when dropped.
pub struct Waiting(Arc<Activity>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            last_ms: AtomicU64::new(now_ms()),
            requested: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A request head arrived: the connection has shown it is a client, not a squatter. The
    /// connection is not idle until the request has its response head.
    pub fn request(self: &Arc<Self>) -> Waiting {
        if !self.requested.load(Ordering::Relaxed) {
            self.requested.store(true, Ordering::Relaxed);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.clone())
    }

    /// How long until the connection is due to be closed, or `None` when it is due now: no
    /// request within `first_request`, or no byte moved for `idle`.
    pub fn due_in(
        &self,
        started: Instant,
        first_request: Duration,
        idle: Duration,
    ) -> Option<Duration> {
        if !self.requested.load(Ordering::Relaxed) {
            return first_request
                .checked_sub(started.elapsed())
                .filter(|d| !d.is_zero());
        }
        if self.waiting.load(Ordering::Relaxed) > 0 {
            return Some(idle);
        }
        let quiet =
            Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)));
        idle.checked_sub(quiet).filter(|d| !d.is_zero())
    }
}

/// A socket that tells its [`Activity`] whenever bytes move.
pub struct Active<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Active<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
