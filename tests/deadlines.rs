//! Deadlines that hold whatever a peer does: `response_timeout` bounds a request from the moment
//! it is handed to an HTTP/2 upstream that misbehaves (no SETTINGS, a stream limit lowered, a
//! flow-control window left shut), with the phase named; an idle HTTP/2 client connection is
//! closed even while it pings; an upload slower than `min_upload_rate` is cut with a 408; one
//! address holds at most `max_connections_per_ip` connections.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// A frame as a server writes it on stream 0.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        kind,
        flags,
        0,
        0,
        0,
        0,
    ];
    f.extend_from_slice(payload);
    f
}

fn max_streams(n: u32) -> Vec<u8> {
    let mut p = MAX_CONCURRENT_STREAMS.to_be_bytes().to_vec();
    p.extend_from_slice(&n.to_be_bytes());
    frame(SETTINGS, 0, &p)
}

/// How a scripted HTTP/2 upstream misbehaves. It never answers a request.
#[derive(Clone, Copy)]
enum Script {
    /// Sends no SETTINGS, nothing at all.
    Mute,
    /// Sends its SETTINGS (defaults: a 64 KiB window), acknowledges the client's, and never
    /// opens the window further.
    ShutWindow,
    /// Allows 100 streams, then, once the first request's HEADERS came, lowers that to 1 and
    /// says so on `lowered` when the client has acknowledged it.
    Lowers,
}

/// A TLS upstream that speaks HTTP/2 by ALPN and follows `script` on every connection.
async fn h2_upstream(script: Script, ca: &std::path::Path) -> (String, mpsc::Receiver<()>) {
    let acceptor = tls_acceptor(ca, vec![b"h2".to_vec()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (lowered_tx, lowered) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, lowered_tx) = (acceptor.clone(), lowered_tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut preface = [0u8; 24];
                if tls.read_exact(&mut preface).await.is_err() {
                    return;
                }
                match script {
                    Script::Mute => {}
                    Script::ShutWindow => tls.write_all(&frame(SETTINGS, 0, &[])).await.unwrap(),
                    Script::Lowers => tls.write_all(&max_streams(100)).await.unwrap(),
                }
                let mut lowering = false;
                loop {
                    let mut head = [0u8; 9];
                    if tls.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if tls.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let (kind, flags) = (head[3], head[4]);
                    let answer = match (script, kind, flags & ACK) {
                        (Script::Mute, ..) => None,
                        (_, SETTINGS, 0) => Some(frame(SETTINGS, ACK, &[])),
                        (Script::Lowers, HEADERS, _) if !lowering => {
                            lowering = true;
                            Some(max_streams(1))
                        }
                        (Script::Lowers, SETTINGS, ACK) if lowering => {
                            let _ = lowered_tx.send(()).await;
                            None
                        }
                        _ => None,
                    };
                    if let Some(answer) = answer {
                        let _ = tls.write_all(&answer).await;
                        let _ = tls.flush().await;
                    }
                }
            });
        }
    });
    (url, lowered)
}

async fn proxy_to(upstream: &str, dir: &std::path::Path) -> Proxy {
    let config = format!(
        "response_timeout = \"1s\"\nidle_timeout = \"1h\"\n{}ca_file = \"{}\"\n",
        simple_config(upstream, "p"),
        dir.join("ca.pem").display()
    );
    Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await
}

/// Sends a POST of `size` bytes and returns the 504's message, checking it came in time.
async fn timed_out(proxy: &Proxy, size: usize) -> String {
    let started = Instant::now();
    let url = format!("{}/v1/chat/completions", proxy.url);
    let reply = send(&client(), request("POST", &url, &[], vec![b'x'; size])).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.headers["x-keyproxy-error"], "upstream-timeout");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_post_to_an_upstream_that_never_sends_settings_gets_a_504_naming_the_connect() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (upstream, _) = h2_upstream(Script::Mute, &dir.path().join("ca.pem")).await;
        let proxy = proxy_to(&upstream, dir.path()).await;
        let msg = timed_out(&proxy, 1000).await;
        assert!(msg.contains("did not finish connecting within 1s"), "{msg}");
        assert!(msg.contains("Timed out: connect"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn a_post_into_a_shut_flow_control_window_gets_a_504_naming_the_body() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (upstream, _) = h2_upstream(Script::ShutWindow, &dir.path().join("ca.pem")).await;
        let proxy = proxy_to(&upstream, dir.path()).await;
        // 100 KB is handed to h2 whole (it buffers past the window); either way, in time.
        let msg = timed_out(&proxy, 100 * 1024).await;
        assert!(
            msg.contains("flow-control window") || msg.contains("sending the body"),
            "{msg}"
        );
        // 4 MB is not: keyproxy sees the upstream stop taking it.
        let msg = timed_out(&proxy, 4 * 1024 * 1024).await;
        assert!(msg.contains("Timed out: sending the body"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn posts_queued_behind_a_lowered_stream_limit_get_their_504_in_time() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (upstream, mut lowered) = h2_upstream(Script::Lowers, &dir.path().join("ca.pem")).await;
        let proxy = proxy_to(&upstream, dir.path()).await;
        // The first request takes the only stream the server will allow.
        let url = format!("{}/v1/chat/completions", proxy.url);
        let first = tokio::spawn(async move { get(&url, &[]).await });
        lowered.recv().await.unwrap();
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let proxy_url = proxy.url.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let url = format!("{proxy_url}/v1/chat/completions");
                    let reply = send(
                        &client(),
                        request("POST", &url, &[], vec![b'x'; 256 * 1024]),
                    )
                    .await;
                    (reply, started.elapsed())
                })
            })
            .collect();
        let mut messages = Vec::new();
        for q in queued {
            let (reply, took) = q.await.unwrap();
            assert_eq!(reply.status, 504, "{}", reply.text());
            assert!(took < Duration::from_secs(4), "answered after {took:?}");
            messages.push(
                reply.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert!(
            messages
                .iter()
                .all(|m| m.contains("waiting for a stream slot")),
            "{messages:?}"
        );
        assert_eq!(first.await.unwrap().status, 504);
    })
    .await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_even_while_it_pings() {
    bounded(async {
        let upstream = Mock::start(ok_handler()).await;
        let config = format!(
            "idle_timeout = \"1s\"\n{}",
            simple_config(&upstream.url, "p")
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let tcp = tokio::net::TcpStream::connect(proxy.running.local_addr)
            .await
            .unwrap();
        let (mut send_req, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Duration::from_millis(200))
                .keep_alive_while_idle(true)
                .handshake::<_, http_body_util::Full<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get(format!("{}/v1/models", proxy.url))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = send_req.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        drop(resp);
        // No stream is open now; pings go both ways every 200 ms.
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
        assert!(ended.is_ok(), "the connection was still open after 5 s");
        assert!(started.elapsed() >= Duration::from_millis(500));
    })
    .await;
}

#[tokio::test]
async fn an_upload_slower_than_min_upload_rate_is_cut_with_a_408() {
    bounded(async {
        let upstream = Mock::start(ok_handler()).await;
        let config = format!(
            "header_read_timeout = \"1s\"\nidle_timeout = \"1h\"\n{}",
            simple_config(&upstream.url, "p")
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let tcp = tokio::net::TcpStream::connect(proxy.running.local_addr)
            .await
            .unwrap();
        let (mut rd, mut wr) = tcp.into_split();
        wr.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n",
        )
        .await
        .unwrap();
        let started = Instant::now();
        // One byte every 200 ms: never a pause of idle_timeout, far below 1 KiB/s.
        let trickle = async {
            for _ in 0..100 {
                if wr.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            std::future::pending::<()>().await
        };
        let mut answer = vec![0u8; 4096];
        let n = tokio::select! {
            n = rd.read(&mut answer) => n.unwrap(),
            () = trickle => unreachable!(),
            () = tokio::time::sleep(Duration::from_secs(6)) => panic!("no answer within 6 s"),
        };
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("min_upload_rate"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(6));
        // The mock records a request whose body broke off, with what it got of it.
        assert!(
            upstream.received().iter().all(|r| r.body.len() < 100),
            "the upstream never got the whole body"
        );
    })
    .await;
}

#[tokio::test]
async fn one_address_holds_at_most_max_connections_per_ip() {
    bounded(async {
        let upstream = Mock::start(ok_handler()).await;
        let config = format!(
            "max_connections_per_ip = 2\n{}",
            simple_config(&upstream.url, "p")
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let request = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut tcp = tokio::net::TcpStream::connect(proxy.running.local_addr)
                .await
                .unwrap();
            tcp.write_all(request).await.unwrap();
            let mut buf = [0u8; 12];
            tcp.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"HTTP/1.1 200");
            held.push(tcp);
        }
        let mut third = tokio::net::TcpStream::connect(proxy.running.local_addr)
            .await
            .unwrap();
        let _ = third.write_all(request).await;
        let mut buf = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the third connection was served: {read:?}"
        );
        drop(held);
    })
    .await;
}
