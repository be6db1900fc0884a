//! Usage on disk: one SQLite table of counts per day, client, profile and model, in WAL mode so
//! that a crash loses at most the transaction being written and never what was there.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection};

use super::ledger::{Counts, Row};

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens or creates the database, checks it, and reads every row.
    pub fn open(path: &Path) -> Result<(Self, BTreeMap<Row, Counts>), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if check != "ok" {
            return Err(format!("damaged ({check})"));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| e.to_string())?;
        // A few rows a second need no 2 MiB page cache; keep the idle footprint small.
        conn.pragma_update(None, "cache_size", -128)
            .map_err(|e| e.to_string())?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS usage (
                day TEXT NOT NULL, client TEXT NOT NULL, profile TEXT NOT NULL, model TEXT NOT NULL,
                requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
                PRIMARY KEY (day, client, profile, model))",
        )
        .map_err(|e| e.to_string())?;
        let mut rows = BTreeMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT day, client, profile, model, requests, prompt_tokens, completion_tokens, cost_usd FROM usage")
                .map_err(|e| e.to_string())?;
            let read = stmt
                .query_map([], |r| {
                    let row: Row = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                    let counts = Counts {
                        requests: r.get::<_, i64>(4)?.max(0) as u64,
                        prompt_tokens: r.get::<_, i64>(5)?.max(0) as u64,
                        completion_tokens: r.get::<_, i64>(6)?.max(0) as u64,
                        cost_usd: r.get(7)?,
                    };
                    Ok((row, counts))
                })
                .map_err(|e| e.to_string())?;
            for item in read {
                let (row, counts) = item.map_err(|e| e.to_string())?;
                rows.insert(row, counts);
            }
        }
        Ok((Self { conn }, rows))
    }

    /// Adds `pending` to the stored counts in one transaction.
    pub fn add(&mut self, pending: &BTreeMap<Row, Counts>) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO usage VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (day, client, profile, model) DO UPDATE SET
                   requests = requests + excluded.requests,
                   prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = completion_tokens + excluded.completion_tokens,
                   cost_usd = cost_usd + excluded.cost_usd",
            )?;
            for ((day, client, profile, model), c) in pending {
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                stmt.execute(params![
                    day,
                    client,
                    profile,
                    model,
                    n(c.requests),
                    n(c.prompt_tokens),
                    n(c.completion_tokens),
                    c.cost_usd
                ])?;
            }
        }
        tx.commit()
    }
}
