//! `/_keyproxy/`: health, ready, status, reload, usage and metrics (who may ask: `rights`).
//! Fingerprints only, never a key.

use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::{json, Value};

pub use super::me::handle as me;
use super::reload::ReloadRequest;
use super::{report, rights};
use crate::config::Origin;
use crate::proxy::{json_response, LocalError, ResponseBody, Snapshot, State};
use crate::usage::range::{parse_day, By};
use crate::usage::Persistence;

pub fn handle<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    match req.uri().path() {
        "/_keyproxy/health" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/_keyproxy/ready" => ready(&state.load()),
        "/_keyproxy/status" => match authorized(state, req) {
            Ok(()) => json_response(StatusCode::OK, &status(state)),
            Err(e) => e.into_response(),
        },
        "/_keyproxy/metrics" => match authorized(state, req) {
            Ok(()) => metrics(state),
            Err(e) => e.into_response(),
        },
        path => LocalError::UnknownAdminPath {
            path: path.to_owned(),
        }
        .into_response(),
    }
}

/// `POST /_keyproxy/reload`: reloads as SIGHUP does (every key command runs again) and answers
/// when that reload is done, with its outcome; `keyproxy reload` asks this, so no pid is needed.
pub async fn reload<B>(
    state: &State,
    req: &Request<B>,
    reloader: &tokio::sync::mpsc::Sender<ReloadRequest>,
) -> Response<ResponseBody> {
    if let Err(e) = authorized(state, req) {
        return e.into_response();
    }
    if req.method() != http::Method::POST {
        let mut resp = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": {"message": "keyproxy: /_keyproxy/reload takes POST (keyproxy reload sends it)"}}),
        );
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return resp;
    }
    let (done, finished) = tokio::sync::oneshot::channel();
    let asked = reloader.try_send(ReloadRequest {
        reason: super::reload::ASKED,
        done: Some(done),
    });
    let waited = match asked {
        Ok(()) => tokio::time::timeout(std::time::Duration::from_secs(60), finished)
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    };
    if !waited {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": {"message": "keyproxy: a reload is still running (a key source not answering?); see keyproxy status"}}),
        );
    }
    let log = state.log();
    let last_error = log.last_error.map(|(_, message)| message);
    json_response(
        StatusCode::OK,
        &json!({"reloaded": true, "count": log.count, "ok": last_error.is_none(), "last_error": last_error}),
    )
}

/// status, reload, usage and metrics show or change everything: see `rights::admin`.
fn authorized<B>(state: &State, req: &Request<B>) -> Result<(), LocalError> {
    rights::admin(&state.load(), req)
}

fn metrics(state: &State) -> Response<ResponseBody> {
    let profiles = report::profiles(&state.load());
    let counts = profiles.iter().map(|(name, p)| {
        let (active, resting) = p.counts();
        (name.as_str(), active, resting)
    });
    let mut text = state.metrics.render(counts);
    if let Some(shared) = state.shared.get() {
        crate::proxy::shared::metrics_text(&mut text, shared);
    }
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(text))));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

/// `GET /_keyproxy/usage`: usage today, this month and all time, and where it is kept. Async:
/// the first report may wait for the ledger's thread to open the database.
pub async fn usage<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    if let Err(e) = authorized(state, req) {
        return e.into_response();
    }
    let Some(ledger) = state.usage.get().cloned() else {
        let message = "keyproxy: usage is not counted (usage = false in keyproxy.toml)";
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": message}}),
        );
    };
    let query = req.uri().query().unwrap_or_default();
    let local = query.split('&').any(|p| p == "local=1");
    let range = match range_asked(query) {
        Ok(range) => range,
        Err(message) => {
            let message = format!("keyproxy: {message}");
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": {"message": message}}),
            );
        }
    };
    let group = match state.shared.get().filter(|_| !local) {
        Some(shared) => crate::proxy::shared::usage::rows(shared).await,
        None => None,
    };
    let scope = if group.is_some() { "group" } else { "replica" };
    let rows = match group {
        Some(rows) => rows,
        None => {
            let reader = ledger.clone();
            tokio::task::spawn_blocking(move || reader.rows())
                .await
                .unwrap_or_default()
        }
    };
    let mut report = crate::usage::report(&rows, SystemTime::now());
    if let Some((since, until, by)) = range {
        report["range"] = json!(crate::usage::range::grouped(&rows, since, until, by));
    }
    // With [shared]: the whole group's totals, unless ?local=1 or the store did not answer.
    report["scope"] = json!(scope);
    report["database"] = match ledger.persistence() {
        Persistence::Open(path) | Persistence::NotYetOpened(path) => {
            json!({"path": path.display().to_string()})
        }
        Persistence::MemoryOnly(why) => json!({"path": null, "error": why}),
    };
    json_response(StatusCode::OK, &report)
}

type RangeAsked = Option<(Option<String>, Option<String>, By)>;

/// `?since=DAY&until=DAY&by=day|client|profile|model` (`keyproxy usage --since --until --by`):
/// asked when any of them is given; `by` defaults to day.
fn range_asked(query: &str) -> Result<RangeAsked, String> {
    let (mut since, mut until, mut by) = (None, None, None);
    for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
        match name {
            "since" => since = Some(parse_day(value)?),
            "until" => until = Some(parse_day(value)?),
            "by" => by = Some(value.parse::<By>()?),
            _ => {}
        }
    }
    if since.is_none() && until.is_none() && by.is_none() {
        return Ok(None);
    }
    Ok(Some((since, until, by.unwrap_or(By::Day))))
}

fn ready(snapshot: &Snapshot) -> Response<ResponseBody> {
    let missing = snapshot.profiles_without_key();
    if missing.is_empty() {
        return json_response(StatusCode::OK, &json!({"ready": true}));
    }
    let message = format!(
        "no key for profile{} {}",
        if missing.len() == 1 { "" } else { "s" },
        missing
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"ready": false, "profiles_without_key": missing, "message": message}),
    )
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The status document; `check --json` prints the same profiles and sources.
pub fn status(state: &State) -> Value {
    let snapshot = state.load();
    let log = state.log();
    let config = match &state.origin {
        Origin::File(p) => Value::String(p.display().to_string()),
        Origin::Embedded { .. } => Value::Null,
    };
    let uptime = SystemTime::now()
        .duration_since(state.started)
        .unwrap_or_default();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(state.started),
        "uptime_secs": uptime.as_secs(),
        "config": config,
        "sources": sources(state, &snapshot),
        "profiles": report::profiles(&snapshot),
        "shared": state.shared.get().map(|s| json!({
            "store": s.store(), "reachable": s.reachable(), "replicas": s.replicas(),
        })),
        "reload": {
            "count": log.count,
            "last_ok_at": log.last_ok_at.map(rfc3339),
            "last_error": log.last_error.map(|(at, message)| json!({"at": rfc3339(at), "message": message})),
            "last_trigger": log.last_trigger,
        },
    })
}

/// The key sources, and a file the reloader has been reading for over two seconds: a hung mount
/// or a FIFO, while keyproxy keeps serving the keys it has.
fn sources(state: &State, snapshot: &Snapshot) -> Vec<Value> {
    let mut out: Vec<Value> = snapshot
        .keys
        .sources()
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    if let Some((path, waited)) = state.reading.stuck(std::time::Duration::from_secs(2)) {
        out.push(json!({
            "kind": "reading", "path": path, "ok": false,
            "error": format!("not answering: a read has waited {} s (a hung mount?); keyproxy keeps serving the keys it has", waited.as_secs()),
        }));
    }
    out
}
