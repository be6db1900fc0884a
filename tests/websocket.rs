//! WebSocket pass-through, byte level: a handshake on a route whose provider offers WebSockets
//! reaches the upstream with the client's credential replaced by the key, the two upgraded
//! connections are joined both ways, and the socket leaves one access record when it closes;
//! elsewhere the upgrade is answered 426 before anything is sent upstream.

mod support;
use std::sync::{Arc, Mutex};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream below HTTP that records each request head, answers `answer`, and, after a 101,
/// echoes every byte it receives behind `up:`.
struct RawUpstream {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn raw_ws_upstream(answer: &'static str) -> RawUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let head = read_head(&mut conn).await;
                seen.lock().unwrap().push(head);
                conn.write_all(answer.as_bytes()).await.unwrap();
                if !answer.starts_with("HTTP/1.1 101") {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut echo = b"up:".to_vec();
                    echo.extend_from_slice(&buf[..n]);
                    if conn.write_all(&echo).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    RawUpstream { url, heads }
}

/// Reads up to the end of an HTTP head, byte by byte so nothing after it is taken.
async fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

const ACCEPT: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// A WebSocket handshake to keyproxy from an agent that sends its own (placeholder) key.
async fn handshake(url: &str, path: &str) -> (TcpStream, String) {
    let addr = url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer placeholder-from-agent\r\nx-goog-api-key: agent-own\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut conn).await;
    (conn, head)
}

fn served_with(route: &str, upstream: &str, profile: &str) -> Bin {
    let bin = Bin::new();
    let dir = bin.config_dir();
    write_private(&dir.join("keys.toml"), &keys_toml(profile, KEY_A));
    std::fs::write(
        dir.join("keyproxy.toml"),
        format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\n{route}\n\
             upstream = \"{upstream}\"\nprofile = \"{profile}\"\n"
        ),
    )
    .unwrap();
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_relayed_with_the_key_injected_and_recorded_when_it_closes() {
    bounded(async {
        let up = raw_ws_upstream(ACCEPT).await;
        let bin = served_with("provider = \"openai\"", &up.url, "openai:default");
        let mut served = Served::start(bin.command()).await;

        let (mut conn, head) = handshake(&served.url, "/v1/responses").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        conn.write_all(b"hello").await.unwrap();
        let mut got = vec![0u8; 8];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"up:hello");

        let upstream_head = up.heads.lock().unwrap()[0].to_ascii_lowercase();
        assert!(
            upstream_head.starts_with("get /v1/responses http/1.1"),
            "{upstream_head}"
        );
        assert!(upstream_head.contains(&format!(
            "authorization: bearer {}",
            KEY_A.to_ascii_lowercase()
        )));
        assert!(!upstream_head.contains("placeholder-from-agent"));
        assert!(
            !upstream_head.contains("agent-own"),
            "every credential header goes"
        );
        assert!(upstream_head.contains("upgrade: websocket"));
        assert!(upstream_head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="));
        assert!(upstream_head.contains("sec-websocket-version: 13"));

        drop(conn);
        let line = served.wait_for_log("keyproxy::access").await;
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fields = &record["fields"];
        assert_eq!(fields["status"], 101, "{line}");
        assert_eq!(fields["sent"], 5, "{line}");
        assert_eq!(fields["bytes"], 8, "{line}");
        assert_eq!(fields["outcome"], "closed", "{line}");
        assert_eq!(fields["key"], FP_A, "{line}");
        let (code, _, log) = served.stop().await;
        assert_eq!(code, Some(0));
        assert_no_key(&log.join("\n"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_a_websocket_upstream_is_refused_426_before_anything_is_sent() {
    bounded(async {
        let up = raw_ws_upstream(ACCEPT).await;
        let bin = served_with("provider = \"openrouter\"", &up.url, "openrouter:default");
        let served = Served::start(bin.command()).await;
        let (_conn, head) = handshake(&served.url, "/api/v1/responses").await;
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        assert!(
            lower.contains("x-keyproxy-error: upgrade-unsupported"),
            "{head}"
        );
        assert!(lower.contains("x-should-retry: false"), "{head}");
        assert!(
            up.heads.lock().unwrap().is_empty(),
            "nothing reached the upstream"
        );
        served.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_the_upgrade_has_its_answer_passed_through() {
    bounded(async {
        let up = raw_ws_upstream(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}",
        )
        .await;
        let bin = served_with("provider = \"openai\"", &up.url, "openai:default");
        let served = Served::start(bin.command()).await;
        let (mut conn, head) = handshake(&served.url, "/v1/responses").await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let mut body = vec![0u8; 13];
        conn.read_exact(&mut body).await.unwrap();
        assert_eq!(body, b"{\"error\":\"x\"}");
        served.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_live_gets_the_key_as_its_query_parameter() {
    bounded(async {
        let up = raw_ws_upstream(ACCEPT).await;
        let bin = served_with("provider = \"gemini\"", &up.url, "gemini:default");
        let served = Served::start(bin.command()).await;
        let path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent?key=agent-own";
        let (conn, head) = handshake(&served.url, path).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let upstream_head = up.heads.lock().unwrap()[0].clone();
        let request_line = upstream_head.lines().next().unwrap();
        assert!(request_line.ends_with(&format!("BidiGenerateContent?key={KEY_A} HTTP/1.1")), "{request_line}");
        assert!(!upstream_head.contains("agent-own"));
        assert!(!upstream_head.to_ascii_lowercase().contains("x-goog-api-key"));
        drop(conn);
        served.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_tells_agents_not_to_retry() {
    bounded(async {
        let bin = Bin::new();
        std::fs::write(
            bin.config_dir().join("keyproxy.toml"),
            "[[routes]]\nprefix = \"/\"\nprovider = \"anthropic\"\nupstream = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let served = Served::start(bin.command()).await;
        let reply = get(&format!("{}/v1/messages", served.url), &[]).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.headers["x-should-retry"], "false");
        served.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_an_open_socket_after_the_grace_period_and_records_it() {
    bounded(async {
        let up = raw_ws_upstream(ACCEPT).await;
        let bin = served_with("provider = \"openai\"", &up.url, "openai:default");
        let config = bin.config_dir().join("keyproxy.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("shutdown_grace = \"300ms\"\n{text}")).unwrap();
        let served = Served::start(bin.command()).await;
        let (mut conn, head) = handshake(&served.url, "/v1/realtime?model=gpt-realtime").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let (code, _, log) = served.stop().await;
        assert_eq!(code, Some(0));
        let record = log
            .iter()
            .find(|l| l.contains("keyproxy::access"))
            .expect("the socket left its record");
        assert!(record.contains("cut at shutdown"), "{record}");
        let mut buf = [0u8; 16];
        assert_eq!(
            conn.read(&mut buf).await.unwrap_or(0),
            0,
            "the socket is closed"
        );
    })
    .await;
}

/// A Responses socket runs whole turns, each naming its own model, in frames keyproxy relays
/// unread: a client whose models, budget or tokens keyproxy holds per request gets the 426 that
/// sends agents to HTTPS, where every request is checked, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_limits_is_sent_to_https_before_anything_is_sent() {
    bounded(async {
        let up = raw_ws_upstream(ACCEPT).await;
        let bin = served_with("provider = \"openai\"", &up.url, "openai:default");
        let config = bin.config_dir().join("keyproxy.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        for limit in ["budget_usd = 1.0", "tokens_per_day = 1000", "models = [\"gpt-4o-mini\"]"] {
            text.push_str(&format!(
                "[[clients]]\nname = \"agent-{}\"\ntoken = \"placeholder-from-agent\"\nprofiles = [\"openai:default\"]\n{limit}\n",
                limit.len()
            ));
            std::fs::write(&config, &text).unwrap();
            let served = Served::start(bin.command()).await;
            let (_conn, head) = handshake(&served.url, "/v1/responses").await;
            let lower = head.to_ascii_lowercase();
            assert!(head.starts_with("HTTP/1.1 426"), "{limit}: {head}");
            assert!(
                lower.contains("x-keyproxy-error: upgrade-unsupported"),
                "{head}"
            );
            assert!(lower.contains("x-should-retry: false"), "{head}");
            assert!(up.heads.lock().unwrap().is_empty(), "nothing reached the upstream");
            served.stop().await;
            text = text[..text.find("[[clients]]").unwrap()].to_owned();
        }
    })
    .await;
}
