//! Environment variables as a key source: dotenv files listed in config (`env_files`, such as
//! `~/.openclaw/.env`), then keyproxy's own environment.
//!
//! A value from an env file wins over the process environment: the file is what a user can
//! change without restarting keyproxy, and the environment of a long-running service is exactly
//! what goes stale.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::text::LineIndex;

/// A parsed dotenv file.
pub type EnvFile = HashMap<String, String>;

/// Parses a dotenv file (`KEY=value`, `export KEY=value`, quotes, comments). Errors name the
/// line but never show it: the line may hold a key.
pub fn parse_env_file(text: &str, path: &Path) -> Result<EnvFile, String> {
    let mut vars = HashMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((k, v)) => {
                vars.insert(k, v);
            }
            Err(dotenvy::Error::LineParse(line, _)) => {
                let at = text
                    .find(line.trim_end())
                    .map(|offset| format!(":{}", LineIndex::new(text).line_of(offset).0))
                    .unwrap_or_default();
                return Err(format!("{}{at}: not a KEY=value line", path.display()));
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(vars)
}

/// Where to look a variable up: the env files in order, then the process environment.
#[derive(Default)]
pub struct Env {
    /// Each env file with its last good contents and, when it did not read cleanly, why.
    pub files: Vec<(PathBuf, Option<Arc<EnvFile>>, Option<String>)>,
}

impl Env {
    /// The value and a label saying where it came from (`env file PATH` or `env VAR`).
    pub fn lookup(&self, var: &str) -> Option<(String, String)> {
        for (path, file, _) in &self.files {
            if let Some(value) = file.as_ref().and_then(|f| f.get(var)) {
                return Some((value.clone(), format!("env file {}", path.display())));
            }
        }
        std::env::var(var).ok().map(|v| (v, format!("env {var}")))
    }

    /// Where [`Env::lookup`] looked besides the environment, for "not set" messages:
    /// ` in env file /a/.env (not found) or the environment`, or nothing without env files.
    pub fn places_suffix(&self) -> String {
        if self.files.is_empty() {
            return String::new();
        }
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(p, _, problem)| match problem {
                Some(why) => format!("{} ({why})", p.display()),
                None => p.display().to_string(),
            })
            .collect();
        format!(" in env file {} or the environment", files.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_parse_and_errors_hide_the_line() {
        let text = "# comment\nexport OPENROUTER_API_KEY=\"sk-or-v1-abc\"\nOTHER='x y'\n";
        let vars = parse_env_file(text, Path::new("a.env")).unwrap();
        assert_eq!(vars["OPENROUTER_API_KEY"], "sk-or-v1-abc");
        assert_eq!(vars["OTHER"], "x y");

        let err =
            parse_env_file("A=1\nB=\"sk-unterminated-secret\n", Path::new("a.env")).unwrap_err();
        assert!(err.starts_with("a.env:2"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
