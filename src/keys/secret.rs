//! A key's text, held so that no log line, error or status page can print it.

use std::fmt;
use std::sync::Arc;

/// One form for a key's fingerprint and for a key-shaped word masked in a message.
pub use crate::text::fingerprint;

/// The longest key accepted: API keys are under 200 bytes, JWT-style tokens a few hundred.
pub const MAX_KEY_LEN: usize = 4096;

/// `NAME=value` with NAME a shell variable name and something after the `=`. Base64 padding
/// (`abc=`, `abc==`) is not one: `=` only ends such a key.
fn starts_with_assignment(text: &str) -> bool {
    let Some((name, rest)) = text.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !rest.is_empty()
        && !rest.starts_with('=')
}

/// A key's text. Debug and Display show the fingerprint only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Accepts visible ASCII only: a space, CR, LF, NUL or any other control or non-ASCII byte
    /// cannot be sent in a header and would otherwise fail on every request instead of at load.
    /// Refuses too what is a key wrapped in something else, which every provider would refuse
    /// (quotes kept by a `.env` line or a Docker `env_file`, a whole `NAME=value` line pasted),
    /// and what is far longer than any API key (a file or command output read by mistake). The
    /// reasons never quote the text.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("is empty");
        }
        if text.len() > MAX_KEY_LEN {
            return Err("is longer than 4 KiB, far longer than any API key; is this the right file, variable or command?");
        }
        if !text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("contains a space, a control character (CR, LF, NUL) or a non-ASCII byte, which cannot be sent in an HTTP header");
        }
        if text.starts_with(['"', '\'']) || text.ends_with(['"', '\'']) {
            return Err("is in quotes, which are not part of a key; give the key without them");
        }
        if starts_with_assignment(text) {
            return Err("starts with a variable name and = (as in OPENROUTER_API_KEY=...); give only the key, what follows the =");
        }
        Ok(Self(Arc::from(text)))
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }

    /// The text, for the one place that renders it into a header value (`Key::new`).
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_or_oversized_keys_are_refused_without_quoting_them() {
        let key = "sk-or-v1-0123456789abcdef0123456789abcdef968304f4";
        for (bad, why) in [
            (format!("\"{key}\""), "in quotes"),
            (format!("'{key}'"), "in quotes"),
            (format!("{key}\""), "in quotes"),
            (format!("OPENROUTER_API_KEY={key}"), "variable name"),
            (format!("api_key={key}"), "variable name"),
            ("k".repeat(MAX_KEY_LEN + 1), "4 KiB"),
            (format!("{key}\t"), "a space"),
        ] {
            let err = Secret::new(&bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        // Base64 padding and an `=` inside a token are parts of keys, not assignments.
        for good in [
            "c2VjcmV0LWtleQ==",
            "c2VjcmV0LWtleQ=",
            "abc-1=2",
            &"k".repeat(MAX_KEY_LEN),
        ] {
            assert!(Secret::new(good).is_ok(), "{good}");
        }
    }
}
