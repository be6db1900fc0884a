//! A key's text, held so that no log line, error or status page can print it.

use std::fmt;
use std::sync::Arc;

/// One form for a key's fingerprint and for a key-shaped word masked in a message.
pub use crate::text::fingerprint;

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
