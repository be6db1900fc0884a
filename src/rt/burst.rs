//! Upstream chunks that arrive together leave together.
//!
//! hyper's HTTP/1 client hands a response body over one chunk per run of the task that reads the
//! upstream connection, and hyper's server writes out what it has whenever the body it sends is
//! not ready. So an SSE stream whose 20 events came in one read from the upstream would leave as
//! 20 writes, and cost the client 20 reads. [`Bursts`] gathers the chunks already on their way:
//! when the body has nothing ready it lets the task yield, so that the connection task can decode
//! what it has already read, and hands everything over as one chunk when a turn of the scheduler
//! brings nothing new. A chunk that arrives alone waits one turn of the scheduler, never a timer,
//! and the first chunk of a body is not held at all, so time to first byte is unchanged.
//!
//! "A turn of the scheduler" needs care: hyper may poll a body twice in one run of its task, and
//! the connection task cannot run in between. Connection tasks are wrapped in [`Counted`], which
//! numbers their runs on each thread; a body hands over only once its task has run again.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// Hand over what is gathered once it reaches this size, so that a fast stream still flows.
const MAX_GATHERED: usize = 16 * 1024;

/// Polls with nothing new before the gathered bytes go anyway, for a body polled outside a
/// [`Counted`] task (whose run number never changes).
const MAX_IDLE_POLLS: u8 = 4;

thread_local! {
    static RUNS: Cell<u64> = const { Cell::new(0) };
}

fn run_number() -> u64 {
    RUNS.with(Cell::get)
}

pin_project_lite::pin_project! {
    /// A task's future whose runs are numbered, so that a [`Bursts`] body it polls can tell a new
    /// run from a second poll within the same one.
    pub struct Counted<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Counted<F> {
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        RUNS.with(|runs| runs.set(runs.get().wrapping_add(1)));
        self.project().inner.poll(cx)
    }
}

/// Spawns hyper's tasks (HTTP/2 streams) on tokio as [`Counted`] tasks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountedExecutor;

impl<F> hyper::rt::Executor<F> for CountedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Counted::new(fut));
    }
}

pub struct Bursts<B: Body> {
    inner: B,
    gathered: BytesMut,
    /// The first chunk goes at once, so that holding never delays the first byte.
    started: bool,
    /// The run in which the task last yielded with bytes gathered, and the polls since with
    /// nothing new.
    yielded_in: Option<u64>,
    idle_polls: u8,
    /// What the inner body returned after the gathered bytes, handed over next.
    after: Option<Option<Result<Frame<Bytes>, B::Error>>>,
}

// Nothing in a `Bursts` is pinned: the inner body is polled through `Pin::new`, and the frames
// it holds back are moved out whole.
impl<B: Body + Unpin> Unpin for Bursts<B> {}

impl<B: Body> Bursts<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            gathered: BytesMut::new(),
            started: false,
            yielded_in: None,
            idle_polls: 0,
            after: None,
        }
    }

    fn hand_over(&mut self) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.yielded_in = None;
        self.idle_polls = 0;
        Poll::Ready(Some(Ok(Frame::data(self.gathered.split().freeze()))))
    }

    /// Hands over the gathered bytes first, if there are any, then `next`.
    fn then(
        &mut self,
        next: Option<Result<Frame<Bytes>, B::Error>>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.gathered.is_empty() {
            return Poll::Ready(next);
        }
        self.after = Some(next);
        self.hand_over()
    }
}

impl<B> Body for Bursts<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(next) = this.after.take() {
            return Poll::Ready(next);
        }
        loop {
            let data = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(trailers) => return this.then(Some(Ok(trailers))),
                },
                Poll::Ready(other) => return this.then(other),
                Poll::Pending if this.gathered.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    let run = run_number();
                    this.idle_polls += 1;
                    match this.yielded_in {
                        Some(then) if then != run || this.idle_polls >= MAX_IDLE_POLLS => {
                            return this.hand_over()
                        }
                        // Another poll in the same run: the connection task has not had its
                        // turn yet. (Waking again costs nothing; it keeps a body polled outside
                        // `Counted` from stalling until MAX_IDLE_POLLS.)
                        Some(_) => {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        None => {
                            this.yielded_in = Some(run);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
            };
            if this.gathered.is_empty()
                && (!this.started || this.inner.is_end_stream() || data.len() >= MAX_GATHERED)
            {
                // The first chunk, a whole body in one chunk (most chat completions), or a big
                // one: straight through, without a copy.
                this.started = true;
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            this.gathered.extend_from_slice(&data);
            this.yielded_in = None;
            this.idle_polls = 0;
            if this.inner.is_end_stream() || this.gathered.len() >= MAX_GATHERED {
                return this.hand_over();
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.after.is_none() && self.gathered.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let gathered = self.gathered.len() as u64;
        hint.set_lower(hint.lower() + gathered);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + gathered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;
    use std::time::Duration;

    type Chunk = Result<Frame<Bytes>, Infallible>;

    fn event(i: usize) -> Bytes {
        Bytes::from(format!("data: {i}\n\n"))
    }

    async fn next_data<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Option<Bytes>
    where
        B::Error: std::fmt::Debug,
    {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame within 5 s");
        frame.and_then(|f| f.unwrap().into_data().ok())
    }

    /// A body fed through a channel, as hyper's client feeds one.
    fn channel_body() -> (
        tokio::sync::mpsc::UnboundedSender<Chunk>,
        Bursts<impl Body<Data = Bytes, Error = Infallible> + Unpin>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Chunk>();
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        (tx, Bursts::new(StreamBody::new(Box::pin(stream))))
    }

    #[tokio::test]
    async fn the_first_chunk_goes_at_once_and_the_rest_of_a_burst_as_one() {
        let chunks: Vec<Chunk> = (0..20).map(|i| Ok(Frame::data(event(i)))).collect();
        let mut body = Bursts::new(StreamBody::new(futures_util::stream::iter(chunks)));
        assert_eq!(next_data(&mut body).await, Some(event(0)));
        let rest: Vec<u8> = (1..20).flat_map(|i| event(i).to_vec()).collect();
        assert_eq!(next_data(&mut body).await.as_deref(), Some(&rest[..]));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_lone_chunk_is_handed_over_in_a_counted_task() {
        let task = tokio::spawn(Counted::new(async {
            let (tx, mut body) = channel_body();
            tx.send(Ok(Frame::data(event(1)))).unwrap();
            assert_eq!(next_data(&mut body).await, Some(event(1)));
            // The sender stays open: nothing else is coming, and the chunk must not wait for it.
            tx.send(Ok(Frame::data(event(2)))).unwrap();
            assert_eq!(next_data(&mut body).await, Some(event(2)));
            drop(tx);
            assert_eq!(next_data(&mut body).await, None);
        }));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_lone_chunk_is_handed_over_outside_a_counted_task() {
        let (tx, mut body) = channel_body();
        tx.send(Ok(Frame::data(event(1)))).unwrap();
        assert_eq!(next_data(&mut body).await, Some(event(1)));
        tx.send(Ok(Frame::data(event(2)))).unwrap();
        assert_eq!(next_data(&mut body).await, Some(event(2)));
    }

    #[tokio::test]
    async fn gathered_bytes_go_before_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-done", http::HeaderValue::from_static("1"));
        let chunks: Vec<Chunk> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
            Ok(Frame::data(Bytes::from_static(b"c"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = Bursts::new(StreamBody::new(futures_util::stream::iter(chunks)));
        let collected = body.collect().await.unwrap();
        assert_eq!(
            collected.trailers().and_then(|t| t.get("x-done")),
            Some(&http::HeaderValue::from_static("1"))
        );
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"abc"));
    }
}
