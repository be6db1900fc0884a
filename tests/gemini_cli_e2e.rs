//! The real Gemini CLI (`@google/gemini-cli`, pinned below, installed from the npm registry into
//! target/) through keyproxy with the README's settings: `GOOGLE_GEMINI_BASE_URL` at a Gemini
//! route, a placeholder `GEMINI_API_KEY`, and settings that select `gemini-api-key` auth
//! (without them the CLI picks its gateway auth, which `-p` refuses). A turn streams from a mock
//! `streamGenerateContent` with only the injected key; with no key, keyproxy's sentence reaches
//! the output (inside the CLI's own JSON dump) without a retry storm.

#[path = "agents/common.rs"]
mod common;
mod support;

use std::sync::Arc;

use common::*;
use support::*;

const GEMINI_CLI: &str = "@google/gemini-cli@0.61.0";

/// A mock Gemini API: `generateContent` as JSON, `streamGenerateContent?alt=sse` as SSE.
fn gemini() -> Handler {
    Arc::new(|r: &Received| {
        let chunk = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hello from mock"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":8},"modelVersion":"gemini-mock"}"#;
        let path = r.uri.path();
        if path.ends_with(":streamGenerateContent") {
            let mut resp = reply(200, &format!("data: {chunk}\n\n"));
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            return resp;
        }
        if path.ends_with(":generateContent") {
            return reply(200, chunk);
        }
        if path.ends_with(":countTokens") {
            return reply(200, r#"{"totalTokens":5}"#);
        }
        reply(
            404,
            r#"{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}"#,
        )
    })
}

async fn gemini_turn(user: &User, base_url: &str) -> Ran {
    user.run(
        "gemini",
        // A named model: otherwise the CLI first asks a classifier model to route the turn,
        // which a mock does not answer the way it wants, and retries it for a minute.
        &["-m", "gemini-2.5-flash", "-p", "say hi"],
        &[
            ("GOOGLE_GEMINI_BASE_URL", base_url),
            ("GEMINI_API_KEY", "placeholder-not-a-key"),
            ("GEMINI_CLI_TRUST_WORKSPACE", "true"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_runs_a_turn_through_keyproxy_and_shows_a_missing_key() {
    let Some(dir) = install("gemini-cli", GEMINI_CLI) else {
        return;
    };
    let user = User::new(&dir).await;
    user.write(
        ".gemini/settings.json",
        r#"{"security":{"auth":{"selectedType":"gemini-api-key"}}}"#,
    );
    let up = Mock::start(gemini()).await;
    let config = keyproxy_config(
        user.home.path(),
        "gemini:default",
        KEY_A,
        &routes_with_nokey("gemini", &up.url),
    );
    let served = keyproxy(&user, &config).await;

    let straight = gemini_turn(&user, &up.url).await;
    assert!(straight.out.contains("hello from mock"), "{}", straight.out);
    let before = up.count();
    let turn = gemini_turn(&user, &served.url).await;
    assert!(turn.ok, "{}", turn.out);
    assert!(turn.out.contains("hello from mock"), "{}", turn.out);
    let sent = &up.received()[before..];
    assert!(sent
        .iter()
        .any(|r| r.uri.path().ends_with(":streamGenerateContent")));
    for r in sent {
        assert_eq!(r.headers["x-goog-api-key"], KEY_A);
        assert!(!r.uri.query().unwrap_or_default().contains("placeholder"));
    }
    eprintln!(
        "Gemini CLI turn: {:?} through keyproxy, {:?} straight to the mock",
        turn.took, straight.took
    );

    let before = up.count();
    let refused = gemini_turn(&user, &format!("{}/nokey", served.url)).await;
    assert_refused_at_once(&refused, "gemini:missing", &up, before);

    stop_cleanly(served).await;
}
