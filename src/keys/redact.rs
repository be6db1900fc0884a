//! The one redaction of what keyproxy shows: every key it knows (from any source, current or last
//! good, or seen earlier in this process) is replaced by its fingerprint wherever it appears, and
//! text from outside (a command's stderr, a provider's error) also has every key-shaped word
//! masked (`text::mask_key_shapes`), since it may hold a key keyproxy never saw.
//!
//! Built at each reload from the keys read, never on the request path: the texts it cleans (source
//! errors, "where keyproxy looked", reload errors) are made when a source is read.

use std::borrow::Cow;
use std::sync::Arc;

use memchr::memmem::Finder;

use super::{Secret, StoreBuilder};
use crate::text::{mask_key_shapes, redact_quoted};

/// Keys shorter than this are not searched for: they would match ordinary words, and their
/// fingerprint (`...`) shows nothing of them anyway.
const SHORTEST: usize = 8;

/// How many keys a process remembers; a rotated key is still hidden in what a tool prints later.
const REMEMBERED: usize = 256;

/// Every key keyproxy knows, each with a search for its text and its fingerprint.
#[derive(Default, Clone)]
pub struct Redactor {
    /// Longest first, so a key that holds another is replaced whole.
    keys: Vec<(Finder<'static>, String)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the finders: they hold the keys' text.
        write!(f, "Redactor({} keys)", self.keys.len())
    }
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut texts: Vec<&str> = secrets
            .into_iter()
            .map(Secret::expose)
            .filter(|k| k.len() >= SHORTEST)
            .collect();
        texts.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        texts.dedup();
        let keys = texts
            .into_iter()
            .map(|k| {
                (
                    Finder::new(k.as_bytes()).into_owned(),
                    super::fingerprint(k),
                )
            })
            .collect();
        Self { keys }
    }

    /// `text` with every known key replaced by its fingerprint.
    pub fn known<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let bytes = text.as_bytes();
        let mut found: Vec<(usize, usize, &str)> = Vec::new();
        for (finder, fingerprint) in &self.keys {
            let len = finder.needle().len();
            found.extend(
                finder
                    .find_iter(bytes)
                    .map(|at| (at, at + len, fingerprint.as_str())),
            );
        }
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for (start, end, fingerprint) in found {
            // A key is visible ASCII, so its ends are character boundaries.
            if start < done {
                continue;
            }
            out.push_str(&text[done..start]);
            out.push_str(fingerprint);
            done = end;
        }
        out.push_str(&text[done..]);
        Cow::Owned(out)
    }

    /// Free text from outside (a provider's error message): known keys, then any key-shaped word.
    pub fn outside(&self, text: &str) -> String {
        mask_key_shapes(&self.known(text))
    }

    /// Text from a tool or parser that may quote a value: known keys, quoted runs, key shapes.
    pub fn quoted(&self, text: &str) -> String {
        redact_quoted(&self.known(text))
    }

    /// This redactor and `more` too (a command's own last key, before a reload has seen it).
    pub fn with(&self, more: Option<&Secret>) -> Cow<'_, Self> {
        match more {
            Some(key) if key.expose().len() >= SHORTEST => {
                let mut keys = self.keys.clone();
                keys.push((
                    Finder::new(key.expose().as_bytes()).into_owned(),
                    key.fingerprint(),
                ));
                keys.sort_by_key(|k| std::cmp::Reverse(k.0.needle().len()));
                Cow::Owned(Self { keys })
            }
            _ => Cow::Borrowed(self),
        }
    }
}

/// The keys a loader has seen, most recent last, at most [`REMEMBERED`].
#[derive(Default)]
pub(crate) struct SeenKeys(Vec<Secret>);

impl SeenKeys {
    /// Adds `keys` and returns a redactor for everything seen.
    pub fn add<'a>(&mut self, keys: impl IntoIterator<Item = &'a Secret>) -> Arc<Redactor> {
        for key in keys {
            if let Some(at) = self.0.iter().position(|k| k == key) {
                let key = self.0.remove(at);
                self.0.push(key);
            } else {
                self.0.push(key.clone());
            }
        }
        let over = self.0.len().saturating_sub(REMEMBERED);
        self.0.drain(..over);
        Arc::new(Redactor::new(&self.0))
    }
}

impl StoreBuilder<'_> {
    /// Every key added so far.
    pub(crate) fn added(&self) -> &[Secret] {
        &self.added
    }

    /// Replaces every known key in what the store will say of its sources, its keys' sources and
    /// of where it looked, and keeps `redactor` in the store for texts made later (`check --live`).
    pub(crate) fn redact(&mut self, redactor: Arc<Redactor>) {
        let clean = |text: &mut String| {
            if let Cow::Owned(clean) = redactor.known(text) {
                *text = clean;
            }
        };
        for source in &mut self.sources {
            clean(&mut source.path);
            if let Some(error) = &mut source.error {
                clean(error);
            }
        }
        // A key's source names its command, and `key_command = ["printf", "sk-..."]` is a
        // command line.
        for key in self.profiles.values_mut().flatten() {
            if let Cow::Owned(clean) = redactor.known(&key.source) {
                key.source = Arc::from(clean);
            }
        }
        for looked in &mut self.looked {
            clean(&mut looked.label);
            clean(&mut looked.absent);
            looked.specific.values_mut().for_each(clean);
        }
        self.redactor = redactor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-or-v1-0123456789abcdef0123456789abcdef968304f4";

    #[test]
    fn known_keys_become_fingerprints_anywhere() {
        let odd = Secret::new("not.key/shaped~but~secret").unwrap();
        let key = Secret::new(KEY).unwrap();
        let r = Redactor::new([&odd, &key]);
        assert_eq!(
            r.known(&format!("a{KEY}b and x=not.key/shaped~but~secret.")),
            "ask-or-v1...968304f4b and x=...cret."
        );
        assert_eq!(r.known("nothing here"), "nothing here");
        assert!(!format!("{r:?}").contains("0123"));
    }

    #[test]
    fn a_key_inside_another_is_replaced_once() {
        let long = Secret::new(KEY).unwrap();
        let inner = Secret::new(&KEY[9..40]).unwrap();
        let r = Redactor::new([&inner, &long]);
        assert_eq!(r.known(KEY), "sk-or-v1...968304f4");
    }

    #[test]
    fn the_loader_remembers_rotated_keys() {
        let mut seen = SeenKeys::default();
        let a = Secret::new(KEY).unwrap();
        seen.add([&a]);
        let r = seen.add([]);
        assert_eq!(r.known(KEY), "sk-or-v1...968304f4");
    }
}
