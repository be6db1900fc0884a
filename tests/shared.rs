//! Several replicas sharing one real redis-server through `[shared]`: a budget and a rate limit
//! held across them, a key one rests skipped by the others, and a store that dies, comes back
//! or stops answering without any request waiting past `timeout`.

#[path = "shared/redis.rs"]
mod redis;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Redis;
use support::*;

const TOKEN: &str = "kp-agent-0123456789abcdef01234";
const ANSWER: &str =
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"cost":0.3}}"#;
/// `timeout` is 100 ms; a loaded CI machine gets a generous margin over it, still far below
/// what waiting on a dead or stopped store would take.
const BOUND: Duration = Duration::from_millis(1500);

struct Replica {
    served: Served,
    bin: Bin,
}

async fn replica(upstream: &str, redis: &Redis, limits: &str, on_failure: &str) -> Replica {
    let bin = Bin::new();
    let dir = bin.config_dir();
    write_private(
        &dir.join("keys.toml"),
        &format!("[profiles.\"openrouter:default\"]\nkeys = [\"{KEY_A}\", \"{KEY_B}\"]\n"),
    );
    let config = format!(
        "state_dir = \"state\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"agent\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\n{limits}\n[shared]\nredis = \"$TEAM_REDIS\"\ntimeout = \"100ms\"\non_failure = \"{on_failure}\"\n"
    );
    std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
    let mut cmd = bin.command();
    cmd.env("TEAM_REDIS", redis.url());
    let served = Served::start(cmd).await;
    Replica { served, bin }
}

async fn chat(url: &str, path: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    send(
        &client(),
        request(
            "POST",
            &format!("{url}{path}"),
            &[("authorization", &auth)],
            r#"{"model":"m"}"#,
        ),
    )
    .await
}

/// `n` requests at once spread over `replicas` in turn; their statuses.
async fn burst(replicas: &[&Replica], n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = replicas[i % replicas.len()].served.url.clone();
            tokio::spawn(
                async move { chat(&url, "/api/v1/chat/completions").await.status.as_u16() },
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// `/_keyproxy/status` of a replica (with clients configured it takes a client token).
async fn status(url: &str) -> serde_json::Value {
    let auth = format!("Bearer {TOKEN}");
    let reply = get(
        &format!("{url}/_keyproxy/status"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn costly() -> Handler {
    Arc::new(|_| reply(200, ANSWER))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_holds_across_two_replicas() {
    bounded(async {
        let redis = Redis::start().await;
        let up = Mock::start(costly()).await;
        let limits = "budget_usd = 1.0\nreserve_usd = 0.3\n";
        let a = replica(&up.url, &redis, limits, "closed").await;
        let b = replica(&up.url, &redis, limits, "closed").await;
        let statuses = burst(&[&a, &b], 12).await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!((1..=4).contains(&ok), "{statuses:?}");
        assert_eq!(
            up.count(),
            ok,
            "only what was admitted reached the upstream"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
        // Every replica refuses from now on: the spend is shared.
        for r in [&a, &b] {
            assert_eq!(chat(&r.served.url, "/x").await.status, 429);
        }
        for r in [a, b] {
            let (_, _, log) = r.served.stop().await;
            assert!(!log.join("\n").contains("panicked"));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_per_minute_hold_across_three_replicas() {
    bounded(async {
        let redis = Redis::start().await;
        let up = Mock::start(ok_handler()).await;
        let limits = "requests_per_minute = 10\n";
        let a = replica(&up.url, &redis, limits, "closed").await;
        let b = replica(&up.url, &redis, limits, "closed").await;
        let c = replica(&up.url, &redis, limits, "closed").await;
        // A burst that straddles a minute would count in two windows.
        let s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if s % 60 > 50 {
            tokio::time::sleep(Duration::from_secs(61 - s % 60)).await;
        }
        let statuses = burst(&[&a, &b, &c], 30).await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!((1..=10).contains(&ok), "{statuses:?}");
        assert_eq!(up.count(), ok);
        let _keep = (a.bin, b.bin, c.bin);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rested_on_one_replica_is_skipped_by_the_other_within_a_second() {
    bounded(async {
        let redis = Redis::start().await;
        // KEY_A is refused with Retry-After: 30 once; after that the upstream would take it,
        // so only the shared rest can keep replica B off it.
        let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let once = refused.clone();
        let up = Mock::start(Arc::new(move |r: &Received| {
            let auth = r.headers["authorization"].to_str().unwrap_or("");
            if auth.contains(KEY_A) && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let mut resp = reply(429, r#"{"error":"slow down"}"#);
                resp.headers_mut()
                    .insert("retry-after", "30".parse().unwrap());
                return resp;
            }
            reply(200, r#"{"ok":true}"#)
        }))
        .await;
        let a = replica(&up.url, &redis, "", "closed").await;
        let b = replica(&up.url, &redis, "", "closed").await;
        while !refused.load(std::sync::atomic::Ordering::SeqCst) {
            assert_eq!(chat(&a.served.url, "/from-a").await.status, 200);
        }
        let rested_at = Instant::now();
        loop {
            let v = status(&b.served.url).await;
            let keys = v["profiles"]["openrouter:default"]["keys"].to_string();
            if keys.contains(FP_A) && keys.contains("resting") {
                break;
            }
            // Within a second (the watcher reads rests every 250 ms), plus a margin for a
            // loaded machine.
            assert!(
                rested_at.elapsed() < Duration::from_millis(1500),
                "replica B still serves {FP_A}: {keys}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = up.count();
        for _ in 0..6 {
            assert_eq!(chat(&b.served.url, "/from-b").await.status, 200);
        }
        let sent_a = up.received()[before..]
            .iter()
            .filter(|r| r.headers["authorization"].to_str().unwrap().contains(KEY_A))
            .count();
        assert_eq!(sent_a, 0, "replica B skips the key A rested");
    })
    .await;
}

/// Sends one request and asserts it was answered within the bound; its status.
async fn timed(url: &str) -> u16 {
    let started = Instant::now();
    let status = chat(url, "/x").await.status.as_u16();
    assert!(
        started.elapsed() < BOUND,
        "a request waited {:?} for the store",
        started.elapsed()
    );
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_dies_stops_or_comes_back_never_holds_a_request() {
    bounded(async {
        let mut redis = Redis::start().await;
        let up = Mock::start(ok_handler()).await;
        let limits = "budget_usd = 100.0\nreserve_usd = 0.01\n";
        let mut closed = replica(&up.url, &redis, limits, "closed").await;
        let local = replica(&up.url, &redis, limits, "local").await;
        assert_eq!(timed(&closed.served.url).await, 200);
        assert_eq!(timed(&local.served.url).await, 200);

        redis.kill();
        for _ in 0..5 {
            let reply = chat(&closed.served.url, "/x").await;
            if reply.status == 503 {
                assert_eq!(reply.headers["x-keyproxy-error"], "limits-unavailable");
                let text = reply.text();
                assert!(
                    text.contains(&format!("127.0.0.1:{}", redis.port)),
                    "{text}"
                );
            }
            assert!([200, 503].contains(&timed(&closed.served.url).await));
            assert_eq!(timed(&local.served.url).await, 200, "on_failure = local");
        }
        assert_eq!(timed(&closed.served.url).await, 503, "closed refuses");
        closed.served.wait_for_log("shared store unreachable").await;
        let seen = status(&closed.served.url).await;
        assert_eq!(seen["shared"]["reachable"], false, "{seen}");
        let auth = format!("Bearer {TOKEN}");
        let metrics = get(
            &format!("{}/_keyproxy/metrics", closed.served.url),
            &[("authorization", &auth)],
        )
        .await
        .text();
        assert!(metrics.contains("keyproxy_shared_store_up 0"), "{metrics}");

        redis.restart().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while timed(&closed.served.url).await != 200 {
            assert!(Instant::now() < deadline, "shared limits did not resume");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed
            .served
            .wait_for_log("shared store reachable again")
            .await;
        let spent = redis.command("KEYS keyproxy:c:agent:spend:*").await;
        assert!(
            spent.is_some_and(|s| s != "*0"),
            "the window is kept in the store again"
        );

        redis.signal("STOP");
        for _ in 0..5 {
            assert!([200, 503].contains(&timed(&closed.served.url).await));
            assert_eq!(timed(&local.served.url).await, 200);
        }
        redis.signal("CONT");
        for r in [closed, local] {
            let (_, _, log) = r.served.stop().await;
            let log = log.join("\n");
            assert!(!log.contains("panicked"), "{log}");
            assert!(
                log.matches("shared store unreachable").count() <= 2,
                "said once per outage: {log}"
            );
        }
    })
    .await;
}

/// `keyproxy usage --json` (and `--local`) asked of a running replica, as a person would.
async fn usage_of(replica: &Replica, local: bool) -> serde_json::Value {
    let mut cmd = replica.bin.command();
    let listen = replica.served.url.trim_start_matches("http://").to_owned();
    cmd.args(["--listen", &listen, "usage", "--json", "--token", TOKEN]);
    if local {
        cmd.arg("--local");
    }
    let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_on_one_replica_shows_what_the_other_answered() {
    bounded(async {
        let redis = Redis::start().await;
        let up = Mock::start(costly()).await;
        let a = replica(&up.url, &redis, "", "closed").await;
        let b = replica(&up.url, &redis, "", "closed").await;
        for _ in 0..2 {
            assert_eq!(chat(&a.served.url, "/x").await.status, 200);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let total = loop {
            let v = usage_of(&b, false).await;
            let total = v["today"]["total"].clone();
            if total["requests"] == 2 {
                assert_eq!(v["scope"], "group");
                break total;
            }
            assert!(Instant::now() < deadline, "B never showed A's answers: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(total["prompt_tokens"], 200);
        assert_eq!(total["completion_tokens"], 40);
        assert!(
            (total["cost_usd"].as_f64().unwrap() - 0.6).abs() < 1e-9,
            "{total}"
        );
        let own = usage_of(&b, true).await;
        assert_eq!(own["scope"], "replica");
        assert_eq!(
            own["today"]["total"]["requests"], 0,
            "B answered nothing itself"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_is_not_there_is_named_without_its_password() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = Bin::new();
        let dir = bin.config_dir();
        write_private(&dir.join("keys.toml"), &keys_toml("openrouter:default", KEY_A));
        let config = format!(
            "state_dir = \"state\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"agent\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\nbudget_usd = 5.0\n[shared]\nredis = \"redis://:s3cret-pass@127.0.0.1:{dead}/0\"\n",
            up.url
        );
        std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
        let store = format!("127.0.0.1:{dead}");

        let mut cmd = bin.command();
        cmd.arg("check");
        let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
        let shown = format!("{}{}", out.stdout, out.stderr);
        assert_ne!(out.code, Some(0), "{shown}");
        assert!(shown.contains(&format!("shared store: {store} (NOT reachable)")), "{shown}");

        // Start-up does not wait for the store; a budget refuses with 503 naming it.
        let served = Served::start(bin.command()).await;
        let started = Instant::now();
        let reply = chat(&served.url, "/x").await;
        assert!(started.elapsed() < BOUND);
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.headers["x-keyproxy-error"], "limits-unavailable");
        assert!(reply.text().contains(&store), "{}", reply.text());
        let seen = status(&served.url).await;
        let (_, _, log) = served.stop().await;
        let everything = format!("{shown}{}{seen}{}", reply.text(), log.join("\n"));
        assert!(!everything.contains("s3cret-pass"), "{everything}");
        assert_eq!(up.count(), 0);

        // An unknown field in [shared] is an error with its file and line.
        let bad = dir.join("keyproxy.toml");
        let text = std::fs::read_to_string(&bad).unwrap();
        std::fs::write(&bad, format!("{text}prefx = \"team:\"\n")).unwrap();
        let mut cmd = bin.command();
        cmd.arg("check");
        let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
        let shown = format!("{}{}", out.stdout, out.stderr);
        assert!(shown.contains("keyproxy.toml:"), "{shown}");
        assert!(shown.contains("prefx"), "{shown}");
        assert!(!shown.contains("s3cret-pass"), "{shown}");
    })
    .await;
}

#[test]
fn the_team_examples_load() {
    for path in [
        "docker/compose-team/keyproxy.toml",
        "docker/kubernetes/gateway/keyproxy.toml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let text = std::fs::read_to_string(&path).unwrap();
        let config = keyproxy::config::parse(&text, &path).unwrap();
        let shared = config.shared.expect("the example has [shared]");
        assert!(shared.store.ends_with(":6379"), "{}", shared.store);
    }
}
