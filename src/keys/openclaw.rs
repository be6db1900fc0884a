//! OpenClaw's auth store as a key source, so that an existing OpenClaw setup works unchanged and
//! keys rotated through OpenClaw are picked up live. OpenClaw 2026.9 keeps it in SQLite (see
//! [`super::openclaw_state`]); older releases in `agents/<agent>/agent/auth-profiles.json`. Both
//! hold the same JSON:
//!
//! ```json
//! {"version": 1, "profiles": {
//!   "openrouter:default": {"type": "api_key", "provider": "openrouter", "key": "sk-or-v1-..."},
//!   "openai:ci": {"type": "api_key", "keyRef": {"source": "env", "id": "OPENAI_API_KEY"}},
//!   "anthropic:me": {"type": "token", "token": "..."}}}
//! ```
//! OAuth profiles hold tokens OpenClaw refreshes itself; they are not keys to inject. A profile
//! marked `"setup": {"replacement": true}` is one that re-onboarding left behind, inactive.

use std::path::Path;

use serde_json::Value;

use super::Secret;
use crate::text::redact_quoted;

/// What one OpenClaw profile gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Key(Secret),
    /// `keyRef`/`tokenRef` with source `env`: the variable's name.
    Env(String),
    /// `keyRef`/`tokenRef` with source `file`, `exec` or `store`: resolved through the provider
    /// of that name in `secrets.providers` of `openclaw.json`, or OpenClaw's secret store (see
    /// [`super::openclaw_refs`]).
    Ref(SecretRef),
    /// An `exec` ref made into the command that gives it.
    Command(super::command::CommandSpec),
    /// Not a key keyproxy can use, and why.
    Skipped(String),
}

/// A SecretRef to a `file`, `exec` or `store` provider.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretRef {
    pub source: String,
    pub provider: String,
    pub id: String,
}

/// A parsed store: profile ids with what each gives, in the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub profiles: Vec<(String, Entry)>,
}

pub fn parse_store(text: &str, path: &Path) -> Result<Store, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "{}:{}:{}: {}",
            path.display(),
            e.line(),
            e.column(),
            redact_quoted(&e.to_string())
        )
    })?;
    let Some(profiles) = root.get("profiles").and_then(Value::as_object) else {
        return Err(format!(
            "{}: no \"profiles\" object; is this an OpenClaw auth-profiles.json?",
            path.display()
        ));
    };
    let mut out = Vec::with_capacity(profiles.len());
    for (id, p) in profiles {
        let entry = entry(p).map_err(|why| format!("{}: profile '{id}': {why}", path.display()))?;
        out.push((id.clone(), entry));
    }
    Ok(Store { profiles: out })
}

fn entry(p: &Value) -> Result<Entry, String> {
    if p.pointer("/setup/replacement").and_then(Value::as_bool) == Some(true) {
        return Ok(Entry::Skipped(
            "an inactive profile left by re-onboarding (setup.replacement)".into(),
        ));
    }
    let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
    let (field, reference) = match kind {
        "api_key" => ("key", "keyRef"),
        "token" => ("token", "tokenRef"),
        "oauth" => {
            return Ok(Entry::Skipped(
                "an OAuth profile, which OpenClaw refreshes itself; not a key to inject".into(),
            ))
        }
        other => {
            return Ok(Entry::Skipped(format!(
                "type {other:?} is not api_key or token"
            )))
        }
    };
    if let Some(text) = p.get(field).and_then(Value::as_str) {
        return Secret::new(text)
            .map(Entry::Key)
            .map_err(|why| format!("{field} {why}"));
    }
    let Some(r) = p.get(reference) else {
        return Ok(Entry::Skipped(format!(
            "has neither {field} nor {reference}"
        )));
    };
    let provider = r
        .get("provider")
        .and_then(Value::as_str)
        .unwrap_or("default");
    match (
        r.get("source").and_then(Value::as_str),
        r.get("id").and_then(Value::as_str),
    ) {
        (Some("env"), Some(var)) => Ok(Entry::Env(var.to_owned())),
        (Some(source @ ("file" | "exec" | "store")), Some(id)) => Ok(Entry::Ref(SecretRef {
            source: source.to_owned(),
            provider: provider.to_owned(),
            id: id.to_owned(),
        })),
        (Some(source), _) => Ok(Entry::Skipped(format!(
            "{reference} source {source:?} is not one keyproxy reads (env, file, exec, store)"
        ))),
        _ => Ok(Entry::Skipped(format!("{reference} has no source and id"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_profile_is_read() {
        let text = r#"{"version":1,"profiles":{
            "openrouter:default":{"type":"api_key","provider":"openrouter","key":"sk-or-v1-0123456789abcdef"},
            "openai:ci":{"type":"api_key","keyRef":{"source":"env","id":"OPENAI_API_KEY"}},
            "anthropic:me":{"type":"token","token":"tok-0123456789abcdef"},
            "google:me":{"type":"oauth","access":"x","refresh":"y"},
            "openrouter:setup-1":{"type":"api_key","key":"sk-or-v1-left-behind","setup":{"replacement":true}}},
            "order":{},"lastGood":{}}"#;
        let store = parse_store(text, Path::new("auth-profiles.json")).unwrap();
        let get = |id: &str| {
            store
                .profiles
                .iter()
                .find(|(n, _)| n == id)
                .unwrap()
                .1
                .clone()
        };
        assert!(matches!(get("openrouter:default"), Entry::Key(_)));
        assert_eq!(get("openai:ci"), Entry::Env("OPENAI_API_KEY".into()));
        assert!(matches!(get("anthropic:me"), Entry::Key(_)));
        assert!(matches!(get("google:me"), Entry::Skipped(_)));
        assert!(matches!(get("openrouter:setup-1"), Entry::Skipped(_)));
    }

    #[test]
    fn errors_name_the_file_and_profile_but_not_the_key() {
        let err = parse_store(
            r#"{"profiles":{"p":{"type":"api_key","key":"sk-secret\nX: y"}}}"#,
            Path::new("a.json"),
        )
        .unwrap_err();
        assert!(err.starts_with("a.json: profile 'p': key "), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = parse_store(
            "{\"profiles\": {\n  \"p\": \"sk-secret\",,\n}}",
            Path::new("a.json"),
        )
        .unwrap_err();
        assert!(err.starts_with("a.json:2:"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
