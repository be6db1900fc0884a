//! Which OpenClaw store each OpenRouter profile of a state folder comes from (an agent's own
//! database, the shared one, a legacy file), with each database's `PRAGMA user_version`, for
//! `keyproxy openclaw status` and `check`: the split-brain cases between an agent's store and
//! the shared one (openclaw#137353, openclaw#143262) show in one command.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::keys::openclaw::Entry;
use crate::keys::openclaw_agents::{
    tested_range, TESTED_AGENT_VERSIONS, TESTED_STATE_VERSIONS, TESTED_WITH,
};
use crate::keys::openclaw_state::{inspect, StateDir};
use crate::text::tilde;

/// The stores of `dir`: JSON, text lines (indented for the folder's block) and warnings.
pub fn describe(dir: &Path, state_dir: Option<&Path>) -> (Value, String, Vec<String>) {
    let state = match inspect(dir, state_dir) {
        Ok(state) => state,
        Err(why) => {
            let line = format!("     stores: {why}\n");
            return (json!({"error": why}), line, Vec::new());
        }
    };
    let mut text = String::new();
    let mut warnings = Vec::new();
    let mut databases = Vec::new();
    for (db, version, what) in &state.databases {
        let tested = if what == "shared" {
            TESTED_STATE_VERSIONS
        } else {
            TESTED_AGENT_VERSIONS
        };
        let in_range = (tested.0..=tested.1).contains(version);
        if !in_range {
            warnings.push(format!(
                "{} ({what}) has user_version {version}; keyproxy was tested with {} ({TESTED_WITH})",
                tilde(db),
                tested_range(tested)
            ));
        }
        let _ = writeln!(
            text,
            "     store: {what} {} (user_version {version}{})",
            tilde(db),
            if in_range { "" } else { ", not tested" }
        );
        databases
            .push(json!({"path": db, "store": what, "user_version": version, "tested": in_range}));
    }
    let mut profiles = Vec::new();
    let agents = std::iter::once((&state.default_agent, &state.profiles))
        .chain(state.other_agents.iter().map(|(a, p)| (a, p)));
    for (agent, list) in agents {
        let default = *agent == state.default_agent;
        for (name, entry, from) in list.iter().filter(|(n, _, _)| n.starts_with("openrouter:")) {
            let served_as = if default {
                name.clone()
            } else {
                format!("{name}@{agent}")
            };
            let origin = state.origin(from);
            let _ = writeln!(
                text,
                "     profile '{served_as}' (agent {agent}) from {origin}: {}",
                gives(entry)
            );
            profiles.push(json!({
                "profile": served_as, "agent": agent, "from": origin, "gives": gives(entry),
            }));
        }
    }
    warnings.extend(split_brain(&state));
    (
        json!({"databases": databases, "openrouter_profiles": profiles, "notes": state.notes}),
        text,
        warnings,
    )
}

/// What an entry gives, without its key.
fn gives(entry: &Entry) -> String {
    match entry {
        Entry::Key(k) => format!("key {}", k.fingerprint()),
        Entry::Env(var) => format!("keyRef env {var}"),
        Entry::Command(spec) => format!("keyRef exec {}", spec.shown()),
        Entry::Ref(r) => format!("keyRef {}:{}:{}", r.source, r.provider, r.id),
        Entry::Skipped(why) => format!("nothing: {why}"),
    }
}

fn split_brain(state: &StateDir) -> Vec<String> {
    state
        .overridden
        .iter()
        .filter(|(p, _)| p.starts_with("openrouter:"))
        .map(|(profile, agent)| {
            format!(
                "agent {agent} holds its own '{profile}', which OpenClaw sends instead of the shared store's (a key changed in one is not changed in the other)"
            )
        })
        .collect()
}
