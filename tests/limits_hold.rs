//! Limits that hold: a request reserves before it is sent, so requests at once cannot all pass
//! a budget or token limit; an answer whose usage keyproxy did not see is charged its
//! reservation; a reload that adds a limit or renames a client keeps what was spent; model
//! patterns are read by characters.

mod support;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;
use tokio::sync::mpsc;

const TOKEN: &str = "kp-agent-0123456789abcdef01234";
const COSTLY: &str = r#"{"model":"openai/gpt-4o","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"cost":0.6}}"#;
const CONTENT: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";

fn config(upstream: &str, name: &str, limits: &str) -> String {
    format!(
        "state_dir = \"state\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"{name}\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\n{limits}"
    )
}

async fn start(handler: Handler, limits: &str) -> (Mock, Proxy) {
    let up = Mock::start(handler).await;
    let keys = keys_toml("openrouter:default", KEY_A);
    let proxy = Proxy::start(&config(&up.url, "agent", limits), &[("keys.toml", &keys)]).await;
    (up, proxy)
}

fn chat_request(url: &str) -> http::Request<http_body_util::Full<Bytes>> {
    let auth = format!("Bearer {TOKEN}");
    request(
        "POST",
        &format!("{url}/api/v1/chat/completions"),
        &[("authorization", &auth)],
        r#"{"model":"openai/gpt-4o","stream":true}"#,
    )
}

async fn chat(url: &str) -> Reply {
    send(&client(), chat_request(url)).await
}

/// An upstream that answers each request with an event stream kept open until the test sends
/// on (or drops) the sender it left in the list.
fn held_streams() -> (Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>, Handler) {
    let senders = Arc::new(Mutex::new(Vec::new()));
    let list = senders.clone();
    let handler: Handler = Arc::new(move |_| {
        let (tx, rx) = mpsc::channel(8);
        list.lock().unwrap().push(tx);
        event_stream(rx)
    });
    (senders, handler)
}

/// `/_keyproxy/usage` once `cond` holds of it (the ledger counts on a thread of its own).
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn today(v: &serde_json::Value, field: &str) -> f64 {
    v["today"]["total"][field].as_f64().unwrap_or(0.0)
}

/// Twenty requests at once, each answer costing $0.90, against a $1.00 budget that reserves
/// $0.90: two are forwarded, the rest refused before anything is sent.
async fn twenty_at_once(limits: &str, usage_event: &'static [u8]) {
    let (senders, handler) = held_streams();
    let (up, proxy) = start(handler, limits).await;
    let sent: Vec<_> = (0..20)
        .map(|_| tokio::spawn(client().request(chat_request(&proxy.url))))
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for s in sent {
        let resp = s.await.unwrap().unwrap();
        match resp.status().as_u16() {
            200 => admitted.push(resp.into_body()),
            429 => refused += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!((admitted.len(), refused), (2, 18));
    assert_eq!(up.count(), 2, "only the admitted reach the upstream");
    for tx in senders.lock().unwrap().drain(..) {
        tx.try_send(Bytes::from_static(usage_event)).unwrap();
    }
    for mut body in admitted {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    }
    assert_eq!(chat(&proxy.url).await.status, 429, "$1.80 of $1.00 spent");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn twenty_requests_at_once_cannot_all_pass_a_budget() {
    bounded(twenty_at_once(
        "budget_usd = 1.0\nbudget_period = \"day\"\nreserve_usd = 0.9\n",
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"cost\":0.9}}\n\n",
    ))
    .await;
}

#[tokio::test]
async fn twenty_requests_at_once_cannot_all_pass_a_token_limit() {
    bounded(twenty_at_once(
        "tokens_per_day = 1000\nreserve_tokens = 900\n",
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":450,\"completion_tokens\":450}}\n\n",
    ))
    .await;
}

/// A client that reads a stream up to its last content event and hangs up, before the usage
/// event, is charged the reservation each time: the budget runs out.
#[tokio::test]
async fn a_stream_cut_by_the_client_before_its_usage_is_charged_its_reservation() {
    bounded(async {
        let (senders, handler) = held_streams();
        let (up, proxy) = start(
            handler,
            // reserve_usd is $0.05 by default
            "budget_usd = 0.2\nbudget_period = \"day\"\n",
        )
        .await;
        for n in 1..=4 {
            let resp = client().request(chat_request(&proxy.url)).await.unwrap();
            assert_eq!(resp.status(), 200);
            let tx = senders.lock().unwrap().last().unwrap().clone();
            tx.send(Bytes::from_static(CONTENT)).await.unwrap();
            let mut body = resp.into_body();
            let frame = body.frame().await.unwrap().unwrap();
            assert!(frame.data_ref().is_some());
            drop(body);
            usage_when(&proxy.url, |v| today(v, "estimated") == f64::from(n)).await;
        }
        let v = usage_when(&proxy.url, |_| true).await;
        assert!((today(&v, "cost_usd") - 0.2).abs() < 1e-9, "{v}");
        let refused = chat(&proxy.url).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(up.count(), 4);
    })
    .await;
}

async fn spend_two_answers(proxy: &Proxy) {
    for _ in 0..2 {
        assert_eq!(chat(&proxy.url).await.status, 200);
    }
    usage_when(&proxy.url, |v| today(v, "requests") == 2.0).await;
}

async fn reload_with(proxy: &Proxy, up: &Mock, name: &str, limits: &str) {
    std::fs::write(proxy.path("keyproxy.toml"), config(&up.url, name, limits)).unwrap();
    proxy.running.reload("test").await;
    assert!(proxy.status().last_error.is_none(), "{:?}", proxy.status());
}

#[tokio::test]
async fn a_reload_that_adds_a_budget_starts_from_what_was_spent() {
    bounded(async {
        let (up, proxy) = start(Arc::new(|_| reply(200, COSTLY)), "").await;
        spend_two_answers(&proxy).await; // $1.20, with no budget yet
        reload_with(
            &proxy,
            &up,
            "agent",
            "budget_usd = 1.0\nbudget_period = \"day\"\n",
        )
        .await;
        let refused = chat(&proxy.url).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(up.count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_client_renamed_with_the_same_token_keeps_what_it_spent() {
    bounded(async {
        let limits = "budget_usd = 1.0\nbudget_period = \"day\"\n";
        let (up, proxy) = start(Arc::new(|_| reply(200, COSTLY)), limits).await;
        spend_two_answers(&proxy).await;
        assert_eq!(chat(&proxy.url).await.status, 429);
        reload_with(&proxy, &up, "agent-renamed", limits).await;
        let refused = chat(&proxy.url).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert!(
            refused.text().contains("agent-renamed"),
            "{}",
            refused.text()
        );
        assert_eq!(up.count(), 2);
    })
    .await;
}

#[test]
fn check_reads_a_model_pattern_ending_in_a_multibyte_character() {
    let bin = Bin::new();
    let dir = bin.config_dir();
    let limits = "models = [\"gpt-é*\", \"gpt-é\", \"日本*\", \"🦀\"]\n";
    std::fs::write(
        dir.join("keyproxy.toml"),
        config("https://openrouter.ai", "agent", limits),
    )
    .unwrap();
    write_private(
        &dir.join("keys.toml"),
        &keys_toml("openrouter:default", KEY_A),
    );
    let mut cmd = bin.command();
    cmd.arg("check");
    let out = run(cmd);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
}
