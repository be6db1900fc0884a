//! The key is injected in the route's header and format; what the client sent as its own
//! credential, keyproxy's control headers and hop-by-hop headers never reach the upstream.

mod support;
use support::*;

#[tokio::test]
async fn injects_the_key_and_replaces_the_clients_own_credential() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "openrouter:default"),
            &[("keys.toml", &keys_toml("openrouter:default", KEY_A))],
        )
        .await;
        let reply = send(
            &client(),
            request(
                "POST",
                &format!("{}/api/v1/chat/completions?stream=false", proxy.url),
                &[
                    ("authorization", "Bearer agent-placeholder"),
                    ("content-type", "application/json"),
                    ("x-custom", "kept"),
                ],
                r#"{"model":"x"}"#,
            ),
        )
        .await;
        assert_eq!(reply.status, 200);
        let got = &up.received()[0];
        assert_eq!(got.method, "POST");
        assert_eq!(got.uri.path(), "/api/v1/chat/completions");
        assert_eq!(got.uri.query(), Some("stream=false"));
        assert_eq!(got.headers.get_all("authorization").iter().count(), 1);
        assert_eq!(
            got.headers["authorization"],
            format!("Bearer {KEY_A}").as_str()
        );
        assert_eq!(got.headers["host"], up.addr.to_string().as_str());
        assert_eq!(got.headers["x-custom"], "kept");
        assert_eq!(got.body.as_ref(), br#"{"model":"x"}"#);
    })
    .await;
}

#[tokio::test]
async fn custom_header_and_format_are_used_and_client_copies_removed() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/anthropic\"\nupstream = \"{}/base\"\nprofile = \"anthropic:default\"\nheader = \"x-api-key\"\nformat = \"{{key}}\"\nstrip_prefix = true\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("anthropic:default", KEY_B))]).await;
        let reply = get(
            &format!("{}/anthropic/v1/messages", proxy.url),
            &[("x-api-key", "client-copy"), ("authorization", "Bearer client")],
        )
        .await;
        assert_eq!(reply.status, 200);
        let got = &up.received()[0];
        assert_eq!(got.uri.path(), "/base/v1/messages");
        assert_eq!(got.headers["x-api-key"], KEY_B);
        assert_eq!(got.headers.get_all("x-api-key").iter().count(), 1);
        assert!(got.headers.get("authorization").is_none());
    })
    .await;
}

#[tokio::test]
async fn profile_header_selects_another_profile_and_is_not_forwarded() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let keys = format!(
            "{}{}",
            keys_toml("a:default", KEY_A),
            keys_toml("a:work", KEY_B)
        );
        let proxy = Proxy::start(
            &simple_config(&up.url, "a:default"),
            &[("keys.toml", &keys)],
        )
        .await;
        get(
            &format!("{}/x", proxy.url),
            &[("x-keyproxy-profile", "a:work"), ("x-keyproxy-debug", "1")],
        )
        .await;
        get(&format!("{}/x", proxy.url), &[]).await;
        let got = up.received();
        assert_eq!(
            got[0].headers["authorization"],
            format!("Bearer {KEY_B}").as_str()
        );
        assert_eq!(
            got[1].headers["authorization"],
            format!("Bearer {KEY_A}").as_str()
        );
        for r in &got {
            assert!(
                r.headers
                    .keys()
                    .all(|k| !k.as_str().starts_with("x-keyproxy-")),
                "{:?}",
                r.headers
            );
        }
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let reply = get(
            &format!("{}/x", proxy.url),
            &[
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("te", "trailers"),
                ("x-end-to-end", "1"),
            ],
        )
        .await;
        assert_eq!(reply.status, 200);
        let got = &up.received()[0];
        for h in ["x-hop", "keep-alive", "proxy-authorization", "te"] {
            assert!(got.headers.get(h).is_none(), "{h} was forwarded");
        }
        assert_eq!(got.headers["x-end-to-end"], "1");
    })
    .await;
}

#[tokio::test]
async fn http2_cleartext_clients_are_served_on_the_same_port() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let reply = send(
            &h2c_client(),
            request("POST", &format!("{}/api/v1/x", proxy.url), &[], "hello"),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, http::Version::HTTP_2);
        let h1 = get(&format!("{}/api/v1/x", proxy.url), &[]).await;
        assert_eq!(h1.version, http::Version::HTTP_11);
        let got = up.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body.as_ref(), b"hello");
        assert_eq!(
            got[0].headers["authorization"],
            format!("Bearer {KEY_A}").as_str()
        );
        assert_eq!(got[0].headers["host"], up.addr.to_string().as_str());
    })
    .await;
}

#[tokio::test]
async fn pools_spread_requests_over_their_keys() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let keys = format!("[profiles.p]\nkeys = [\"{KEY_A}\", \"{KEY_B}\"]\n");
        let proxy = Proxy::start(&simple_config(&up.url, "p"), &[("keys.toml", &keys)]).await;
        for _ in 0..4 {
            get(&format!("{}/x", proxy.url), &[]).await;
        }
        let a = up
            .received()
            .iter()
            .filter(|r| r.headers["authorization"] == format!("Bearer {KEY_A}").as_str())
            .count();
        assert_eq!(a, 2);
    })
    .await;
}

#[tokio::test]
async fn requests_naming_another_host_or_connect_are_refused_and_not_forwarded() {
    bounded(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        for (raw, status) in [
            ("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", "400"),
            ("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n", "405"),
        ] {
            let mut s = tokio::net::TcpStream::connect(proxy.running.local_addr).await.unwrap();
            s.write_all(raw.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
            assert!(out.contains("not an open proxy"), "{out}");
        }
        assert_eq!(up.count(), 0);
    })
    .await;
}
