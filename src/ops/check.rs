//! `keyproxy check`: load config and keys exactly as serve would and report.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::reload::Reloader;
use super::{openclaw, report};
use crate::config::Origin;
use crate::keys::looked_list;

/// What `check` found; `ok` is true when every route's default profile has a key.
pub struct Report {
    pub ok: bool,
    pub json: Value,
    pub text: String,
}

pub fn run(origin: Origin) -> Report {
    let origin_text = match &origin {
        Origin::File(p) => p.display().to_string(),
        Origin::Embedded { looked } => format!(
            "embedded default (no config file at {})",
            looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    };
    let reloader = match Reloader::start(origin) {
        Ok(r) => r,
        Err(e) => {
            let problem = e.to_string();
            return Report {
                ok: false,
                json: json!({"ok": false, "config": origin_text, "problems": [problem]}),
                text: format!("config: {origin_text}\nproblem: {problem}\nFAIL\n"),
            };
        }
    };
    let state = reloader.state();
    let snapshot = state.load();
    let mut problems: Vec<String> = Vec::new();
    if let Some((_, e)) = state.log().last_error {
        problems.push(e);
    }
    for profile in snapshot.profiles_without_key() {
        let routes: Vec<&str> = snapshot
            .config
            .routes
            .iter()
            .filter(|r| r.profile == profile)
            .map(|r| r.prefix.as_str())
            .collect();
        problems.push(format!(
            "route {} has no key for its profile '{profile}'; looked in: {}",
            routes.join(", "),
            looked_list(&snapshot.keys.looked_for(profile))
        ));
    }
    let ok = snapshot.profiles_without_key().is_empty();
    let profiles = report::profiles(&snapshot);

    let mut text = String::new();
    let _ = writeln!(text, "config: {origin_text}");
    let _ = writeln!(text, "listen: {}", snapshot.config.listen);
    let _ = writeln!(text, "sources:");
    for s in snapshot.keys.sources() {
        let state = if s.ok { "ok" } else { "--" };
        let why = s
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let _ = writeln!(text, "  {state} {} {}{why}", s.kind, s.path);
    }
    let _ = writeln!(text, "routes:");
    for r in snapshot.config.routes.iter() {
        let _ = writeln!(
            text,
            "  {} -> {} (profile {}, header {}; may inject {})",
            r.prefix,
            r.upstream,
            r.profile,
            r.header,
            r.allowed_label()
        );
    }
    let _ = writeln!(text, "profiles:");
    for (name, p) in &profiles {
        let n = p.keys.len();
        let _ = writeln!(text, "  {name}: {n} key{}", if n == 1 { "" } else { "s" });
        for k in &p.keys {
            let _ = writeln!(text, "    {} from {}", k.fingerprint, k.source);
        }
    }
    let openclaw = (!snapshot.config.openclaw_state_dirs.is_empty()).then(|| {
        let (_, section, value) = openclaw::report(&snapshot.config, &snapshot);
        let _ = write!(text, "openclaw:\n{section}");
        value
    });
    for p in &problems {
        let _ = writeln!(text, "problem: {p}");
    }
    let _ = writeln!(text, "{}", if ok { "OK" } else { "FAIL" });

    let json = json!({
        "ok": ok,
        "config": origin_text,
        "listen": snapshot.config.listen.to_string(),
        "sources": snapshot.keys.sources(),
        "routes": snapshot.config.routes.iter().map(|r| json!({
            "prefix": r.prefix, "upstream": r.upstream.to_string(), "profile": r.profile,
            "header": r.header.as_str(), "profiles": r.profiles, "may_inject": r.allowed_label(),
        })).collect::<Vec<_>>(),
        "profiles": profiles,
        "problems": problems,
        "openclaw": openclaw,
    });
    Report { ok, json, text }
}
