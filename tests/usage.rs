//! Usage accounting: tokens, cost and model read from answers as they pass (JSON, and SSE whose
//! usage event is split across chunks, OpenAI/OpenRouter and Anthropic shapes), counted per
//! client, profile and model, kept in SQLite across a restart and a SIGKILL.

mod support;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;

const TOKEN: &str = "kp-laptop-0123456789abcdef0123";
const OPENROUTER_JSON: &str = r#"{"id":"gen-1","model":"openai/gpt-4o-mini","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"cost":0.0042}}"#;

fn with_client(upstream: &str) -> String {
    format!(
        "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"laptop\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\n"
    )
}

fn json_answer() -> Handler {
    Arc::new(|_| reply(200, OPENROUTER_JSON))
}

/// Waits (polling the endpoint: the ledger counts on its own thread) until `cond` holds of
/// `/_keyproxy/usage`, and returns it.
async fn usage_when(url: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    loop {
        let auth = format!("Bearer {TOKEN}");
        let v = get(
            &format!("{url}/_keyproxy/usage"),
            &[("authorization", &auth)],
        )
        .await
        .json();
        if cond(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn requests(v: &serde_json::Value) -> u64 {
    v["all_time"]["total"]["requests"].as_u64().unwrap_or(0)
}

async fn chat(url: &str) -> Reply {
    chat_as(url, TOKEN, "x").await
}

#[tokio::test]
async fn a_json_answer_is_counted_per_client_profile_and_model_with_its_cost() {
    bounded(async {
        let up = Mock::start(json_answer()).await;
        let proxy = Proxy::start(&with_client(&up.url), &[("keys.toml", &keys_toml("openrouter:default", KEY_A))]).await;
        let reply = chat(&proxy.url).await;
        assert_eq!(reply.text(), OPENROUTER_JSON, "the answer passes unchanged");
        let v = usage_when(&proxy.url, |v| requests(v) == 1).await;
        for period in ["today", "month", "all_time"] {
            let c = &v[period]["by_client"]["laptop"];
            assert_eq!(c["prompt_tokens"], 12, "{period}: {v}");
            assert_eq!(c["completion_tokens"], 34);
            assert!((c["cost_usd"].as_f64().unwrap() - 0.0042).abs() < 1e-9);
        }
        assert_eq!(v["today"]["by_model"]["openai/gpt-4o-mini"]["requests"], 1);
        assert_eq!(v["today"]["by_profile"]["openrouter:default"]["requests"], 1);
        let auth = format!("Bearer {TOKEN}");
        let metrics = get(&format!("{}/_keyproxy/metrics", proxy.url), &[("authorization", &auth)]).await.text();
        assert!(metrics.contains(r#"keyproxy_tokens_total{client="laptop",profile="openrouter:default",direction="completion"} 34"#), "{metrics}");
        assert!(metrics.contains(r#"keyproxy_cost_usd_total{client="laptop",profile="openrouter:default"} 0.0042"#), "{metrics}");
    })
    .await;
}

/// An SSE stream whose usage event arrives in pieces: every byte passes unchanged, and the
/// usage is counted once the stream ends.
async fn stream_through(chunks: Vec<&'static [u8]>) -> (serde_json::Value, Bytes) {
    let (tx, handler) = one_event_stream(32);
    let up = Mock::start(handler).await;
    let proxy = Proxy::start(
        &with_client(&up.url),
        &[("keys.toml", &keys_toml("openrouter:default", KEY_A))],
    )
    .await;
    let auth = format!("Bearer {TOKEN}");
    let req = request(
        "POST",
        &format!("{}/api/v1/chat/completions", proxy.url),
        &[("authorization", &auth)],
        "{}",
    );
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut sent = Vec::new();
    for chunk in chunks {
        sent.extend_from_slice(chunk);
        tx.send(Bytes::from_static(chunk)).await.unwrap();
        // Each piece reaches the client before the next is sent: nothing is held back.
        while got.len() < sent.len() {
            let frame = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(frame.data_ref().unwrap());
        }
    }
    drop(tx);
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(frame.unwrap().data_ref().unwrap_or(&Bytes::new()));
    }
    assert_eq!(got, sent);
    let v = usage_when(&proxy.url, |v| requests(v) == 1).await;
    (v, Bytes::from(got))
}

#[tokio::test]
async fn an_sse_usage_event_split_across_chunks_is_counted() {
    bounded(async {
        let (v, _) = stream_through(vec![
            b"data: {\"model\":\"openai/gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
            b"data: {\"model\":\"openai/gpt-4o\",\"choices\":[],\"usa",
            b"ge\":{\"prompt_tokens\":7,\"completion_tok",
            b"ens\":9,\"cost\":0.25}}\n\ndata: [DONE]\n\n",
        ])
        .await;
        let m = &v["today"]["by_model"]["openai/gpt-4o"];
        assert_eq!((m["prompt_tokens"].as_u64(), m["completion_tokens"].as_u64()), (Some(7), Some(9)), "{v}");
        assert_eq!(m["cost_usd"], 0.25);
    })
    .await;
}

#[tokio::test]
async fn an_anthropic_stream_is_counted() {
    bounded(async {
        let (v, _) = stream_through(vec![
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ])
        .await;
        let m = &v["today"]["by_model"]["claude-sonnet-4-5"];
        assert_eq!((m["prompt_tokens"].as_u64(), m["completion_tokens"].as_u64()), (Some(25), Some(15)), "{v}");
    })
    .await;
}

fn serve_config(bin: &Bin, upstream: &str) {
    let dir = bin.config_dir();
    std::fs::write(
        dir.join("keyproxy.toml"),
        format!("state_dir = \"state\"\n{}", with_client(upstream)),
    )
    .unwrap();
    write_private(
        &dir.join("keys.toml"),
        &keys_toml("openrouter:default", KEY_A),
    );
}

#[tokio::test]
async fn usage_survives_a_restart_and_a_sigkill() {
    bounded(async {
        let up = Mock::start(json_answer()).await;
        let bin = Bin::new();
        serve_config(&bin, &up.url);
        let db = bin.config_dir().join("state/usage.sqlite3");

        // SIGTERM right after the answer: the count is written on the way out.
        let served = Served::start(bin.command()).await;
        assert_eq!(chat(&served.url).await.status, 200);
        usage_when(&served.url, |v| requests(v) == 1).await;
        served.stop().await;

        // SIGKILL once the count is on disk (at most a second after the answer).
        let served = Served::start(bin.command()).await;
        assert_eq!(
            requests(&usage_when(&served.url, |v| requests(v) == 1).await),
            1
        );
        assert_eq!(chat(&served.url).await.status, 200);
        let on_disk = |db: &std::path::Path| -> i64 {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.query_row("SELECT COALESCE(SUM(requests), 0) FROM usage", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        while on_disk(&db) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served.signal("KILL");

        let served = Served::start(bin.command()).await;
        let v = usage_when(&served.url, |v| requests(v) >= 2).await;
        assert_eq!(requests(&v), 2, "{v}");
        assert_eq!(
            v["all_time"]["by_client"]["laptop"]["completion_tokens"],
            68
        );
        // `keyproxy usage` prints the same as a table.
        let mut cmd = bin.command();
        cmd.args([
            "--listen",
            served.url.trim_start_matches("http://"),
            "usage",
        ])
        .env("KEYPROXY_CLIENT_TOKEN", TOKEN);
        let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let row = out
            .stdout
            .lines()
            .find(|l| l.contains("openai/gpt-4o-mini"))
            .unwrap_or_default()
            .to_owned();
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "laptop",
                "openrouter:default",
                "openai/gpt-4o-mini",
                "2",
                "24",
                "68",
                "0.0084"
            ],
            "{}",
            out.stdout
        );
        assert!(out.stdout.starts_with("today (UTC):"), "{}", out.stdout);
        served.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_database_is_reported_and_keyproxy_still_serves() {
    bounded(async {
        let up = Mock::start(json_answer()).await;
        let bin = Bin::new();
        serve_config(&bin, &up.url);
        let state = bin.config_dir().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("usage.sqlite3"), vec![0x5a; 8192]).unwrap();
        let mut served = Served::start(bin.command()).await;
        assert_eq!(chat(&served.url).await.status, 200);
        // Said when the database is first needed.
        let line = served.wait_for_log("usage database").await;
        assert!(line.contains("counted in memory only"), "{line}");
        let v = usage_when(&served.url, |v| requests(v) == 1).await;
        assert!(
            v["database"]["error"]
                .as_str()
                .unwrap()
                .contains("usage.sqlite3"),
            "{v}"
        );
        // The damaged file is left as it was, for the user to look at.
        assert_eq!(
            std::fs::read(state.join("usage.sqlite3")).unwrap(),
            vec![0x5a; 8192]
        );
        served.stop().await;
    })
    .await;
}
