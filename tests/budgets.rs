//! Budgets and rate limits per client: the request after the one that crosses a budget gets a
//! local 429 with Retry-After until the period ends, nothing forwarded; a stream already running
//! is never cut; requests per minute are limited the same way.

mod support;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;
use tokio::sync::mpsc;

const TOKEN: &str = "kp-agent-0123456789abcdef01234";
const COSTLY: &str = r#"{"model":"openai/gpt-4o","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"cost":0.6}}"#;

fn config(upstream: &str, limits: &str) -> String {
    format!(
        "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"agent\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\n{limits}"
    )
}

async fn start(handler: Handler, limits: &str) -> (Mock, Proxy) {
    let up = Mock::start(handler).await;
    let keys = keys_toml("openrouter:default", KEY_A);
    let proxy = Proxy::start(&config(&up.url, limits), &[("keys.toml", &keys)]).await;
    (up, proxy)
}

async fn chat(proxy: &Proxy) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    let url = format!("{}/api/v1/chat/completions", proxy.url);
    send(
        &client(),
        request("POST", &url, &[("authorization", &auth)], "{}"),
    )
    .await
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_request_after_the_one_that_crosses_the_budget_is_refused_until_the_day_ends() {
    bounded(async {
        let (up, proxy) = start(
            Arc::new(|_| reply(200, COSTLY)),
            "budget_usd = 1.0\nbudget_period = \"day\"\n",
        )
        .await;
        assert_eq!(chat(&proxy).await.status, 200); // $0.60
        assert_eq!(chat(&proxy).await.status, 200); // $1.20: crosses, and finishes
        let refused = chat(&proxy).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(refused.headers["x-keyproxy-error"], "budget-exhausted");
        let retry: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let to_midnight = 86_400 - now_secs() % 86_400;
        assert!(
            retry.abs_diff(to_midnight) <= 2,
            "Retry-After {retry}, midnight in {to_midnight}"
        );
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.starts_with("keyproxy: client 'agent' has used its budget of $1.00 per day"),
            "{message}"
        );
        assert!(message.len() <= 180, "{message}");
        // The reset as a time and a duration, not a count of seconds.
        let midnight = UNIX_EPOCH + std::time::Duration::from_secs(now_secs() + to_midnight);
        let day = humantime::format_rfc3339_seconds(midnight).to_string();
        let said = format!("It resets at {} 00:00 UTC, in ", &day[..10]);
        assert!(message.contains(&said), "{message}\nwants {said:?}");
        assert_eq!(up.count(), 2, "nothing forwarded once the budget is used");
    })
    .await;
}

#[tokio::test]
async fn a_stream_in_flight_is_not_cut_when_another_request_uses_the_budget() {
    bounded(async {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let slot = Arc::new(Mutex::new(Some(rx)));
        let handler: Handler = Arc::new(move |r| {
            if r.uri.path().ends_with("/stream") {
                return event_stream(slot.lock().unwrap().take().unwrap());
            }
            reply(200, COSTLY)
        });
        let (up, proxy) = start(handler, "budget_usd = 0.5\n").await;
        let auth = format!("Bearer {TOKEN}");
        let req = request(
            "POST",
            &format!("{}/api/v1/stream", proxy.url),
            &[("authorization", &auth)],
            "{}",
        );
        let mut stream = client().request(req).await.unwrap().into_body();
        tx.send(Bytes::from_static(b"data: {\"choices\":[]}\n\n"))
            .await
            .unwrap();
        assert!(stream.frame().await.unwrap().is_ok());

        assert_eq!(chat(&proxy).await.status, 200); // $0.60 of $0.50: used up
        assert_eq!(chat(&proxy).await.status, 429);

        // The stream that started before goes on to its end.
        tx.send(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"still here\"}}]}\n\n",
        ))
        .await
        .unwrap();
        let frame = stream.frame().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(frame.data_ref().unwrap()).contains("still here"));
        drop(tx);
        while let Some(frame) = stream.frame().await {
            frame.unwrap();
        }
        assert_eq!(up.count(), 2);
    })
    .await;
}

#[tokio::test]
async fn requests_per_minute_are_limited_with_retry_after() {
    bounded(async {
        // Two requests and the third must fall in the same minute.
        if now_secs() % 60 >= 55 {
            tokio::time::sleep(std::time::Duration::from_secs(61 - now_secs() % 60)).await;
        }
        let (up, proxy) = start(ok_handler(), "requests_per_minute = 2\n").await;
        assert_eq!(chat(&proxy).await.status, 200);
        assert_eq!(chat(&proxy).await.status, 200);
        let refused = chat(&proxy).await;
        assert_eq!(refused.status, 429);
        assert_eq!(refused.headers["x-keyproxy-error"], "rate-limited");
        let retry: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(
            refused.text().contains("2 requests per minute"),
            "{}",
            refused.text()
        );
        assert_eq!(up.count(), 2);
    })
    .await;
}

#[tokio::test]
async fn tokens_per_day_are_limited() {
    bounded(async {
        let (up, proxy) = start(Arc::new(|_| reply(200, COSTLY)), "tokens_per_day = 50\n").await;
        assert_eq!(chat(&proxy).await.status, 200); // 30 tokens
        assert_eq!(chat(&proxy).await.status, 200); // 60: crosses
        let refused = chat(&proxy).await;
        assert_eq!(refused.status, 429);
        assert_eq!(refused.headers["x-keyproxy-error"], "budget-exhausted");
        assert!(
            refused.text().contains("50 tokens per day"),
            "{}",
            refused.text()
        );
        assert_eq!(up.count(), 2);
    })
    .await;
}

#[test]
fn bad_limits_name_the_client() {
    let path = std::path::Path::new("keyproxy.toml");
    for (limits, says) in [
        ("budget_usd = -1.0\n", "budget_usd must be a positive"),
        (
            "budget_period = \"day\"\n",
            "budget_period needs budget_usd",
        ),
        ("requests_per_minute = 0\n", "must be more than 0"),
        (
            "budget_usd = 1.0\nbudget_period = \"year\"\n",
            "unknown variant `year`",
        ),
    ] {
        let err = keyproxy::config::parse(&config("http://127.0.0.1:9", limits), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{limits}: {err}");
    }
}

/// A restart does not give a client its budget again: the spend of the period is read back
/// from the usage database.
#[tokio::test]
async fn a_restart_keeps_what_the_budget_has_spent() {
    bounded(async {
        let up = Mock::start(Arc::new(|_| reply(200, COSTLY))).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        let limits = "budget_usd = 1.0\nbudget_period = \"month\"\n";
        std::fs::write(
            dir.join("keyproxy.toml"),
            format!("state_dir = \"state\"\n{}", config(&up.url, limits)),
        )
        .unwrap();
        write_private(
            &dir.join("keys.toml"),
            &keys_toml("openrouter:default", KEY_A),
        );
        let post = |url: String| async move {
            let auth = format!("Bearer {TOKEN}");
            send(
                &client(),
                request(
                    "POST",
                    &format!("{url}/api/v1/chat/completions"),
                    &[("authorization", &auth)],
                    "{}",
                ),
            )
            .await
        };
        let served = Served::start(bin.command()).await;
        assert_eq!(post(served.url.clone()).await.status, 200);
        assert_eq!(post(served.url.clone()).await.status, 200);
        assert_eq!(post(served.url.clone()).await.status, 429);
        served.stop().await;

        let served = Served::start(bin.command()).await;
        let refused = post(served.url.clone()).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(refused.headers["x-keyproxy-error"], "budget-exhausted");
        assert_eq!(up.count(), 2);
        served.stop().await;
    })
    .await;
}
