//! The real Claude Code (`@anthropic-ai/claude-code`, pinned below, installed from the npm
//! registry into target/) through keyproxy with the README's settings: `ANTHROPIC_BASE_URL` at
//! an Anthropic route and a placeholder `ANTHROPIC_API_KEY`. A turn streams from a mock
//! Anthropic Messages API with only the injected key; with no key, keyproxy's sentence is shown
//! after one request (`x-should-retry: false`; without it Claude Code retried for minutes).

#[path = "agents/common.rs"]
mod common;
mod support;

use std::sync::Arc;

use common::*;
use support::*;

const CLAUDE_CODE: &str = "@anthropic-ai/claude-code@2.1.332";

/// A mock Anthropic Messages API: SSE when asked to stream, JSON otherwise.
fn messages() -> Handler {
    Arc::new(|r: &Received| {
        if !r.uri.path().ends_with("/v1/messages") {
            return reply(
                404,
                r#"{"type":"error","error":{"type":"not_found_error","message":"no"}}"#,
            );
        }
        let streaming = String::from_utf8_lossy(&r.body).contains("\"stream\":true");
        if !streaming {
            return reply(
                200,
                r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hello from mock"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":3}}"#,
            );
        }
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello from mock"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let body: String = events
            .iter()
            .map(|(event, data)| format!("event: {event}\ndata: {data}\n\n"))
            .collect();
        let mut resp = reply(200, &body);
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        resp
    })
}

async fn claude_turn(user: &User, base_url: &str) -> Ran {
    user.run(
        "claude",
        &["-p", "say hi"],
        &[
            ("ANTHROPIC_BASE_URL", base_url),
            ("ANTHROPIC_API_KEY", "placeholder-not-a-key"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_a_turn_through_keyproxy_and_shows_a_missing_key_at_once() {
    let Some(dir) = install("claude-code", CLAUDE_CODE) else {
        return;
    };
    let user = User::new(&dir).await;
    let up = Mock::start(messages()).await;
    let config = keyproxy_config(
        user.home.path(),
        "anthropic:default",
        KEY_A,
        &routes_with_nokey("anthropic", &up.url),
    );
    let served = keyproxy(&user, &config).await;

    let straight = claude_turn(&user, &up.url).await;
    assert!(straight.out.contains("hello from mock"), "{}", straight.out);
    let before = up.count();
    let turn = claude_turn(&user, &served.url).await;
    assert!(turn.ok, "{}", turn.out);
    assert!(turn.out.contains("hello from mock"), "{}", turn.out);
    let sent = &up.received()[before..];
    assert!(!sent.is_empty());
    for r in sent {
        assert_eq!(r.headers["x-api-key"], KEY_A);
        assert!(r.headers.get("authorization").is_none());
    }
    eprintln!(
        "Claude Code turn: {:?} through keyproxy, {:?} straight to the mock",
        turn.took, straight.took
    );

    let before = up.count();
    let refused = claude_turn(&user, &format!("{}/nokey", served.url)).await;
    assert_refused_at_once(&refused, "anthropic:missing", &up, before);

    let log = stop_cleanly(served).await;
    let asked = log
        .iter()
        .filter(|l| l.contains("anthropic:missing") && l.contains("keyproxy::access"))
        .count();
    assert!(
        asked <= 2,
        "Claude Code asked {asked} times for a missing key"
    );
}
