//! A key's text, held so that no log line, error or status page can print it.

use std::fmt;
use std::sync::Arc;

/// The fingerprint of a key: first 8 characters, `...`, last 8, for keys of 40 characters or
/// more (as OpenClaw shows them); shorter keys show `...` and the last 4, since 16 characters of
/// a 20-character key would be most of it; keys of 8 characters or fewer show only `...`,
/// because their last 4 would be half the key.
pub fn fingerprint(key: &str) -> String {
    let n = key.len();
    if !key.is_ascii() {
        return "...".into();
    }
    if n >= 40 {
        format!("{}...{}", &key[..8], &key[n - 8..])
    } else if n > 8 {
        format!("...{}", &key[n - 4..])
    } else {
        "...".into()
    }
}

/// A key's text. Debug and Display show the fingerprint only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Accepts visible ASCII only: a space, CR, LF, NUL or any other control or non-ASCII byte
    /// cannot be sent in a header and would otherwise fail on every request instead of at load.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("is empty");
        }
        if !text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("contains a space, a control character (CR, LF, NUL) or a non-ASCII byte, which cannot be sent in an HTTP header");
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
