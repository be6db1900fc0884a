//! An HTTP/1.1 upstream written on TCP, so a spec decides exactly when it answers, reads the
//! request body and hangs up: what it saw (request line, Host, body length) and how many
//! connections it accepted are recorded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

/// When the upstream answers and hangs up.
#[derive(Clone, Copy, PartialEq)]
pub enum Style {
    /// Answers after the whole request, keeps the connection.
    KeepAlive,
    /// Answers, then closes the connection without having said `Connection: close`.
    CloseAfterAnswer,
    /// Answers as soon as the head is read, then reads the body to its end, keeps the connection.
    AnswerEarly,
    /// Never answers the first request of its first connection, and counts it as hung up on
    /// when keyproxy closes that connection; answers the rest as `KeepAlive`.
    HoldFirst,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub line: String,
    pub host: Option<String>,
    pub body: usize,
    /// Which connection, counted from 1 in the order they were accepted.
    pub conn: usize,
}

pub struct RawUpstream {
    pub url: String,
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    close_idle: watch::Sender<u64>,
    idle_closed: watch::Receiver<usize>,
    requests: watch::Receiver<usize>,
    /// `HoldFirst`: 1 once the held request is in, 2 once keyproxy has hung up on it.
    held: watch::Receiver<usize>,
}

struct Shared {
    style: Style,
    seen: Arc<Mutex<Vec<Seen>>>,
    close_idle: watch::Sender<u64>,
    idle_closed: watch::Sender<usize>,
    requests: watch::Sender<usize>,
    held: watch::Sender<usize>,
}

impl RawUpstream {
    pub async fn start(style: Style) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (close_idle, _) = watch::channel(0u64);
        let (tx, idle_closed) = watch::channel(0);
        let (requests_tx, requests) = watch::channel(0);
        let (held_tx, held) = watch::channel(0);
        let shared = Arc::new(Shared {
            style,
            seen: seen.clone(),
            close_idle: close_idle.clone(),
            idle_closed: tx,
            requests: requests_tx,
            held: held_tx,
        });
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(conn, n, shared.clone()));
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            accepted,
            seen,
            close_idle,
            idle_closed,
            requests,
            held,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests have been read to the end of their bodies.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut requests = self.requests.clone();
        requests
            .wait_for(|seen| *seen >= n)
            .await
            .expect("upstream gone");
    }

    /// Waits until the request held (`HoldFirst`) has arrived.
    pub async fn wait_for_held(&self) {
        let mut held = self.held.clone();
        held.wait_for(|stage| *stage >= 1)
            .await
            .expect("upstream gone");
    }

    /// Waits until keyproxy has closed the connection whose request was held.
    pub async fn wait_for_hang_up(&self) {
        let mut held = self.held.clone();
        held.wait_for(|stage| *stage >= 2)
            .await
            .expect("upstream gone");
    }

    /// Closes every connection waiting for its next request, as a server's idle timeout does,
    /// and returns once at least one has been closed.
    pub async fn close_idle_connections(&mut self) {
        let before = *self.idle_closed.borrow_and_update();
        self.close_idle.send_modify(|g| *g += 1);
        self.idle_closed
            .wait_for(|n| *n > before)
            .await
            .expect("upstream gone");
    }
}

async fn serve(mut conn: TcpStream, number: usize, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    // Bumped by the spec: a connection idle since its last answer then closes.
    let mut close = shared.close_idle.subscribe();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let idle = buf.is_empty();
            let mut chunk = [0u8; 16384];
            let n = tokio::select! {
                n = conn.read(&mut chunk) => n.unwrap_or(0),
                _ = close.changed(), if idle => {
                    drop(conn);
                    shared.idle_closed.send_modify(|n| *n += 1);
                    return;
                }
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or_default().to_owned();
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let host = header("host");
        if shared.style == Style::HoldFirst && number == 1 {
            shared.held.send_replace(1);
            let mut rest = [0u8; 4096];
            while matches!(conn.read(&mut rest).await, Ok(n) if n > 0) {}
            shared.held.send_replace(2);
            return;
        }
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if shared.style == Style::AnswerEarly && conn.write_all(ANSWER).await.is_err() {
            return;
        }
        let Some(body) = read_body(&mut conn, &mut buf, chunked, length).await else {
            return;
        };
        shared.seen.lock().unwrap().push(Seen {
            line,
            host,
            body,
            conn: number,
        });
        shared.requests.send_modify(|n| *n += 1);
        close.borrow_and_update();
        if shared.style != Style::AnswerEarly && conn.write_all(ANSWER).await.is_err() {
            return;
        }
        if shared.style == Style::CloseAfterAnswer {
            return;
        }
    }
}

/// Reads a body of `length` bytes, or chunked, returning its length.
async fn read_body(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunked: bool,
    length: usize,
) -> Option<usize> {
    if !chunked {
        fill(conn, buf, length).await?;
        buf.drain(..length);
        return Some(length);
    }
    let mut total = 0;
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            let at = buf.len() + 1;
            fill(conn, buf, at).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        // The size line, the data and its CRLF; the last chunk is followed by an empty line.
        let whole = line_end + 2 + size + 2;
        fill(conn, buf, whole).await?;
        buf.drain(..whole);
        total += size;
        if size == 0 {
            return Some(total);
        }
    }
}

async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>, at_least: usize) -> Option<()> {
    let mut chunk = [0u8; 65536];
    while buf.len() < at_least {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
