//! Client tokens: agents hold a token keyproxy swaps for the real key, may use only their own
//! profiles, and keyproxy refuses to listen beyond loopback without them.

mod support;
use support::*;

const TOKEN_LAPTOP: &str = "kp-laptop-0123456789abcdef0123";
const TOKEN_CI: &str = "kp-ci-fedcba9876543210fedcba98";

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(upstream: &str) -> String {
    format!(
        r#"state_dir = "state"
keys_files = ["keys.toml"]

[[routes]]
prefix = "/"
upstream = "{upstream}"
profile = "openrouter:default"

[[clients]]
name = "laptop"
token = "{TOKEN_LAPTOP}"
profiles = ["openrouter:default", "openrouter:work"]

[[clients]]
name = "ci"
token_sha256 = "{}"
profiles = ["openrouter:ci"]
"#,
        sha256_hex(TOKEN_CI)
    )
}

fn keys() -> String {
    format!(
        "[profiles.\"openrouter:default\"]\nkey = \"{KEY_A}\"\n[profiles.\"openrouter:work\"]\nkey = \"{KEY_B}\"\n[profiles.\"openrouter:ci\"]\nkey = \"{KEY_B}\"\n"
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_client_token_is_swapped_for_its_profiles_key() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys())]).await;
        let url = format!("{}/api/v1/chat/completions", proxy.url);

        let reply = get(&url, &[("authorization", &bearer(TOKEN_LAPTOP))]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // The CI client is configured by the token's SHA-256 only; its default is its own.
        let reply = get(&url, &[("authorization", &bearer(TOKEN_CI))]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());

        let received = up.received();
        assert_eq!(
            received[0].headers["authorization"],
            format!("Bearer {KEY_A}")
        );
        assert_eq!(
            received[1].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
        for r in &received {
            let all = format!("{:?}", r.headers);
            assert!(
                !all.contains(TOKEN_LAPTOP) && !all.contains(TOKEN_CI),
                "a token was forwarded"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_may_name_one_of_its_own_profiles_and_no_other() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys())]).await;
        let url = format!("{}/api/v1/chat/completions", proxy.url);
        let laptop = bearer(TOKEN_LAPTOP);

        let reply = get(&url, &[("authorization", &laptop), ("x-keyproxy-profile", "openrouter:work")]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(up.received()[0].headers["authorization"], format!("Bearer {KEY_B}"));

        let reply = get(&url, &[("authorization", &laptop), ("x-keyproxy-profile", "openrouter:ci")]).await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.headers["x-keyproxy-error"], "forbidden-profile");
        let body = reply.json();
        assert_eq!(body["error"]["type"], "permission_error");
        assert_eq!(
            body["error"]["message"],
            "keyproxy: client 'laptop' may not use profile 'openrouter:ci'; use one of its profiles: 'openrouter:default', 'openrouter:work'."
        );
        assert_no_key(&reply.text());
        assert_eq!(up.count(), 1, "a forbidden request is not forwarded");
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_a_local_401() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys())]).await;
        let url = format!("{}/api/v1/models", proxy.url);

        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.headers["x-keyproxy-error"], "missing-token");
        assert_eq!(reply.json()["error"]["type"], "authentication_error");

        // An agent that still sends a real key gets no further than a wrong token.
        let reply = get(&url, &[("authorization", &format!("Bearer {KEY_A}"))]).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.headers["x-keyproxy-error"], "invalid-token");
        assert_no_key(&reply.text());
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn status_needs_a_token_but_health_and_ready_do_not() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys())]).await;
        let status = format!("{}/_keyproxy/status", proxy.url);
        assert_eq!(get(&status, &[]).await.status, 401);
        assert_eq!(
            get(&status, &[("authorization", "Bearer nope-nope-nope-nope")])
                .await
                .status,
            401
        );
        let reply = get(&status, &[("authorization", &bearer(TOKEN_CI))]).await;
        assert_eq!(reply.status, 200);
        assert_no_key(&reply.text());
        assert!(!reply.text().contains(TOKEN_LAPTOP));
        assert_eq!(
            get(&format!("{}/_keyproxy/health", proxy.url), &[])
                .await
                .status,
            200
        );
        assert_eq!(
            get(&format!("{}/_keyproxy/ready", proxy.url), &[])
                .await
                .status,
            200
        );
    })
    .await;
}

#[tokio::test]
async fn an_anthropic_style_client_may_send_its_token_in_the_routes_header() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/anthropic\"\nstrip_prefix = true\nprovider = \"anthropic\"\nupstream = \"{}\"\n[[clients]]\nname = \"claude\"\ntoken = \"{TOKEN_LAPTOP}\"\nprofiles = [\"anthropic:default\"]\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("anthropic:default", KEY_A))]).await;
        let reply = get(&format!("{}/anthropic/v1/messages", proxy.url), &[("x-api-key", TOKEN_LAPTOP)]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(up.received()[0].headers["x-api-key"], KEY_A);
    })
    .await;
}

async fn start_on(config: &str, listen: &str) -> Result<keyproxy::Running, String> {
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("keys.toml"), &keys());
    let path = dir.path().join("keyproxy.toml");
    std::fs::write(&path, config).unwrap();
    keyproxy::start(keyproxy::Origin::File(path), Some(listen.parse().unwrap()))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_non_loopback_address_needs_clients_or_an_explicit_opt_out() {
    bounded(async {
        let with_clients = config("http://127.0.0.1:9");
        let running = start_on(&with_clients, "0.0.0.0:0").await.unwrap();
        running.shutdown().await;

        let without = simple_config("http://127.0.0.1:9", "p");
        let err = start_on(&without, "0.0.0.0:0").await.err().unwrap();
        assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
        assert!(err.contains("[[clients]]"), "{err}");

        let opted_out = format!("allow_unauthenticated = true\n{without}");
        let running = start_on(&opted_out, "0.0.0.0:0").await.unwrap();
        running.shutdown().await;
    })
    .await;
}

#[test]
fn client_config_errors_name_the_client_and_line() {
    let bad = format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"http://a\"\nprofile = \"p\"\n\n[[clients]]\nname = \"x\"\ntoken = \"{TOKEN_CI}\"\ntoken_sha256 = \"{}\"\nprofiles = [\"p\"]\n",
        sha256_hex(TOKEN_CI)
    );
    let err = keyproxy::config::parse(&bad, std::path::Path::new("k.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("k.toml:6:"), "{err}");
    assert!(
        err.contains("client 'x': give exactly one of token and token_sha256"),
        "{err}"
    );
    assert!(!err.contains(TOKEN_CI), "{err}");
}

/// `keyproxy status` and `keyproxy reload` present a client token (`--token` or
/// KEYPROXY_CLIENT_TOKEN) when clients are configured; without one they say what answered.
#[tokio::test]
async fn status_and_reload_commands_take_a_client_token() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        write_private(&dir.join("keys.toml"), &keys());
        let served = Served::start(bin.command()).await;
        let addr = served.url.trim_start_matches("http://").to_owned();
        let cli = |args: &'static [&'static str], token: Option<&'static str>| {
            let mut cmd = bin.command();
            cmd.args(["--listen", &addr]).args(args);
            if let Some(t) = token {
                cmd.env("KEYPROXY_CLIENT_TOKEN", t);
            }
            tokio::task::spawn_blocking(move || run(cmd))
        };
        for args in [&["status"][..], &["reload"][..]] {
            let out = cli(args, None).await.unwrap();
            assert_eq!(out.code, Some(1), "{}", out.stdout);
            assert!(out.stderr.contains("401"), "{}", out.stderr);
            let out = cli(args, Some(TOKEN_LAPTOP)).await.unwrap();
            assert_eq!(out.code, Some(0), "{}", out.stderr);
            assert!(!out.stdout.contains(TOKEN_LAPTOP) && !out.stderr.contains(TOKEN_LAPTOP));
        }
        served.stop().await;
    })
    .await;
}
