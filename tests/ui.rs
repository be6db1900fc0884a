//! The page at `/_keyproxy/`: its files come from the binary with `no-store` and a strict
//! Content-Security-Policy, and the JSON it reads (`/_keyproxy/ui/data`) is the status and
//! `/me` documents, the last hour of traffic and 30 days of usage, everything for the admin
//! and only its own agent for a client. Also `keyproxy usage --since --until --by`. The page
//! itself, in a real browser: tests/ui_browser.rs.

#[path = "ui/busy.rs"]
mod busy;
mod support;

use busy::*;
use support::*;

#[tokio::test]
async fn the_admin_sees_status_every_agent_traffic_and_history() {
    bounded(async {
        let (_up, proxy) = busy().await;
        let reply = data(&proxy.url, Some(ADMIN)).await;
        assert_eq!(reply.status, 200);
        let d = reply.json();
        assert_eq!(d["view"], "admin");
        // The status document, as /_keyproxy/status serves it.
        let auth = format!("Bearer {ADMIN}");
        let status = get(
            &format!("{}/_keyproxy/status", proxy.url),
            &[("authorization", &auth)],
        )
        .await
        .json();
        assert_eq!(
            d["status"]["profiles"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            status["profiles"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>()
        );
        assert_eq!(d["status"]["reload"], status["reload"]);
        let bob_keys = &d["status"]["profiles"]["openrouter:bob"]["keys"];
        let rested = bob_keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["fingerprint"] == FP_B)
            .unwrap();
        assert_eq!(rested["state"], "resting", "{bob_keys}");
        assert_eq!(rested["rested_after"], 429);
        assert!(rested["resting_for_s"].as_u64().unwrap() > 500, "{rested}");
        let used = bob_keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["fingerprint"] == FP_C)
            .unwrap();
        // This minute, or the last one when a minute turned since the answer.
        assert!(used["used_minutes_ago"].as_u64().unwrap() <= 1, "{used}");
        // One /me document per agent, the same as each token's own /_keyproxy/me.
        let names: Vec<_> = d["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["client"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        let alice = &d["agents"][0];
        let auth = format!("Bearer {ALICE}");
        let me = get(
            &format!("{}/_keyproxy/me", proxy.url),
            &[("authorization", &auth)],
        )
        .await
        .json();
        assert_eq!(alice["usage"], me["usage"]);
        assert_eq!(
            alice["limits"]["budget"]["used_usd"],
            me["limits"]["budget"]["used_usd"]
        );
        assert_eq!(alice["usage"]["today"]["requests"], 3);
        assert!((alice["usage"]["today"]["cost_usd"].as_f64().unwrap() - 1.26).abs() < 1e-9);
        assert_eq!(alice["models"], serde_json::json!(["openai/*"]));
        // Traffic: one count per request, by its final answer (as keyproxy_requests counts):
        // 6 answered (bob's 429 was sent again on his other key), 2 refused here.
        let t = &d["traffic"];
        assert_eq!(t["requests"], 8, "{t}");
        assert_eq!(t["upstream_errors"], 0, "{t}");
        assert_eq!(
            t["local"],
            serde_json::json!({"missing-token": 1, "model-not-allowed": 1})
        );
        assert!(t["latency_p50_ms"].as_f64().is_some(), "{t}");
        assert_eq!(t["minutes"].as_array().unwrap().len(), 60);
        // 30 days, today last, per client and per model.
        let h = &d["history"];
        assert_eq!(h["days"].as_array().unwrap().len(), 30);
        assert_eq!(
            h["days"][29].as_str().unwrap(),
            &d["generated_at"].as_str().unwrap()[..10]
        );
        assert!((h["by_client"]["bob"]["cost_usd"][29].as_f64().unwrap() - 1.26).abs() < 1e-9);
        assert_eq!(h["by_model"]["openai/gpt-4o-mini"]["tokens"][29], 6 * 1540);
        assert_no_key(&reply.text());
    })
    .await;
}

#[tokio::test]
async fn a_client_sees_only_its_own_agent_and_no_token_gets_the_login_view() {
    bounded(async {
        let (_up, proxy) = busy().await;
        let d = data(&proxy.url, Some(ALICE)).await.json();
        assert_eq!(d["view"], "client");
        assert_eq!(d["status"], serde_json::Value::Null);
        assert_eq!(d["traffic"], serde_json::Value::Null);
        assert_eq!(d["agents"].as_array().unwrap().len(), 1);
        assert_eq!(d["agents"][0]["client"], "alice");
        assert_eq!(
            d["history"]["by_client"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["alice"]
        );
        let text = d.to_string();
        assert!(
            !text.contains("bob") && !text.contains("sk-or-v1"),
            "{text}"
        );
        // Refusals are the login view (a 200, so the browser logs no failed request).
        for (token, reason) in [
            (None, "missing-token"),
            (Some("kp-nobody-0123456789abcdef"), "invalid-token"),
        ] {
            let reply = data(&proxy.url, token).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.headers["x-keyproxy-error"], reason);
            let d = reply.json();
            assert_eq!(d["view"], "login", "{d}");
            assert!(
                d["message"].as_str().unwrap().starts_with("keyproxy:"),
                "{d}"
            );
            assert_eq!(d.as_object().unwrap().len(), 3, "nothing else: {d}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_page_comes_from_the_binary_with_no_store_and_a_strict_csp() {
    bounded(async {
        let proxy = Proxy::start(
            &simple_config("http://127.0.0.1:9", "openrouter:default"),
            &[],
        )
        .await;
        let mut total = 0;
        for (path, kind) in [
            ("/_keyproxy/", "text/html"),
            ("/_keyproxy/ui/page.js", "text/javascript"),
            ("/_keyproxy/ui/page.css", "text/css"),
            ("/_keyproxy/ui/icon.svg", "image/svg+xml"),
            ("/_keyproxy/ui/data", "application/json"),
        ] {
            let reply = get(&format!("{}{path}", proxy.url), &[]).await;
            assert_eq!(reply.status, 200, "{path}");
            let h = &reply.headers;
            assert!(
                h["content-type"].to_str().unwrap().starts_with(kind),
                "{path}"
            );
            assert_eq!(h["cache-control"], "no-store", "{path}");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(
                csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self'"),
                "{csp}"
            );
            assert!(!csp.contains("unsafe") && !csp.contains("http"), "{csp}");
            assert_eq!(h["x-frame-options"], "DENY");
            let text = reply.text();
            if path != "/_keyproxy/ui/data" {
                total += text.len();
                // Nothing from elsewhere: the only URL is SVG's namespace, which is no request.
                let elsewhere = text.replace("http://www.w3.org/2000/svg", "");
                assert!(
                    !elsewhere.contains("http://")
                        && !elsewhere.contains("https://")
                        && !elsewhere.contains("//cdn"),
                    "{path}"
                );
                assert!(
                    !text.contains("<script>") && !text.contains(" style="),
                    "{path}: inline script or style"
                );
            }
        }
        assert!(total < 200 * 1024, "assets: {total} bytes");
        let html = get(&format!("{}/_keyproxy/", proxy.url), &[]).await.text();
        assert!(
            html.contains(r#"<link rel="icon" href="/_keyproxy/ui/icon.svg""#),
            "the icon is declared, so no /favicon.ico"
        );
        // Without clients, on loopback, the page needs no token.
        let d = get(&format!("{}/_keyproxy/ui/data", proxy.url), &[])
            .await
            .json();
        assert_eq!(d["view"], "admin");
        // /_keyproxy redirects to the page; a browser opening /_keyproxy/me gets the page, a
        // program the JSON.
        let r = get(&format!("{}/_keyproxy", proxy.url), &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.headers["location"].to_str().unwrap()),
            (308, "/_keyproxy/")
        );
        let page = get(
            &format!("{}/_keyproxy/me", proxy.url),
            &[("accept", "text/html,*/*")],
        )
        .await;
        assert!(page.text().starts_with("<!doctype html>"));
        let json = get(&format!("{}/_keyproxy/me", proxy.url), &[]).await;
        assert_eq!(json.headers["content-type"], "application/json");
        assert_eq!(
            get(&format!("{}/_keyproxy/ui/nothing", proxy.url), &[])
                .await
                .status,
            404
        );
    })
    .await;
}

#[tokio::test]
async fn usage_since_until_by_sums_a_range_one_way() {
    bounded(async {
        let (_up, proxy) = busy().await;
        let auth = format!("Bearer {ADMIN}");
        let url = |q: &str| format!("{}/_keyproxy/usage?{q}", proxy.url);
        let today = data(&proxy.url, Some(ADMIN)).await.json()["history"]["days"][29]
            .as_str()
            .unwrap()
            .to_owned();
        let r = get(
            &url(&format!("since={today}&by=client")),
            &[("authorization", &auth)],
        )
        .await
        .json();
        let groups: Vec<_> = r["range"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["key"].as_str().unwrap().to_owned(),
                    g["counts"]["requests"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(groups, [("alice".to_owned(), 3), ("bob".to_owned(), 3)]);
        let r = get(&url("until=2000-01-01"), &[("authorization", &auth)])
            .await
            .json();
        assert_eq!(r["range"]["by"], "day");
        assert_eq!(r["range"]["total"]["requests"], 0);
        let bad = get(&url("since=yesterday"), &[("authorization", &auth)]).await;
        assert_eq!(bad.status, 400);
        assert!(bad.text().contains("YYYY-MM-DD"), "{}", bad.text());
        // The command line prints the same, one line per model.
        let bin = Bin::new();
        let mut cmd = bin.command();
        cmd.args([
            "--listen",
            proxy.url.trim_start_matches("http://"),
            "usage",
            "--since",
            &today,
            "--until",
            &today,
            "--by",
            "model",
        ])
        .env("KEYPROXY_ADMIN_TOKEN", ADMIN);
        let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains("openai/gpt-4o-mini"))
            .unwrap_or_default()
            .to_owned();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            ["openai/gpt-4o-mini", "6", "7200", "2040", "2.5200"],
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .starts_with(&format!("{today} to {today} (UTC), by model:")),
            "{}",
            out.stdout
        );
        let mut cmd = bin.command();
        cmd.args(["usage", "--since", "last week"]);
        let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
        assert_eq!(out.code, Some(2));
        assert!(out.stderr.contains("YYYY-MM-DD"), "{}", out.stderr);
    })
    .await;
}
