//! `models` on a client: every model a request names (in its body's `model`, `models`, tools and
//! plugins, and in a Gemini or Azure URL path) is checked before forwarding; a model the client
//! may not use, or a field or body keyproxy cannot read, is refused locally and nothing is sent.

mod support;
use std::sync::Arc;

use bytes::Bytes;
use support::*;

const LAPTOP: &str = "kp-laptop-0123456789abcdef0123";
const CI: &str = "kp-ci-fedcba9876543210fedcba98";

fn config(upstream: &str) -> String {
    format!(
        r#"keys_files = ["keys.toml"]
retry_body_limit = 200

[[routes]]
prefix = "/"
upstream = "{upstream}"
profile = "openrouter:default"

[[clients]]
name = "laptop"
token = "{LAPTOP}"
profiles = ["openrouter:default"]
models = ["openai/gpt-4o-mini", "anthropic/*", "gemini-2.5-flash", "mini-deploy"]

[[clients]]
name = "ci"
token = "{CI}"
profiles = ["openrouter:default"]
"#
    )
}

async fn start(handler: Handler, keys: &str) -> (Mock, Proxy) {
    let up = Mock::start(handler).await;
    let proxy = Proxy::start(&config(&up.url), &[("keys.toml", keys)]).await;
    (up, proxy)
}

async fn post(proxy: &Proxy, token: &str, body: &str) -> Reply {
    let url = format!("{}/api/v1/chat/completions", proxy.url);
    let auth = format!("Bearer {token}");
    send(
        &client(),
        request("POST", &url, &[("authorization", &auth)], body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn an_allowed_model_is_forwarded_with_its_body_unchanged() {
    bounded(async {
        let (up, proxy) = start(ok_handler(), &keys_toml("openrouter:default", KEY_A)).await;
        let body = r#"{"messages":[{"role":"user","content":"hi"}],"model":"anthropic/claude-sonnet-4.5","stream":true}"#;
        let reply = post(&proxy, LAPTOP, body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(up.received()[0].body, Bytes::from(body));
        let reply = post(&proxy, LAPTOP, r#"{"model":"openai/gpt-4o-mini"}"#).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // No body asks for no model: a model list passes.
        let auth = format!("Bearer {LAPTOP}");
        let reply = get(&format!("{}/api/v1/models", proxy.url), &[("authorization", &auth)]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    })
    .await;
}

#[tokio::test]
async fn a_model_outside_the_list_is_refused_and_nothing_is_forwarded() {
    bounded(async {
        let (up, proxy) = start(ok_handler(), &keys_toml("openrouter:default", KEY_A)).await;
        let reply = post(&proxy, LAPTOP, r#"{"model":"openai/gpt-4o","messages":[]}"#).await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.headers["x-keyproxy-error"], "model-not-allowed");
        let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with("keyproxy: client 'laptop' may not use model 'openai/gpt-4o'; ask for one of its models: openai/gpt-4o-mini, anthropic/*"), "{message}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_body_that_cannot_be_read_is_refused_only_under_a_limit() {
    bounded(async {
        let (up, proxy) = start(ok_handler(), &keys_toml("openrouter:default", KEY_A)).await;
        let large = format!(r#"{{"model":"anthropic/x","pad":"{}"}}"#, "x".repeat(300));
        for (body, why) in [
            ("model=anthropic/x", "is not a JSON object"),
            (r#"{"messages":[]}"#, "has no top-level \"model\" string"),
            (r#"{"model":7}"#, "\"model\" is not a model name string"),
            (large.as_str(), "larger than retry_body_limit (200 bytes)"),
        ] {
            let reply = post(&proxy, LAPTOP, body).await;
            assert_eq!(reply.status, 400, "{body}");
            assert_eq!(reply.headers["x-keyproxy-error"], "model-unreadable");
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains(why), "{message}");
        }
        assert_eq!(up.count(), 0);
        // A client without a limit sends the same bodies through, streamed.
        for body in ["model=anthropic/x", large.as_str()] {
            assert_eq!(post(&proxy, CI, body).await.status, 200);
        }
        assert_eq!(up.count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_read_body_is_sent_again_on_the_next_key() {
    bounded(async {
        let handler: Handler = Arc::new(|r| match r.headers["authorization"].to_str().unwrap() {
            a if a.ends_with(KEY_A) => reply(401, r#"{"error":{"message":"User not found."}}"#),
            _ => reply(200, "{}"),
        });
        let keys =
            format!("[profiles.\"openrouter:default\"]\nkeys = [\"{KEY_A}\", \"{KEY_B}\"]\n");
        let (up, proxy) = start(handler, &keys).await;
        let body = r#"{"model":"anthropic/claude"}"#;
        let reply = post(&proxy, LAPTOP, body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let got = up.received();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|r| r.body == body));
    })
    .await;
}

async fn post_to(proxy: &Proxy, path: &str, body: &str) -> Reply {
    let auth = format!("Bearer {LAPTOP}");
    let url = format!("{}{path}", proxy.url);
    send(
        &client(),
        request("POST", &url, &[("authorization", &auth)], body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn every_model_a_body_names_is_checked_and_nothing_is_forwarded() {
    bounded(async {
        let (up, proxy) = start(ok_handler(), &keys_toml("openrouter:default", KEY_A)).await;
        for (body, model) in [
            (r#"{"model":"openai/gpt-4o-mini","models":["openai/o1-pro"]}"#, "openai/o1-pro"),
            (r#"{"models":["anthropic/claude","openai/o1-pro"],"route":"fallback"}"#, "openai/o1-pro"),
            (r#"{"model":"anthropic/claude","tools":[{"type":"advisor_20260301","name":"advisor","model":"openai/o1-pro"}]}"#, "openai/o1-pro"),
            (r#"{"model":"anthropic/claude","plugins":[{"id":"auto-router","allowed_models":["openai/o1-pro"]}]}"#, "openai/o1-pro"),
            (r#"{"model":"anthropic/claude@preset/mine"}"#, "anthropic/claude@preset/mine"),
            (r#"{"model":"anthropic/claude","fallbacks":[{"model":"openai/o1-pro"}]}"#, "openai/o1-pro"),
            (r#"{"m\u006fdel":"openai/o1-pro"}"#, "openai/o1-pro"),
        ] {
            let reply = post(&proxy, LAPTOP, body).await;
            assert_eq!(reply.status, 403, "{body}: {}", reply.text());
            assert_eq!(reply.headers["x-keyproxy-error"], "model-not-allowed");
            let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains(&format!("may not use model '{model}'")), "{message}");
        }
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_field_keyproxy_cannot_check_is_refused_naming_it() {
    bounded(async {
        let (up, proxy) = start(ok_handler(), &keys_toml("openrouter:default", KEY_A)).await;
        for (body, field) in [
            (
                r#"{"model":"openai/gpt-4o-mini","model":"openai/o1-pro"}"#,
                "\"model\" twice",
            ),
            (
                r#"{"model":"anthropic/x","models":"openai/o1-pro"}"#,
                "\"models\" is not a list",
            ),
            (
                r#"{"model":"anthropic/x","models":[{"id":"openai/o1-pro"}]}"#,
                "\"models\" is not a list",
            ),
            (
                r#"{"model":"anthropic/x","route":{"custom":true}}"#,
                "\"route\"",
            ),
            (r#"{"model":"anthropic/x","route":"fallback"}"#, "\"route\""),
            (r#"{"model":"anthropic/x","preset":"mine"}"#, "\"preset\""),
            (
                r#"{"model":"anthropic/x","fallbacks":[{"max_tokens":9}]}"#,
                "\"fallbacks[0].model\"",
            ),
            (
                r#"{"model":"anthropic/x","Model":"openai/o1-pro"}"#,
                "\"Model\"",
            ),
            (
                r#"{"model":"anthropic/x","tools":[{"type":"openrouter:advisor"}]}"#,
                "\"tools[0].type\"",
            ),
        ] {
            let reply = post(&proxy, LAPTOP, body).await;
            assert_eq!(reply.status, 400, "{body}: {}", reply.text());
            assert_eq!(reply.headers["x-keyproxy-error"], "model-unreadable");
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains(field), "{body}: {message}");
        }
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn models_in_gemini_and_azure_paths_are_checked() {
    bounded(async {
        let (up, proxy) = start(ok_handler(), &keys_toml("openrouter:default", KEY_A)).await;
        let gemini = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
        let azure = r#"{"messages":[]}"#;
        for (path, body, model) in [
            (
                "/v1beta/models/gemini-2.5-pro:generateContent",
                gemini,
                "gemini-2.5-pro",
            ),
            (
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                gemini,
                "gemini-2.5-pro",
            ),
            (
                "/v1beta/models/gemini-2.5-pro%3AgenerateContent",
                gemini,
                "gemini-2.5-pro",
            ),
            (
                "/v1beta/models/gemini%2D2.5-pro:countTokens",
                gemini,
                "gemini-2.5-pro",
            ),
            (
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                azure,
                "gpt-4o",
            ),
            (
                "/openai/deployments/mini-deploy/chat/completions",
                r#"{"model":"openai/o1-pro"}"#,
                "openai/o1-pro",
            ),
        ] {
            let reply = post_to(&proxy, path, body).await;
            assert_eq!(reply.status, 403, "{path}: {}", reply.text());
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                message.contains(&format!("may not use model '{model}'")),
                "{message}"
            );
        }
        for path in [
            "/v1beta/models/gemini-2.5-flash/../gemini-2.5-pro:generateContent",
            "/v1beta/models%2Fgemini-2.5-pro:generateContent",
        ] {
            let reply = post_to(&proxy, path, gemini).await;
            assert_eq!(reply.status, 400, "{path}: {}", reply.text());
            assert!(reply.text().contains("URL path"), "{}", reply.text());
        }
        // A GET that asks to be taken for a POST is checked as one.
        let auth = format!("Bearer {LAPTOP}");
        let url = format!("{}/v1beta/models/gemini-2.5-pro:generateContent", proxy.url);
        let headers = [
            ("authorization", auth.as_str()),
            ("x-http-method-override", "POST"),
        ];
        let reply = send(&client(), request("GET", &url, &headers, gemini)).await;
        assert_eq!(reply.status, 403, "{}", reply.text());
        assert_eq!(up.count(), 0);
        for path in [
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "/openai/deployments/mini-deploy/chat/completions?api-version=2024-10-21",
        ] {
            let body = if path.starts_with("/v1beta") {
                gemini
            } else {
                azure
            };
            let reply = post_to(&proxy, path, body).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        }
        assert_eq!(up.count(), 2);
        assert_eq!(up.received()[0].body, gemini.as_bytes());
    })
    .await;
}
