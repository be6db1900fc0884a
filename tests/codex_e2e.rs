//! The real Codex CLI (`@openai/codex`, pinned below, installed from the npm registry into
//! target/) through keyproxy, with the README's settings: `openai_base_url` in
//! ~/.codex/config.toml and a placeholder `CODEX_API_KEY`. Codex's built-in provider opens a
//! WebSocket first: against an upstream without WebSockets keyproxy answers it 426 and Codex
//! runs the turn over HTTPS at once; against a WebSocket-capable mock the whole turn runs over
//! the socket, with the key injected on the handshake. Nothing leaves the machine: HTTPS_PROXY
//! refuses every connection and the providers are in-process mocks.

#[path = "agents/common.rs"]
mod common;
mod support;

use std::sync::{Arc, Mutex};

use common::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CODEX: &str = "@openai/codex@0.171.0";

/// The Responses events of one short answer, as (event name, JSON).
fn answer_events(id: &str, text: Option<&str>) -> Vec<(&'static str, String)> {
    let mut events = vec![(
        "response.created",
        format!(r#"{{"type":"response.created","response":{{"id":"{id}"}}}}"#),
    )];
    if let Some(text) = text {
        events.push((
            "response.output_item.done",
            format!(
                r#"{{"type":"response.output_item.done","item":{{"type":"message","role":"assistant","id":"msg_{id}","content":[{{"type":"output_text","text":"{text}"}}]}}}}"#
            ),
        ));
    }
    events.push((
        "response.completed",
        format!(
            r#"{{"type":"response.completed","response":{{"id":"{id}","usage":{{"input_tokens":5,"input_tokens_details":null,"output_tokens":3,"output_tokens_details":null,"total_tokens":8}}}}}}"#
        ),
    ));
    events
}

/// A mock Responses API over HTTPS only: SSE for a POST, 404 for anything else.
fn responses_sse() -> Handler {
    Arc::new(|r: &Received| {
        if r.method != http::Method::POST {
            return reply(404, r#"{"error":{"message":"not found"}}"#);
        }
        let body: String = answer_events("resp_1", Some("hello from mock"))
            .iter()
            .map(|(event, data)| format!("event: {event}\ndata: {data}\n\n"))
            .collect();
        let mut resp = reply(200, &body);
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        resp
    })
}

fn codex_config(user: &User, base_url: &str) {
    user.write(
        ".codex/config.toml",
        &format!("openai_base_url = \"{base_url}\"\n"),
    );
}

async fn codex_turn(user: &User) -> Ran {
    user.run(
        "codex",
        &["exec", "--skip-git-repo-check", "say hi"],
        &[("CODEX_API_KEY", "placeholder-not-a-key")],
    )
    .await
}

fn access_records(log: &[String]) -> Vec<serde_json::Value> {
    log.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "keyproxy::access")
        .map(|v| v["fields"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_a_turn_over_https_after_a_426_and_shows_a_missing_key_at_once() {
    let Some(dir) = install("codex", CODEX) else {
        return;
    };
    let user = User::new(&dir).await;
    let up = Mock::start(responses_sse()).await;
    let config = keyproxy_config(
        user.home.path(),
        "openrouter:default",
        KEY_A,
        &format!(
            "[[routes]]\nprefix = \"/\"\nprovider = \"openrouter\"\nupstream = \"{0}\"\n\
             [[routes]]\nprefix = \"/nokey\"\nstrip_prefix = true\nprovider = \"openrouter\"\n\
             upstream = \"{0}\"\nprofile = \"openrouter:missing\"\n",
            up.url
        ),
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyproxy"));
    cmd.env_clear()
        .env("HOME", user.home.path())
        .arg("--config")
        .arg(&config);
    let served = Served::start(cmd).await;

    // Straight to the mock first, for the note's comparison (Codex retries the 404 there).
    codex_config(&user, &format!("{}/api/v1", up.url));
    let straight = codex_turn(&user).await;
    assert!(straight.out.contains("hello from mock"), "{}", straight.out);
    let before = up.count();

    codex_config(&user, &format!("{}/api/v1", served.url));
    let turn = codex_turn(&user).await;
    assert!(turn.ok, "{}", turn.out);
    assert!(turn.out.contains("hello from mock"), "{}", turn.out);
    let sent = &up.received()[before..];
    assert!(!sent.is_empty());
    for r in sent {
        assert_eq!(r.method, http::Method::POST, "no upgrade reached the mock");
        assert_eq!(r.uri.path(), "/api/v1/responses");
        assert_eq!(r.headers["authorization"], format!("Bearer {KEY_A}"));
    }
    eprintln!(
        "Codex turn: {:?} through keyproxy, {:?} straight to the mock",
        turn.took, straight.took
    );

    codex_config(&user, &format!("{}/nokey/api/v1", served.url));
    let before = up.count();
    let refused = codex_turn(&user).await;
    assert!(!refused.ok, "{}", refused.out);
    assert_refused_at_once(&refused, "openrouter:missing", &up, before);

    let log = stop_cleanly(served).await;
    let records = access_records(&log);
    assert!(
        records
            .iter()
            .any(|r| r["status"] == 426 && r["reason"] == "upgrade-unsupported"),
        "Codex's WebSocket attempt got the 426: {records:?}"
    );
}

/// What the WebSocket mock saw: each handshake head and every text message.
#[derive(Default)]
struct Seen {
    heads: Vec<String>,
    messages: Vec<String>,
    http_requests: usize,
}

/// A Responses API over WebSocket only, speaking RFC 6455 framing: answers each
/// `response.create` with the events of one response (no output for a `generate: false`
/// prewarm); any request that is not an upgrade gets 500.
async fn responses_websocket() -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve_socket(conn, shared.clone()));
        }
    });
    (url, seen)
}

async fn serve_socket(mut conn: TcpStream, seen: Arc<Mutex<Seen>>) {
    let head = read_head(&mut conn).await;
    let key = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let Some(key) = key else {
        seen.lock().unwrap().http_requests += 1;
        let _ = conn
            .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    };
    seen.lock().unwrap().heads.push(head);
    let accept = websocket_accept(&key);
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    conn.write_all(answer.as_bytes()).await.unwrap();
    let mut n = 0;
    while let Some(text) = read_message(&mut conn).await {
        seen.lock().unwrap().messages.push(text.clone());
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if msg["type"] != "response.create" {
            continue;
        }
        n += 1;
        let output = (msg["generate"] != false).then_some("hello over the socket");
        for (_, data) in answer_events(&format!("resp_ws_{n}"), output) {
            write_text(&mut conn, &data).await;
        }
    }
}

async fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// RFC 6455 section 4.2.2: base64 of the SHA-1 of the key and the protocol's GUID.
fn websocket_accept(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64(digest.as_ref())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The next whole text message from a client (masked frames, continuations joined); answers
/// pings; None at a close or the end.
async fn read_message(conn: &mut TcpStream) -> Option<String> {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        conn.read_exact(&mut head).await.ok()?;
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            len = u64::from(conn.read_u16().await.ok()?);
        } else if len == 127 {
            len = conn.read_u64().await.ok()?;
        }
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 {
            conn.read_exact(&mut mask).await.ok()?;
        }
        let mut payload = vec![0u8; len as usize];
        conn.read_exact(&mut payload).await.ok()?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match opcode {
            0x8 => {
                let _ = conn.write_all(&[0x88, 0]).await;
                return None;
            }
            0x9 => write_frame(conn, 0xA, &payload).await,
            0xA => {}
            _ => {
                message.extend_from_slice(&payload);
                if fin {
                    return Some(String::from_utf8_lossy(&message).into_owned());
                }
            }
        }
    }
}

async fn write_text(conn: &mut TcpStream, text: &str) {
    write_frame(conn, 0x1, text.as_bytes()).await;
}

/// A server frame: never masked.
async fn write_frame(conn: &mut TcpStream, opcode: u8, payload: &[u8]) {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    let _ = conn.write_all(&frame).await;
}

#[test]
fn the_mocks_handshake_answer_matches_rfc_6455() {
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_the_whole_turn_over_a_websocket_with_the_key_injected_on_the_handshake() {
    let Some(dir) = install("codex", CODEX) else {
        return;
    };
    let user = User::new(&dir).await;
    let (ws_url, seen) = responses_websocket().await;
    let config = keyproxy_config(
        user.home.path(),
        "openai:default",
        KEY_A,
        &format!("[[routes]]\nprefix = \"/\"\nprovider = \"openai\"\nupstream = \"{ws_url}\"\n"),
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyproxy"));
    cmd.env_clear()
        .env("HOME", user.home.path())
        .arg("--config")
        .arg(&config);
    let served = Served::start(cmd).await;

    // Straight to the mock first, for the note's comparison.
    codex_config(&user, &format!("{ws_url}/v1"));
    let straight = codex_turn(&user).await;
    assert!(
        straight.out.contains("hello over the socket"),
        "{}",
        straight.out
    );
    let before = seen.lock().unwrap().heads.len();

    codex_config(&user, &format!("{}/v1", served.url));
    let turn = codex_turn(&user).await;
    assert!(turn.ok, "{}", turn.out);
    assert!(turn.out.contains("hello over the socket"), "{}", turn.out);
    eprintln!(
        "Codex turn over a WebSocket: {:?} through keyproxy, {:?} straight to the mock",
        turn.took, straight.took
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.http_requests, 0, "the turn never fell back to HTTPS");
        assert!(seen.heads.len() > before);
        for head in &seen.heads[before..] {
            let lower = head.to_ascii_lowercase();
            assert!(lower.starts_with("get /v1/responses"), "{head}");
            assert!(
                lower.contains(&format!(
                    "authorization: bearer {}",
                    KEY_A.to_ascii_lowercase()
                )),
                "{head}"
            );
            assert!(!lower.contains("placeholder-not-a-key"), "{head}");
        }
        assert!(
            seen.messages.iter().any(|m| m.contains("response.create")),
            "{:?}",
            seen.messages
        );
    }
    let log = stop_cleanly(served).await;
    let records = access_records(&log);
    assert!(
        records
            .iter()
            .any(|r| r["status"] == 101 && r["sent"].as_u64() > Some(0)),
        "{records:?}"
    );
}
