//! Where keys come from: keys files (`key`, `keys`, `key_env`, `key_file`) and the
//! `OPENROUTER_API_KEY` environment variable. Each file keeps its last good contents, so a bad
//! edit or a file that is briefly missing never takes keys away.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{KeyStore, Looked, Secret, SourceStatus, StoreBuilder};
use crate::config::{resolve, Config, KeyFormat, DEFAULT_PROFILE, OPENROUTER_ENV};
use crate::text::{redact_quoted, LineIndex};

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

fn read_keys_file(path: &Path) -> Result<KeysFile, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| read_error(path, &e))?;
    warn_if_shared(path);
    parse_keys_file(&text, path).map_err(SourceError::Failed)
}

/// A secret file holds one key; one trailing newline (as `echo` and editors leave) is not part
/// of it.
fn read_secret_file(path: &Path) -> Result<Secret, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| read_error(path, &e))?;
    Secret::new(trim_one_newline(&text))
        .map_err(|why| SourceError::Failed(format!("{}: key {why}", path.display())))
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

/// ssh refuses a private key others can read; keyproxy warns.
#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "keys file is readable by group or others; run: chmod 600 {}",
                path.display()
            );
        }
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
#[derive(Default)]
pub struct Loader {
    keys_files: HashMap<PathBuf, Arc<KeysFile>>,
    secret_files: HashMap<PathBuf, Secret>,
}

impl Loader {
    pub fn build(&mut self, config: &Config, formats: &[KeyFormat]) -> Built {
        let mut b = StoreBuilder::new(formats);
        let mut errors = Vec::new();
        for path in &config.keys_files {
            self.add_keys_file(&mut b, &mut errors, path);
        }
        add_env(&mut b, &mut errors);
        Built {
            store: b.build(),
            errors,
        }
    }

    fn add_keys_file(&mut self, b: &mut StoreBuilder<'_>, errors: &mut Vec<String>, path: &Path) {
        let label = format!("keys file {}", path.display());
        let (file, error) = match read_keys_file(path) {
            Ok(file) => {
                let file = Arc::new(file);
                self.keys_files.insert(path.to_path_buf(), file.clone());
                (Some(file), None)
            }
            Err(e) => (self.keys_files.get(path).cloned(), Some(e)),
        };
        let status_error = match (&error, &file) {
            (None, _) => None,
            (Some(e), Some(_)) => Some(format!("{e} (keeping the keys last read from it)")),
            (Some(e), None) => Some(e.to_string()),
        };
        if let Some(e) = &error {
            if *e != SourceError::NotFound || file.is_some() {
                errors.push(match e {
                    SourceError::NotFound => format!("{}: not found", path.display()),
                    SourceError::Failed(m) => m.clone(),
                });
            }
        }
        b.source(SourceStatus {
            kind: "keys_file",
            path: path.display().to_string(),
            ok: error.is_none(),
            error: status_error,
        });
        let Some(file) = file else {
            b.looked(Looked {
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
            b.declare(name);
            let mut notes = Vec::new();
            for secret in &entry.keys {
                b.add_key(name, secret, &source);
            }
            if let Some(var) = &entry.key_env {
                match std::env::var(var) {
                    Ok(value) => match Secret::new(trim_one_newline(&value)) {
                        Ok(secret) => b.add_key(name, &secret, &Arc::from(format!("env {var}"))),
                        Err(why) => {
                            let msg = format!("key_env {var}: key {why}");
                            errors.push(format!("{}: profile '{name}': {msg}", path.display()));
                            notes.push(msg);
                        }
                    },
                    Err(_) => notes.push(format!("key_env {var}: not set")),
                }
            }
            if let Some(secret_path) = &entry.key_file {
                if let Some(note) = self.add_secret_file(b, errors, name, secret_path) {
                    notes.push(note);
                }
            }
            if !b.has_keys(name) {
                if notes.is_empty() {
                    notes.push("profile has no key, keys, key_env or key_file".into());
                }
                specific.insert(name.clone(), notes.join(", "));
            }
        }
        b.looked(Looked {
            label,
            absent: "no such profile".into(),
            only_for: None,
            specific,
        });
    }

    /// Adds a `key_file`'s key; returns what to say of it when it gave none.
    fn add_secret_file(
        &mut self,
        b: &mut StoreBuilder<'_>,
        errors: &mut Vec<String>,
        profile: &str,
        path: &Path,
    ) -> Option<String> {
        let label = format!("key_file {}", path.display());
        let (secret, error) = match read_secret_file(path) {
            Ok(secret) => {
                self.secret_files.insert(path.to_path_buf(), secret.clone());
                (Some(secret), None)
            }
            Err(e) => (self.secret_files.get(path).cloned(), Some(e)),
        };
        if let Some(SourceError::Failed(m)) = &error {
            errors.push(format!("profile '{profile}': {m}"));
        }
        b.source(SourceStatus {
            kind: "key_file",
            path: path.display().to_string(),
            ok: error.is_none(),
            error: error.as_ref().map(|e| match &secret {
                Some(_) => format!("{e} (keeping the key last read from it)"),
                None => e.to_string(),
            }),
        });
        match secret {
            Some(secret) => {
                b.add_key(profile, &secret, &Arc::from(label));
                None
            }
            None => Some(format!(
                "{label}: {}",
                error.map(|e| e.to_string()).unwrap_or_default()
            )),
        }
    }
}

/// `OPENROUTER_API_KEY` fills `openrouter:default` when no file gave it a key.
fn add_env(b: &mut StoreBuilder<'_>, errors: &mut Vec<String>) {
    if b.has_keys(DEFAULT_PROFILE) {
        return;
    }
    let label = format!("env {OPENROUTER_ENV}");
    let (ok, error) = match std::env::var(OPENROUTER_ENV) {
        Ok(value) => match Secret::new(trim_one_newline(&value)) {
            Ok(secret) => {
                b.add_key(DEFAULT_PROFILE, &secret, &Arc::from(label.as_str()));
                (true, None)
            }
            Err(why) => {
                let msg = format!("key {why}");
                errors.push(format!("{label}: {msg}"));
                (false, Some(msg))
            }
        },
        Err(_) => (false, Some("not set".to_owned())),
    };
    b.source(SourceStatus {
        kind: "env",
        path: OPENROUTER_ENV.into(),
        ok,
        error: error.clone(),
    });
    b.looked(Looked {
        label,
        absent: error.unwrap_or_default(),
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
