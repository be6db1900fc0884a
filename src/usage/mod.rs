//! Usage: what each answer used (tokens, cost, model), read from its bytes as they pass
//! (`scan`), added up per day, client, profile and model off the request path (`ledger`) and
//! kept in SQLite (`store`).

mod fields;
mod ledger;
pub mod range;
pub mod scan;
mod shape;
mod store;

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};

pub use ledger::{day, Answer, Counts, Ledger, Persistence, Row};

/// `/_keyproxy/usage`: today, this month and all time (UTC), each with its total and its
/// counts per client, profile and model, and the rows behind them.
pub fn report(rows: &BTreeMap<Row, Counts>, now: SystemTime) -> Value {
    let today = day(now);
    let month = today[..7].to_owned();
    let period = |keep: &dyn Fn(&str) -> bool| {
        let mut total = Counts::default();
        let mut by: [BTreeMap<&str, Counts>; 3] = Default::default();
        let mut list = Vec::new();
        for ((d, client, profile, model), c) in rows.iter().filter(|((d, ..), _)| keep(d)) {
            total.add(c);
            for (map, key) in by.iter_mut().zip([client, profile, model]) {
                map.entry(key.as_str()).or_default().add(c);
            }
            list.push(json!({"day": d, "client": client, "profile": profile, "model": model, "counts": c}));
        }
        let [clients, profiles, models] = by;
        json!({"total": total, "by_client": clients, "by_profile": profiles, "by_model": models, "rows": list})
    };
    json!({
        "today": period(&|d| d == today),
        "month": period(&|d| d.starts_with(&month)),
        "all_time": period(&|_| true),
    })
}
