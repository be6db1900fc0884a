//! OpenClaw's agents and their own key stores.
//!
//! OpenClaw 2026.9 gives each agent a database, `<agent dir>/openclaw-agent.sqlite` (agent dir
//! `<state>/agents/<id>/agent` unless `agentDir` says otherwise), whose table
//! `auth_profile_store (store_key TEXT NOT NULL PRIMARY KEY, store_json TEXT NOT NULL,
//! updated_at INTEGER NOT NULL) STRICT` holds, in row `store_key = 'primary'`, a store of the
//! same shape as the shared one. An agent sees the shared profiles unless it has a local one
//! with the same id, which wins (openclaw#140928). The agents are those of `agents.list` (or
//! `agents.entries`) in `openclaw.json`; the default is the one marked `default`, else the
//! first, else `main`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::openclaw_copy::DbRow;
use super::openclaw_refs::user_path;

pub const DEFAULT_AGENT: &str = "main";

/// The `PRAGMA user_version`s keyproxy was tested with: what OpenClaw 2026.9.6 writes.
pub const TESTED_STATE_VERSIONS: (i64, i64) = (18, 18);
pub const TESTED_AGENT_VERSIONS: (i64, i64) = (23, 23);
pub const TESTED_WITH: &str = "OpenClaw 2026.9.6";

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: String,
    pub dir: PathBuf,
    pub default: bool,
}

impl Agent {
    pub fn database(&self) -> PathBuf {
        self.dir.join("openclaw-agent.sqlite")
    }
}

/// The agents OpenClaw runs from state folder `state`, the default first.
pub fn agents(state: &Path, config: Option<&Value>) -> Vec<Agent> {
    let agents = config.and_then(|c| c.get("agents"));
    let mut listed: Vec<(String, &Value)> = match agents {
        Some(a) if a.get("entries").is_some_and(Value::is_object) => a["entries"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(id, v)| (id.clone(), v))
            .collect(),
        Some(a) => a
            .get("list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v.get("id")?.as_str()?.to_owned(), v)))
            .collect(),
        None => Vec::new(),
    };
    listed.retain(|(id, _)| valid_id(id));
    let default = listed
        .iter()
        .find(|(_, v)| v.get("default").and_then(Value::as_bool) == Some(true))
        .or(listed.first())
        .map_or_else(|| DEFAULT_AGENT.to_owned(), |(id, _)| id.to_lowercase());
    let mut out = vec![agent(
        state,
        &default,
        listed
            .iter()
            .find(|(id, _)| id.to_lowercase() == default)
            .map(|(_, v)| *v),
        true,
    )];
    for (id, v) in &listed {
        let id = id.to_lowercase();
        if !out.iter().any(|a| a.id == id) {
            out.push(agent(state, &id, Some(v), false));
        }
    }
    out
}

fn agent(state: &Path, id: &str, entry: Option<&Value>, default: bool) -> Agent {
    let dir = entry
        .and_then(|v| v.get("agentDir"))
        .and_then(Value::as_str)
        .map(user_path)
        .unwrap_or_else(|| state.join("agents").join(id).join("agent"));
    Agent {
        id: id.to_owned(),
        dir,
        default,
    }
}

/// OpenClaw's agent ids: `[a-z0-9][a-z0-9_-]{0,63}`, any case.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The primary row of a private copy of an agent database, with its version. A database
/// without the table, or with a table of other columns, is an error naming its version.
pub fn query_agent(copy: &Path) -> Result<DbRow, String> {
    query(
        copy,
        "SELECT store_json FROM auth_profile_store WHERE store_key = 'primary'",
        "auth_profile_store",
        TESTED_AGENT_VERSIONS,
    )
}

/// Runs `select` on a private copy, with the database's `PRAGMA user_version`.
pub fn query(copy: &Path, select: &str, table: &str, tested: (i64, i64)) -> Result<DbRow, String> {
    use rusqlite::{OpenFlags, OptionalExtension as _};
    // Read-write on the private copy, so that SQLite can replay the WAL and roll back a hot
    // journal into it.
    let conn = rusqlite::Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| describe(&e, table, None, tested))?;
    let user_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| describe(&e, table, None, tested))?;
    let json = conn
        .query_row(select, [], |row| row.get::<_, Option<String>>(0))
        .optional()
        .map(Option::flatten)
        .map_err(|e| describe(&e, table, Some(user_version), tested))?;
    Ok(DbRow {
        user_version,
        json,
        secrets: Vec::new(),
    })
}

/// SQLite's own words, which never quote row contents.
fn describe(e: &rusqlite::Error, table: &str, version: Option<i64>, tested: (i64, i64)) -> String {
    let text = e.to_string();
    if text.contains("not a database") || text.contains("malformed") {
        return format!("not a readable SQLite database ({text})");
    }
    match version {
        Some(v) if text.contains("no such table") || text.contains("no such column") => format!(
            "user_version {v} has no table {table} as keyproxy knows it ({text}); keyproxy was tested with user_version {} ({TESTED_WITH})",
            tested_range(tested)
        ),
        _ => text,
    }
}

pub fn tested_range((lo, hi): (i64, i64)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo} to {hi}")
    }
}

/// A warning when a database's version is not one keyproxy was tested with.
pub fn version_warning(db: &Path, version: i64, tested: (i64, i64)) -> Option<String> {
    (version < tested.0 || version > tested.1).then(|| {
        format!(
            "{}: user_version {version}, keyproxy was tested with {} ({TESTED_WITH}); read as that layout",
            db.display(),
            tested_range(tested)
        )
    })
}
