//! Config text to a validated `Config`, and TOML's errors told as a fix: quoted values hidden
//! (they may be keys), the characters TOML expected kept, and a table written with the wrong
//! number of brackets named with the right ones.

use std::path::Path;

use super::raw::RawConfig;
use super::{Config, ConfigError};
use crate::text::{redact_quoted, LineIndex};

/// Parses config text; `path` names the file in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: e.span().map(|s| LineIndex::new(text).line_of(s.start)),
        message: explain(text, e.span().map(|s| s.start), e.message()),
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    Config::from_raw(raw, Some(path.to_path_buf()), dir, text)
}

/// Lists of tables (`[[routes]]`, `[[clients]]`) and single tables (`[shared]`).
const LISTS: &[&str] = &["routes", "clients"];
const TABLES: &[&str] = &["shared"];

/// TOML's message, redacted, with the fix when the table at `at` has the wrong brackets.
fn explain(text: &str, at: Option<usize>, message: &str) -> String {
    let message = redact_quoted(message);
    let line = at.map_or("", |at| {
        let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
        text[start..].lines().next().unwrap_or("").trim()
    });
    let named = |open: &str, close: &str| {
        line.strip_prefix(open)
            .and_then(|l| l.strip_suffix(close))
            .map(str::trim)
    };
    if let Some(name) = named("[[", "]]").filter(|n| TABLES.contains(n)) {
        return format!("[[{name}]] is a list of tables, but keyproxy takes one [{name}] table: write [{name}] ({message})");
    }
    if let Some(name) = named("[", "]").filter(|n| LISTS.contains(n)) {
        let one = name.trim_end_matches('s');
        return format!("[{name}] is a single table, but keyproxy takes a list: write [[{name}]], once per {one} ({message})");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_brackets_are_named_with_the_right_ones() {
        let err = parse("[routes]\nprefix = \"/\"\n", Path::new("k.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("k.toml:1:1: [routes] is a single table, but keyproxy takes a list: write [[routes]], once per route"),
            "{err}"
        );
        let err = parse("[[shared]]\nredis = \"redis://r\"\n", Path::new("k.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("keyproxy takes one [shared] table: write [shared]"),
            "{err}"
        );
    }

    #[test]
    fn what_toml_expected_is_kept() {
        let err = parse("listen = 127.0.0.1:8787\n", Path::new("k.toml")).unwrap_err();
        assert!(!err.to_string().contains('…'), "{err}");
    }
}
