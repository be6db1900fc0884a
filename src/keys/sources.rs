//! Where keys come from: keys files (`key`, `keys`, `key_env`, `key_file`) and the
//! `OPENROUTER_API_KEY` environment variable. Each file keeps its last good contents, so a bad
//! edit or a file that is briefly missing never takes keys away.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::env::{parse_env_file, Env, EnvFile};
use super::watch::FileSet;
use super::{openclaw, openclaw_state};
use super::{KeyStore, Looked, Secret, SourceStatus, StoreBuilder};
use crate::config::{resolve, Config, KeyFormat, DEFAULT_PROFILE, OPENROUTER_ENV};
use crate::text::{redact_quoted, tilde, LineIndex};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeysFile {
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    key: Option<Spanned<String>>,
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    key_env: Option<String>,
    key_file: Option<String>,
}

/// A parsed, validated keys file.
#[derive(Debug, Clone, PartialEq)]
pub struct KeysFile {
    pub profiles: BTreeMap<String, ProfileEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileEntry {
    pub keys: Vec<Secret>,
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
}

/// Why a source could not be read. `NotFound` is kept apart: a secret mounted a second late is
/// an ordinary state, not a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceError {
    NotFound,
    Failed(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("not found"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

fn read_error(path: &Path, e: &io::Error) -> SourceError {
    match e.kind() {
        io::ErrorKind::NotFound => SourceError::NotFound,
        io::ErrorKind::PermissionDenied => {
            SourceError::Failed(format!("{}: permission denied", path.display()))
        }
        _ => SourceError::Failed(format!("{}: {e}", path.display())),
    }
}

/// Parses a keys file; every error names the file and line, and none shows a key.
pub fn parse_keys_file(text: &str, path: &Path) -> Result<KeysFile, String> {
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(s) => {
            let (l, c) = LineIndex::new(text).line_of(s.start);
            format!("{}:{l}:{c}", path.display())
        }
        None => path.display().to_string(),
    };
    let raw: RawKeysFile = toml::from_str(text)
        .map_err(|e| format!("{}: {}", at(e.span()), redact_quoted(e.message())))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut profiles = BTreeMap::new();
    for (name, p) in raw.profiles {
        let mut keys = Vec::new();
        for k in p.key.iter().chain(p.keys.iter()) {
            let secret = Secret::new(k.get_ref())
                .map_err(|why| format!("{}: profile '{name}': key {why}", at(Some(k.span()))))?;
            keys.push(secret);
        }
        profiles.insert(
            name,
            ProfileEntry {
                keys,
                key_env: p.key_env,
                key_file: p.key_file.map(|f| resolve(dir, &f)),
            },
        );
    }
    Ok(KeysFile { profiles })
}

/// A secret file holds one key; one trailing newline (as `echo` and editors leave) is not part
/// of it.
fn parse_secret_file(text: &str, path: &Path) -> Result<Secret, String> {
    Secret::new(trim_one_newline(text)).map_err(|why| format!("{}: key {why}", path.display()))
}

/// Reads a file through `files` (so that a change to it is noticed) and parses it. A file that
/// does not read or parse gives the last good value from `cache`, with the reason.
fn read_cached<T>(
    cache: &mut HashMap<PathBuf, Arc<T>>,
    files: &mut FileSet,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> (Option<Arc<T>>, Option<SourceError>) {
    let fresh = files
        .read(path)
        .map_err(|e| read_error(path, &e))
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| SourceError::Failed(format!("{}: not UTF-8 text", path.display())))
        })
        .and_then(|text| parse(&text).map_err(SourceError::Failed));
    match fresh {
        Ok(value) => {
            let value = Arc::new(value);
            cache.insert(path.to_path_buf(), value.clone());
            (Some(value), None)
        }
        Err(e) => (cache.get(path).cloned(), Some(e)),
    }
}

/// A source's health for `status`: its error, and whether its last good contents are in use.
fn source_status<T>(
    kind: &'static str,
    path: &Path,
    value: &Option<Arc<T>>,
    error: &Option<SourceError>,
) -> SourceStatus {
    SourceStatus {
        kind,
        path: path.display().to_string(),
        ok: error.is_none(),
        error: error.as_ref().map(|e| match value {
            Some(_) => format!("{e} (keeping what was last read from it)"),
            None => e.to_string(),
        }),
    }
}

/// A failure worth a reload error: anything but a file that is simply not there (yet), unless
/// it was there before.
fn push_error<T>(
    errors: &mut Vec<String>,
    path: &Path,
    value: &Option<Arc<T>>,
    error: &Option<SourceError>,
) {
    match error {
        Some(SourceError::Failed(m)) => errors.push(m.clone()),
        Some(SourceError::NotFound) if value.is_some() => {
            errors.push(format!("{}: not found", path.display()))
        }
        _ => {}
    }
}

/// The 401 message already says which file; its errors start with the path again.
fn without_path(message: &str, path: &Path) -> String {
    let shown = path.display().to_string();
    match message.strip_prefix(shown.as_str()) {
        Some(rest) if rest.starts_with(": ") => rest[2..].to_owned(),
        Some(rest) if rest.starts_with(':') => format!("line {}", &rest[1..]),
        _ => message.to_owned(),
    }
}

fn trim_one_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

/// ssh refuses a private key others can read; keyproxy warns. Group-readable is fine when the
/// group is keyproxy's own (a user-private group, or the fsGroup of a Kubernetes pod).
#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode();
    let own_group = std::fs::metadata("/proc/self").is_ok_and(|me| me.gid() == meta.gid());
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !own_group) {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "keys file is readable by group or others; run: chmod 600 {}",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

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
}

/// One read of every source: the store being built, what went wrong, and what was read.
struct Pass<'a, 'f> {
    b: StoreBuilder<'f>,
    errors: Vec<String>,
    files: &'a mut FileSet,
    env: Env,
}

impl Loader {
    /// Reads every source of `config`; each file read is recorded in `files`.
    pub fn build(&mut self, config: &Config, formats: &[KeyFormat], files: &mut FileSet) -> Built {
        let mut pass = Pass {
            b: StoreBuilder::new(formats),
            errors: Vec::new(),
            files,
            env: Env::default(),
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
        Built {
            store: pass.b.build(),
            errors: pass.errors,
        }
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

    fn add_openclaw_store(&mut self, pass: &mut Pass<'_, '_>, path: &Path) {
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
            .map(|(name, entry)| (name.as_str(), entry, source.clone()));
        let absent = absent(&store, error, path);
        add_openclaw_entries(pass, label, entries, absent);
    }

    /// An OpenClaw state folder: its SQLite store, legacy JSON files, and the profile its
    /// `openclaw.json` sends to OpenRouter, which also fills `openrouter:default`.
    fn add_openclaw_state_dir(&mut self, pass: &mut Pass<'_, '_>, dir: &Path) {
        let label = format!("OpenClaw state folder {}", tilde(dir));
        let (state, error) = match openclaw_state::read(dir, pass.files) {
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
        let mut entries: Vec<(&str, &openclaw::Entry, Arc<str>)> = Vec::new();
        if let Some(state) = &state {
            let uses = state.openrouter_profile.as_ref().map(|(p, _)| p.as_str());
            for (name, entry, from) in &state.profiles {
                // OpenClaw sends the profile its apiKey names, not its own openrouter:default.
                if name == DEFAULT_PROFILE && uses.is_some_and(|u| u != DEFAULT_PROFILE) {
                    continue;
                }
                entries.push((
                    name,
                    entry,
                    Arc::from(format!("OpenClaw {}", from.display())),
                ));
            }
            if let Some((uses, why)) = &state.openrouter_profile {
                if let Some(entry) = state.entry(uses).filter(|_| uses != DEFAULT_PROFILE) {
                    let via = format!(
                        "OpenClaw {} profile '{uses}', {why}",
                        openclaw_state::database(dir).display()
                    );
                    entries.push((DEFAULT_PROFILE, entry, Arc::from(via)));
                }
            }
        }
        let absent = absent(&state, error, dir);
        add_openclaw_entries(pass, label, entries.into_iter(), absent);
    }
}

/// What a source says of a profile it does not give: why it could not be read, or that it has
/// no such profile.
fn absent<T>(value: &Option<Arc<T>>, error: Option<SourceError>, path: &Path) -> String {
    match (value, error) {
        (Some(_), _) | (None, None) => "no such profile".to_owned(),
        (None, Some(e)) => without_path(&e.to_string(), path),
    }
}

/// Adds the profiles an OpenClaw store gives, each under its OpenClaw name, to profiles no
/// earlier source filled.
fn add_openclaw_entries<'e>(
    pass: &mut Pass<'_, '_>,
    label: String,
    entries: impl Iterator<Item = (&'e str, &'e openclaw::Entry, Arc<str>)>,
    absent: String,
) {
    let mut specific = HashMap::new();
    for (name, entry, source) in entries {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_errors_name_line_and_profile_but_not_the_key() {
        let text = "[profiles.\"a:b\"]\nkeys = [\"good-key-0123456789abcdef\", \"bad\\r\\nkey-secret-part\"]\n";
        let err = parse_keys_file(text, Path::new("k.toml")).unwrap_err();
        assert!(err.starts_with("k.toml:2:"), "{err}");
        assert!(err.contains("profile 'a:b'"), "{err}");
        assert!(!err.contains("secret-part"), "{err}");

        let err = parse_keys_file(
            "[profiles.x]\nkeys = \"sk-or-v1-very-secret\"\n",
            Path::new("k.toml"),
        )
        .unwrap_err();
        assert!(err.starts_with("k.toml:2:"), "{err}");
        assert!(!err.contains("very-secret"), "{err}");

        let err = parse_keys_file("[profiles.x]\nkee = \"v\"\n", Path::new("k.toml")).unwrap_err();
        assert!(err.contains("unknown field `kee`"), "{err}");
    }

    #[test]
    fn the_401_does_not_repeat_the_file_path() {
        let p = Path::new("/etc/k.toml");
        assert_eq!(
            without_path("/etc/k.toml:2:7: invalid string", p),
            "line 2:7: invalid string"
        );
        assert_eq!(
            without_path("/etc/k.toml: permission denied", p),
            "permission denied"
        );
        assert_eq!(without_path("not found", p), "not found");
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        assert_eq!(trim_one_newline("abc\n"), "abc");
        assert_eq!(trim_one_newline("abc\r\n"), "abc");
        assert_eq!(trim_one_newline("abc\n\n"), "abc\n");
    }
}
