//! `GET /_keyproxy/me`: what a client token may do and has used, for the agent that holds it:
//! its profiles, models and limits, what each limit's window has used, what is left and when it
//! resets, and its own usage today and this month. Nothing of any other client.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::rights;
use crate::config::clients::{Client, Period};
use crate::proxy::limits::UsedNow;
use crate::proxy::{json_response, ResponseBody, Snapshot, State};
use crate::usage::{Counts, Row};

pub async fn handle<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    let snapshot = state.load();
    let client = match rights::client(&snapshot, req) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let rows = rows(state).await;
    let now = SystemTime::now();
    json_response(
        StatusCode::OK,
        &agent(&snapshot, client, rows.as_ref(), now),
    )
}

/// The ledger's rows, None when usage is not counted. The first may wait for the ledger's
/// thread to open the database, hence off the worker.
pub(super) async fn rows(state: &State) -> Option<BTreeMap<Row, Counts>> {
    let ledger = state.usage.get().cloned()?;
    tokio::task::spawn_blocking(move || ledger.rows())
        .await
        .ok()
}

/// The `/_keyproxy/me` document of `client`: the page shows one per agent.
pub(super) fn agent(
    snapshot: &Snapshot,
    client: &Client,
    rows: Option<&BTreeMap<Row, Counts>>,
    now: SystemTime,
) -> Value {
    let used = snapshot
        .limits
        .of(&client.name)
        .map(|used| used.now(&client.limits));
    let usage = rows.map(|rows| own_usage(rows, &client.name, now));
    me(client, used, usage, now)
}

/// This client's counts today and this month (UTC), from the ledger's rows.
fn own_usage(rows: &BTreeMap<Row, Counts>, name: &str, now: SystemTime) -> Value {
    let today = crate::usage::day(now);
    let (mut day, mut month) = (Counts::default(), Counts::default());
    for ((d, _, _, _), c) in rows.iter().filter(|((_, client, ..), _)| client == name) {
        if d.get(..7) == today.get(..7) {
            month.add(c);
            if *d == today {
                day.add(c);
            }
        }
    }
    json!({"today": day, "month": month})
}

fn me(client: &Client, used: Option<UsedNow>, usage: Option<Value>, now: SystemTime) -> Value {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let resets = |at: u64, mut v: Value| {
        let when = UNIX_EPOCH + std::time::Duration::from_secs(at);
        v["resets_at"] = json!(humantime::format_rfc3339_seconds(when).to_string());
        v["resets_in_secs"] = json!(at.saturating_sub(secs));
        v
    };
    // A client without limits has no counters: nothing of its limits is used.
    let u = used.unwrap_or(UsedNow {
        spend_micros: 0,
        reserved_micros: 0,
        tokens_today: 0,
        reserved_tokens: 0,
        requests_this_minute: 0,
        in_flight: 0,
        budget_resets_at: None,
        tokens_reset_at: (secs / 86_400 + 1) * 86_400,
        minute_resets_at: (secs / 60 + 1) * 60,
    });
    let limits = &client.limits;
    let budget = limits.budget.map(|(usd, period)| {
        let (spent, reserved) = (u.spend_micros as f64 / 1e6, u.reserved_micros as f64 / 1e6);
        let v = json!({
            "limit_usd": usd, "period": period_name(period), "used_usd": spent,
            "reserved_usd": reserved, "left_usd": (usd - spent - reserved).max(0.0),
        });
        resets(u.budget_resets_at.unwrap_or(secs), v)
    });
    let tokens = limits.tokens_per_day.map(|max| {
        let held = u.tokens_today.saturating_add(u.reserved_tokens);
        let v = json!({
            "limit": max, "used": u.tokens_today, "reserved": u.reserved_tokens,
            "left": max.saturating_sub(held),
        });
        resets(u.tokens_reset_at, v)
    });
    let requests = limits.requests_per_minute.map(|max| {
        let v = json!({
            "limit": max, "used": u.requests_this_minute,
            "left": u64::from(max).saturating_sub(u.requests_this_minute),
        });
        resets(u.minute_resets_at, v)
    });
    json!({
        "client": client.name,
        "admin": client.admin,
        "profiles": client.profiles,
        "models": client.models,
        "limits": {"budget": budget, "tokens_per_day": tokens, "requests_per_minute": requests},
        "usage": usage,
    })
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}
