//! One access record per request, whatever its outcome, with a request id the client, the
//! upstream and the log share, the key's fingerprint and the client's name; in JSON, flat
//! fields with numbers as numbers.

mod support;
use std::sync::Arc;
use std::time::Duration;

use support::*;

const TOKEN: &str = "kp-laptop-0123456789";

fn access_lines(log: &[String]) -> Vec<serde_json::Value> {
    log.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "keyproxy::access")
        .collect()
}

/// Keys of profile `p` from keys.toml, `/` to `upstream`, the `more_routes` given, and client
/// `laptop` with `TOKEN`.
fn laptop_config(upstream: &str, more_routes: &str) -> String {
    format!(
        "keys_files = [\"keys.toml\"]\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"p\"\n\
         {more_routes}\
         [[clients]]\nname = \"laptop\"\ntoken = \"{TOKEN}\"\nprofiles = [\"p\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_leaves_one_record_with_its_id_key_and_client() {
    let up = Mock::start(ok_handler()).await;
    // A port that accepts and never answers, for the request whose client gives up.
    let silent_url = raw_upstream(b"", Then::Hold).await;
    let bin = Bin::new();
    let dir = bin.config_dir();
    write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
    let silent =
        format!("[[routes]]\nprefix = \"/silent\"\nupstream = \"{silent_url}\"\nprofile = \"p\"\n");
    std::fs::write(dir.join("keyproxy.toml"), laptop_config(&up.url, &silent)).unwrap();
    let mut served = Served::start(bin.command()).await;
    let auth = format!("Bearer {TOKEN}");

    let ok = get(
        &format!("{}/v1/models", served.url),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(ok.status, 200);
    let id = ok.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        up.received()[0].headers["x-request-id"],
        id.as_str(),
        "the upstream sees the same id"
    );
    let theirs = get(
        &format!("{}/v1/models", served.url),
        &[
            ("authorization", &auth),
            ("x-request-id", "agent-chosen-42"),
        ],
    )
    .await;
    assert_eq!(theirs.headers["x-request-id"], "agent-chosen-42");
    let local = get(&format!("{}/v1/models", served.url), &[]).await;
    assert_eq!(local.status, 401);

    // A client that gives up while the upstream has not answered.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        get(
            &format!("{}/silent/v1/models", served.url),
            &[("authorization", &auth)],
        ),
    )
    .await;
    assert!(gave_up.is_err());
    served.wait_for_log("client gone").await;

    let (code, _, log) = served.stop().await;
    assert_eq!(code, Some(0));
    let lines = access_lines(&log);
    let f = |v: &serde_json::Value, k: &str| v["fields"][k].clone();
    let proxied = lines
        .iter()
        .find(|v| f(v, "request_id") == id.as_str())
        .unwrap_or_else(|| panic!("no record for {id}: {lines:#?}"));
    assert_eq!(f(proxied, "message"), "proxied");
    assert_eq!(f(proxied, "status"), 200);
    assert!(f(proxied, "upstream_ms").is_number());
    assert!(f(proxied, "ms").is_number());
    assert_eq!(f(proxied, "bytes"), 11);
    assert_eq!(f(proxied, "key"), FP_A);
    assert_eq!(f(proxied, "client"), "laptop");
    assert_eq!(f(proxied, "outcome"), "complete");
    assert_eq!(
        lines
            .iter()
            .filter(|v| f(v, "request_id") == id.as_str())
            .count(),
        1,
        "exactly one record per request"
    );
    assert!(lines
        .iter()
        .any(|v| f(v, "request_id") == "agent-chosen-42"));
    let refused = lines
        .iter()
        .find(|v| f(v, "reason") == "missing-token")
        .expect("a record for the local answer");
    assert_eq!(f(refused, "status"), 401);
    let gone = lines
        .iter()
        .find(|v| f(v, "route") == "/silent")
        .expect("a record for the request whose client went away");
    assert_eq!(f(gone, "outcome"), "client gone before the answer");
    assert_eq!(f(gone, "client"), "laptop");
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_no_key(&log.join("\n"));
}

/// The text format, the default, writes the same record as a line (made without tracing's
/// dispatch, see `rt::log_line::info_line`): message first, then the fields in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_format_writes_the_same_record() {
    let up = Mock::start(ok_handler()).await;
    let bin = Bin::new();
    let dir = bin.config_dir();
    write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
    std::fs::write(dir.join("keyproxy.toml"), laptop_config(&up.url, "")).unwrap();
    let served = Served::start_logging(bin.command(), "text").await;
    let ok = get(
        &format!("{}/v1/models?x=1", served.url),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("x-request-id", "text-1"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200);
    let refused = get(
        &format!("{}/v1/models", served.url),
        &[("x-request-id", "text-2")],
    )
    .await;
    assert_eq!(refused.status, 401);
    let (_, _, log) = served.stop().await;
    let line = |id: &str| {
        let line = log
            .iter()
            .find(|l| l.contains(&format!("request_id=\"{id}\"")))
            .unwrap_or_else(|| panic!("no line for {id}: {log:#?}"));
        // After the time: `2026-12-07T00:04:31.971947Z`.
        line[27..].to_owned()
    };
    let proxied = line("text-1");
    let head = format!(
        "  INFO keyproxy::access: proxied request_id=\"text-1\" method=GET path=\"/v1/models\" \
         route=\"/\" profile=\"p\" key=\"{FP_A}\" client=\"laptop\" status=200 upstream_ms="
    );
    assert!(proxied.starts_with(&head), "{proxied}");
    assert!(proxied.contains(" bytes=11 ms="), "{proxied}");
    assert!(proxied.ends_with(" outcome=\"complete\""), "{proxied}");
    let refused = line("text-2");
    assert!(
        refused.starts_with(
            "  INFO keyproxy::access: answered locally request_id=\"text-2\" method=GET \
             path=\"/v1/models\" status=401 reason=\"missing-token\" bytes=0 ms="
        ),
        "{refused}"
    );
    assert!(
        refused.ends_with(" outcome=\"answered locally\""),
        "{refused}"
    );
    assert_no_key(&log.join("\n"));
}

/// OpenAI answers with its own `x-request-id`, which its SDK shows for support requests: the
/// client gets it untouched, and the record keeps both ids. An id a log cannot carry (empty,
/// over 200 bytes) is replaced by keyproxy's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_own_request_id_reaches_the_client_and_the_log() {
    let up = Mock::start(Arc::new(|r: &Received| {
        let mut resp = reply(200, "{}");
        if r.uri.path() == "/theirs" {
            resp.headers_mut()
                .insert("x-request-id", "req_provider_7".parse().unwrap());
        }
        resp
    }))
    .await;
    let bin = Bin::new();
    let dir = bin.config_dir();
    write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
    std::fs::write(dir.join("keyproxy.toml"), simple_config(&up.url, "p")).unwrap();
    let served = Served::start(bin.command()).await;

    let theirs = get(&format!("{}/theirs", served.url), &[]).await;
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.headers["x-request-id"], "req_provider_7");
    let ours = up.received()[0].headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(ours, "req_provider_7");

    let long = "x".repeat(201);
    for bad in ["", long.as_str()] {
        let r = get(&format!("{}/plain", served.url), &[("x-request-id", bad)]).await;
        let given = r.headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(!given.is_empty() && given != long, "{given:?}");
        assert_eq!(
            up.received().last().unwrap().headers["x-request-id"],
            given.as_str()
        );
    }

    let (_, _, log) = served.stop().await;
    let lines = access_lines(&log);
    let f = |v: &serde_json::Value, k: &str| v["fields"][k].clone();
    let record = lines
        .iter()
        .find(|v| f(v, "path") == "/theirs")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(f(record, "request_id"), ours.as_str());
    assert_eq!(f(record, "upstream_request_id"), "req_provider_7");
    let plain = lines.iter().find(|v| f(v, "path") == "/plain").unwrap();
    assert!(f(plain, "upstream_request_id").is_null());
}

/// Requests to keyproxy's own endpoints leave a record too (message `admin`), with the status
/// and the refusal's reason; health and readiness probes, and the data the page polls, only at
/// debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_leave_a_record_and_probes_stay_quiet() {
    let up = Mock::start(ok_handler()).await;
    let bin = Bin::new();
    let dir = bin.config_dir();
    write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
    std::fs::write(dir.join("keyproxy.toml"), laptop_config(&up.url, "")).unwrap();
    let served = Served::start(bin.command()).await;
    let auth = format!("Bearer {TOKEN}");
    let me = get(
        &format!("{}/_keyproxy/me", served.url),
        &[("authorization", &auth), ("x-request-id", "me-1")],
    )
    .await;
    assert_eq!(me.status, 200);
    let status = get(&format!("{}/_keyproxy/status", served.url), &[]).await;
    assert_eq!(status.status, 401);
    let health = get(&format!("{}/_keyproxy/health", served.url), &[]).await;
    assert_eq!(health.status, 200);
    let page_data = get(
        &format!("{}/_keyproxy/ui/data", served.url),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(page_data.status, 200);

    let (_, _, log) = served.stop().await;
    let lines = access_lines(&log);
    let f = |v: &serde_json::Value, k: &str| v["fields"][k].clone();
    let me_line = lines
        .iter()
        .find(|v| f(v, "path") == "/_keyproxy/me")
        .unwrap_or_else(|| panic!("no record for /_keyproxy/me: {lines:#?}"));
    assert_eq!(f(me_line, "message"), "admin");
    assert_eq!(f(me_line, "request_id"), "me-1");
    assert_eq!(f(me_line, "status"), 200);
    assert!(f(me_line, "bytes").as_u64().is_some_and(|b| b > 0));
    let refused = lines
        .iter()
        .find(|v| f(v, "path") == "/_keyproxy/status")
        .expect("a record for the refused status request");
    assert_eq!(f(refused, "status"), 401);
    assert_eq!(f(refused, "reason"), "missing-token");
    assert!(
        !lines
            .iter()
            .any(|v| f(v, "path") == "/_keyproxy/health" || f(v, "path") == "/_keyproxy/ui/data"),
        "probes and the page's data are written at debug level only"
    );
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_no_key(&log.join("\n"));
}
