//! The server's stream limit, read off the wire. hyper keeps `SETTINGS_MAX_CONCURRENT_STREAMS`
//! inside the task that drives the connection and says nothing when it arrives; the pool must
//! know it before it puts a second stream on a new connection, or a burst would queue behind a
//! limit lower than h2's default of 100. A server's connection preface is a SETTINGS frame
//! (RFC 9113 §3.4), so the first frame read from the connection carries it: this wrapper reads
//! that frame as it passes, then gets out of the way.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};

const FRAME_HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// A preface SETTINGS frame larger than this is not worth reading for one value.
const MAX_PREFACE: usize = 1024;

/// What the server allows per connection, once its preface has been read.
#[derive(Default)]
pub struct Limit {
    streams: AtomicUsize,
    known: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Limit {
    /// The server's limit; until its preface has been read, one stream.
    pub fn streams(&self) -> usize {
        match self.known.load(Ordering::Acquire) {
            true => self.streams.load(Ordering::Relaxed),
            false => 1,
        }
    }

    fn publish(&self, streams: usize) {
        self.streams.store(streams, Ordering::Relaxed);
        self.known.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Waits until the preface has been read, or the connection ended without one.
    pub async fn known(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.known.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }
}

/// A connection's reading side, watched until the server's first frame has been read.
pub struct Watched<T> {
    inner: T,
    limit: Arc<Limit>,
    /// The first frame's bytes so far; `None` once it has been read.
    preface: Option<Vec<u8>>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, limit: Arc<Limit>) -> Self {
        Self {
            inner,
            limit,
            preface: Some(Vec::with_capacity(64)),
        }
    }

    /// Takes in bytes of the preface; publishes the limit once the frame is whole.
    fn saw(&mut self, bytes: &[u8]) {
        let Some(preface) = self.preface.as_mut() else {
            return;
        };
        preface.extend_from_slice(bytes);
        if preface.len() < FRAME_HEADER {
            return;
        }
        let len =
            usize::from(preface[0]) << 16 | usize::from(preface[1]) << 8 | usize::from(preface[2]);
        if preface[3] != SETTINGS || len > MAX_PREFACE {
            // Not a preface keyproxy can read: count on h2's default, as hyper does.
            return self.done(100);
        }
        let Some(payload) = preface.get(FRAME_HEADER..FRAME_HEADER + len) else {
            return;
        };
        // Absent, the limit is none (RFC 9113 §6.5.2).
        let mut streams = usize::MAX;
        for setting in payload.chunks_exact(6) {
            if u16::from_be_bytes([setting[0], setting[1]]) == MAX_CONCURRENT_STREAMS {
                let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                streams = usize::try_from(value).unwrap_or(usize::MAX);
            }
        }
        self.done(streams);
    }

    fn done(&mut self, streams: usize) {
        self.preface = None;
        self.limit.publish(streams);
    }
}

impl<T: Read + Unpin> Read for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.preface.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut scratch = [0u8; 512];
        let room = buf.remaining().min(scratch.len());
        let mut read = ReadBuf::new(&mut scratch[..room]);
        let polled = Pin::new(&mut this.inner).poll_read(cx, read.unfilled());
        match &polled {
            Poll::Ready(Ok(())) if read.filled().is_empty() => this.done(0),
            Poll::Ready(Ok(())) => {
                buf.put_slice(read.filled());
                this.saw(read.filled());
            }
            Poll::Ready(Err(_)) => this.done(0),
            Poll::Pending => {}
        }
        polled
    }
}

impl<T: Write + Unpin> Write for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn watched() -> Watched<()> {
        Watched::new((), Arc::new(Limit::default()))
    }

    #[test]
    fn the_preface_gives_the_limit_even_in_pieces() {
        // INITIAL_WINDOW_SIZE then MAX_CONCURRENT_STREAMS = 4.
        let f = frame(SETTINGS, &[0, 4, 0, 1, 0, 0, 0, 3, 0, 0, 0, 4]);
        let mut w = watched();
        assert_eq!(w.limit.streams(), 1, "one stream until the preface is read");
        for byte in &f {
            w.saw(std::slice::from_ref(byte));
        }
        assert_eq!(w.limit.streams(), 4);
        assert!(w.preface.is_none());
    }

    #[test]
    fn no_setting_means_no_limit_and_a_strange_first_frame_means_the_default() {
        let mut w = watched();
        w.saw(&frame(SETTINGS, &[0, 4, 0, 1, 0, 0]));
        assert_eq!(w.limit.streams(), usize::MAX);
        let mut w = watched();
        w.saw(&frame(0x6, &[0; 8]));
        assert_eq!(w.limit.streams(), 100);
    }
}
