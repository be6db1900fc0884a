//! HTTPS upstreams: rustls with the bundled roots, plus a per-route `ca_file`; HTTP/2 by ALPN.

mod support;
use support::*;

#[tokio::test]
async fn tls_upstream_trusted_through_ca_file_is_reached_over_http2() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let up = Mock::start_tls(ok_handler(), &ca).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\nca_file = \"{}\"\n",
            up.url,
            ca.display()
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let reply = send(&client(), request("POST", &format!("{}/api/v1/chat/completions", proxy.url), &[], "{}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let got = &up.received()[0];
        assert_eq!(got.version, http::Version::HTTP_2, "ALPN should pick h2");
        assert_eq!(got.headers["authorization"], format!("Bearer {KEY_A}").as_str());
        assert_eq!(got.uri.path(), "/api/v1/chat/completions");
    })
    .await;
}

#[tokio::test]
async fn untrusted_tls_upstream_is_a_502_naming_the_certificate_problem() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let up = Mock::start_tls(ok_handler(), &dir.path().join("ca.pem")).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let reply = get(&format!("{}/x", proxy.url), &[]).await;
        assert_eq!(reply.status, 502);
        let msg = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains("certificate"), "{msg}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_ca_file_stops_start_up_naming_it() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyproxy.toml");
        std::fs::write(
            &path,
            "[[routes]]\nprefix = \"/\"\nupstream = \"https://127.0.0.1:1\"\nprofile = \"p\"\nca_file = \"missing-ca.pem\"\n",
        )
        .unwrap();
        let err = match keyproxy::start(keyproxy::Origin::File(path), Some("127.0.0.1:0".parse().unwrap())).await {
            Ok(_) => panic!("start-up should fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("missing-ca.pem"), "{err}");
    })
    .await;
}
