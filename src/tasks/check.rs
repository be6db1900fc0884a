//! `keyproxy check`: load config and keys exactly as serve would and report.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{instance, live, openclaw};
use crate::config::Origin;
use crate::keys::looked_list;
use crate::ops::reload::Reloader;
use crate::ops::report;

/// What `check` found; `ok` is true when every route's default profile has a key.
pub struct Report {
    pub ok: bool,
    pub json: Value,
    pub text: String,
}

/// How `check` reaches the keyproxy that is running, to compare what it serves with what this
/// shell loads.
pub struct Running {
    /// Where it listens, when not the config's `listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// The admin token, or a client token when the running keyproxy has clients and no admin.
    pub token: Option<String>,
    /// Also ask each provider whether each key is valid (`--live`).
    pub live: bool,
}

pub fn run(origin: Origin, running: &Running) -> Report {
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
    let profiles = report::profiles(&snapshot);
    let defaults: Vec<&str> = snapshot
        .config
        .routes
        .iter()
        .map(|r| r.profile.as_str())
        .collect();
    let listen = running.listen.unwrap_or(snapshot.config.listen);
    // One runtime for asking the running keyproxy and, with --live, the providers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"));
    let compared = match &runtime {
        Ok(rt) => compare(rt, listen, running.token.as_deref(), &profiles, &defaults),
        Err(why) => (
            Vec::new(),
            vec![format!("cannot ask the running keyproxy: {why}")],
        ),
    };
    let (compared, notes) = compared;
    problems.extend(compared.iter().cloned());
    // The shared store, by host:port only (its URL may hold a password).
    let shared = snapshot.config.shared.as_ref().map(|c| {
        let answer = match &runtime {
            Ok(rt) => rt.block_on(crate::proxy::shared::ping(c)),
            Err(why) => Err(why.clone()),
        };
        if let Err(why) = &answer {
            problems.push(format!("shared store {} is not reachable: {why}", c.store));
        }
        json!({"store": c.store, "reachable": answer.is_ok()})
    });
    let ok = snapshot.profiles_without_key().is_empty()
        && compared.is_empty()
        && shared.as_ref().is_none_or(|s| s["reachable"] == true);
    let warnings = rights_warning(&snapshot.config)
        .into_iter()
        .chain(snapshot.profiles_without_provider())
        .collect::<Vec<_>>();

    let mut text = String::new();
    let _ = writeln!(text, "config: {origin_text}");
    let _ = writeln!(text, "listen: {}", snapshot.config.listen);
    if let Some(s) = &shared {
        let state = if s["reachable"] == true {
            "reachable"
        } else {
            "NOT reachable"
        };
        let _ = writeln!(
            text,
            "shared store: {} ({state})",
            s["store"].as_str().unwrap_or("?")
        );
    }
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
    write_profiles(&mut text, &profiles, "  ");
    let openclaw = (!snapshot.config.openclaw_state_dirs.is_empty()).then(|| {
        let (_, section, value) = openclaw::report(&snapshot.config, &snapshot);
        let _ = write!(text, "openclaw:\n{section}");
        value
    });
    let live = running.live.then(|| match &runtime {
        Ok(rt) => rt.block_on(live::check(snapshot.clone())),
        Err(why) => (format!("live: {why}\n"), Vec::new(), false),
    });
    let ok = ok && live.as_ref().is_none_or(|(_, _, passed)| *passed);
    if let Some((section, _, _)) = &live {
        text += section;
    }
    if !notes.is_empty() {
        let _ = writeln!(text, "running keyproxy:");
        for n in &notes {
            let _ = writeln!(text, "  {n}");
        }
    }
    for w in &warnings {
        let _ = writeln!(text, "warning: {w}");
    }
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
        "warnings": warnings,
        "running": notes,
        "live": live.as_ref().map(|(_, checks, _)| checks),
        "openclaw": openclaw,
        "shared": shared,
    });
    Report { ok, json, text }
}

/// With clients and no admin, every agent's token opens status, reload, usage and metrics.
fn rights_warning(config: &crate::config::Config) -> Option<String> {
    (!config.clients.is_empty() && !config.has_admin()).then(|| {
        "no admin token: any client's token can read every client's usage and status and trigger a reload; set admin_token_sha256 in keyproxy.toml (printf %s \"$TOKEN\" | sha256sum) and pass the token with --admin-token or KEYPROXY_ADMIN_TOKEN".to_owned()
    })
}

/// Asks the keyproxy listening on `listen` what it serves and compares; (problems, notes).
fn compare(
    runtime: &tokio::runtime::Runtime,
    listen: std::net::SocketAddr,
    token: Option<&str>,
    local: &std::collections::BTreeMap<String, report::ProfileReport>,
    defaults: &[&str],
) -> (Vec<String>, Vec<String>) {
    let url = instance::admin_url(listen, "status");
    let asked = runtime.block_on(instance::ask(
        http::Method::GET,
        &url,
        token,
        std::time::Duration::from_secs(3),
    ));
    match asked {
        Ok((status, body)) if status.is_success() => {
            let (problems, mut notes) = instance::differences(local, &body, defaults);
            if problems.is_empty() && notes.is_empty() {
                notes.push(format!("{url} serves the same keys as this shell loads"));
            }
            (problems, notes)
        }
        Ok((status, body)) => (
            Vec::new(),
            vec![format!(
                "{url} answered {status} ({}); pass its admin token with --admin-token (a client token with --token when it has none) to compare keys",
                instance::message(status, &body)
            )],
        ),
        Err(why) => {
            let cause = why.rsplit(": ").next().unwrap_or(&why);
            let note =
                format!("no keyproxy answers at {listen} ({cause}); nothing to compare with");
            (Vec::new(), vec![note])
        }
    }
}

/// `keyproxy keys list`: every profile and its keys by fingerprint and source, loaded as `serve`
/// would; text and JSON.
pub fn list(origin: Origin) -> Result<(String, Value), String> {
    let reloader = Reloader::start(origin).map_err(|e| e.to_string())?;
    let snapshot = reloader.state().load();
    let profiles = report::profiles(&snapshot);
    let mut text = String::new();
    write_profiles(&mut text, &profiles, "");
    Ok((text, json!(profiles)))
}

/// Each profile with its keys' fingerprints and sources, indented by `indent`.
fn write_profiles(
    text: &mut String,
    profiles: &std::collections::BTreeMap<String, report::ProfileReport>,
    indent: &str,
) {
    for (name, p) in profiles {
        let n = p.keys.len();
        let _ = writeln!(
            text,
            "{indent}{name}: {n} key{}",
            if n == 1 { "" } else { "s" }
        );
        for k in &p.keys {
            let _ = writeln!(text, "{indent}  {} from {}", k.fingerprint, k.source);
        }
    }
}
