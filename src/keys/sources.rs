//! Where keys come from: keys files (`key`, `keys`, `key_env`, `key_file`) and the
//! `OPENROUTER_API_KEY` environment variable. Each file keeps its last good contents, so a bad
//! edit or a file that is briefly missing never takes keys away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cached::{
    push_error, read_cached, source_status, warn_if_shared, without_path, SourceError,
};
use super::command::{CommandSpec, Commands, Notify};
use super::env::{parse_env_file, Env, EnvFile};
use super::files::FileSet;
use super::keys_file::{parse_keys_file, parse_secret_file, trim_one_newline, KeysFile};
use super::openclaw_copy::Copies;
use super::{openclaw, openclaw_state};
use super::{KeyStore, Looked, Secret, SeenKeys, SourceStatus, StoreBuilder};
use crate::config::{Config, KeyFormat, DEFAULT_PROFILE, OPENROUTER_ENV};
use crate::text::tilde;

mod openclaw_sources;

/// The result of reading every source once.
#[derive(Debug)]
pub struct Built {
    pub store: KeyStore,
    /// Failures of this read (file:line and why); empty when every source read cleanly.
    pub errors: Vec<String>,
}

/// Reads the sources of a config into a [`KeyStore`], remembering each file's last good
/// contents between reads.
///
/// Order decides who fills a profile: keys files (all of their keys form the pool), then
/// OpenClaw stores, then `OPENROUTER_API_KEY`; a later source fills only a profile that nothing
/// before it gave a key.
#[derive(Default)]
pub struct Loader {
    keys_files: HashMap<PathBuf, Arc<KeysFile>>,
    secret_files: HashMap<PathBuf, Arc<Secret>>,
    env_files: HashMap<PathBuf, Arc<EnvFile>>,
    openclaw_stores: HashMap<PathBuf, Arc<openclaw::Store>>,
    openclaw_dirs: HashMap<PathBuf, Arc<openclaw_state::StateDir>>,
    commands: Commands,
    openclaw_copies: Copies,
    /// Every key read so far, hidden in whatever this loader says.
    seen: SeenKeys,
}

/// One read of every source: the store being built, what went wrong, and what was read.
struct Pass<'a, 'f> {
    b: StoreBuilder<'f>,
    errors: Vec<String>,
    files: &'a mut FileSet,
    env: Env,
    /// The `key_command`s this read found, so the others' threads stop.
    commands: Vec<CommandSpec>,
    /// keyproxy's own folder, where OpenClaw's database is copied to be read.
    state_dir: Option<&'a Path>,
}

impl Loader {
    /// Reads every source of `config`; each file read is recorded in `files`.
    pub fn build(&mut self, config: &Config, formats: &[KeyFormat], files: &mut FileSet) -> Built {
        let mut pass = Pass {
            b: StoreBuilder::new(formats),
            errors: Vec::new(),
            files,
            env: Env::default(),
            commands: Vec::new(),
            state_dir: config.state_dir.as_deref(),
        };
        for path in &config.env_files {
            self.read_env_file(&mut pass, path);
        }
        for path in &config.keys_files {
            self.add_keys_file(&mut pass, path);
        }
        for dir in &config.openclaw_state_dirs {
            self.add_openclaw_state_dir(&mut pass, dir);
        }
        for path in &config.openclaw_auth_profiles {
            self.add_openclaw_store(&mut pass, path);
        }
        add_openrouter_env(&mut pass);
        self.commands.retain(&pass.commands);
        // Every key known, in the store or not (a profile an earlier source filled, a last good
        // file), is replaced by its fingerprint in every text this read made.
        let known: Vec<Secret> = pass
            .b
            .added()
            .iter()
            .chain(self.cached_keys())
            .cloned()
            .collect();
        let redactor = self.seen.add(&known);
        for e in &mut pass.errors {
            *e = redactor.known(e).into_owned();
        }
        pass.b.redact(redactor.clone());
        self.commands.set_redactor(redactor);
        Built {
            store: pass.b.build(),
            errors: pass.errors,
        }
    }

    /// The keys of every source's last good contents.
    fn cached_keys(&self) -> impl Iterator<Item = &Secret> {
        let files = self
            .keys_files
            .values()
            .flat_map(|f| f.profiles.values().flat_map(|p| p.keys.iter()));
        let openclaw = self
            .openclaw_stores
            .values()
            .flat_map(|s| s.profiles.iter().map(|(_, e)| e))
            .chain(
                self.openclaw_dirs
                    .values()
                    .flat_map(|d| d.profiles.iter().map(|(_, e, _)| e)),
            )
            .filter_map(|e| match e {
                openclaw::Entry::Key(k) => Some(k),
                _ => None,
            });
        files
            .chain(self.secret_files.values().map(|s| &**s))
            .chain(openclaw)
    }

    /// From now on a `key_command` that finishes a run calls `notify`, and a new one is not
    /// waited for; before this, a read waits for each new command's first run.
    pub fn on_command_run(&mut self, notify: Notify) {
        self.commands.set_notify(notify);
    }

    /// Runs every `key_command` again (SIGHUP); each calls the notifier when done.
    pub fn run_commands_now(&self) {
        self.commands.run_all_now();
    }

    fn read_env_file(&mut self, pass: &mut Pass<'_, '_>, path: &Path) {
        let (file, error) = read_cached(&mut self.env_files, pass.files, path, |text| {
            parse_env_file(text, path)
        });
        push_error(&mut pass.errors, path, &file, &error);
        pass.b
            .source(source_status("env_file", path, &file, &error));
        let problem = error.map(|e| without_path(&e.to_string(), path));
        pass.env.files.push((path.to_path_buf(), file, problem));
    }

    fn add_keys_file(&mut self, pass: &mut Pass<'_, '_>, path: &Path) {
        let label = format!("keys file {}", tilde(path));
        let (file, error) = read_cached(&mut self.keys_files, pass.files, path, |text| {
            let file = parse_keys_file(text, path)?;
            // A file that only points at key_file or key_env holds no secret itself.
            if file.profiles.values().any(|p| !p.keys.is_empty()) {
                warn_if_shared(path);
            }
            Ok(file)
        });
        push_error(&mut pass.errors, path, &file, &error);
        pass.b
            .source(source_status("keys_file", path, &file, &error));
        let Some(file) = file else {
            pass.b.looked(Looked {
                label,
                absent: error
                    .map(|e| without_path(&e.to_string(), path))
                    .unwrap_or_default(),
                only_for: None,
                specific: HashMap::new(),
            });
            return;
        };
        let source: Arc<str> = Arc::from(label.as_str());
        let mut specific = HashMap::new();
        for (name, entry) in &file.profiles {
            pass.b.declare(name);
            let mut notes = Vec::new();
            for secret in &entry.keys {
                pass.b.add_key(name, secret, &source);
            }
            if let Some(var) = &entry.key_env {
                if let Some(note) = add_env_key(
                    pass,
                    name,
                    var,
                    &format!("environment variable {var} (key_env)"),
                ) {
                    notes.push(note);
                }
            }
            if let Some(secret_path) = &entry.key_file {
                if let Some(note) = self.add_secret_file(pass, name, secret_path) {
                    notes.push(note);
                }
            }
            if let Some(spec) = &entry.key_command {
                if let Some(note) = self.add_command_key(pass, name, spec) {
                    notes.push(note);
                }
            }
            if !pass.b.has_keys(name) {
                if notes.is_empty() {
                    notes.push("profile has no key, keys, key_env or key_file".into());
                }
                specific.insert(name.clone(), notes.join(", "));
            }
        }
        pass.b.looked(Looked {
            label,
            absent: "no such profile".into(),
            only_for: None,
            specific,
        });
    }

    /// Adds a `key_file`'s key; returns what to say of it when it gave none.
    fn add_secret_file(
        &mut self,
        pass: &mut Pass<'_, '_>,
        profile: &str,
        path: &Path,
    ) -> Option<String> {
        let label = format!("key_file {}", tilde(path));
        let (secret, error) = read_cached(&mut self.secret_files, pass.files, path, |text| {
            parse_secret_file(text, path)
        });
        if let Some(SourceError::Failed(m)) = &error {
            pass.errors.push(format!("profile '{profile}': {m}"));
        }
        pass.b
            .source(source_status("key_file", path, &secret, &error));
        match secret {
            Some(secret) => {
                pass.b.add_key(profile, &secret, &Arc::from(label));
                None
            }
            None => Some(format!(
                "{label} {}",
                error.map(|e| e.to_string()).unwrap_or_default()
            )),
        }
    }

    /// Adds what a `key_command` printed last; returns what to say of it when it gave nothing.
    fn add_command_key(
        &mut self,
        pass: &mut Pass<'_, '_>,
        profile: &str,
        spec: &CommandSpec,
    ) -> Option<String> {
        pass.commands.push(spec.clone());
        let outcome = self.commands.outcome(spec);
        let label = format!("key_command {}", spec.shown());
        let error = match (&outcome.error, &outcome.key) {
            (Some(e), Some(_)) => Some(format!("{e} (keeping the key it printed before)")),
            (e, _) => e.clone(),
        };
        if let Some(e) = error.as_ref().filter(|_| !outcome.pending()) {
            pass.errors.push(format!("profile '{profile}': {e}"));
        }
        // The line already names the command.
        let prefix = format!("{label} ");
        pass.b.source(SourceStatus {
            kind: "key_command",
            path: spec.shown(),
            ok: outcome.error.is_none(),
            error: error.map(|e| e.strip_prefix(&prefix).map_or(e.clone(), str::to_owned)),
        });
        match &outcome.key {
            Some(secret) => {
                pass.b.add_key(profile, secret, &Arc::from(label));
                None
            }
            None => Some(outcome.error.unwrap_or_default()),
        }
    }
}

/// Adds the key in variable `var` to `profile`; returns what to say when there is none, after
/// `what` (`environment variable FOO (key_env)`).
fn add_env_key(pass: &mut Pass<'_, '_>, profile: &str, var: &str, what: &str) -> Option<String> {
    env_key(pass, profile, var).map(|problem| format!("{what} {problem}"))
}

/// Adds the key in variable `var` to `profile`, or says why not: `not set ...` or `key ...`.
fn env_key(pass: &mut Pass<'_, '_>, profile: &str, var: &str) -> Option<String> {
    let Some((value, source)) = pass.env.lookup(var) else {
        return Some(format!("not set{}", pass.env.places_suffix()));
    };
    match Secret::new(trim_one_newline(&value)) {
        Ok(secret) => {
            pass.b.add_key(profile, &secret, &Arc::from(source));
            None
        }
        Err(why) => {
            pass.errors.push(format!(
                "profile '{profile}': environment variable {var} holds a key that {why} (from {source})"
            ));
            Some(format!("key {why}"))
        }
    }
}

/// `OPENROUTER_API_KEY` fills `openrouter:default` when no file gave it a key.
fn add_openrouter_env(pass: &mut Pass<'_, '_>) {
    if pass.b.has_keys(DEFAULT_PROFILE) {
        return;
    }
    let problem = env_key(pass, DEFAULT_PROFILE, OPENROUTER_ENV);
    pass.b.source(SourceStatus {
        kind: "env",
        path: OPENROUTER_ENV.into(),
        ok: problem.is_none(),
        error: problem.clone(),
    });
    pass.b.looked(Looked {
        absent: problem.unwrap_or_default(),
        label: format!("environment variable {OPENROUTER_ENV}"),
        only_for: Some(DEFAULT_PROFILE.into()),
        specific: HashMap::new(),
    });
}
