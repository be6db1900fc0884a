//! Usage on disk: one SQLite table of counts per day, client, profile and model, in WAL mode so
//! that a crash loses at most the transaction being written and never what was there.
//!
//! Every number keeps its column's type: counts are clamped to 0..=i64::MAX before they are
//! written and added with saturation in SQL (SQLite turns an INTEGER sum that overflows into a
//! REAL, which the next start could not read back), costs to 0..=1e15 dollars. A file written
//! before these rules is repaired when opened, and a row that still cannot be read is skipped
//! with a warning rather than leaving usage in memory only.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode};

use super::ledger::{Counts, Row};

/// The most a cost column holds, in dollars: far above any budget, far below where sums of
/// floats stop being finite.
const MAX_COST: f64 = 1e15;

pub struct Store {
    conn: Connection,
}

/// An INTEGER column, repaired: a REAL that an overflowing sum left becomes the largest
/// integer or its whole part, anything else not a count 0.
fn repaired(col: &str) -> String {
    format!(
        "CASE WHEN typeof({col}) = 'integer' THEN MAX({col}, 0) \
         WHEN typeof({col}) = 'real' AND {col} >= 9.2e18 THEN 9223372036854775807 \
         WHEN typeof({col}) = 'real' AND {col} > 0 THEN CAST({col} AS INTEGER) ELSE 0 END"
    )
}

/// `col + excluded.col`, saturating at i64::MAX (both are never negative).
fn saturating_sum(col: &str) -> String {
    format!(
        "{col} = CASE WHEN {col} > 9223372036854775807 - excluded.{col} \
         THEN 9223372036854775807 ELSE {col} + excluded.{col} END"
    )
}

const COUNT_COLUMNS: [&str; 5] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "estimated",
    "estimated_tokens",
];

impl Store {
    /// Opens or creates the database, brings its table up to date, repairs numbers of the wrong
    /// type, and reads every row.
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
        migrate(&conn).map_err(|e| e.to_string())?;
        let rows = read(&conn).map_err(|e| e.to_string())?;
        Ok((Self { conn }, rows))
    }

    /// Adds `pending` to the stored counts in one transaction.
    pub fn add(&mut self, pending: &BTreeMap<Row, Counts>) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for (row, counts) in pending {
            add_row(&tx, row, counts)?;
        }
        tx.commit()
    }

    /// After a failed batch: each row on its own. A row SQLite refuses for what it holds is
    /// dropped with a warning, so one bad row never stops the others being written; a row that
    /// failed for the disk's sake (full, locked) stays pending.
    pub fn add_each(&mut self, pending: &mut BTreeMap<Row, Counts>) {
        pending.retain(|row, counts| match add_row(&self.conn, row, counts) {
            Ok(()) => false,
            Err(e) if refused_for_its_content(&e) => {
                tracing::warn!(client = %row.1, day = %row.0, "usage row dropped: the database refused it ({e})");
                false
            }
            Err(_) => true,
        });
    }
}

fn add_row(conn: &Connection, row: &Row, c: &Counts) -> rusqlite::Result<()> {
    let (day, client, profile, model) = row;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let cost = if c.cost_usd.is_finite() {
        c.cost_usd.clamp(0.0, MAX_COST)
    } else {
        0.0
    };
    let sums: Vec<String> = COUNT_COLUMNS.iter().map(|c| saturating_sum(c)).collect();
    let sql = format!(
        "INSERT INTO usage (day, client, profile, model, requests, prompt_tokens,
           completion_tokens, cost_usd, estimated, estimated_tokens)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (day, client, profile, model) DO UPDATE SET {},
           cost_usd = MIN(cost_usd + excluded.cost_usd, {MAX_COST:e})",
        sums.join(", ")
    );
    conn.prepare_cached(&sql)?.execute(params![
        day,
        client,
        profile,
        model,
        n(c.requests),
        n(c.prompt_tokens),
        n(c.completion_tokens),
        cost,
        n(c.estimated),
        n(c.estimated_tokens),
    ])?;
    Ok(())
}

fn refused_for_its_content(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig
        ),
        rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    }
}

/// Adds the columns of answers counted by estimate to a file from before them (an older
/// keyproxy reads such a file still: it names its columns), and repairs numbers that an older
/// keyproxy let become REAL, negative or infinite.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for col in ["estimated", "estimated_tokens"] {
        let has: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('usage') WHERE name = ?1",
            [col],
            |r| r.get(0),
        )?;
        if has == 0 {
            conn.execute_batch(&format!(
                "ALTER TABLE usage ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    let fixes: Vec<String> = COUNT_COLUMNS
        .iter()
        .map(|c| format!("{c} = {}", repaired(c)))
        .collect();
    let wrong: Vec<String> = COUNT_COLUMNS
        .iter()
        .map(|c| format!("typeof({c}) != 'integer' OR {c} < 0"))
        .collect();
    let repaired = conn.execute(
        &format!(
            "UPDATE usage SET {},
               cost_usd = CASE WHEN typeof(cost_usd) IN ('real', 'integer') AND cost_usd >= 0
                 THEN MIN(cost_usd, {MAX_COST:e}) ELSE 0 END
             WHERE {} OR typeof(cost_usd) NOT IN ('real', 'integer')
               OR NOT (cost_usd >= 0 AND cost_usd <= {MAX_COST:e})",
            fixes.join(", "),
            wrong.join(" OR ")
        ),
        [],
    )?;
    if repaired > 0 {
        tracing::warn!(
            rows = repaired,
            "usage database: numbers out of range or of the wrong type were clamped"
        );
    }
    Ok(())
}

fn read(conn: &Connection) -> rusqlite::Result<BTreeMap<Row, Counts>> {
    let mut rows = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT day, client, profile, model, requests, prompt_tokens, completion_tokens, cost_usd,
           estimated, estimated_tokens FROM usage",
    )?;
    let mut read = stmt.query([])?;
    while let Some(r) = read.next()? {
        let row: rusqlite::Result<Row> = (|| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))();
        let Ok(row) = row else {
            tracing::warn!("usage database: a row whose names are not text was skipped");
            continue;
        };
        let count = |i: usize| r.get_ref(i).map(as_count).unwrap_or(0);
        let counts = Counts {
            requests: count(4),
            prompt_tokens: count(5),
            completion_tokens: count(6),
            cost_usd: r.get_ref(7).map(as_cost).unwrap_or(0.0),
            estimated: count(8),
            estimated_tokens: count(9),
        };
        rows.entry(row).or_insert_with(Counts::default).add(&counts);
    }
    Ok(rows)
}

fn as_count(v: ValueRef<'_>) -> u64 {
    match v {
        ValueRef::Integer(i) => u64::try_from(i).unwrap_or(0),
        ValueRef::Real(f) if f.is_finite() && f > 0.0 => f as u64,
        ValueRef::Real(f) if f == f64::INFINITY => u64::MAX,
        _ => 0,
    }
}

fn as_cost(v: ValueRef<'_>) -> f64 {
    match v {
        ValueRef::Integer(i) => (i.max(0) as f64).min(MAX_COST),
        ValueRef::Real(f) if f >= 0.0 => f.min(MAX_COST),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests;
