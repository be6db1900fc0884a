//! OpenClaw's SecretRefs to `file` and `exec` providers, resolved as OpenClaw 2026.9 resolves
//! them (`resolveFileRefs` and `resolveExecRefs` in its dist). A ref names a provider configured
//! in `openclaw.json`:
//!
//! ```json5
//! secrets: { providers: {
//!   files: { source: "file", path: "~/.secrets/llm.json", mode: "json" },  // id: a JSON pointer
//!   one:   { source: "file", path: "/run/secrets/or", mode: "singleValue" }, // id: "value"
//!   vault: { source: "exec", command: "/usr/local/bin/vault-helper", args: ["--x"],
//!            passEnv: ["VAULT_ADDR"], env: {}, timeoutMs: 5000, jsonOnly: true },
//! } }
//! ```
//! A file is read through the [`FileSet`], so it is watched like a `key_file`; an exec provider
//! becomes a `key_command` run with OpenClaw's protocol (no shell, its timeout, last good kept).
//! A `store` ref names an entry of OpenClaw's secret store (`openclaw secrets store set`), which
//! 2026.9.6 keeps as plain text in the shared database's `secret_store_entries`, team scope
//! (`resolveStoreRefs`); it is read from the same private copy as the auth store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::command::{CommandSpec, ExecProtocol};
use super::files::FileSet;
use super::openclaw::{Entry, SecretRef};
use super::openclaw_copy::StoreSecrets;
use super::Secret;

/// OpenClaw's default for `timeoutMs` of file and exec providers.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// OpenClaw runs an exec provider at each resolution; keyproxy keeps its answer this long.
const EXEC_REFRESH: Duration = Duration::from_secs(300);

/// The entry a `file`, `exec` or `store` ref gives: a key, a command, or why neither.
pub fn resolve(
    r: &SecretRef,
    config: Option<&Value>,
    files: &mut FileSet,
    secrets: &StoreSecrets,
) -> Entry {
    let what = format!("keyRef {}:{}:{}", r.source, r.provider, r.id);
    let configured = config.and_then(|c| c.pointer(&format!("/secrets/providers/{}", r.provider)));
    // OpenClaw's built-in store provider is `default`, unless openclaw.json configures one.
    if r.source == "store" && (configured.is_none() && r.provider == "default") {
        return store(r, secrets);
    }
    let Some(provider) = configured else {
        return Entry::Skipped(format!(
            "{what} names secret provider '{}', which openclaw.json does not configure (secrets.providers)",
            r.provider
        ));
    };
    let source = provider.get("source").and_then(Value::as_str);
    if source != Some(r.source.as_str()) {
        return Entry::Skipped(format!(
            "{what}: provider '{}' has source {source:?}, not {:?}",
            r.provider, r.source
        ));
    }
    let result = match r.source.as_str() {
        "file" => file(r, provider, files).map(Entry::Key),
        "store" => return store(r, secrets),
        _ => exec(r, provider).map(Entry::Command),
    };
    result.unwrap_or_else(|why| Entry::Skipped(format!("{what}: {why}")))
}

fn file(r: &SecretRef, provider: &Value, files: &mut FileSet) -> Result<Secret, String> {
    let path = provider
        .get("path")
        .and_then(Value::as_str)
        .ok_or("its provider has no path")?;
    let path = user_path(path);
    let shown = path.display();
    let bytes = files.read(&path).map_err(|e| format!("{shown}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown}: not UTF-8 text"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let value = match provider.get("mode").and_then(Value::as_str) {
        Some("singleValue") => {
            if r.id != "value" {
                return Err("a singleValue file provider expects ref id \"value\"".into());
            }
            let text = text.strip_suffix('\n').unwrap_or(text);
            text.strip_suffix('\r').unwrap_or(text).to_owned()
        }
        _ => {
            let root: Value = serde_json::from_str(text)
                .map_err(|e| format!("{shown}:{}: not JSON", e.line()))?;
            match root.pointer(&r.id) {
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(format!("{shown}: {} is not a string", r.id)),
                None => return Err(format!("{shown} has nothing at {}", r.id)),
            }
        }
    };
    Secret::new(&value).map_err(|why| format!("{shown}: the key {why}"))
}

/// A `store` ref: the team entry of that name in OpenClaw's secret store.
fn store(r: &SecretRef, secrets: &StoreSecrets) -> Entry {
    match secrets.iter().find(|(name, _)| *name == r.id) {
        Some((_, Ok(key))) => Entry::Key(key.clone()),
        Some((_, Err(why))) => Entry::Skipped(format!(
            "OpenClaw's secret store entry {} (keyRef source \"store\") {why}",
            r.id
        )),
        None => Entry::Skipped(format!(
            "OpenClaw's secret store (state/openclaw.sqlite) has no entry {}, which keyRef source \"store\" names; set it with openclaw secrets store set {}",
            r.id, r.id
        )),
    }
}

/// The live team entries of OpenClaw's secret store in a private copy of the shared database;
/// none when the table does not exist (OpenClaw reads that as not found, too). SQLite's errors
/// never quote row contents.
pub fn read_secret_store(copy: &Path) -> Result<StoreSecrets, String> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("its secret store: {e}"))?;
    secret_entries(&conn).map_err(|e| format!("its secret store: {e}"))
}

fn secret_entries(conn: &rusqlite::Connection) -> Result<StoreSecrets, rusqlite::Error> {
    let mut select = match conn.prepare(
        "SELECT name, value FROM secret_store_entries \
         WHERE scope_kind = 'team' AND scope_id = '' AND deleted_at_ms IS NULL",
    ) {
        Ok(s) => s,
        Err(e) if e.to_string().contains("no such table") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let rows = select.query_map([], |row| {
        let name: String = row.get(0)?;
        let value: String = row.get(1)?;
        Ok((name, Secret::new(&value).map_err(str::to_owned)))
    })?;
    rows.collect()
}

fn exec(r: &SecretRef, provider: &Value) -> Result<CommandSpec, String> {
    let command = provider
        .get("command")
        .and_then(Value::as_str)
        .ok_or("its provider has no command")?;
    let command = user_path(command);
    if !command.is_absolute() {
        return Err(format!(
            "command {} is not an absolute path, which OpenClaw requires",
            command.display()
        ));
    }
    let mut argv = vec![command.display().to_string()];
    argv.extend(strings(provider.get("args")));
    let mut env: Vec<(String, String)> = strings(provider.get("passEnv"))
        .into_iter()
        .filter_map(|k| std::env::var(&k).ok().map(|v| (k, v)))
        .collect();
    if let Some(set) = provider.get("env").and_then(Value::as_object) {
        for (k, v) in set {
            if let Some(v) = v.as_str() {
                env.retain(|(n, _)| n != k);
                env.push((k.clone(), v.to_owned()));
            }
        }
    }
    let timeout = provider
        .get("timeoutMs")
        .and_then(Value::as_u64)
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    Ok(CommandSpec {
        argv,
        refresh: EXEC_REFRESH,
        timeout: Duration::from_millis(timeout),
        openclaw: Some(ExecProtocol {
            provider: r.provider.clone(),
            id: r.id.clone(),
            env,
            json_only: provider
                .get("jsonOnly")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }),
    })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// `~/x` as OpenClaw's `resolveUserPath` reads it.
pub fn user_path(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}
