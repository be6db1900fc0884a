//! A WebSocket after its `101`: the client's and the upstream's upgraded connections joined
//! with `copy_bidirectional`, byte for byte (no frame is parsed), until either side closes,
//! nothing moves for `idle_timeout`, or shutdown cuts it; then its one access record.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::access_log::AccessRecord;
use crate::metrics::Metrics;

/// One relayed socket: what its record and the metrics need when it ends.
pub(super) struct Socket {
    record: AccessRecord,
    idle: Duration,
    open: Open,
    metrics: Arc<Metrics>,
}

impl Socket {
    /// Counted among the open sockets from now until it ends.
    pub(super) fn new(
        record: AccessRecord,
        idle: Duration,
        sockets: &Sockets,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            record,
            idle,
            open: sockets.open(),
            metrics,
        }
    }

    /// Joins the two upgraded connections until either side closes, nothing moves for `idle`,
    /// or shutdown cuts it (after the grace period); then writes the record.
    pub(super) async fn relay(mut self, client: OnUpgrade, upstream: OnUpgrade) {
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            _ => {
                self.record.socket_ended(0, 0, "upgrade failed");
                return;
            }
        };
        let moved = Arc::new(Moved::new());
        let mut client = Counted {
            io: TokioIo::new(client),
            moved: moved.clone(),
            from_client: true,
        };
        let mut upstream = Counted {
            io: TokioIo::new(upstream),
            moved: moved.clone(),
            from_client: false,
        };
        let mut cut = self.open.sockets.cut.subscribe();
        let outcome = {
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            loop {
                let quiet_until = moved.last() + self.idle;
                tokio::select! {
                    done = &mut copy => break match done {
                        Ok(_) => "closed",
                        Err(_) => "connection broke",
                    },
                    () = tokio::time::sleep_until(quiet_until.into()) => {
                        if moved.last() + self.idle <= Instant::now() {
                            break "idle timeout";
                        }
                    }
                    _ = cut.wait_for(|cut| *cut) => break "cut at shutdown",
                }
            }
        };
        let sent = moved.sent.load(Ordering::Relaxed);
        let received = moved.received.load(Ordering::Relaxed);
        self.metrics.response_bytes.inc_by(received);
        self.record.socket_ended(sent, received, outcome);
    }
}

/// Bytes each way and the last time any moved, shared by the two halves of one socket.
struct Moved {
    started: Instant,
    last_ms: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Moved {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// One side of the relay, counting what is read from it.
struct Counted<T> {
    io: T,
    moved: Arc<Moved>,
    from_client: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            let moved = &self.moved;
            let counter = match self.from_client {
                true => &moved.sent,
                false => &moved.received,
            };
            counter.fetch_add(n, Ordering::Relaxed);
            let ms = moved.started.elapsed().as_millis() as u64;
            moved.last_ms.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The open sockets, which shutdown waits for through its grace period and then cuts: an
/// upgraded connection has left hyper's graceful watch.
#[derive(Clone, Default)]
pub struct Sockets {
    inner: Arc<SocketsInner>,
}

struct SocketsInner {
    open: watch::Sender<usize>,
    cut: watch::Sender<bool>,
}

impl Default for SocketsInner {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(0),
            cut: watch::Sender::new(false),
        }
    }
}

impl Sockets {
    /// Returns once no socket is open.
    pub async fn all_closed(&self) {
        let mut open = self.inner.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Cuts every open socket, and returns once each has written its record, or after `within`.
    pub async fn cut(&self, within: Duration) {
        self.inner.cut.send_replace(true);
        let _ = tokio::time::timeout(within, self.all_closed()).await;
    }

    fn open(&self) -> Open {
        self.inner.open.send_modify(|n| *n += 1);
        Open {
            sockets: self.inner.clone(),
        }
    }
}

/// One open socket, counted until dropped.
struct Open {
    sockets: Arc<SocketsInner>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.sockets.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}
