//! Rights under `/_keyproxy/`: once an admin token is configured only it opens status, reload,
//! everyone's usage and metrics; a client token reads its own `/_keyproxy/me`; without an
//! admin token today's behaviour stays and `check` warns. Series of a client or profile a
//! reload removed leave the metrics.

mod support;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::*;

const ADMIN: &str = "kp-admin-0123456789abcdef0123";
const ALICE: &str = "kp-alice-0123456789abcdef0123";
const BOB: &str = "kp-bob-0123456789abcdef012345";
const OPS: &str = "kp-ops-0123456789abcdef012345";
const USAGE_JSON: &str = r#"{"id":"gen-1","model":"openai/gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"cost":0.0042}}"#;

/// Two clients with limits, alice and bob, each on a profile of its own, and `top` first.
fn config(top: &str, upstream: &str, with_bob: bool) -> String {
    let mut c = format!(
        "{top}poll_interval = \"1h\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n\
         [[clients]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nprofiles = [\"openrouter:alice\"]\nmodels = [\"openai/*\"]\nbudget_usd = 5.0\nbudget_period = \"day\"\ntokens_per_day = 1000\nrequests_per_minute = 50\n"
    );
    if with_bob {
        c += &format!("[[clients]]\nname = \"bob\"\ntoken = \"{BOB}\"\nprofiles = [\"openrouter:bob\"]\nbudget_usd = 2.0\n");
    }
    c
}

fn keys(with_bob: bool) -> String {
    let mut k = format!(
        "[profiles.\"openrouter:default\"]\nkey = \"{KEY_A}\"\n[profiles.\"openrouter:alice\"]\nkey = \"{KEY_A}\"\n"
    );
    if with_bob {
        k += &format!("[profiles.\"openrouter:bob\"]\nkey = \"{KEY_B}\"\n");
    }
    k
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn ask(method: &str, url: &str, token: Option<&str>) -> Reply {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    send(&client(), request(method, url, &headers, Bytes::new())).await
}

async fn chat(url: &str, token: &str) -> Reply {
    let auth = bearer(token);
    let body = r#"{"model":"openai/gpt-4o-mini"}"#;
    let req = request(
        "POST",
        &format!("{url}/api/v1/chat/completions"),
        &[("authorization", &auth)],
        body,
    );
    send(&client(), req).await
}

const EVERYTHING: [(&str, &str); 4] = [
    ("GET", "status"),
    ("GET", "usage"),
    ("GET", "metrics"),
    ("POST", "reload"),
];

#[tokio::test]
async fn with_an_admin_token_a_client_token_gets_403_and_only_an_admin_opens_everything() {
    bounded(async {
        let up = Mock::start(Arc::new(|_| reply(200, USAGE_JSON))).await;
        let top = format!("admin_token = \"{ADMIN}\"\n");
        let mut config = config(&top, &up.url, true);
        config += &format!(
            "[[clients]]\nname = \"ops\"\ntoken = \"{OPS}\"\nprofiles = [\"openrouter:bob\"]\nadmin = true\n"
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys(true))]).await;
        for (method, path) in EVERYTHING {
            let url = format!("{}/_keyproxy/{path}", proxy.url);
            let reply = ask(method, &url, Some(ALICE)).await;
            assert_eq!(reply.status, 403, "{path}: {}", reply.text());
            assert_eq!(reply.headers["x-keyproxy-error"], "admin-only");
            let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains("admin_token"), "{message}");
            assert!(message.contains("/_keyproxy/me"), "{message}");
            check_agent_readable(&message);

            let reply = ask(method, &url, None).await;
            assert_eq!(reply.status, 401, "{path}");
            assert_eq!(reply.headers["x-keyproxy-error"], "missing-token");
            let reply = ask(method, &url, Some("kp-nobody-0123456789abcdef")).await;
            assert_eq!(reply.status, 401, "{path}");

            for admin in [ADMIN, OPS] {
                let reply = ask(method, &url, Some(admin)).await;
                assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            }
        }
        for open in ["health", "ready"] {
            let url = format!("{}/_keyproxy/{open}", proxy.url);
            assert_eq!(ask("GET", &url, None).await.status, 200, "{open}");
        }
        // The admin token is no client: it sends nothing upstream, and /me is not its.
        assert_eq!(chat(&proxy.url, ADMIN).await.status, 401);
        let me = ask("GET", &format!("{}/_keyproxy/me", proxy.url), Some(ADMIN)).await;
        assert_eq!(me.status, 404);
        assert_eq!(me.headers["x-keyproxy-error"], "not-a-client");
        assert_eq!(up.count(), 0);
    })
    .await;
}

fn check_agent_readable(message: &str) {
    if let Err(why) = keyproxy::proxy::check_agent_readable(message) {
        panic!("{why}");
    }
}

#[tokio::test]
async fn without_an_admin_token_a_client_token_opens_everything_and_check_warns() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&config("", &up.url, true), &[("keys.toml", &keys(true))]).await;
        for (method, path) in EVERYTHING {
            let url = format!("{}/_keyproxy/{path}", proxy.url);
            let reply = ask(method, &url, Some(BOB)).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        }

        let bin = Bin::new();
        let dir = bin.config_dir();
        write_private(&dir.join("keys.toml"), &keys(true));
        let mut outs = Vec::new();
        for top in [String::new(), format!("admin_token = \"{ADMIN}\"\n")] {
            std::fs::write(dir.join("keyproxy.toml"), config(&top, &up.url, true)).unwrap();
            let mut cmd = bin.command();
            cmd.arg("--config").arg(dir.join("keyproxy.toml"));
            cmd.args(["--listen", proxy.url.trim_start_matches("http://")]);
            cmd.args(["check", "--json"]);
            outs.push(tokio::task::spawn_blocking(move || run(cmd)).await.unwrap());
        }
        let (warned, admin) = (&outs[0], &outs[1]);
        let v: serde_json::Value = serde_json::from_str(&warned.stdout).unwrap();
        let warning = v["warnings"][0].as_str().unwrap_or_default();
        assert!(
            warning.contains("any client's token can read every client's usage"),
            "{}",
            warned.stdout
        );
        assert!(warning.contains("admin_token_sha256"), "{warning}");
        let v: serde_json::Value = serde_json::from_str(&admin.stdout).unwrap();
        assert_eq!(v["warnings"], serde_json::json!([]), "{}", admin.stdout);
    })
    .await;
}

/// `/_keyproxy/me` of `token`, once the ledger has counted `requests` answers of its client.
async fn me_when(url: &str, token: &str, requests: u64) -> (String, serde_json::Value) {
    loop {
        let reply = ask("GET", &format!("{url}/_keyproxy/me"), Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let v = reply.json();
        if v["usage"]["today"]["requests"] == requests {
            return (reply.text(), v);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn me_shows_a_client_its_own_limits_use_and_resets_and_nothing_of_the_others() {
    bounded(async {
        let up = Mock::start(Arc::new(|_| reply(200, USAGE_JSON))).await;
        let top = format!("admin_token = \"{ADMIN}\"\n");
        let proxy = Proxy::start(&config(&top, &up.url, true), &[("keys.toml", &keys(true))]).await;
        for token in [ALICE, ALICE, BOB] {
            assert_eq!(chat(&proxy.url, token).await.status, 200);
        }

        let (text, alice) = me_when(&proxy.url, ALICE, 2).await;
        assert!(!text.contains("bob"), "{text}");
        assert_eq!(alice["client"], "alice");
        assert_eq!(alice["profiles"], serde_json::json!(["openrouter:alice"]));
        assert_eq!(alice["models"], serde_json::json!(["openai/*"]));
        let budget = &alice["limits"]["budget"];
        assert_eq!(budget["limit_usd"], 5.0);
        assert_eq!(budget["period"], "day");
        assert!(
            (budget["used_usd"].as_f64().unwrap() - 0.0084).abs() < 1e-9,
            "{budget}"
        );
        assert!(
            (budget["left_usd"].as_f64().unwrap() - 4.9916).abs() < 1e-9,
            "{budget}"
        );
        assert_eq!(budget["reserved_usd"], 0.0, "nothing is in flight");
        let tokens = &alice["limits"]["tokens_per_day"];
        assert_eq!(tokens["used"], 92);
        assert_eq!(tokens["left"], 1000 - 92);
        let rpm = &alice["limits"]["requests_per_minute"];
        assert_eq!(rpm["limit"], 50);
        assert!((1..=2).contains(&rpm["used"].as_u64().unwrap()), "{rpm}");
        for limit in [budget, tokens, rpm] {
            let at = limit["resets_at"].as_str().unwrap();
            assert!(at.ends_with('Z') && at.contains('T'), "{at}");
            let secs = limit["resets_in_secs"].as_u64().unwrap();
            assert!(secs <= 86_400, "{limit}");
        }
        assert!(rpm["resets_in_secs"].as_u64().unwrap() <= 60);
        assert_eq!(alice["usage"]["today"]["prompt_tokens"], 24);

        let (text, bob) = me_when(&proxy.url, BOB, 1).await;
        assert!(!text.contains("alice"), "{text}");
        assert_eq!(bob["client"], "bob");
        assert_eq!(bob["limits"]["budget"]["period"], "month");
        assert!(bob["limits"]["tokens_per_day"].is_null());
        assert_eq!(bob["usage"]["today"]["completion_tokens"], 34);

        let me = format!("{}/_keyproxy/me", proxy.url);
        assert_eq!(ask("GET", &me, None).await.status, 401);
        let wrong = ask("GET", &me, Some("kp-nobody-0123456789abcdef")).await;
        assert_eq!(wrong.status, 401);
        assert_eq!(wrong.headers["x-keyproxy-error"], "invalid-token");
    })
    .await;
}

#[tokio::test]
async fn a_reload_that_removes_a_client_and_its_profile_drops_their_usage_series() {
    bounded(async {
        let up = Mock::start(Arc::new(|_| reply(200, USAGE_JSON))).await;
        let proxy = Proxy::start(&config("", &up.url, true), &[("keys.toml", &keys(true))]).await;
        for token in [ALICE, BOB] {
            assert_eq!(chat(&proxy.url, token).await.status, 200);
        }
        let metrics = || async {
            let url = format!("{}/_keyproxy/metrics", proxy.url);
            ask("GET", &url, Some(ALICE)).await.text()
        };
        let mut text = metrics().await;
        while !text.contains(r#"keyproxy_cost_usd_total{client="bob""#) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            text = metrics().await;
        }
        assert!(text.contains(r#"client="alice",profile="openrouter:alice""#), "{text}");

        std::fs::write(proxy.path("keyproxy.toml"), config("state_dir = \"state\"\n", &up.url, false)).unwrap();
        write_private(&proxy.path("keys.toml"), &keys(false));
        proxy.running.reload("test").await;
        proxy
            .wait_until(|s| s.config.clients.iter().count() == 1)
            .await;

        let text = metrics().await;
        assert!(!text.contains("bob"), "{text}");
        assert!(
            text.contains(r#"keyproxy_tokens_total{client="alice",profile="openrouter:alice",direction="prompt"} 12"#),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn status_usage_and_reload_take_the_admin_token_by_flag_or_environment() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        let top = format!("admin_token = \"{ADMIN}\"\n");
        std::fs::write(dir.join("keyproxy.toml"), config(&top, &up.url, true)).unwrap();
        write_private(&dir.join("keys.toml"), &keys(true));
        let served = Served::start(bin.command()).await;
        let cli = |args: &[&str], env: &[(&str, &str)]| {
            let mut cmd = bin.command();
            cmd.arg("--config").arg(dir.join("keyproxy.toml"));
            cmd.args(["--listen", served.url.trim_start_matches("http://")]);
            cmd.args(args);
            for (k, v) in env {
                cmd.env(k, v);
            }
            tokio::task::spawn_blocking(move || run(cmd))
        };
        for command in ["status", "usage", "reload"] {
            let out = cli(&[command, "--admin-token", ADMIN], &[]).await.unwrap();
            assert_eq!(out.code, Some(0), "{command}: {}", out.stderr);
            let out = cli(&[command], &[("KEYPROXY_ADMIN_TOKEN", ADMIN)])
                .await
                .unwrap();
            assert_eq!(out.code, Some(0), "{command}: {}", out.stderr);
            // A client token, even beside no admin token, is refused with what to do.
            let out = cli(&[command], &[("KEYPROXY_CLIENT_TOKEN", ALICE)])
                .await
                .unwrap();
            assert_eq!(out.code, Some(1), "{command}: {}", out.stdout);
            assert!(out.stderr.contains("403"), "{}", out.stderr);
            assert!(out.stderr.contains("admin_token"), "{}", out.stderr);
            assert!(!out.stderr.contains(ALICE), "{}", out.stderr);
        }
        // An agent reads its own figures with its own token.
        let out = cli(&["me", "--token", ALICE], &[]).await.unwrap();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains("client alice\n"), "{}", out.stdout);
        assert!(
            out.stdout
                .contains("budget: $0.0000 of $5.0000 per day used, $5.0000 left; resets "),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("tokens per day: 0 of 1000 used, 1000 left"),
            "{}",
            out.stdout
        );
        assert!(!out.stdout.contains("bob"), "{}", out.stdout);
        let both = [
            ("KEYPROXY_CLIENT_TOKEN", BOB),
            ("KEYPROXY_ADMIN_TOKEN", ADMIN),
        ];
        let out = cli(&["me", "--json"], &both).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["client"], "bob");
        served.stop().await;
    })
    .await;
}
