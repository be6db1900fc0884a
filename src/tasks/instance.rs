//! The running keyproxy, as `status`, `reload` and `check` see it: asked over its own admin
//! endpoints, so no pid file and no shared environment are needed. What this shell loads is
//! compared with what the service serves, since the two differ exactly when an agent gets a 401.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::probe::default_url;
use crate::ops::report::ProfileReport;

/// `http://ADDR/_keyproxy/<path>` for a keyproxy listening on `listen`.
pub fn admin_url(listen: SocketAddr, path: &str) -> String {
    default_url(listen).replace("/_keyproxy/health", &format!("/_keyproxy/{path}"))
}

/// Sends `method url` with the token when there is one (the admin token, or a client token
/// where no admin is configured); the status and the JSON body.
pub async fn ask(
    method: http::Method,
    url: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(http::StatusCode, Value), String> {
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let answer = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| crate::proxy::causes(&e).0)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
        Ok::<_, String>((status, value))
    };
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        Ok(Err(why)) => Err(format!("{url}: {why}")),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// The message a local error carries (`{"error": {"message": ...}}`), or the status.
pub fn message(status: http::StatusCode, body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .map_or_else(|| status.to_string(), str::to_owned)
}

/// `keyproxy status` as text: version, uptime, last reload, and each profile's keys.
pub fn status_text(url: &str, status: &Value) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "keyproxy {} at {url}, up {}",
        status["version"].as_str().unwrap_or("?"),
        humantime::format_duration(Duration::from_secs(
            status["uptime_secs"].as_u64().unwrap_or(0)
        ))
    );
    let _ = writeln!(
        text,
        "config: {}",
        status["config"].as_str().unwrap_or("embedded default")
    );
    let reload = &status["reload"];
    let _ = writeln!(
        text,
        "reloads: {} (last: {}, ok at {})",
        reload["count"],
        reload["last_trigger"].as_str().unwrap_or("-"),
        reload["last_ok_at"].as_str().unwrap_or("never")
    );
    if let Some(error) = reload["last_error"]["message"].as_str() {
        let _ = writeln!(text, "last reload error: {error}");
    }
    if let Some(store) = status["shared"]["store"].as_str() {
        let state = if status["shared"]["reachable"] == Value::Bool(true) {
            format!("reachable, {} replicas seen", status["shared"]["replicas"])
        } else {
            "NOT reachable: limits follow on_failure, key health is local".to_owned()
        };
        let _ = writeln!(text, "shared store: {store} ({state})");
    }
    let _ = writeln!(text, "sources:");
    for s in status["sources"].as_array().into_iter().flatten() {
        let state = if s["ok"] == Value::Bool(true) {
            "ok"
        } else {
            "--"
        };
        let why = s["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let (kind, path) = (s["kind"].as_str(), s["path"].as_str());
        let _ = writeln!(
            text,
            "  {state} {} {}{why}",
            kind.unwrap_or("?"),
            path.unwrap_or("?")
        );
    }
    let _ = writeln!(text, "profiles:");
    for (name, p) in served(status) {
        let n = p.len();
        let _ = writeln!(text, "  {name}: {n} key{}", if n == 1 { "" } else { "s" });
        for (fingerprint, source, state) in p {
            let _ = writeln!(text, "    {fingerprint} from {source} ({state})");
        }
    }
    text
}

type Served = BTreeMap<String, Vec<(String, String, String)>>;

/// Fingerprint, source and state of each key the running keyproxy serves, by profile.
fn served(status: &Value) -> Served {
    let mut out = Served::new();
    for (name, p) in status["profiles"].as_object().into_iter().flatten() {
        let keys = p["keys"].as_array().into_iter().flatten().map(|k| {
            let field = |f: &str| k[f].as_str().unwrap_or("?").to_owned();
            (field("fingerprint"), field("source"), field("state"))
        });
        out.insert(name.clone(), keys.collect());
    }
    out
}

/// How what this shell loads differs from what the running keyproxy serves, profile by profile
/// for `profiles` (each route's default). The first list is problems (the service lacks a key
/// this shell has, or has none at all), the second notes.
pub fn differences(
    local: &BTreeMap<String, ProfileReport>,
    running: &Value,
    profiles: &[&str],
) -> (Vec<String>, Vec<String>) {
    let served = served(running);
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    for &profile in profiles {
        let here: Vec<(&str, &str)> = local
            .get(profile)
            .map(|p| {
                p.keys
                    .iter()
                    .map(|k| (k.fingerprint.as_str(), k.source.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let there: Vec<(&str, &str)> = served
            .get(profile)
            .map(|keys| {
                keys.iter()
                    .map(|(f, s, _)| (f.as_str(), s.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let list = |keys: &[(&str, &str)]| {
            let shown: Vec<String> = keys
                .iter()
                .map(|(f, s)| match s.strip_prefix("env ") {
                    Some(var) => format!("{f} from environment variable {var}"),
                    None => format!("{f} from {s}"),
                })
                .collect();
            shown.join(", ")
        };
        let same = here.iter().map(|k| k.0).eq(there.iter().map(|k| k.0));
        match (here.is_empty(), there.is_empty()) {
            (_, _) if same && !here.is_empty() => {}
            (true, true) => problems.push(format!(
                "the running keyproxy has no key for '{profile}' either"
            )),
            (false, true) => problems.push(format!(
                "the running keyproxy has no key for '{profile}'; this shell has {}, which the service does not see: put the key in a keys file or an env_file, not in a shell's environment",
                list(&here)
            )),
            (true, false) => notes.push(format!(
                "the running keyproxy serves '{profile}' with {}, which this shell does not find",
                list(&there)
            )),
            (false, false) => notes.push(format!(
                "the running keyproxy serves '{profile}' with {}; this shell loads {}",
                list(&there),
                list(&here)
            )),
        }
    }
    (problems, notes)
}

/// `keyproxy usage`: one table per period, a row per client, profile and model.
pub fn usage_table(usage: &Value) -> String {
    let mut text = String::new();
    if usage["scope"] == "group" {
        let _ = writeln!(
            text,
            "every replica sharing the store ([shared]; --local for this one):"
        );
    }
    for (key, title) in [
        ("today", "today (UTC)"),
        ("month", "this month"),
        ("all_time", "all time"),
    ] {
        let period = &usage[key];
        let _ = writeln!(text, "{title}:");
        let _ = writeln!(
            text,
            "  {:<14} {:<24} {:<32} {:>8} {:>12} {:>12} {:>10}",
            "client", "profile", "model", "requests", "prompt", "completion", "cost USD"
        );
        let mut rows: BTreeMap<(String, String, String), [f64; 4]> = BTreeMap::new();
        for r in period["rows"].as_array().into_iter().flatten() {
            let field = |f: &str| r[f].as_str().unwrap_or_default().to_owned();
            let key = (field("client"), field("profile"), field("model"));
            let c = &r["counts"];
            let sum = rows.entry(key).or_default();
            for (i, f) in ["requests", "prompt_tokens", "completion_tokens", "cost_usd"]
                .iter()
                .enumerate()
            {
                sum[i] += c[f].as_f64().unwrap_or(0.0);
            }
        }
        let total = &period["total"];
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        let mut line = |client: &str, profile: &str, model: &str, n: [f64; 4]| {
            let _ = writeln!(
                text,
                "  {:<14} {:<24} {:<32} {:>8} {:>12} {:>12} {:>10.4}",
                if client.is_empty() { "-" } else { client },
                profile,
                if model.is_empty() { "-" } else { model },
                n[0],
                n[1],
                n[2],
                n[3]
            );
        };
        for ((client, profile, model), n) in &rows {
            line(client, profile, model, *n);
        }
        let sums = ["requests", "prompt_tokens", "completion_tokens", "cost_usd"]
            .map(|f| number(&total[f]));
        line("total", "", "", sums);
        let estimated = number(&total["estimated"]);
        if estimated > 0.0 {
            let _ = writeln!(
                text,
                "  {estimated} answers charged their reservation (usage not seen or not believed)"
            );
        }
    }
    if let Some(why) = usage["database"]["error"].as_str() {
        let _ = writeln!(text, "note: {why}");
    }
    text
}

/// `keyproxy usage --since --until --by`: one line per day, client, profile or model.
pub fn range_table(range: &Value) -> String {
    let mut text = String::new();
    let day = |f: &str| range[f].as_str().unwrap_or("...").to_owned();
    let by = range["by"].as_str().unwrap_or("day");
    let _ = writeln!(text, "{} to {} (UTC), by {by}:", day("since"), day("until"));
    let _ = writeln!(
        text,
        "  {:<32} {:>8} {:>12} {:>12} {:>10}",
        by, "requests", "prompt", "completion", "cost USD"
    );
    let mut line = |key: &str, c: &Value| {
        let n = |f: &str| c[f].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            text,
            "  {:<32} {:>8} {:>12} {:>12} {:>10.4}",
            if key.is_empty() { "-" } else { key },
            n("requests"),
            n("prompt_tokens"),
            n("completion_tokens"),
            n("cost_usd")
        );
    };
    for g in range["groups"].as_array().into_iter().flatten() {
        line(g["key"].as_str().unwrap_or_default(), &g["counts"]);
    }
    line("total", &range["total"]);
    text
}

/// `keyproxy me`: a client's profiles, models, and each limit with what is left and its reset.
pub fn me_text(me: &Value) -> String {
    let list = |v: &Value| {
        let items: Vec<&str> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if items.is_empty() {
            "any".to_owned()
        } else {
            items.join(", ")
        }
    };
    let mut text = String::new();
    let _ = writeln!(text, "client {}", me["client"].as_str().unwrap_or("?"));
    let _ = writeln!(text, "profiles: {}", list(&me["profiles"]));
    let _ = writeln!(text, "models: {}", list(&me["models"]));
    let limits = &me["limits"];
    for (key, title, unit) in [
        ("budget", "budget", "usd"),
        ("tokens_per_day", "tokens per day", ""),
        ("requests_per_minute", "requests per minute", ""),
    ] {
        let l = &limits[key];
        if l.is_null() {
            let _ = writeln!(text, "{title}: no limit");
            continue;
        }
        let field = |f: &str| {
            if unit.is_empty() {
                l[f].to_string()
            } else {
                format!("${:.4}", l[&format!("{f}_{unit}")].as_f64().unwrap_or(0.0))
            }
        };
        let per = l["period"]
            .as_str()
            .map(|p| format!(" per {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "{title}: {} of {}{per} used, {} left; resets {} (in {})",
            field("used"),
            field("limit"),
            field("left"),
            l["resets_at"].as_str().unwrap_or("?"),
            humantime::format_duration(Duration::from_secs(
                l["resets_in_secs"].as_u64().unwrap_or(0)
            ))
        );
    }
    for (key, title) in [("today", "today (UTC)"), ("month", "this month")] {
        let c = &me["usage"][key];
        if c.is_null() {
            continue;
        }
        let _ = writeln!(
            text,
            "{title}: {} requests, {} prompt and {} completion tokens, ${:.4}",
            c["requests"],
            c["prompt_tokens"],
            c["completion_tokens"],
            c["cost_usd"].as_f64().unwrap_or(0.0)
        );
    }
    text
}
