//! A request body kept as it streams past, so a request refused on one key can be sent again on
//! the next.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
    pub(super) inner: Incoming,
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
    /// A copy of a body already read whole (a client's model limit was checked on it).
    pub fn whole(body: Bytes) -> Self {
        Self(Arc::new(Mutex::new(Copy {
            len: body.len(),
            chunks: vec![body],
            complete: true,
            given_up: false,
        })))
    }

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
