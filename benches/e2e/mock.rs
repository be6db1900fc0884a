//! The mock upstream: plain HTTP/1.1, or TLS offering `h2` and `http/1.1` by ALPN with a
//! certificate from a CA generated for the run. `/chat/completions` answers JSON; `/stream`
//! sends 20 SSE events back to back; `/paced` sends 20 events 25 ms apart, each stamped with the
//! time it left; `/hold` sends one event and waits for `release`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::tls::tls_acceptor;

pub const CHAT_RESPONSE: &str = r#"{"id":"gen-1732442400-abcdefghijklmnop","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion","created":1732442400,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Requests pass through,\nkeys stay home behind the wall,\nstreams flow, none the wiser.","refusal":null}}],"usage":{"prompt_tokens":27,"completion_tokens":22,"total_tokens":49}}"#;
const EVENT: &[u8] = b"data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n";
/// The last event, as OpenRouter ends a stream: the usage with its cost.
const USAGE_EVENT: &[u8] = b"data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"model\":\"openai/gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":27,\"completion_tokens\":20,\"total_tokens\":47,\"cost\":0.0000161}}\n\n";
pub const EVENTS: usize = 20;
pub const PACE: Duration = Duration::from_millis(25);

/// The clock paced events are stamped with; the load generator reads the same one.
pub fn micros() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The event `/paced` sends: its send time in microseconds, then the usual chunk.
pub fn stamp_of(event: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(event).ok()?;
    let rest = text.strip_prefix("data: {\"t\":")?;
    rest[..rest.find(',')?].parse().ok()
}

enum Pacing {
    BackToBack,
    Every(Pin<Box<tokio::time::Sleep>>),
    Hold(Option<Pin<Box<dyn Future<Output = ()> + Send>>>),
}

struct Events {
    left: usize,
    pacing: Pacing,
}

impl Body for Events {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let first = self.left == EVENTS;
        match &mut self.pacing {
            Pacing::BackToBack => {}
            Pacing::Hold(hold) => {
                if let (false, Some(h)) = (first, hold.as_mut()) {
                    if h.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *hold = None;
                }
            }
            Pacing::Every(sleep) => {
                if !first {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let next = sleep.deadline() + PACE;
                    sleep.as_mut().reset(next);
                }
                self.left -= 1;
                let event = format!(
                    "data: {{\"t\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word \"}}}}]}}\n\n",
                    micros()
                );
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))));
            }
        }
        self.left -= 1;
        let event = if self.left == 0 { USAGE_EVENT } else { EVENT };
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(event)))))
    }
}

pub struct Mock {
    pub addr: SocketAddr,
    /// `http://…` or `https://…`.
    pub url: String,
    /// The CA that signed a TLS mock's certificate.
    pub ca: Option<PathBuf>,
    pub connections: Arc<AtomicUsize>,
    pub release: Arc<Notify>,
}

impl Mock {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

fn respond(path: &str, release: Arc<Notify>) -> Response<Either<Full<Bytes>, Events>> {
    if path.ends_with("/chat/completions") {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Either::Left(Full::new(Bytes::from_static(
                CHAT_RESPONSE.as_bytes(),
            ))))
            .unwrap();
    }
    let pacing = if path.ends_with("/hold") {
        Pacing::Hold(Some(Box::pin(async move { release.notified().await })))
    } else if path.ends_with("/paced") {
        Pacing::Every(Box::pin(tokio::time::sleep(PACE)))
    } else {
        Pacing::BackToBack
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Either::Right(Events {
            left: EVENTS,
            pacing,
        }))
        .unwrap()
}

/// `tls`: the HTTP/2 streams allowed per connection (hyper's default is 200), with a CA written
/// into `dir`; `None`: plain HTTP/1.1.
pub async fn start(tls: Option<(u32, &Path)>) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (acceptor, ca, max_streams) = match tls {
        Some((max_streams, dir)) => {
            let ca = dir.join("ca.pem");
            let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            (Some(tls_acceptor(&ca, alpn)), Some(ca), max_streams)
        }
        None => (None, None, 0),
    };
    let (count, rel) = (connections.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            count.fetch_add(1, Ordering::Relaxed);
            let rel = rel.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let rel = rel.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(respond(&path, rel))
                    }
                });
                match acceptor {
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let mut builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        builder.http2().max_concurrent_streams(max_streams);
                        let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
            });
        }
    });
    let scheme = if ca.is_some() { "https" } else { "http" };
    Mock {
        addr,
        url: format!("{scheme}://{addr}"),
        ca,
        connections,
        release,
    }
}
