//! `GET /_keyproxy/ui/data`: what the page shows, one typed report built from the documents the
//! other endpoints serve: the status document (`/_keyproxy/status`: profiles and keys by
//! fingerprint, sources, reloads, the shared store), one `/_keyproxy/me` document per agent,
//! the last hour of traffic, and with `?history=1` the last 30 days of usage per client and
//! per model, read from the ledger only then.
//!
//! Rights as `rights` says (a refusal is the login view, see `login`): whoever opens status sees everything; a client token where an admin
//! is configured sees its own agent and its own history, nothing else.

use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::metrics::traffic::TrafficReport;
use crate::ops::{admin, me, rights};
use crate::proxy::{json_response, LocalError, ResponseBody, State};
use crate::usage::range::{history, History};

/// Days of usage the page charts.
const HISTORY_DAYS: u32 = 30;

#[derive(Debug, Serialize)]
pub struct PageReport {
    /// `admin` (everything) or `client` (one agent's own view).
    pub view: &'static str,
    pub generated_at: String,
    /// The `/_keyproxy/status` document; admin only.
    pub status: Option<Value>,
    /// The `/_keyproxy/me` document of each agent (of the token's own, for a client).
    pub agents: Vec<Value>,
    /// The last hour, per minute; admin only.
    pub traffic: Option<TrafficReport>,
    /// False with `usage = false`: no counts, no history.
    pub usage_counted: bool,
    /// With `?history=1`.
    pub history: Option<History>,
}

/// A token missing or refused: the page shows its login form with the message. A 200, not the
/// 401 of the other endpoints, because a browser logs every failed request in its console, and
/// the page asks once without a token to learn whether it needs one (loopback without clients
/// does not).
fn login(e: &LocalError) -> Response<ResponseBody> {
    let body = json!({"view": "login", "reason": e.reason(), "message": e.to_string()});
    let mut resp = json_response(StatusCode::OK, &body);
    resp.headers_mut().insert(
        "x-keyproxy-error",
        http::HeaderValue::from_static(e.reason()),
    );
    resp
}

pub async fn serve<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    let snapshot = state.load();
    let own = match rights::admin(&snapshot, req) {
        Ok(()) => None,
        Err(LocalError::AdminOnly { .. }) => match rights::client(&snapshot, req) {
            Ok(client) => Some(client),
            Err(e) => return login(&e),
        },
        Err(e) => return login(&e),
    };
    let with_history = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "history=1"));
    let rows = me::rows(state).await;
    let now = SystemTime::now();
    let mut clients: Vec<_> = match own {
        Some(client) => vec![client],
        None => snapshot.config.clients.iter().collect(),
    };
    clients.sort_by(|a, b| a.name.cmp(&b.name));
    let agents = clients
        .iter()
        .map(|c| me::agent(&snapshot, c, rows.as_ref(), now))
        .collect();
    let history = rows.as_ref().filter(|_| with_history).map(|rows| {
        let own = own.map(|c| c.name.as_str());
        history(rows, now, HISTORY_DAYS, |row| {
            own.is_none_or(|name| row.1 == name)
        })
    });
    let admin = own.is_none();
    let report = PageReport {
        view: if admin { "admin" } else { "client" },
        generated_at: humantime::format_rfc3339_seconds(now).to_string(),
        status: admin.then(|| admin::status(state)),
        agents,
        traffic: admin.then(|| state.metrics.traffic.report()),
        usage_counted: rows.is_some(),
        history,
    };
    let value = serde_json::to_value(&report).unwrap_or(Value::Null);
    json_response(StatusCode::OK, &value)
}
