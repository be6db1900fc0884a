//! The key store: profiles of keys, built once per reload into an immutable snapshot.
//!
//! A key's text is held only by [`Secret`], whose Debug and Display print the fingerprint; the
//! request path sees ready-made header values marked sensitive, never the text.

mod cached;
pub(crate) mod command;
mod command_run;
pub(crate) mod env;
pub(crate) mod files;
pub(crate) mod health;
mod keys_file;
mod looked;
pub(crate) mod openclaw;
pub(crate) mod openclaw_agents;
mod openclaw_copy;
mod openclaw_refs;
pub(crate) mod openclaw_state;
mod owner;
mod redact;
mod secret;
pub(crate) mod sources;

pub use keys_file::{
    is_placeholder, parse_keys_file, parse_keys_file_to_edit, KeysFile, ProfileEntry,
};
pub use looked::{looked_list, Looked, LookedAt};
pub use redact::Redactor;
pub(crate) use redact::SeenKeys;
pub use secret::{fingerprint, Secret};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use crate::config::KeyFormat;
use health::{Health, KeyState};

/// Index of a format in the snapshot's format table; each route holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatId(pub usize);

/// One usable key: its header value rendered once for every format a route uses.
pub struct Key {
    fingerprint: Box<str>,
    source: Arc<str>,
    headers: Box<[HeaderValue]>,
    /// Tells the same key apart across reloads without keeping its text, so that a key resting
    /// after a 429 keeps resting when an unrelated edit reloads the store.
    id: u64,
    health: Arc<Health>,
}

impl Key {
    fn new(secret: &Secret, source: Arc<str>, formats: &[KeyFormat]) -> Self {
        let headers = formats
            .iter()
            .filter_map(|f| {
                // Cannot fail: the secret and the format were both checked at load.
                let mut v = HeaderValue::from_str(&f.render(secret.expose())).ok()?;
                v.set_sensitive(true);
                Some(v)
            })
            .collect();
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(secret.expose(), &mut h);
        Self {
            fingerprint: secret.fingerprint().into(),
            source,
            headers,
            id: std::hash::Hasher::finish(&h),
            health: Arc::default(),
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn header(&self, format: FormatId) -> Option<&HeaderValue> {
        self.headers.get(format.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A named credential slot holding one key or a pool.
#[derive(Debug)]
pub struct Profile {
    keys: Vec<Key>,
    next: AtomicUsize,
}

/// Every key of a profile rests after a 429; when the first wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllResting {
    pub wakes_in: std::time::Duration,
}

impl Profile {
    /// The next key of the pool that is not resting, round-robin. Lock-free: one relaxed
    /// atomic add, and one relaxed load per key looked at.
    ///
    /// When every key rests, a key refused with 401/402/403 is still better than no answer: the
    /// provider's own (annotated) refusal goes back, and topping up credit takes effect at once.
    /// Only when every key rests after a 429 is the answer local.
    pub fn pick(&self) -> Result<&Key, AllResting> {
        if let Some(key) = self.next_awake(None) {
            return Ok(key);
        }
        let mut refused: Option<(&Key, std::time::Duration)> = None;
        let mut wakes_in = std::time::Duration::MAX;
        for k in &self.keys {
            match k.health.state() {
                KeyState::Resting { left, reason } if reason != 429 => {
                    if refused.is_none_or(|(_, l)| left < l) {
                        refused = Some((k, left));
                    }
                }
                KeyState::Resting { left, .. } => wakes_in = wakes_in.min(left),
                KeyState::Active => return Ok(k),
            }
        }
        refused.map(|(k, _)| k).ok_or(AllResting { wakes_in })
    }

    /// Another key than `tried` that is not resting, for a retry.
    pub fn pick_other(&self, tried: &Key) -> Option<&Key> {
        self.next_awake(Some(tried.id))
    }

    /// The first key not resting (and not `skip`), in turn from the pool's round-robin position.
    fn next_awake(&self, skip: Option<u64>) -> Option<&Key> {
        let n = self.keys.len();
        let start = match n {
            0 | 1 => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        (0..n)
            .map(|i| &self.keys[(start + i) % n])
            .find(|k| Some(k.id) != skip && !k.health.is_resting())
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// The health of one key source, as `status` and `check` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStatus {
    pub kind: &'static str,
    pub path: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// The immutable snapshot of all profiles. A reload builds a new one.
#[derive(Debug, Default)]
pub struct KeyStore {
    /// foldhash rather than SipHash: looked up per request, keyed by names from the config
    /// and key sources, never grown by a request.
    profiles: HashMap<String, Profile, foldhash::fast::RandomState>,
    looked: Vec<Looked>,
    sources: Vec<SourceStatus>,
    redactor: Arc<Redactor>,
}

impl KeyStore {
    /// Every key known when this store was built, for hiding them in texts made later.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The profile if it has at least one key.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name).filter(|p| !p.keys.is_empty())
    }

    pub fn profiles(&self) -> impl Iterator<Item = (&str, &Profile)> {
        self.profiles.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// Fingerprints of a profile's keys, in pool order; empty when it has none.
    pub fn fingerprints(&self, profile: &str) -> Vec<&str> {
        self.profile(profile)
            .map(|p| p.keys().iter().map(Key::fingerprint).collect())
            .unwrap_or_default()
    }

    /// Logs which profiles gained, lost or changed keys since `old`, by fingerprint, so an
    /// operator can see a rotation land.
    /// Returns whether anything changed.
    pub fn log_changes_since(&self, old: &KeyStore) -> bool {
        let mut changed = false;
        for (name, _) in self.profiles() {
            let (now, before) = (self.fingerprints(name), old.fingerprints(name));
            if now != before {
                changed = true;
                tracing::info!(profile = name, keys = %now.join(", "), was = %before.join(", "), "keys changed");
            }
        }
        for (name, p) in old.profiles() {
            if self.profile(name).is_none() && !p.keys().is_empty() {
                changed = true;
                tracing::info!(profile = name, "profile removed");
            }
        }
        changed
    }

    pub fn sources(&self) -> &[SourceStatus] {
        &self.sources
    }

    /// Takes over the health of keys `old` also had, so a reload does not wake resting keys;
    /// a key now read from another source, or of a profile `wake` names, starts awake.
    pub fn adopt_health(&mut self, old: &KeyStore, wake: impl Fn(&str) -> bool) {
        let known: HashMap<u64, (&Arc<Health>, &Arc<str>)> = old
            .profiles
            .values()
            .flat_map(|p| p.keys.iter())
            .map(|k| (k.id, (&k.health, &k.source)))
            .collect();
        for (name, profile) in self.profiles.iter_mut() {
            if wake(name) {
                continue;
            }
            for key in profile.keys.iter_mut() {
                if let Some((h, source)) = known.get(&key.id) {
                    if **source == key.source {
                        key.health = Arc::clone(h);
                    }
                }
            }
        }
    }

    /// Every place looked for `profile` and what each said.
    pub fn looked_for(&self, profile: &str) -> Vec<LookedAt> {
        self.looked
            .iter()
            .filter(|l| l.only_for.as_deref().is_none_or(|p| p == profile))
            .map(|l| LookedAt {
                source: l.label.clone(),
                result: l.specific.get(profile).unwrap_or(&l.absent).clone(),
            })
            .collect()
    }
}

/// Collects keys from the sources in order, then freezes them into a [`KeyStore`].
pub struct StoreBuilder<'a> {
    formats: &'a [KeyFormat],
    profiles: HashMap<String, Vec<Key>>,
    looked: Vec<Looked>,
    sources: Vec<SourceStatus>,
    /// Every key added, for the redactor.
    added: Vec<Secret>,
    redactor: Arc<Redactor>,
}

impl<'a> StoreBuilder<'a> {
    pub fn new(formats: &'a [KeyFormat]) -> Self {
        Self {
            formats,
            profiles: HashMap::new(),
            looked: Vec::new(),
            sources: Vec::new(),
            added: Vec::new(),
            redactor: Arc::default(),
        }
    }

    pub fn add_key(&mut self, profile: &str, secret: &Secret, source: &Arc<str>) {
        let key = Key::new(secret, source.clone(), self.formats);
        self.added.push(secret.clone());
        self.profiles
            .entry(profile.to_owned())
            .or_default()
            .push(key);
    }

    /// Declares a profile so that it is listed even while it has no key.
    pub fn declare(&mut self, profile: &str) {
        self.profiles.entry(profile.to_owned()).or_default();
    }

    pub fn has_keys(&self, profile: &str) -> bool {
        self.profiles.get(profile).is_some_and(|k| !k.is_empty())
    }

    pub fn looked(&mut self, looked: Looked) {
        self.looked.push(looked);
    }

    pub fn source(&mut self, status: SourceStatus) {
        self.sources.push(status);
    }

    pub fn build(self) -> KeyStore {
        KeyStore {
            profiles: self
                .profiles
                .into_iter()
                .map(|(name, keys)| {
                    (
                        name,
                        Profile {
                            keys,
                            next: AtomicUsize::new(0),
                        },
                    )
                })
                .collect(),
            looked: self.looked,
            sources: self.sources,
            redactor: self.redactor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_hide_the_middle() {
        assert_eq!(
            fingerprint("sk-or-v1-0123456789abcdef0123456789abcdef968304f4"),
            "sk-or-v1...968304f4"
        );
        assert_eq!(fingerprint("short-key-1234"), "...1234");
        assert_eq!(fingerprint("twenty-char-key-5678"), "...5678");
        assert_eq!(fingerprint("tiny"), "...");
    }

    #[test]
    fn secrets_never_print_their_text() {
        let s = Secret::new("sk-or-v1-0123456789abcdef0123456789abcdef968304f4").unwrap();
        assert_eq!(format!("{s}"), "sk-or-v1...968304f4");
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn header_breaking_bytes_are_refused() {
        for bad in ["a\r\nb", "a\nb", "a\0b", "a b", "", "ключ"] {
            assert!(Secret::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pools_rotate_round_robin() {
        let formats = [KeyFormat::parse("{key}").unwrap()];
        let src: Arc<str> = Arc::from("test");
        let mut b = StoreBuilder::new(&formats);
        for k in ["key-one-aaaaaaaaaaaaaaa", "key-two-bbbbbbbbbbbbbbb"] {
            b.add_key("p", &Secret::new(k).unwrap(), &src);
        }
        let store = b.build();
        let p = store.profile("p").unwrap();
        let picked: Vec<_> = (0..4)
            .map(|_| p.pick().unwrap().fingerprint().to_owned())
            .collect();
        assert_eq!(picked[0], picked[2]);
        assert_ne!(picked[0], picked[1]);
        let h = p.pick().unwrap().header(FormatId(0)).unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("key-"));
    }
}
