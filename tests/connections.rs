//! Every client connection is bounded, whatever the peer sends or does not: a partial HTTP/2
//! preface, a preface and SETTINGS and then silence, a HEADERS frame never finished, an idle
//! HTTP/2 connection. Each is closed by keyproxy within its deadline.

mod support;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
/// HEADERS on stream 1 with one header byte and no END_HEADERS: a CONTINUATION must follow.
const UNFINISHED_HEADERS: [u8; 10] = [0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82];

async fn proxy() -> (Mock, Proxy) {
    let up = Mock::start(ok_handler()).await;
    let config = format!(
        "header_read_timeout = \"500ms\"\nidle_timeout = \"1s\"\n{}",
        simple_config(&up.url, "p")
    );
    let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
    (up, proxy)
}

/// Waits until keyproxy closes the connection; panics if it is still open after `within`.
async fn closed_by_keyproxy(mut conn: TcpStream, within: Duration) {
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // keyproxy's SETTINGS, a GOAWAY
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "keyproxy kept the connection open for over {within:?}"
    );
}

async fn connect(proxy: &Proxy, first: &[&[u8]]) -> TcpStream {
    let mut conn = TcpStream::connect(proxy.url.trim_start_matches("http://"))
        .await
        .unwrap();
    for bytes in first {
        conn.write_all(bytes).await.unwrap();
    }
    conn
}

#[tokio::test]
async fn one_byte_of_the_http2_preface_and_a_hang_up_is_closed() {
    bounded(async {
        let (_up, proxy) = proxy().await;
        let mut conn = connect(&proxy, &[b"P"]).await;
        conn.shutdown().await.unwrap();
        closed_by_keyproxy(conn, Duration::from_secs(5)).await;
        let still = connect(&proxy, &[&PREFACE[..10]]).await;
        closed_by_keyproxy(still, Duration::from_secs(5)).await;
    })
    .await;
}

#[tokio::test]
async fn a_preface_and_settings_and_then_silence_is_closed() {
    bounded(async {
        let (_up, proxy) = proxy().await;
        let conn = connect(&proxy, &[PREFACE, &SETTINGS]).await;
        closed_by_keyproxy(conn, Duration::from_secs(5)).await;
    })
    .await;
}

#[tokio::test]
async fn a_headers_frame_never_finished_is_closed() {
    bounded(async {
        let (up, proxy) = proxy().await;
        let conn = connect(&proxy, &[PREFACE, &SETTINGS, &UNFINISHED_HEADERS]).await;
        closed_by_keyproxy(conn, Duration::from_secs(5)).await;
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_idle_timeout() {
    bounded(async {
        let (up, proxy) = proxy().await;
        let stream = TcpStream::connect(proxy.url.trim_start_matches("http://"))
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        let driver = tokio::spawn(conn);
        let req = http::Request::get(format!("{}/v1/models", proxy.url))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        drop(resp);
        assert_eq!(up.count(), 1);
        // Nothing more is sent: keyproxy ends the connection after idle_timeout (1 s).
        let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
        assert!(
            ended.is_ok(),
            "the idle HTTP/2 connection was still open after 5 s"
        );
    })
    .await;
}

/// Sends a raw HTTP/1.1 request and returns the status line keyproxy answers with.
async fn raw_status(proxy: &Proxy, head_and_body: &[u8], then_wait: bool) -> String {
    let mut conn = connect(proxy, &[head_and_body]).await;
    if !then_wait {
        conn.shutdown().await.ok();
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault_400() {
    bounded(async {
        let (_up, proxy) = proxy().await;
        let status = raw_status(
            &proxy,
            b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n",
            true,
        )
        .await;
        assert!(status.starts_with("HTTP/1.1 400"), "{status:?}");
    })
    .await;
}

#[tokio::test]
async fn a_request_body_that_stalls_past_idle_timeout_is_cut_with_408() {
    bounded(async {
        let (_up, proxy) = proxy().await;
        let status = raw_status(
            &proxy,
            b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n{",
            true,
        )
        .await;
        assert!(status.starts_with("HTTP/1.1 408"), "{status:?}");
    })
    .await;
}
