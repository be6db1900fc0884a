//! The real opencode (`opencode-ai`, pinned below, installed from the npm registry into target/)
//! through keyproxy with the README's settings: the built-in `openrouter` provider's `baseURL`
//! in ~/.config/opencode/opencode.json and a placeholder `OPENROUTER_API_KEY`. A turn streams
//! from a mock OpenRouter chat completions API with only the injected key; with no key,
//! keyproxy's sentence is shown.

#[path = "agents/common.rs"]
mod common;
mod support;

use std::sync::Arc;

use common::*;
use support::*;

const OPENCODE: &str = "opencode-ai@1.18.33";

/// A mock OpenRouter: chat completions as SSE when asked to stream, as JSON otherwise.
fn openrouter() -> Handler {
    Arc::new(|r: &Received| {
        if !r.uri.path().ends_with("/chat/completions") {
            return reply(404, r#"{"error":{"message":"not found"}}"#);
        }
        let streaming = String::from_utf8_lossy(&r.body).contains("\"stream\":true");
        if !streaming {
            return reply(
                200,
                r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello from mock"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
            );
        }
        let events = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hello from mock"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
            "[DONE]",
        ];
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let mut resp = reply(200, &body);
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        resp
    })
}

async fn opencode_turn(user: &User, base_url: &str) -> Ran {
    user.write(
        ".config/opencode/opencode.json",
        &format!(r#"{{"provider":{{"openrouter":{{"options":{{"baseURL":"{base_url}"}}}}}}}}"#),
    );
    user.run(
        "opencode",
        &[
            "run",
            "-m",
            "openrouter/anthropic/claude-sonnet-4",
            "say hi",
        ],
        &[("OPENROUTER_API_KEY", "placeholder-not-a-key")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_runs_a_turn_through_keyproxy_and_shows_a_missing_key() {
    let Some(dir) = install("opencode", OPENCODE) else {
        return;
    };
    let user = User::new(&dir).await;
    let up = Mock::start(openrouter()).await;
    let config = keyproxy_config(
        user.home.path(),
        "openrouter:default",
        KEY_A,
        &routes_with_nokey("openrouter", &up.url),
    );
    let served = keyproxy(&user, &config).await;

    let straight = opencode_turn(&user, &format!("{}/api/v1", up.url)).await;
    assert!(straight.out.contains("hello from mock"), "{}", straight.out);
    let before = up.count();
    let turn = opencode_turn(&user, &format!("{}/api/v1", served.url)).await;
    assert!(turn.ok, "{}", turn.out);
    assert!(turn.out.contains("hello from mock"), "{}", turn.out);
    let sent = &up.received()[before..];
    assert!(!sent.is_empty());
    for r in sent {
        assert_eq!(r.headers["authorization"], format!("Bearer {KEY_A}"));
    }
    eprintln!(
        "opencode turn: {:?} through keyproxy, {:?} straight to the mock",
        turn.took, straight.took
    );

    let before = up.count();
    let refused = opencode_turn(&user, &format!("{}/nokey/api/v1", served.url)).await;
    assert_refused_at_once(&refused, "openrouter:missing", &up, before);

    stop_cleanly(served).await;
}
