//! `keyproxy check --live`: asks each provider, through the route's own upstream connections and
//! TLS setup, whether each key is valid, without spending tokens (a key-info or model-list
//! endpoint). Keys are named by fingerprint only.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::config::clients::provider_of;
use crate::config::providers::Provider;
use crate::keys::Redactor;
use crate::proxy::{ask_with_key, Route, Snapshot};

/// How long one provider may take to answer.
const TIMEOUT: Duration = Duration::from_secs(15);

/// What the provider said of one key on one route.
#[derive(Debug, Serialize)]
pub struct KeyCheck {
    pub route: String,
    pub profile: String,
    pub fingerprint: String,
    /// `ok`, `invalid`, `no credit`, `rate limited`, `unreachable` or `unexpected`.
    pub verdict: &'static str,
    /// The cause, or what OpenRouter tells of the key (label, limit, credit, usage).
    pub detail: String,
}

/// The read-only endpoint that tells whether a key is good, per provider.
fn endpoint(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::OpenRouter => Some("/api/v1/key"),
        Provider::OpenAI | Provider::Anthropic => Some("/v1/models"),
        Provider::Gemini => Some("/v1beta/models"),
        Provider::Azure => None,
    }
}

/// The route's preset; else the provider its profile names, when the route goes to that
/// provider's public API (the embedded default's OpenRouter route).
fn preset_of(snapshot: &Snapshot, route: &Route) -> Option<Provider> {
    let config = snapshot.config.routes.get(route.index)?;
    if let Some(p) = config.provider {
        return Some(p);
    }
    let inferred = Provider::named(provider_of(&route.profile))?;
    let public = inferred.upstream()?;
    (route.upstream_label == public).then_some(inferred)
}

/// Asks about every key of every profile each route with a provider may inject; the text, the
/// checks, and whether every such route's default profile has an `ok` key.
pub async fn check(snapshot: Arc<Snapshot>) -> (String, Vec<KeyCheck>, bool) {
    let mut text = String::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut all_ok = true;
    let mut checked_defaults = Vec::new();
    for route in snapshot.routes.iter() {
        let Some((provider, path)) =
            preset_of(&snapshot, route).and_then(|p| Some((p, endpoint(p)?)))
        else {
            let _ = writeln!(
                text,
                "  {} -> {}: no live check (the route has no provider preset with one)",
                route.prefix, route.upstream_label
            );
            continue;
        };
        checked_defaults.push((route.prefix.clone(), route.profile.clone()));
        for (profile, pool) in snapshot.keys.profiles() {
            if !route.allows(profile) {
                continue;
            }
            for k in 0..pool.keys().len() {
                let (snapshot, profile) = (snapshot.clone(), profile.to_owned());
                let index = route.index;
                tasks.spawn(async move {
                    let route = snapshot.routes.iter().find(|r| r.index == index);
                    let key = snapshot
                        .keys
                        .profile(&profile)
                        .and_then(|p| p.keys().get(k));
                    let (Some(route), Some(key)) = (route, key) else {
                        return None;
                    };
                    let answer = ask_with_key(route, key, path, TIMEOUT).await;
                    let (verdict, detail) = judge(provider, answer, snapshot.keys.redactor());
                    Some(KeyCheck {
                        route: route.prefix.clone(),
                        profile,
                        fingerprint: key.fingerprint().to_owned(),
                        verdict,
                        detail,
                    })
                });
            }
        }
    }
    let mut checks = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(check)) = done {
            checks.push(check);
        }
    }
    checks.sort_by(|a, b| {
        (&a.route, &a.profile, &a.fingerprint).cmp(&(&b.route, &b.profile, &b.fingerprint))
    });
    for c in &checks {
        let detail = if c.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.detail)
        };
        let _ = writeln!(
            text,
            "  {} {} {}: {}{detail}",
            c.route, c.profile, c.fingerprint, c.verdict
        );
    }
    for (prefix, profile) in checked_defaults {
        if !checks
            .iter()
            .any(|c| c.route == prefix && c.profile == profile && c.verdict == "ok")
        {
            all_ok = false;
            let _ = writeln!(
                text,
                "problem: route {prefix}: no key of its profile '{profile}' passed the live check"
            );
        }
    }
    (format!("live:\n{text}"), checks, all_ok)
}

/// The verdict on an answer, and what to show beside it.
fn judge(
    provider: Provider,
    answer: Result<(http::StatusCode, bytes::Bytes), String>,
    redactor: &Redactor,
) -> (&'static str, String) {
    let (status, body) = match answer {
        Ok(a) => a,
        Err(why) => return ("unreachable", why),
    };
    let said = || {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let m = v["error"]["message"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or_default();
        // The provider's words may quote the key it refused.
        let m = redactor.quoted(m);
        let m: String = m.chars().take(160).collect();
        if m.is_empty() {
            format!("{status}")
        } else {
            format!("{status}: {m}")
        }
    };
    match status.as_u16() {
        200..=299 if provider == Provider::OpenRouter => openrouter_key_info(&body),
        200..=299 => ("ok", String::new()),
        401 | 403 => ("invalid", said()),
        402 => ("no credit", said()),
        429 => ("rate limited", said()),
        _ => ("unexpected", said()),
    }
}

/// OpenRouter's `GET /api/v1/key`: label, limit, remaining credit, usage, free tier, expiry.
fn openrouter_key_info(body: &[u8]) -> (&'static str, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let d = &v["data"];
    let dollars = |f: &Value| f.as_f64().map(|x| format!("${x:.2}"));
    let mut parts = Vec::new();
    if let Some(label) = d["label"].as_str() {
        parts.push(format!("label {}", crate::text::redact_quoted(label)));
    }
    parts.push(format!(
        "limit {}",
        dollars(&d["limit"]).unwrap_or_else(|| "none".into())
    ));
    if let Some(r) = dollars(&d["limit_remaining"]) {
        parts.push(format!("remaining {r}"));
    }
    if let Some(u) = dollars(&d["usage"]) {
        parts.push(format!("usage {u}"));
    }
    if let Some(free) = d["is_free_tier"].as_bool() {
        parts.push(format!("free tier {}", if free { "yes" } else { "no" }));
    }
    if let Some(at) = d["expires_at"].as_str() {
        parts.push(format!("expires {at}"));
    }
    let spent = d["limit_remaining"].as_f64().is_some_and(|r| r <= 0.0);
    (if spent { "no credit" } else { "ok" }, parts.join(", "))
}
