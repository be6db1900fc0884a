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

/// A CA in the system's trust store (here through `SSL_CERT_FILE`, as a corporate
/// TLS-inspecting proxy's CA installed by IT would be) is trusted with no `ca_file`, unless
/// `system_roots = false`.
#[tokio::test]
async fn a_ca_in_the_system_store_is_trusted_without_a_ca_file() {
    bounded(async {
        let bin = Bin::new();
        let dir = bin.config_dir();
        let ca = dir.join("corporate-ca.pem");
        let up = Mock::start_tls(ok_handler(), &ca).await;
        write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
        for (system_roots, status) in [("true", 200), ("false", 502)] {
            let config = format!(
                "system_roots = {system_roots}\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\n",
                up.url
            );
            std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
            let mut cmd = bin.command();
            cmd.env("SSL_CERT_FILE", &ca);
            let served = Served::start(cmd).await;
            let reply = get(&format!("{}/v1/models", served.url), &[]).await;
            assert_eq!(reply.status, status, "system_roots = {system_roots}: {}", reply.text());
            served.stop().await;
        }
    })
    .await;
}
