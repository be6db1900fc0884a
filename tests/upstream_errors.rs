//! Upstream failures: unreachable is a 502, a connect timeout a 504, both in the error shape and
//! naming the upstream; an upstream 401/403 is passed through with the profile and fingerprint.

mod support;
use std::sync::Arc;
use std::time::Duration;

use support::*;

#[tokio::test]
async fn closed_port_is_a_502_naming_the_upstream() {
    bounded(async {
        // Bind then drop: a port on loopback that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let upstream = format!("http://127.0.0.1:{port}");
        let proxy = Proxy::start(
            &simple_config(&upstream, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let reply = get(&format!("{}/api/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 502);
        assert_eq!(reply.headers["x-keyproxy-error"], "upstream-unreachable");
        let body = reply.json();
        assert_eq!(body["error"]["type"], "upstream_error");
        assert_eq!(body["error"]["code"], 502);
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&upstream), "{msg}");
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
        assert_no_key(&reply.text());
    })
    .await;
}

#[tokio::test]
async fn connect_timeout_is_a_504() {
    bounded(async {
        // A listener whose accept queue is full: Linux drops further SYNs, so connecting hangs
        // until the proxy's connect_timeout, all on loopback.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => held.push(s),
                _ => break,
            }
        }
        let upstream = format!("http://{addr}");
        let config = format!(
            "connect_timeout = \"300ms\"\n{}",
            simple_config(&upstream, "p")
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let reply = get(&format!("{}/x", proxy.url), &[]).await;
        assert_eq!(reply.status, 504, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["error"]["type"], "upstream_timeout");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&upstream));
        drop(held);
    })
    .await;
}

#[tokio::test]
async fn upstream_401_passes_through_annotated_with_profile_and_fingerprint() {
    bounded(async {
        let handler: Handler =
            Arc::new(|_| reply(401, r#"{"error":{"message":"User not found.","code":401}}"#));
        let up = Mock::start(handler).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "openrouter:default"),
            &[("keys.toml", &keys_toml("openrouter:default", KEY_A))],
        )
        .await;
        let reply = get(&format!("{}/api/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            msg.ends_with("openrouter said: User not found."),
            "the provider's words are kept: {msg}"
        );
        assert_eq!(reply.json()["error"]["code"], 401);
        assert_eq!(reply.headers["x-keyproxy-profile"], "openrouter:default");
        assert_eq!(reply.headers["x-keyproxy-key"], FP_A);
        assert!(
            reply.headers.get("x-keyproxy-error").is_none(),
            "the answer is the upstream's"
        );
        assert_eq!(up.count(), 1);
    })
    .await;
}

#[tokio::test]
async fn upstream_403_is_annotated_but_a_200_is_not() {
    bounded(async {
        let handler: Handler = Arc::new(|r: &Received| {
            if r.uri.path() == "/forbidden" {
                reply(403, "{}")
            } else {
                reply(200, "{}")
            }
        });
        let up = Mock::start(handler).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_B))],
        )
        .await;
        let fine = get(&format!("{}/fine", proxy.url), &[]).await;
        assert_eq!(fine.status, 200);
        assert!(fine.headers.get("x-keyproxy-key").is_none());
        let denied = get(&format!("{}/forbidden", proxy.url), &[]).await;
        assert_eq!(denied.status, 403);
        assert_eq!(denied.headers["x-keyproxy-key"], FP_B);
    })
    .await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_a_504_within_response_timeout() {
    bounded(async {
        // Reads the request and says nothing, like a stuck provider or a black-holed TLS peer.
        let silent = raw_upstream(b"", Then::Hold).await;
        let config = format!(
            "response_timeout = \"300ms\"\nidle_timeout = \"1h\"\n{}",
            simple_config(&silent, "p")
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let reply = get(&format!("{}/v1/chat/completions", proxy.url), &[]).await;
        assert_eq!(reply.status, 504);
        assert_eq!(reply.headers["x-keyproxy-error"], "upstream-timeout");
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.starts_with(&format!("keyproxy: upstream {silent} sent no response head within 300ms; check the upstream, or raise response_timeout")),
            "{msg}"
        );
        assert!(msg.contains("DNS, connect, TLS or the wait for the status line"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn a_101_from_the_upstream_is_never_passed_on() {
    bounded(async {
        let upgrading = raw_upstream(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            Then::Hold,
        )
        .await;
        let proxy = Proxy::start(
            &simple_config(&upgrading, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let c = client();
        let url = format!("{}/v1/realtime", proxy.url);
        let reply = send(&c, request("GET", &url, &[], "")).await;
        assert_eq!(reply.status, 502);
        assert!(reply.text().contains("101 Switching Protocols"), "{}", reply.text());
        // The client's connection is still a plain HTTP connection: the next request works.
        let reply = send(&c, request("GET", &url, &[], "")).await;
        assert_eq!(reply.status, 502);
    })
    .await;
}

#[tokio::test]
async fn an_upstream_that_closes_after_its_head_gives_a_well_formed_answer_or_a_clean_close() {
    bounded(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let abrupt = raw_upstream(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
            Then::Close,
        )
        .await;
        let proxy = Proxy::start(
            &simple_config(&abrupt, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        for _ in 0..20 {
            let mut conn = tokio::net::TcpStream::connect(proxy.url.trim_start_matches("http://"))
                .await
                .unwrap();
            conn.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let _ = conn.read_to_end(&mut got).await;
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 502"),
                "the client got no status line: {text:?}"
            );
        }
    })
    .await;
}
