//! Usage totals of the whole group: each replica's ledger thread hands what one tick added up
//! to a task that adds it into one hash per UTC day (integers; cost in micro-dollars), and
//! `/_keyproxy/usage` reads them back. A batch sent while the store is down is missing from the
//! group's totals (each replica's own ledger still has it).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Shared;
use crate::proxy::limits::dollars_to_micros;
use crate::usage::{Counts, Row};

/// The fields of a row kept per counter, in this order after client, profile and model.
const FIELDS: [&str; 6] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_micros",
    "estimated",
    "estimated_tokens",
];
const SEP: char = '\u{1f}';

/// Starts the task that adds batches into the store; the sender is for the ledger's thread.
pub fn outlet(shared: &Arc<Shared>) -> mpsc::UnboundedSender<Vec<(Row, Counts)>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<(Row, Counts)>>();
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if !shared.reachable() {
                continue;
            }
            let mut pipe = redis::pipe();
            for ((day, client, profile, model), c) in &batch {
                let hash = shared.key(&format!("usage:{day}"));
                let values = [
                    c.requests,
                    c.prompt_tokens,
                    c.completion_tokens,
                    dollars_to_micros(c.cost_usd),
                    c.estimated,
                    c.estimated_tokens,
                ];
                for (field, n) in FIELDS.iter().zip(values).filter(|(_, n)| *n > 0) {
                    let name = format!("{client}{SEP}{profile}{SEP}{model}{SEP}{field}");
                    pipe.hincr(&hash, name, n).ignore();
                }
                pipe.sadd(shared.key("usage:days"), day).ignore();
            }
            let mut conn = shared.conn.clone();
            let _: Option<()> = shared.call(pipe.query_async(&mut conn)).await;
        }
    });
    tx
}

/// Every row of the group, from the store; `None` when it does not answer in time.
pub async fn rows(shared: &Shared) -> Option<BTreeMap<Row, Counts>> {
    let mut conn = shared.conn.clone();
    let days: Vec<String> = shared
        .call(
            redis::cmd("SMEMBERS")
                .arg(shared.key("usage:days"))
                .query_async(&mut conn),
        )
        .await?;
    let mut pipe = redis::pipe();
    for day in &days {
        pipe.cmd("HGETALL").arg(shared.key(&format!("usage:{day}")));
    }
    let hashes: Vec<Vec<(String, u64)>> = shared.call(pipe.query_async(&mut conn)).await?;
    let mut rows: BTreeMap<Row, Counts> = BTreeMap::new();
    for (day, fields) in days.iter().zip(hashes) {
        for (name, n) in fields {
            let mut parts = name.rsplitn(2, SEP);
            let (Some(field), Some(row)) = (parts.next(), parts.next()) else {
                continue;
            };
            let mut row = row.splitn(3, SEP);
            let (Some(client), Some(profile), Some(model)) = (row.next(), row.next(), row.next())
            else {
                continue;
            };
            let key = (day.clone(), client.into(), profile.into(), model.into());
            let c = rows.entry(key).or_default();
            match field {
                "requests" => c.requests = n,
                "prompt_tokens" => c.prompt_tokens = n,
                "completion_tokens" => c.completion_tokens = n,
                "cost_micros" => c.cost_usd = n as f64 / 1e6,
                "estimated" => c.estimated = n,
                "estimated_tokens" => c.estimated_tokens = n,
                _ => {}
            }
        }
    }
    Some(rows)
}
