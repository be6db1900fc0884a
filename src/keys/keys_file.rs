//! The keys file: profiles of keys, each key inline, from an environment variable or from a
//! file of its own. Parsed into [`KeysFile`]; errors name file and line and never show a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::command::CommandSpec;
use super::Secret;
use crate::config::resolve;
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
    key_command: Option<Spanned<Vec<String>>>,
    refresh: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
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
    pub key_command: Option<CommandSpec>,
}

/// The example keys file's placeholder key, refused so that a copied example never goes live.
const PLACEHOLDER: &str = "replace-me-with-your-key";
const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `key` is the example keys file's placeholder (or a copy of it with more around it).
pub fn is_placeholder(key: &str) -> bool {
    key.contains(PLACEHOLDER)
}

/// Parses a keys file; every error names the file and line, and none shows a key.
pub fn parse_keys_file(text: &str, path: &Path) -> Result<KeysFile, String> {
    parse(text, path, false)
}

/// Parses a keys file as `keyproxy keys` edits it: the example's placeholder is no key, but no
/// error either, since replacing it is the documented first step.
pub fn parse_keys_file_to_edit(text: &str, path: &Path) -> Result<KeysFile, String> {
    parse(text, path, true)
}

fn parse(text: &str, path: &Path, placeholder_ok: bool) -> Result<KeysFile, String> {
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
            if is_placeholder(k.get_ref()) {
                if placeholder_ok {
                    continue;
                }
                return Err(format!("{}: profile '{name}': key is the example's placeholder; put your key in (or run keyproxy keys add {name})", at(Some(k.span()))));
            }
            let secret = Secret::new(k.get_ref())
                .map_err(|why| format!("{}: profile '{name}': key {why}", at(Some(k.span()))))?;
            keys.push(secret);
        }
        let duration = |field: &str, value: &Option<Spanned<String>>, default: Duration| match value
        {
            None => Ok(default),
            Some(v) => match humantime::parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(format!(
                    "{}: profile '{name}': {field} must be more than 0",
                    at(Some(v.span()))
                )),
                Err(e) => Err(format!(
                    "{}: profile '{name}': {field}: {e} (write it like \"10m\" or \"30s\")",
                    at(Some(v.span()))
                )),
            },
        };
        let key_command = match &p.key_command {
            None => {
                if let Some(v) = p.refresh.as_ref().or(p.timeout.as_ref()) {
                    return Err(format!("{}: profile '{name}': refresh and timeout apply to key_command, which this profile does not have", at(Some(v.span()))));
                }
                None
            }
            Some(argv) if argv.get_ref().first().is_none_or(|p| p.trim().is_empty()) => {
                return Err(format!("{}: profile '{name}': key_command needs a program, as in [\"op\", \"read\", \"op://Private/OpenRouter/credential\"]", at(Some(argv.span()))));
            }
            Some(argv) => Some(CommandSpec {
                argv: argv.get_ref().clone(),
                refresh: duration("refresh", &p.refresh, DEFAULT_REFRESH)?,
                timeout: duration("timeout", &p.timeout, DEFAULT_TIMEOUT)?,
                openclaw: None,
            }),
        };
        profiles.insert(
            name,
            ProfileEntry {
                keys,
                key_env: p.key_env,
                key_file: p.key_file.map(|f| resolve(dir, &f)),
                key_command,
            },
        );
    }
    Ok(KeysFile { profiles })
}

/// A secret file holds one key; one trailing newline (as `echo` and editors leave) is not part
/// of it.
pub(super) fn parse_secret_file(text: &str, path: &Path) -> Result<Secret, String> {
    Secret::new(trim_one_newline(text)).map_err(|why| format!("{}: key {why}", path.display()))
}

pub(super) fn trim_one_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
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
    fn secret_files_lose_one_trailing_newline() {
        assert_eq!(trim_one_newline("abc\n"), "abc");
        assert_eq!(trim_one_newline("abc\r\n"), "abc");
        assert_eq!(trim_one_newline("abc\n\n"), "abc\n");
    }
}
