//! One typed report of profiles and their keys, by fingerprint, which `status`, `check` and the
//! key gauges of `metrics` all render. Never a key.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::keys::health::KeyState;
use crate::proxy::Snapshot;

/// A profile: every one a source declared or a route uses, with or without keys.
#[derive(Debug, Serialize)]
pub struct ProfileReport {
    pub keys: Vec<KeyReport>,
}

#[derive(Debug, Serialize)]
pub struct KeyReport {
    pub fingerprint: String,
    pub source: String,
    pub state: &'static str,
    /// Seconds until a resting key wakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resting_for_s: Option<u64>,
    /// The status that put it to rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rested_after: Option<u16>,
    /// Minutes since an answer last came to the key (0: this minute); absent for never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_minutes_ago: Option<u64>,
}

impl ProfileReport {
    /// Keys awake and keys resting.
    pub fn counts(&self) -> (usize, usize) {
        let resting = self.keys.iter().filter(|k| k.state == "resting").count();
        (self.keys.len() - resting, resting)
    }
}

/// The profiles of `snapshot`, by name.
pub fn profiles(snapshot: &Snapshot) -> BTreeMap<String, ProfileReport> {
    let minute = crate::metrics::traffic::minute_now();
    let mut out: BTreeMap<String, ProfileReport> = snapshot
        .keys
        .profiles()
        .map(|(name, p)| {
            let keys = p
                .keys()
                .iter()
                .map(|k| {
                    let (state, resting_for_s, rested_after) = match k.health().state() {
                        KeyState::Active => ("active", None, None),
                        KeyState::Resting { left, reason } => (
                            "resting",
                            Some(left.as_secs_f64().ceil() as u64),
                            Some(reason),
                        ),
                    };
                    KeyReport {
                        fingerprint: k.fingerprint().to_owned(),
                        source: k.source().to_owned(),
                        state,
                        resting_for_s,
                        rested_after,
                        used_minutes_ago: k.health().used_minutes_ago(minute),
                    }
                })
                .collect();
            (name.to_owned(), ProfileReport { keys })
        })
        .collect();
    for route in snapshot.config.routes.iter() {
        out.entry(route.profile.clone())
            .or_insert_with(|| ProfileReport { keys: Vec::new() });
    }
    out
}
