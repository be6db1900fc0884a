//! `keyproxy openclaw connect | status`: point OpenClaw at keyproxy, and answer "why does
//! OpenClaw get a 401?" for every OpenClaw state folder on the machine, the gateway service's
//! included, in one command.
//!
//! OpenClaw reaches OpenRouter through `models.providers.openrouter.baseUrl` in its
//! `openclaw.json` and refuses to send without an `apiKey` of its own, so keyproxy sets both,
//! through OpenClaw's own `openclaw config set` (its file is JSON5 with comments; keyproxy never
//! rewrites it by hand).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::{Config, DEFAULT_PROFILE};
use crate::keys::fingerprint;
pub use crate::keys::openclaw_state::openrouter_provider;
use crate::proxy::Snapshot;
use crate::text::tilde;

/// What `connect` puts in `apiKey` when no client tokens are configured: OpenClaw needs a value,
/// keyproxy removes it and injects the real key.
pub const PLACEHOLDER: &str = "keyproxy";

/// An OpenClaw state folder and who uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    pub dir: PathBuf,
    pub used_by: Vec<String>,
}

/// Every OpenClaw state folder keyproxy knows of: the configured ones, `$OPENCLAW_STATE_DIR`,
/// `~/.openclaw`, and the one the gateway service runs with.
pub fn folders(config: &Config) -> Vec<Folder> {
    let mut out: Vec<Folder> = Vec::new();
    let mut add = |dir: PathBuf, who: String| match out.iter_mut().find(|f| f.dir == dir) {
        Some(f) => f.used_by.push(who),
        None => out.push(Folder {
            dir,
            used_by: vec![who],
        }),
    };
    for dir in &config.openclaw_state_dirs {
        add(dir.clone(), "keyproxy reads its keys".into());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    match std::env::var_os("OPENCLAW_STATE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => add(
            PathBuf::from(dir),
            "the openclaw CLI in this shell (OPENCLAW_STATE_DIR)".into(),
        ),
        None => {
            if let Some(home) = &home {
                add(
                    home.join(".openclaw"),
                    "the openclaw CLI in this shell".into(),
                );
            }
        }
    }
    if let Some((dir, unit)) = home.as_deref().and_then(service_folder) {
        add(
            dir,
            format!("the OpenClaw gateway service ({})", tilde(&unit)),
        );
    }
    out
}

/// The state folder of an installed gateway service: a systemd user unit or a launchd agent,
/// from its `OPENCLAW_STATE_DIR` or its `HOME`.
fn service_folder(home: &Path) -> Option<(PathBuf, PathBuf)> {
    let systemd = home.join(".config/systemd/user/openclaw-gateway.service");
    if let Ok(text) = std::fs::read_to_string(&systemd) {
        let env = |name: &str| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("Environment="))
                .flat_map(|l| l.split_whitespace())
                .map(|kv| kv.trim_matches('"'))
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(PathBuf::from)
        };
        let dir = env("OPENCLAW_STATE_DIR")
            .or_else(|| env("HOME").map(|h| h.join(".openclaw")))
            .unwrap_or_else(|| home.join(".openclaw"));
        return Some((dir, systemd));
    }
    let launchd = home.join("Library/LaunchAgents/ai.openclaw.gateway.plist");
    let text = std::fs::read_to_string(&launchd).ok()?;
    let value_of = |name: &str| {
        let after = text.split(&format!("<key>{name}</key>")).nth(1)?;
        let start = after.find("<string>")? + "<string>".len();
        let end = after.find("</string>")?;
        (start <= end).then(|| PathBuf::from(after[start..end].trim()))
    };
    let dir = value_of("OPENCLAW_STATE_DIR")
        .or_else(|| value_of("HOME").map(|h| h.join(".openclaw")))
        .unwrap_or_else(|| home.join(".openclaw"));
    Some((dir, launchd))
}

/// The base URL OpenClaw should use for OpenRouter: this keyproxy's route to it, as the client
/// sees it (`http://127.0.0.1:8787/api/v1` with the embedded default).
pub fn base_url(config: &Config) -> String {
    let mut listen = config.listen;
    if listen.ip().is_unspecified() {
        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let route = openrouter_route(config).or(config.routes.first());
    let path = match route {
        Some(r) if r.strip_prefix => {
            let rest = "/api/v1"
                .strip_prefix(r.upstream.base_path.as_str())
                .unwrap_or("");
            format!("{}{rest}", r.prefix.trim_end_matches('/'))
        }
        _ => "/api/v1".to_owned(),
    };
    format!("http://{listen}{path}")
}

/// The commands that point the OpenClaw of `state_dir` (or the default) at keyproxy.
pub fn connect_commands(base_url: &str, api_key: &str) -> [Vec<String>; 2] {
    let set = |field: &str, value: &str| {
        vec![
            "openclaw".to_owned(),
            "config".into(),
            "set".into(),
            format!("models.providers.openrouter.{field}"),
            value.to_owned(),
        ]
    };
    [set("baseUrl", base_url), set("apiKey", api_key)]
}

/// What one folder says, for `status` and `check`.
pub fn describe(folder: &Folder, config: &Config, snapshot: &Snapshot) -> (bool, Value) {
    let url = base_url(config);
    let mut problems: Vec<String> = Vec::new();
    let (stores, stores_text, warnings) = if folder.dir.is_dir() {
        super::openclaw_stores::describe(&folder.dir, config.state_dir.as_deref())
    } else {
        (Value::Null, String::new(), Vec::new())
    };
    let (base, key) = match openrouter_provider(&folder.dir) {
        Ok(found) => found,
        Err(why) => {
            let exists = folder.dir.is_dir();
            // A shell's default folder need not exist; one keyproxy or a service uses must.
            let needed = exists
                || folder
                    .used_by
                    .iter()
                    .any(|u| !u.starts_with("the openclaw CLI"));
            let problem = if exists {
                format!("{why}; run keyproxy openclaw connect")
            } else {
                "the folder does not exist".to_owned()
            };
            let problems: Vec<String> = needed.then_some(problem).into_iter().collect();
            return (
                problems.is_empty(),
                json!({"dir": folder.dir, "used_by": folder.used_by, "exists": exists, "problems": problems,
                    "stores": stores, "stores_text": stores_text, "warnings": warnings}),
            );
        }
    };
    let points_here = base.as_deref().is_some_and(|b| same_base(b, &url));
    match &base {
        None => problems.push(format!(
            "models.providers.openrouter.baseUrl is not set, so OpenClaw calls OpenRouter directly; run keyproxy openclaw connect (sets {url})"
        )),
        Some(b) if !points_here => problems.push(format!(
            "models.providers.openrouter.baseUrl is {b}, not this keyproxy ({url}); run keyproxy openclaw connect"
        )),
        Some(_) => {}
    }
    let clients = &config.clients;
    let (key_kind, profile) = match key.as_deref() {
        None => {
            problems.push("models.providers.openrouter.apiKey is not set; OpenClaw may refuse to send (No API key found for provider \"openrouter\"); run keyproxy openclaw connect".into());
            ("none".to_owned(), route_profile(config))
        }
        Some(k) => match clients.find(k) {
            Some(c) => (
                format!("client token of '{}'", c.name),
                c.profiles.first().cloned().unwrap_or_default(),
            ),
            None if !clients.is_empty() => {
                problems.push("models.providers.openrouter.apiKey is no client token of this keyproxy, which serves only its clients; run keyproxy openclaw connect --api-key <token>".into());
                ("not a client token".to_owned(), route_profile(config))
            }
            None if k == PLACEHOLDER => ("placeholder".to_owned(), route_profile(config)),
            None if is_profile_reference(k) => (
                format!("profile reference '{k}' (OpenClaw sends that key; keyproxy replaces it)"),
                route_profile(config),
            ),
            None => (
                format!("a literal value {} (keyproxy replaces it)", fingerprint(k)),
                route_profile(config),
            ),
        },
    };
    let keys = snapshot.keys.fingerprints(&profile);
    if keys.is_empty() {
        let hint = if config.openclaw_state_dirs.contains(&folder.dir) {
            "add one with openclaw models auth paste-api-key".to_owned()
        } else {
            format!(
                "add openclaw_state_dirs = [\"{}\"] to keyproxy.toml to serve OpenClaw's own key",
                folder.dir.display()
            )
        };
        problems.push(format!(
            "keyproxy has no key for profile '{profile}'; {hint}"
        ));
    }
    let ok = problems.is_empty();
    (
        ok,
        json!({
            "dir": folder.dir, "used_by": folder.used_by, "exists": true,
            "base_url": base, "points_at_keyproxy": points_here, "api_key": key_kind,
            "profile": profile, "keys": keys, "problems": problems,
            "stores": stores, "stores_text": stores_text, "warnings": warnings,
        }),
    )
}

/// `openrouter:manual`: what `paste-api-key` writes into apiKey, never a key.
pub fn is_profile_reference(value: &str) -> bool {
    value.split_once(':').is_some_and(|(provider, name)| {
        !provider.is_empty()
            && provider.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            && !name.is_empty()
            && !name.starts_with("//")
            && !value.contains(char::is_whitespace)
    })
}

/// The route OpenClaw's OpenRouter provider reaches: the first whose profile is OpenRouter's.
fn openrouter_route(config: &Config) -> Option<&crate::config::RouteConfig> {
    config
        .routes
        .iter()
        .find(|r| r.profile.starts_with("openrouter:"))
}

fn route_profile(config: &Config) -> String {
    openrouter_route(config).map_or_else(|| DEFAULT_PROFILE.to_owned(), |r| r.profile.clone())
}

/// `localhost` and `127.0.0.1` are the same keyproxy; a trailing slash is no difference.
fn same_base(theirs: &str, ours: &str) -> bool {
    let norm = |u: &str| {
        u.trim_end_matches('/')
            .replace("//localhost:", "//127.0.0.1:")
    };
    norm(theirs) == norm(ours)
}

/// The report over every folder: text for people, JSON for tools, and whether all is well.
pub fn report(config: &Config, snapshot: &Snapshot) -> (bool, String, Value) {
    let folders = folders(config);
    let mut text = String::new();
    let mut all_ok = true;
    let mut json_folders = Vec::new();
    let mut in_use: Vec<(&Folder, bool)> = Vec::new();
    for folder in &folders {
        let (ok, mut v) = describe(folder, config, snapshot);
        // For people only; the JSON has the same in `stores`.
        let stores_text = v
            .as_object_mut()
            .and_then(|o| o.remove("stores_text"))
            .unwrap_or_default();
        let exists = v["exists"] == true;
        all_ok &= ok;
        // A folder that is not there is never "ok": there is nothing in it to be right.
        let _ = writeln!(
            text,
            "  {} {} (used by {})",
            match (ok, exists) {
                (true, true) => "ok",
                (_, false) => "absent",
                (false, true) => "--",
            },
            tilde(&folder.dir),
            folder.used_by.join("; ")
        );
        if !exists {
            let _ = writeln!(
                text,
                "     does not exist: OpenClaw has not been set up with this folder (openclaw onboard creates it; then run keyproxy openclaw connect)"
            );
        }
        if v.get("api_key").is_some() {
            let _ = writeln!(
                text,
                "     baseUrl {}; apiKey {}; profile '{}' has {}",
                v["base_url"].as_str().unwrap_or("(not set)"),
                v["api_key"].as_str().unwrap_or("?"),
                v["profile"].as_str().unwrap_or("?"),
                match v["keys"].as_array().map_or(0, Vec::len) {
                    0 => "no key in keyproxy".to_owned(),
                    n => format!("{n} key(s) in keyproxy"),
                }
            );
        }
        text += stores_text.as_str().unwrap_or_default();
        for w in v["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(text, "     warning: {}", w.as_str().unwrap_or_default());
        }
        for p in v["problems"].as_array().into_iter().flatten() {
            let _ = writeln!(text, "     problem: {}", p.as_str().unwrap_or_default());
        }
        in_use.push((folder, exists));
        json_folders.push(v);
    }
    let cli = folders
        .iter()
        .find(|f| f.used_by.iter().any(|u| u.starts_with("the openclaw CLI")));
    let service = folders.iter().find(|f| {
        f.used_by
            .iter()
            .any(|u| u.starts_with("the OpenClaw gateway"))
    });
    let mut notes = Vec::new();
    if let (Some(cli), Some(service)) = (cli, service) {
        if cli.dir != service.dir {
            notes.push(format!(
                "the gateway service runs with {} but this shell's openclaw uses {}: a key or setting made with the CLI does not reach the service",
                tilde(&service.dir),
                tilde(&cli.dir)
            ));
        }
    }
    if !in_use.iter().any(|(_, exists)| *exists) {
        all_ok = false;
        notes.push("no OpenClaw state folder exists, so there is nothing to check: set up OpenClaw (openclaw onboard), or point OPENCLAW_STATE_DIR at its folder".to_owned());
    }
    for n in &notes {
        let _ = writeln!(text, "  note: {n}");
    }
    (
        all_ok,
        text,
        json!({"ok": all_ok, "folders": json_folders, "notes": notes}),
    )
}
