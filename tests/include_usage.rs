//! `stream_options.include_usage` for a client with a budget: keyproxy asks for usage on an
//! OpenAI-shaped stream the client did not ask usage of, counts it, and keeps what asking added
//! (the usage-only event, `"usage":null` in every other) from the client, which gets the stream
//! it asked for byte for byte, as it streams. A client that asked gets the stream untouched.

mod support;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;

const TOKEN: &str = "kp-agent-0123456789abcdef01234";

fn config(upstream: &str) -> String {
    format!(
        "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"agent\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\nbudget_usd = 10.0\ntokens_per_day = 100000\n"
    )
}

/// Two content events as the upstream sends them without usage, and with it.
const PLAIN: [&str; 3] = [
    "data: {\"id\":\"c1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];
const WITH_USAGE: [&str; 4] = [
    "data: {\"id\":\"c1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"openai/gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"cost\":0.5}}\n\n",
    "data: [DONE]\n\n",
];

async fn usage_today(url: &str) -> serde_json::Value {
    let auth = format!("Bearer {TOKEN}");
    loop {
        let v = get(
            &format!("{url}/_keyproxy/usage"),
            &[("authorization", &auth)],
        )
        .await
        .json();
        if v["today"]["total"]["requests"].as_u64() == Some(1) {
            return v["today"]["total"].clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `body`, answers with `events` cut into `pieces` bytes each, and returns what the
/// upstream received and what the client got. `expected` is what the client should have once
/// each whole event arrived (one entry per event), so the test waits for each piece to come
/// through before the next leaves: nothing is held past its event.
async fn stream(
    body: &str,
    events: &[&str],
    expected: &[&str],
    piece: usize,
) -> (Received, Bytes, Proxy) {
    let (tx, handler) = one_event_stream(64);
    let up = Mock::start(handler).await;
    let keys = keys_toml("openrouter:default", KEY_A);
    let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys)]).await;
    let auth = format!("Bearer {TOKEN}");
    let url = format!("{}/api/v1/chat/completions", proxy.url);
    let resp = client()
        .request(request(
            "POST",
            &url,
            &[("authorization", &auth)],
            body.to_owned(),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let all = events.concat();
    let mut got = Vec::new();
    let mut sent = 0;
    for chunk in all.as_bytes().chunks(piece) {
        sent += chunk.len();
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        // Whole events sent so far, and what of them the client must have.
        let whole = events
            .iter()
            .scan(0, |end, e| {
                *end += e.len();
                Some(*end)
            })
            .take_while(|end| *end <= sent)
            .count();
        let due: usize = expected[..whole].iter().map(|e| e.len()).sum();
        while got.len() < due {
            let frame = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(frame.data_ref().unwrap());
        }
    }
    drop(tx);
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(frame.unwrap().data_ref().unwrap_or(&Bytes::new()));
    }
    (up.received().remove(0), Bytes::from(got), proxy)
}

#[tokio::test]
async fn usage_is_asked_for_counted_and_kept_from_a_client_that_did_not_ask() {
    bounded(async {
        let body = r#"{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        // What the client should get once each upstream event is through: the usage event adds
        // nothing.
        let expected = [PLAIN[0], PLAIN[1], "", PLAIN[2]];
        for piece in [7, 50, 1000] {
            let (received, got, proxy) = stream(body, &WITH_USAGE, &expected, piece).await;
            let sent: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
            assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
            assert_eq!(sent["messages"][0]["content"], "hi");
            assert_eq!(received.headers["content-length"], received.body.len().to_string());
            assert_eq!(String::from_utf8_lossy(&got), PLAIN.concat(), "pieces of {piece}");
            let total = usage_today(&proxy.url).await;
            assert_eq!((total["prompt_tokens"].as_u64(), total["completion_tokens"].as_u64()), (Some(12), Some(34)), "{total}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_that_asked_for_usage_gets_the_stream_untouched() {
    bounded(async {
        let body =
            r#"{"model":"openai/gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#;
        let (received, got, proxy) = stream(body, &WITH_USAGE, &WITH_USAGE, 13).await;
        assert_eq!(
            received.body,
            body.as_bytes(),
            "the body is sent as the client sent it"
        );
        assert_eq!(String::from_utf8_lossy(&got), WITH_USAGE.concat());
        let total = usage_today(&proxy.url).await;
        assert_eq!(total["completion_tokens"], 34, "{total}");
    })
    .await;
}

#[tokio::test]
async fn a_request_that_is_not_an_openai_stream_is_sent_as_it_is() {
    bounded(async {
        for body in [
            r#"{"model":"openai/gpt-4o","stream":false}"#,
            r#"{"model":"openai/gpt-4o"}"#,
        ] {
            let up = Mock::start(ok_handler()).await;
            let keys = keys_toml("openrouter:default", KEY_A);
            let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys)]).await;
            let auth = format!("Bearer {TOKEN}");
            let url = format!("{}/api/v1/chat/completions", proxy.url);
            let reply = send(
                &client(),
                request("POST", &url, &[("authorization", &auth)], body),
            )
            .await;
            assert_eq!(reply.status, 200);
            assert_eq!(up.received()[0].body, body.as_bytes());
            // A member named twice may be read either way upstream: refused, not guessed.
            let twice = r#"{"model":"openai/gpt-4o","stream":false,"stream":true}"#;
            let reply = send(
                &client(),
                request("POST", &url, &[("authorization", &auth)], twice),
            )
            .await;
            assert_eq!(reply.status, 400, "{}", reply.text());
            assert_eq!(reply.headers["x-keyproxy-error"], "request-unreadable");
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains("\"stream\" twice"), "{message}");
            assert_eq!(up.count(), 1);
        }
    })
    .await;
}

#[tokio::test]
async fn an_event_cut_off_by_the_end_of_the_stream_still_reaches_the_client() {
    bounded(async {
        let body = r#"{"model":"openai/gpt-4o","stream":true}"#;
        let events = [WITH_USAGE[0], WITH_USAGE[1], WITH_USAGE[2], "data: [DONE]"];
        // The last event has no blank line after it: it is held until the stream ends.
        let expected = [PLAIN[0], PLAIN[1], "", ""];
        let (_, got, _) = stream(body, &events, &expected, 9).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{}{}data: [DONE]", PLAIN[0], PLAIN[1])
        );
    })
    .await;
}
