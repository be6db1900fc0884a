//! `GET /_keyproxy/me`: what a client token may do and has used, for the agent that holds it:
//! its profiles, models and limits, what each limit's window has used, what is left and when it
//! resets, and its own usage today and this month. Nothing of any other client.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::rights;
use crate::config::clients::Client;
use crate::proxy::limits::{period_name, Standing, Standings};
use crate::proxy::{json_response, ResponseBody, State};
use crate::usage::Counts;

pub async fn handle<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    let snapshot = state.load();
    let client = match rights::client(&snapshot, req) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let now = SystemTime::now();
    let standings = snapshot
        .limits
        .of(&client.name)
        .map(|used| used.now(&client.limits, now));
    let usage = match state.usage.get().cloned() {
        Some(ledger) => {
            let name = client.name.clone();
            // The first report may wait for the ledger's thread to open the database.
            tokio::task::spawn_blocking(move || own_usage(&ledger.rows(), &name, now))
                .await
                .ok()
        }
        None => None,
    };
    json_response(StatusCode::OK, &me(client, standings, usage, now))
}

/// This client's counts today and this month (UTC), from the ledger's rows.
fn own_usage(
    rows: &std::collections::BTreeMap<crate::usage::Row, Counts>,
    name: &str,
    now: SystemTime,
) -> Value {
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

fn me(
    client: &Client,
    standings: Option<Standings>,
    usage: Option<Value>,
    now: SystemTime,
) -> Value {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let reset = |resets_at: u64| {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(resets_at);
        json!({
            "resets_at": humantime::format_rfc3339_seconds(at).to_string(),
            "resets_in_secs": resets_at.saturating_sub(secs),
        })
    };
    let merge = |mut a: Value, b: Value| {
        if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
            a.extend(b);
        }
        a
    };
    let limits = &client.limits;
    let budget = limits.budget.zip(standings.and_then(|s| s.spend_usd)).map(|((usd, period), s)| {
        merge(
            json!({"limit_usd": usd, "period": period_name(period), "used_usd": s.used, "left_usd": (usd - s.used).max(0.0)}),
            reset(s.resets_at),
        )
    });
    let count = |limit: Option<u64>, s: Option<Standing<u64>>| {
        limit.zip(s).map(|(max, s)| {
            merge(
                json!({"limit": max, "used": s.used, "left": max.saturating_sub(s.used)}),
                reset(s.resets_at),
            )
        })
    };
    json!({
        "client": client.name,
        "admin": client.admin,
        "profiles": client.profiles,
        "models": client.models,
        "limits": {
            "budget": budget,
            "tokens_per_day": count(limits.tokens_per_day, standings.and_then(|s| s.tokens_today)),
            "requests_per_minute": count(
                limits.requests_per_minute.map(u64::from),
                standings.and_then(|s| s.requests_this_minute),
            ),
        },
        "usage": usage,
    })
}
