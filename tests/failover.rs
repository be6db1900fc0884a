//! Key pools with failover: a key the upstream refuses rests, the request is retried once on
//! the next key when that is safe, and a profile whose keys all rest is answered locally.

mod support;
use std::sync::Arc;

use support::*;

/// An upstream that answers per key: `status_for(key)` -> (status, extra headers).
fn per_key(
    answer: impl Fn(&str) -> (u16, Vec<(&'static str, &'static str)>) + Send + Sync + 'static,
) -> Handler {
    Arc::new(move |r: &Received| {
        let auth = r.headers["authorization"].to_str().unwrap();
        let key = auth.strip_prefix("Bearer ").unwrap();
        let (status, headers) = answer(key);
        let mut resp = reply(status, &format!("{{\"status\":{status}}}"));
        for (k, v) in headers {
            resp.headers_mut().insert(k, v.parse().unwrap());
        }
        resp
    })
}

fn pool_of_two() -> String {
    format!("[profiles.p]\nkeys = [\"{KEY_A}\", \"{KEY_B}\"]\n")
}

fn key_state(status: &serde_json::Value, fp: &str) -> serde_json::Value {
    status["profiles"]["p"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == fp)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_refused_key_rests_and_the_request_is_retried_on_the_next() {
    bounded(async {
        let up = Mock::start(per_key(|k| (if k == KEY_A { 401 } else { 200 }, vec![]))).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &pool_of_two())],
        )
        .await;
        let url = format!("{}/api/v1/chat/completions", proxy.url);
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

        // The pool starts with A, which the upstream refuses; the client never sees that.
        let reply = send(
            &client(),
            request("POST", &url, &[("content-type", "application/json")], body),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let received = up.received();
        assert_eq!(received.len(), 2);
        assert_eq!(
            received[0].headers["authorization"],
            format!("Bearer {KEY_A}")
        );
        assert_eq!(
            received[1].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
        assert_eq!(
            received[1].body,
            body.as_bytes(),
            "the retry carries the same body"
        );
        assert_eq!(received[1].headers["content-type"], "application/json");

        // A rests: every later request goes straight to B.
        for _ in 0..4 {
            assert_eq!(get(&url, &[]).await.status, 200);
        }
        assert!(up.received()[2..]
            .iter()
            .all(|r| r.headers["authorization"] == format!("Bearer {KEY_B}")));
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        let a = key_state(&status, FP_A);
        assert_eq!(a["state"], "resting");
        assert_eq!(a["rested_after"], 401);
        assert_eq!(key_state(&status, FP_B)["state"], "active");
    })
    .await;
}

#[tokio::test]
async fn a_429_rests_the_key_as_long_as_retry_after_says() {
    bounded(async {
        let up = Mock::start(per_key(|k| {
            if k == KEY_A {
                (429, vec![("retry-after", "120")])
            } else {
                (200, vec![])
            }
        }))
        .await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &pool_of_two())],
        )
        .await;
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        let a = key_state(&status, FP_A);
        assert_eq!(a["rested_after"], 429);
        let left = a["resting_for_s"].as_u64().unwrap();
        assert!(
            (118..=120).contains(&left),
            "rests {left} s, not Retry-After's 120"
        );
    })
    .await;
}

#[tokio::test]
async fn when_every_key_rests_the_answer_is_local_and_says_when() {
    bounded(async {
        let up = Mock::start(per_key(|_| (429, vec![("retry-after", "30")]))).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let url = format!("{}/v1/models", proxy.url);
        let first = get(&url, &[]).await;
        assert_eq!(first.status, 429, "the upstream's own answer");
        assert_eq!(first.headers["x-keyproxy-key"], FP_A);
        assert_eq!(first.headers["x-keyproxy-profile"], "p");

        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.headers["x-keyproxy-error"], "keys-resting");
        let wait: u64 = reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((29..=30).contains(&wait), "{wait}");
        let msg = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains("every key of profile 'p' rests"), "{msg}");
        assert!(msg.contains(&format!("retry in {wait} s")), "{msg}");
        assert_eq!(up.count(), 1, "nothing is forwarded while every key rests");
    })
    .await;
}

#[tokio::test]
async fn the_last_key_awake_keeps_being_forwarded_after_a_refusal() {
    bounded(async {
        let up = Mock::start(per_key(|_| (402, vec![]))).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &pool_of_two())],
        )
        .await;
        let url = format!("{}/v1/models", proxy.url);

        // A is refused and rests; the retry on B is refused too, but B is the last key awake:
        // it stays in use and the client gets the provider's own answer, naming B.
        let first = get(&url, &[]).await;
        assert_eq!(first.status, 402);
        assert_eq!(first.headers["x-keyproxy-key"], FP_B);
        assert_eq!(up.count(), 2);
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        assert_eq!(key_state(&status, FP_A)["state"], "resting");
        assert_eq!(key_state(&status, FP_B)["state"], "active");

        // Credit topped up a minute later: the next request is forwarded at once, never a
        // local refusal for an hour.
        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 402);
        assert!(
            reply.headers.get("x-keyproxy-error").is_none(),
            "the provider's answer"
        );
        assert_eq!(up.count(), 3);

        // A single-key profile is never benched by a refusal either.
        let single = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        for _ in 0..3 {
            assert_eq!(
                get(&format!("{}/v1/models", single.url), &[]).await.status,
                402
            );
        }
        assert_eq!(up.count(), 6);

        // SIGHUP (here: a reload request with its reason) wakes every key.
        proxy.running.reload("SIGHUP").await;
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        assert_eq!(key_state(&status, FP_A)["state"], "active");
    })
    .await;
}

#[tokio::test]
async fn concurrent_refusals_count_one_strike_and_retries_are_counted() {
    bounded(async {
        let up = Mock::start(per_key(|k| {
            if k == KEY_A {
                (401, vec![])
            } else {
                (200, vec![])
            }
        }))
        .await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &pool_of_two())],
        )
        .await;
        let url = format!("{}/v1/models", proxy.url);
        let replies = futures_util::future::join_all((0..16).map(|_| get(&url, &[]))).await;
        assert!(
            replies.iter().all(|r| r.status == 200),
            "every request retried on B"
        );
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        let a = key_state(&status, FP_A);
        assert_eq!(a["state"], "resting");
        let rest = a["resting_for_s"].as_u64().unwrap();
        assert!(
            rest <= 60,
            "one incident is one strike (60 s), not {rest} s"
        );

        let metrics = get(&format!("{}/_keyproxy/metrics", proxy.url), &[])
            .await
            .text();
        let retries = metrics
            .lines()
            .find(|l| l.starts_with("keyproxy_retries_total{"))
            .unwrap_or_else(|| panic!("no retries metric:\n{metrics}"));
        assert!(
            retries.contains("route=\"/\"") && retries.contains("profile=\"p\""),
            "{retries}"
        );
        let counted: f64 = retries.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(counted >= 1.0, "{retries}");
    })
    .await;
}

#[tokio::test]
async fn an_error_inside_a_200_stream_is_passed_through_and_not_retried() {
    bounded(async {
        // OpenRouter reports a failure after the stream began as an SSE event in a 200.
        let event = "data: {\"error\":{\"code\":429,\"message\":\"rate limited mid-stream\"}}\n\n";
        let up = Mock::start(Arc::new(move |_| {
            let mut r = reply(200, event);
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }))
        .await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &pool_of_two())],
        )
        .await;
        let reply = get(&format!("{}/api/v1/chat/completions", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), event);
        assert_eq!(up.count(), 1);
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        assert_eq!(key_state(&status, FP_A)["state"], "active");
    })
    .await;
}

#[tokio::test]
async fn a_body_over_retry_body_limit_is_not_retried() {
    bounded(async {
        let up = Mock::start(per_key(|k| (if k == KEY_A { 401 } else { 200 }, vec![]))).await;
        let config = format!("retry_body_limit = 64\n{}", simple_config(&up.url, "p"));
        let proxy = Proxy::start(&config, &[("keys.toml", &pool_of_two())]).await;
        let body = "x".repeat(1000);
        let reply = send(
            &client(),
            request(
                "POST",
                &format!("{}/v1/chat/completions", proxy.url),
                &[],
                body,
            ),
        )
        .await;
        assert_eq!(reply.status, 401, "the upstream's answer, not a retry");
        assert_eq!(reply.headers["x-keyproxy-key"], FP_A);
        assert_eq!(up.count(), 1);
    })
    .await;
}
