//! An OpenClaw state folder (`~/.openclaw`, or `$OPENCLAW_STATE_DIR`) as a key source.
//!
//! OpenClaw 2026.9 keeps API keys in SQLite: `<dir>/state/openclaw.sqlite`, table
//! `config_machine_state`, row `state_key = 'authProfiles.store'`, whose `value_json` has the
//! shape of the older `auth-profiles.json`. The database runs in WAL mode, so a committed write
//! may still sit in `openclaw.sqlite-wal`.
//!
//! keyproxy must never write to OpenClaw's files nor hold a lock OpenClaw waits on. Even a
//! read-only SQLite open of a WAL database creates `-wal` and `-shm` files when no writer holds
//! them, and takes a shared lock while it reads. So keyproxy copies the database with its `-wal`
//! (and a rollback `-journal`, if one is hot) into a private folder (`openclaw_copy`, only when
//! one of them changed) and reads the copy:
//! opening the copy replays committed WAL frames and rolls back a torn write, which is exactly
//! what a reader of the original would have seen. A copy taken while OpenClaw writes may be torn;
//! the files were looked at before the copy, so the next look sees them changed and copies again.
//!
//! Legacy `agents/*/agent/auth-profiles.json` files in the folder are read too, and
//! `openclaw.json` tells which profile OpenClaw itself sends to OpenRouter: `openclaw models auth
//! paste-api-key` stores the key as `openrouter:manual` and sets
//! `models.providers.openrouter.apiKey` to that profile's name.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cached::SourceError;
use super::files::FileSet;
use super::openclaw::{parse_store, Entry, Store};
use super::openclaw_agents::{
    agents, query, query_agent, version_warning, TESTED_AGENT_VERSIONS, TESTED_STATE_VERSIONS,
};
use super::openclaw_copy::Copies;
use super::openclaw_refs::{read_secret_store, resolve};
use crate::config::DEFAULT_PROFILE;

pub const AUTH_ROW: &str = "authProfiles.store";

/// Profiles with what each gives and where it was read: an agent's database, the shared
/// database, or a legacy file.
pub type Profiles = Vec<(String, Entry, PathBuf)>;

/// What one state folder gives.
#[derive(Debug, Clone, PartialEq)]
pub struct StateDir {
    /// What OpenClaw's default agent sees: its own profiles, then the shared ones it does not
    /// override, then legacy files.
    pub profiles: Profiles,
    /// The default agent's id, and every other agent listed in `openclaw.json` with what it sees.
    pub default_agent: String,
    pub other_agents: Vec<(String, Profiles)>,
    /// Profiles an agent holds itself that the shared store holds too: (profile, agent). The
    /// agent's wins, and users have been surprised by it (openclaw#137353, openclaw#143262).
    pub overridden: Vec<(String, String)>,
    /// Every database read, with its `PRAGMA user_version` and what it is (`shared`, `agent ID`).
    pub databases: Vec<(PathBuf, i64, String)>,
    /// The profile OpenClaw sends to OpenRouter when it is not `openrouter:default`, and why:
    /// the one `models.providers.openrouter.apiKey` names, else, with no `openrouter:default`
    /// in the store, its first OpenRouter profile (as `paste-api-key` leaves `openrouter:manual`
    /// after `keyproxy openclaw connect` replaced the apiKey with a placeholder).
    pub openrouter_profile: Option<(String, &'static str)>,
    /// Problems that did not stop the folder from being read (a legacy file that did not parse,
    /// a database of a version keyproxy was not tested with).
    pub notes: Vec<String>,
}

impl StateDir {
    pub fn entry(&self, profile: &str) -> Option<&Entry> {
        self.profiles
            .iter()
            .find(|(n, _, _)| n == profile)
            .map(|(_, e, _)| e)
    }

    /// Where a profile read from `path` comes from, in words: `shared store`, `agent main`,
    /// `legacy file PATH`.
    pub fn origin(&self, path: &Path) -> String {
        match self.databases.iter().find(|(db, _, _)| db == path) {
            Some((_, _, what)) if what == "shared" => "shared store".into(),
            Some((_, _, what)) => what.clone(),
            None => format!("legacy file {}", path.display()),
        }
    }
}

pub fn database(dir: &Path) -> PathBuf {
    dir.join("state").join("openclaw.sqlite")
}

pub fn config_file(dir: &Path) -> PathBuf {
    dir.join("openclaw.json")
}

/// Reads a state folder; every file read is recorded in `files`, so a change is noticed. Each
/// database is read from a private copy under `state_dir`, made only when it changed.
pub fn read(
    dir: &Path,
    files: &mut FileSet,
    copies: &mut Copies,
    state_dir: Option<&Path>,
) -> Result<StateDir, SourceError> {
    let config = read_config(dir, files);
    let agents = agents(dir, config.as_ref());
    let mut notes = Vec::new();
    let mut databases = Vec::new();
    let mut found = false;
    let mut locals: Vec<(String, Profiles)> = Vec::new();
    for agent in &agents {
        let db = agent.database();
        let mut local = Vec::new();
        match copies.row(&db, files, state_dir, query_agent) {
            Ok(row) => {
                found = true;
                notes.extend(version_warning(
                    &db,
                    row.user_version,
                    TESTED_AGENT_VERSIONS,
                ));
                databases.push((db.clone(), row.user_version, format!("agent {}", agent.id)));
                if let Some(json) = row.json {
                    let label = PathBuf::from(format!("{} (auth_profile_store)", db.display()));
                    match parse_store(&json, &label) {
                        Ok(store) => push_new(&mut local, store, &db),
                        Err(e) if agent.default => return Err(SourceError::Failed(e)),
                        Err(e) => notes.push(e),
                    }
                }
            }
            Err(SourceError::NotFound) => {}
            Err(e) if agent.default => return Err(e),
            Err(e) => notes.push(format!("agent {}: {e}", agent.id)),
        }
        locals.push((agent.id.clone(), local));
    }
    let db = database(dir);
    let mut shared = Vec::new();
    let mut secrets = Vec::new();
    // A folder of an older OpenClaw has only the legacy files: no database is no failure.
    let row = copies.row(&db, files, state_dir, |copy| {
        let mut row = query(
            copy,
            "SELECT value_json FROM config_machine_state WHERE state_key = 'authProfiles.store'",
            "config_machine_state",
            TESTED_STATE_VERSIONS,
        )?;
        row.secrets = read_secret_store(copy)?;
        Ok(row)
    });
    match row {
        Ok(row) => {
            found = true;
            notes.extend(version_warning(
                &db,
                row.user_version,
                TESTED_STATE_VERSIONS,
            ));
            databases.push((db.clone(), row.user_version, "shared".into()));
            secrets = row.secrets;
            if let Some(json) = row.json {
                let label = PathBuf::from(format!("{} ({AUTH_ROW})", db.display()));
                let store = parse_store(&json, &label).map_err(SourceError::Failed)?;
                push_new(&mut shared, store, &db);
            }
        }
        Err(SourceError::NotFound) => {}
        Err(e) => return Err(e),
    }
    for legacy in legacy_files(dir) {
        match files.read(&legacy) {
            Ok(bytes) => {
                found = true;
                let parsed = String::from_utf8(bytes)
                    .map_err(|_| format!("{}: not UTF-8 text", legacy.display()))
                    .and_then(|text| parse_store(&text, &legacy));
                match parsed {
                    Ok(store) => push_new(&mut shared, store, &legacy),
                    Err(e) => notes.push(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => notes.push(format!("{}: {e}", legacy.display())),
        }
    }
    if !found {
        return Err(if dir.is_dir() {
            SourceError::Failed(format!(
                "{}: no OpenClaw key store (state/openclaw.sqlite) in this folder; run openclaw onboard",
                dir.display()
            ))
        } else {
            SourceError::NotFound
        });
    }
    let overridden = locals
        .iter()
        .flat_map(|(agent, local)| {
            local
                .iter()
                .filter(|(n, _, _)| shared.iter().any(|(s, _, _)| s == n))
                .map(move |(n, _, _)| (n.clone(), agent.clone()))
        })
        .collect();
    // Each agent sees its own profiles over the shared ones; refs are resolved once per agent.
    let mut seen: Vec<(String, Profiles)> = locals
        .into_iter()
        .map(|(id, mut local)| {
            for (name, entry, from) in &shared {
                if !local.iter().any(|(n, _, _)| n == name) {
                    local.push((name.clone(), entry.clone(), from.clone()));
                }
            }
            for (_, entry, _) in &mut local {
                if let Entry::Ref(r) = entry {
                    *entry = resolve(r, config.as_ref(), files, &secrets);
                }
            }
            (id, local)
        })
        .collect();
    let (default_agent, profiles) = seen.remove(0);
    let named = config
        .as_ref()
        .and_then(|c| openrouter_fields_of(c).1)
        .filter(|name| profiles.iter().any(|(n, _, _)| n == name))
        .map(|name| (name, "which models.providers.openrouter.apiKey names"));
    let has_default = profiles.iter().any(|(n, _, _)| n == DEFAULT_PROFILE);
    let first = || {
        profiles
            .iter()
            .find(|(n, e, _)| n.starts_with("openrouter:") && !matches!(e, Entry::Skipped(_)))
            .map(|(n, _, _)| {
                (
                    n.clone(),
                    "the first OpenRouter profile in OpenClaw's store",
                )
            })
    };
    let openrouter_profile = named.or_else(|| (!has_default).then(first).flatten());
    Ok(StateDir {
        profiles,
        default_agent,
        other_agents: seen,
        overridden,
        databases,
        openrouter_profile,
        notes,
    })
}

/// One look at a state folder, for `openclaw status` and `check`: read as a reload would, from
/// copies in keyproxy's own `state_dir`, with nothing kept.
pub fn inspect(dir: &Path, state_dir: Option<&Path>) -> Result<StateDir, String> {
    read(
        dir,
        &mut FileSet::default(),
        &mut Copies::default(),
        state_dir,
    )
    .map_err(|e| match e {
        SourceError::NotFound => "no OpenClaw key store in this folder".to_owned(),
        e => e.to_string(),
    })
}

/// Profiles of `store` that an earlier file of the folder did not give.
fn push_new(into: &mut Profiles, store: Store, from: &Path) {
    for (name, entry) in store.profiles {
        if !into.iter().any(|(n, _, _)| *n == name) {
            into.push((name, entry, from.to_path_buf()));
        }
    }
}

fn legacy_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(agents) = std::fs::read_dir(dir.join("agents")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = agents
        .filter_map(Result::ok)
        .map(|agent| agent.path().join("agent").join("auth-profiles.json"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

/// The folder's `openclaw.json` (JSON5), when it reads.
fn read_config(dir: &Path, files: &mut FileSet) -> Option<Value> {
    let text = String::from_utf8(files.read(&config_file(dir)).ok()?).ok()?;
    json5::from_str(&text).ok()
}

/// `baseUrl` and `apiKey` of `models.providers.openrouter` in `openclaw.json` text, when they are
/// plain strings; `None` when the text is not JSON5.
fn openrouter_fields(text: &str) -> Option<(Option<String>, Option<String>)> {
    let root: Value = json5::from_str(text).ok()?;
    Some(openrouter_fields_of(&root))
}

fn openrouter_fields_of(root: &Value) -> (Option<String>, Option<String>) {
    let field = |name: &str| {
        root.pointer(&format!("/models/providers/openrouter/{name}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    (field("baseUrl"), field("apiKey"))
}

/// `models.providers.openrouter` of an `openclaw.json`: its `baseUrl` and `apiKey` when they are
/// plain strings. `Err` says why the file could not be read.
pub fn openrouter_provider(dir: &Path) -> Result<(Option<String>, Option<String>), String> {
    let path = config_file(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{} not found", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    openrouter_fields(&text).ok_or_else(|| format!("{} is not valid JSON5", path.display()))
}
