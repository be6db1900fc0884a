//! What the page specs share: a keyproxy with an admin token and two agents, alice and bob,
//! in front of a mock upstream that reports usage and answers 429 to one of bob's keys, and
//! some traffic through it (answers, a key rested by a 429, local refusals).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::support::*;

pub const ADMIN: &str = "kp-admin-0123456789abcdef0123";
pub const ALICE: &str = "kp-alice-0123456789abcdef0123";
pub const BOB: &str = "kp-bob-0123456789abcdef012345";
/// Bob's second key; his first, KEY_B, is refused with a 429.
pub const KEY_C: &str = "sk-or-v1-ccccccccccccccccSECRETMIDDLEcccccccccc33333333";
pub const FP_C: &str = "sk-or-v1...33333333";
const USAGE_JSON: &str = r#"{"id":"gen-1","model":"openai/gpt-4o-mini","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":340,"total_tokens":1540,"cost":0.42}}"#;

fn config(upstream: &str) -> String {
    format!(
        "admin_token = \"{ADMIN}\"\npoll_interval = \"1h\"\nkeys_files = [\"keys.toml\"]\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n\
         [[clients]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nprofiles = [\"openrouter:alice\"]\nmodels = [\"openai/*\"]\n\
         budget_usd = 5.0\nbudget_period = \"day\"\ntokens_per_day = 100000\nrequests_per_minute = 50\n\
         [[clients]]\nname = \"bob\"\ntoken = \"{BOB}\"\nprofiles = [\"openrouter:bob\"]\nbudget_usd = 20.0\nbudget_period = \"month\"\n"
    )
}

fn keys() -> String {
    format!(
        "[profiles.\"openrouter:default\"]\nkey = \"{KEY_A}\"\n[profiles.\"openrouter:alice\"]\nkey = \"{KEY_A}\"\n\
         [profiles.\"openrouter:bob\"]\nkeys = [\"{KEY_B}\", \"{KEY_C}\"]\n"
    )
}

/// Every key's text and the part of it a fingerprint hides.
pub fn secrets() -> Vec<&'static str> {
    vec![KEY_A, KEY_B, KEY_C, "SECRETMIDDLE"]
}

pub async fn chat(url: &str, token: Option<&str>, model: &str) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
    let req = request(
        "POST",
        &format!("{url}/api/v1/chat/completions"),
        &headers,
        Bytes::from(body),
    );
    send(&client(), req).await
}

pub async fn data(url: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    get(&format!("{url}/_keyproxy/ui/data?history=1"), &headers).await
}

/// The keyproxy, after alice made 3 answers, bob 3 (one of them refused with a 429 on KEY_B
/// and sent again on KEY_C), and 2 requests were refused locally; returns once the ledger
/// counted all six answers.
pub async fn busy() -> (Mock, Proxy) {
    let up = Mock::start(Arc::new(|r: &Received| {
        let auth = r.headers["authorization"].to_str().unwrap_or_default();
        if auth.contains(KEY_B) {
            let mut resp = reply(429, r#"{"error":{"message":"slow down"}}"#);
            resp.headers_mut()
                .insert("retry-after", "600".parse().unwrap());
            return resp;
        }
        reply(200, USAGE_JSON)
    }))
    .await;
    let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys())]).await;
    for _ in 0..3 {
        assert_eq!(
            chat(&proxy.url, Some(ALICE), "openai/gpt-4o-mini")
                .await
                .status,
            200
        );
        assert_eq!(
            chat(&proxy.url, Some(BOB), "openai/gpt-4o-mini")
                .await
                .status,
            200
        );
    }
    assert_eq!(
        chat(&proxy.url, None, "openai/gpt-4o-mini").await.status,
        401
    );
    let refused = chat(&proxy.url, Some(ALICE), "anthropic/claude-opus").await;
    assert_eq!(refused.status, 403);
    loop {
        let d = data(&proxy.url, Some(ADMIN)).await.json();
        let answers: u64 = d["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["usage"]["today"]["requests"].as_u64().unwrap_or(0))
            .sum();
        if answers == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (up, proxy)
}
