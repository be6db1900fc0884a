//! What an agent shows its user when keyproxy answers itself, or when the provider refuses a key:
//! a message that starts with `keyproxy:`, says what to do within its first 180 characters, and
//! survives log redaction of `NAME: value` (OpenClaw masks what follows `...KEY: `), in the
//! OpenAI shape, or Anthropic's on an anthropic route.

mod support;
use std::sync::Arc;

use keyproxy::proxy::check_agent_readable;
use support::*;

fn message(reply: &Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {}", reply.text()))
        .to_owned()
}

fn assert_readable(reply: &Reply) {
    let msg = message(reply);
    if let Err(why) = check_agent_readable(&msg) {
        panic!(
            "{} ({}): {why}",
            reply.status,
            reply.headers["x-keyproxy-error"].to_str().unwrap()
        );
    }
}

#[tokio::test]
async fn every_local_answer_is_readable_through_agents_filters() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let config = format!(
            "keys_files = [\"keys.toml\"]\n\
             [[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n\
             [[routes]]\nprefix = \"/dead\"\nupstream = \"{dead}\"\nprofile = \"p\"\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let missing = get(&format!("{}/api/v1/chat/completions", proxy.url), &[]).await;
        assert_eq!(missing.status, 401);
        let msg = message(&missing);
        assert!(
            msg.starts_with("keyproxy: no key for profile 'openrouter:default'; add one to "),
            "{msg}"
        );
        let no_route = get(&format!("{}/elsewhere{}", proxy.url, "/x".repeat(300)), &[]).await;
        assert_eq!(no_route.status, 404);
        let unreachable = get(&format!("{}/dead/v1/models", proxy.url), &[]).await;
        assert_eq!(unreachable.status, 502);
        let admin = get(&format!("{}/_keyproxy/nope", proxy.url), &[]).await;
        assert_eq!(admin.status, 404);
        for reply in [&missing, &no_route, &unreachable, &admin] {
            assert_readable(reply);
        }
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn client_token_answers_are_readable_too() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "{}\n[[clients]]\nname = \"laptop\"\ntoken = \"kp-laptop-0123456789\"\nprofiles = [\"p\"]\n",
            simple_config(&up.url, "p")
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let url = format!("{}/v1/models", proxy.url);
        let none = get(&url, &[]).await;
        let wrong = get(&url, &[("authorization", "Bearer kp-wrong")]).await;
        let other = get(
            &url,
            &[("authorization", "Bearer kp-laptop-0123456789"), ("x-keyproxy-profile", "q")],
        )
        .await;
        assert_eq!(none.status, 401);
        assert_eq!(wrong.status, 401);
        assert_eq!(other.status, 403);
        for reply in [&none, &wrong, &other] {
            assert_readable(reply);
        }
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_anthropic_route_answers_in_anthropics_error_shape() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/anthropic\"\nprovider = \"anthropic\"\nupstream = \"{}\"\nstrip_prefix = true\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("openrouter:x", KEY_A))]).await;
        let reply = get(&format!("{}/anthropic/v1/messages", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let body = reply.json();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["profile"], "anthropic:default");
        assert_readable(&reply);
        assert_eq!(up.count(), 0);
    })
    .await;
}

/// An upstream that refuses every key with `status` and `body`.
fn refusing(status: u16, body: &'static str) -> Handler {
    Arc::new(move |_| reply(status, body))
}

async fn refused_through_proxy(status: u16, body: &'static str) -> (Reply, String) {
    let up = Mock::start(refusing(status, body)).await;
    let proxy = Proxy::start(
        &simple_config(&up.url, "openrouter:default"),
        &[("keys.toml", &keys_toml("openrouter:default", KEY_A))],
    )
    .await;
    let reply = get(&format!("{}/api/v1/chat/completions", proxy.url), &[]).await;
    assert_eq!(reply.status, status);
    assert_eq!(
        up.count(),
        1,
        "a refusal is answered once, not retried on the same key"
    );
    (reply, proxy.path("keys.toml").display().to_string())
}

#[tokio::test]
async fn a_providers_refusal_names_the_key_and_what_to_do() {
    bounded(async {
        let (reply, keys) = refused_through_proxy(
            401,
            r#"{"error":{"message":"User not found.","code":401},"user_id":"u1"}"#,
        )
        .await;
        let msg = message(&reply);
        assert_eq!(
            msg,
            format!("keyproxy: openrouter refused key {FP_A} of profile 'openrouter:default' (401); replace it in keys file {keys}. openrouter said: User not found.")
        );
        assert_readable(&reply);
        let body = reply.json();
        assert_eq!(body["error"]["code"], 401);
        assert_eq!(body["user_id"], "u1");
        assert_eq!(reply.headers["x-keyproxy-key"], FP_A);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_no_key(&reply.text());

        let (reply, _) = refused_through_proxy(
            402,
            r#"{"error":{"message":"Insufficient credits","code":402}}"#,
        )
        .await;
        assert!(message(&reply).contains("(402); top up its credit"), "{}", reply.text());
        assert_readable(&reply);

        let (reply, _) = refused_through_proxy(
            403,
            r#"{"type":"error","error":{"type":"permission_error","message":"not allowed"}}"#,
        )
        .await;
        assert!(message(&reply).contains("(403); check what the key may do"), "{}", reply.text());
        assert_eq!(reply.json()["error"]["type"], "permission_error");
    })
    .await;
}

#[tokio::test]
async fn a_refusal_that_is_not_small_json_passes_untouched() {
    bounded(async {
        let (reply, _) = refused_through_proxy(401, "<html>Unauthorized</html>").await;
        assert_eq!(reply.text(), "<html>Unauthorized</html>");

        let big: &'static str = Box::leak(
            format!(
                "{{\"error\":{{\"message\":\"{}\"}}}}",
                "x".repeat(70 * 1024)
            )
            .into_boxed_str(),
        );
        let (reply, _) = refused_through_proxy(401, big).await;
        assert_eq!(
            reply.text(),
            big,
            "a body over 64 KiB streams through as it was"
        );
    })
    .await;
}
