//! OpenClaw's stores as sources of the [`Loader`]: legacy `auth-profiles.json` files and state
//! folders with their SQLite database.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{add_env_key, Loader, Pass};
use crate::config::DEFAULT_PROFILE;
use crate::keys::cached::{absent, push_error, read_cached, source_status};
use crate::keys::{openclaw, openclaw_state, Looked};
use crate::text::tilde;

impl Loader {
    pub(super) fn add_openclaw_store(&mut self, pass: &mut Pass<'_, '_>, path: &Path) {
        let label = format!("OpenClaw store {}", tilde(path));
        let (store, error) = read_cached(&mut self.openclaw_stores, pass.files, path, |text| {
            openclaw::parse_store(text, path)
        });
        push_error(&mut pass.errors, path, &store, &error);
        pass.b
            .source(source_status("openclaw", path, &store, &error));
        let source: Arc<str> = Arc::from(label.as_str());
        let entries = store
            .iter()
            .flat_map(|s| s.profiles.iter())
            .map(|(name, entry)| (name.clone(), entry, source.clone()));
        let absent = absent(&store, error, path);
        self.add_openclaw_entries(pass, label, entries, absent);
    }

    /// An OpenClaw state folder: its SQLite store, legacy JSON files, and the profile its
    /// `openclaw.json` sends to OpenRouter, which also fills `openrouter:default`.
    pub(super) fn add_openclaw_state_dir(&mut self, pass: &mut Pass<'_, '_>, dir: &Path) {
        let label = format!("OpenClaw state folder {}", tilde(dir));
        let (state, error) = match openclaw_state::read(
            dir,
            pass.files,
            &mut self.openclaw_copies,
            pass.state_dir,
        ) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                self.openclaw_dirs.insert(dir.to_path_buf(), fresh.clone());
                (Some(fresh), None)
            }
            Err(e) => (self.openclaw_dirs.get(dir).cloned(), Some(e)),
        };
        push_error(&mut pass.errors, dir, &state, &error);
        if error.is_none() {
            pass.errors
                .extend(state.iter().flat_map(|s| s.notes.iter().cloned()));
        }
        pass.b
            .source(source_status("openclaw_state", dir, &state, &error));
        let mut entries: Vec<(String, &openclaw::Entry, Arc<str>)> = Vec::new();
        if let Some(state) = &state {
            let uses = state.openrouter_profile.as_ref().map(|(p, _)| p.as_str());
            for (name, entry, from) in &state.profiles {
                // OpenClaw sends the profile its apiKey names, not its own openrouter:default.
                if name == DEFAULT_PROFILE && uses.is_some_and(|u| u != DEFAULT_PROFILE) {
                    continue;
                }
                entries.push((
                    name.clone(),
                    entry,
                    Arc::from(format!(
                        "OpenClaw {} ({})",
                        from.display(),
                        state.origin(from)
                    )),
                ));
            }
            // Another agent's view is reached as `PROFILE@AGENT` (`openrouter:default@work`),
            // which keeps the provider prefix a route allows by.
            for (agent, profiles) in &state.other_agents {
                for (name, entry, from) in profiles {
                    entries.push((
                        format!("{name}@{agent}"),
                        entry,
                        Arc::from(format!(
                            "OpenClaw {} ({})",
                            from.display(),
                            state.origin(from)
                        )),
                    ));
                }
            }
            if let Some((uses, why)) = &state.openrouter_profile {
                if let Some(entry) = state.entry(uses).filter(|_| uses != DEFAULT_PROFILE) {
                    let via = format!(
                        "OpenClaw {} profile '{uses}', {why}",
                        openclaw_state::database(dir).display()
                    );
                    entries.push((DEFAULT_PROFILE.to_owned(), entry, Arc::from(via)));
                }
            }
        }
        let absent = absent(&state, error, dir);
        self.add_openclaw_entries(pass, label, entries.into_iter(), absent);
    }

    /// Adds the profiles an OpenClaw store gives, each under its OpenClaw name, to profiles no
    /// earlier source filled.
    fn add_openclaw_entries<'e>(
        &mut self,
        pass: &mut Pass<'_, '_>,
        label: String,
        entries: impl Iterator<Item = (String, &'e openclaw::Entry, Arc<str>)>,
        absent: String,
    ) {
        let mut specific = HashMap::new();
        for (name, entry, source) in entries {
            let name = name.as_str();
            if pass.b.has_keys(name) {
                continue;
            }
            pass.b.declare(name);
            let note = match entry {
                openclaw::Entry::Key(secret) => {
                    pass.b.add_key(name, secret, &source);
                    None
                }
                openclaw::Entry::Env(var) => add_env_key(
                    pass,
                    name,
                    var,
                    &format!("environment variable {var} (keyRef)"),
                ),
                openclaw::Entry::Command(spec) => self
                    .add_command_key(pass, name, spec)
                    .map(|why| format!("OpenClaw exec provider: {why}")),
                openclaw::Entry::Ref(r) => Some(format!(
                    "keyRef {}:{}:{} needs its OpenClaw state folder (the secrets.providers of its openclaw.json, its secret store); name the state folder in openclaw_state_dirs",
                    r.source, r.provider, r.id
                )),
                openclaw::Entry::Skipped(why) => Some(why.clone()),
            };
            if let Some(note) = note {
                specific.insert(name.to_owned(), note);
            }
        }
        pass.b.looked(Looked {
            label,
            absent,
            only_for: None,
            specific,
        });
    }
}
