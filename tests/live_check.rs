//! `keyproxy check --live`: each preset's read-only endpoint asked with each key, through the
//! route's upstream (TLS with its ca_file included), and each answer named by fingerprint.

mod support;
use std::sync::Arc;

use support::*;

fn key(tag: &str) -> String {
    format!("sk-test-{}{tag}", "x".repeat(32))
}

/// A provider that answers by the key it gets: the key's last 8 characters say how.
fn provider() -> Handler {
    Arc::new(|r| {
        let h = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (path, key) = (
            r.uri.path(),
            h("authorization")
                .map(|a| a.trim_start_matches("Bearer ").to_owned())
                .or_else(|| h("x-api-key"))
                .or_else(|| h("x-goog-api-key"))
                .unwrap_or_default(),
        );
        let expected = ["/api/v1/key", "/v1/models", "/v1beta/models"];
        if !expected.contains(&path)
            || (h("x-api-key").is_some() && h("anthropic-version").is_none())
        {
            return reply(400, r#"{"error":{"message":"wrong request"}}"#);
        }
        match &key[key.len().saturating_sub(8)..] {
            "0invalid" => reply(401, r#"{"error":{"message":"No auth credentials found"}}"#),
            "0nocredt" => reply(402, r#"{"error":{"message":"Insufficient credits"}}"#),
            "0limited" => reply(429, r#"{"error":{"message":"Rate limit exceeded"}}"#),
            "0spent00" => reply(
                200,
                r#"{"data":{"label":"spent","limit":5,"limit_remaining":0,"usage":5,"is_free_tier":false}}"#,
            ),
            _ if path == "/api/v1/key" => reply(
                200,
                r#"{"data":{"label":"my laptop","limit":10,"limit_remaining":7.5,"usage":2.5,"is_free_tier":false}}"#,
            ),
            _ => reply(200, r#"{"data":[]}"#),
        }
    })
}

async fn check_live(bin: &Bin) -> Output {
    let mut cmd = bin.command();
    cmd.arg("--config")
        .arg(bin.config_dir().join("keyproxy.toml"));
    cmd.args(["check", "--live"]);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    for tag in ["00000ok1", "0invalid", "0nocredt", "0limited", "0spent00"] {
        assert!(
            !out.stdout.contains(&key(tag)),
            "a key leaked: {}",
            out.stdout
        );
    }
    out
}

#[tokio::test]
async fn every_preset_and_every_outcome_is_named_by_fingerprint() {
    bounded(async {
        let bin = Bin::new();
        let dir = bin.config_dir();
        let tls = Mock::start_tls(provider(), &dir.join("ca.pem")).await;
        let plain = Mock::start(provider()).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let route = |prefix: &str, up: &str, provider: &str, profile: &str| {
            let preset = if provider.is_empty() { String::new() } else { format!("provider = \"{provider}\"\n") };
            format!("[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{up}\"\n{preset}profile = \"{profile}\"\n")
        };
        let config = [
            "keys_files = [\"keys.toml\"]\n".to_owned(),
            route("/", &tls.url, "openrouter", "openrouter:default") + "ca_file = \"ca.pem\"\n",
            route("/openai", &plain.url, "openai", "openai:default"),
            route("/anthropic", &plain.url, "anthropic", "anthropic:default"),
            route("/gemini", &plain.url, "gemini", "gemini:default"),
            route("/down", &format!("http://{closed}"), "openai", "openai:down") + "profiles = []\n",
            route("/other", &plain.url, "", "custom:x"),
        ]
        .concat();
        std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
        let keys = format!(
            "[profiles.\"openrouter:default\"]\nkeys = [\"{}\", \"{}\", \"{}\"]\n[profiles.\"openai:default\"]\nkeys = [\"{}\", \"{}\", \"{}\"]\n[profiles.\"anthropic:default\"]\nkey = \"{}\"\n[profiles.\"gemini:default\"]\nkey = \"{}\"\n[profiles.\"openai:down\"]\nkey = \"{}\"\n[profiles.\"custom:x\"]\nkey = \"{}\"\n",
            key("00000ok1"), key("0spent00"), key("0invalid"),
            key("00000ok1"), key("0nocredt"), key("0limited"),
            key("00000ok1"), key("0invalid"), key("00000ok1"), key("00000ok1"),
        );
        write_private(&dir.join("keys.toml"), &keys);

        let out = check_live(&bin).await;
        let fp = |tag: &str| keyproxy::keys::fingerprint(&key(tag));
        let line = |route: &str, profile: &str, tag: &str| {
            let start = format!("  {route} {profile} {}: ", fp(tag));
            out.stdout.lines().find(|l| l.starts_with(&start)).unwrap_or_else(|| panic!("no line {start:?} in:\n{}", out.stdout)).to_owned()
        };
        let ok = line("/", "openrouter:default", "00000ok1");
        assert!(ok.contains(": ok (label my laptop, limit $10.00, remaining $7.50, usage $2.50, free tier no)"), "{ok}");
        assert!(line("/", "openrouter:default", "0spent00").contains(": no credit"));
        assert!(line("/", "openrouter:default", "0invalid").contains(": invalid (401 Unauthorized: No auth credentials found)"));
        assert!(line("/openai", "openai:default", "00000ok1").ends_with(": ok"));
        assert!(line("/openai", "openai:default", "0nocredt").contains(": no credit (402"));
        assert!(line("/openai", "openai:default", "0limited").contains(": rate limited (429"));
        assert!(line("/anthropic", "anthropic:default", "00000ok1").ends_with(": ok"));
        assert!(line("/gemini", "gemini:default", "0invalid").contains(": invalid"));
        assert!(line("/down", "openai:down", "00000ok1").contains(": unreachable (") );
        assert!(out.stdout.contains("/other -> "), "{}", out.stdout);
        assert!(out.stdout.contains("no live check"), "{}", out.stdout);
        assert!(out.stdout.contains("problem: route /gemini: no key of its profile 'gemini:default' passed the live check"), "{}", out.stdout);
        assert_eq!(out.code, Some(1), "{}", out.stdout);
        // Each key asked once per route, through the route's upstream only.
        assert_eq!(tls.count(), 3);
    })
    .await;
}

#[tokio::test]
async fn check_live_passes_when_every_default_profile_has_a_good_key() {
    bounded(async {
        let bin = Bin::new();
        let dir = bin.config_dir();
        let up = Mock::start(provider()).await;
        let config = format!("keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprovider = \"openrouter\"\nprofile = \"openrouter:default\"\n", up.url);
        std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
        let keys = format!("[profiles.\"openrouter:default\"]\nkeys = [\"{}\", \"{}\"]\n", key("0invalid"), key("00000ok1"));
        write_private(&dir.join("keys.toml"), &keys);
        let out = check_live(&bin).await;
        assert_eq!(out.code, Some(0), "{}", out.stdout);
        assert!(out.stdout.contains(": invalid"), "{}", out.stdout);
    })
    .await;
}
