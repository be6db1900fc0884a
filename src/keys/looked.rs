//! Where keyproxy looked for a profile's key and what each place said, for the local 401 and
//! `check`.

use std::collections::HashMap;

/// What one source said about profiles, for the local 401's "where keyproxy looked".
#[derive(Debug, Clone)]
pub struct Looked {
    /// e.g. `keys file ~/.config/keyproxy/keys.toml` or `environment variable OPENROUTER_API_KEY`.
    pub label: String,
    /// What it says of a profile it does not mention: `no such profile`, `not found`, an error.
    pub absent: String,
    /// Only this profile is looked for here (the env var fills one profile).
    pub only_for: Option<String>,
    /// What it says of profiles it mentions but could not fill (`environment variable FOO
    /// (key_env) is not set`).
    pub specific: HashMap<String, String>,
}

/// Where keyproxy looked for a profile's key and what it found there, for the local 401.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LookedAt {
    pub source: String,
    pub result: String,
}

pub fn looked_list(looked: &[LookedAt]) -> String {
    if looked.is_empty() {
        return "no key source is configured".into();
    }
    let parts: Vec<String> = looked
        .iter()
        .map(|l| format!("{} ({})", l.source, l.result))
        .collect();
    parts.join(", ")
}
