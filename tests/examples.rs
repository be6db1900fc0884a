//! The files under config/ are what users copy: they must load as they are, and so must the
//! commented-out blocks once uncommented, except for the example keys and tokens, which are
//! refused by name until replaced.

use std::path::Path;

use keyproxy::keys::parse_keys_file;

fn example(name: &str) -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// Uncomments lines that are commented-out TOML (`# key = ...`, `# [[routes]]`), leaving prose.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_config_loads() {
    let (path, text) = example("keyproxy.toml");
    let config = keyproxy::config::parse(&text, &path).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.keys_files, vec![path.with_file_name("keys.toml")]);

    let all = keyproxy::config::parse(&uncommented(&text), &path).unwrap();
    assert_eq!(
        all.routes.len(),
        2,
        "the commented route must be valid once uncommented"
    );
    assert_eq!(all.routes[1].header.as_str(), "x-api-key");
}

#[test]
fn the_example_keys_file_parses() {
    let (path, text) = example("keys.example.toml");
    // Copied as it is, it must give no key: a placeholder that loads goes upstream.
    let keys = parse_keys_file(&text, &path).unwrap();
    assert!(keys.profiles.is_empty());

    // Uncommented, the placeholder is refused by name.
    let err = parse_keys_file(&uncommented(&text), &path).unwrap_err();
    assert!(err.contains("the example's placeholder"), "{err}");
    let text = uncommented(&text).replace("replace-me-with-your-key", "0123456789abcdef0123456");
    let all = parse_keys_file(&text, &path).unwrap();
    assert_eq!(all.profiles.len(), 5);
    assert_eq!(all.profiles["openrouter:work"].keys.len(), 2);
    let personal = &all.profiles["openrouter:personal"];
    assert_eq!(personal.key_command.as_ref().unwrap().argv[0], "op");
}

#[test]
fn the_two_agent_example_loads_and_resolves_profiles_as_documented() {
    let (path, text) = example("two-agents.toml");
    // As shipped, its tokens are refused: anyone who read the example could use them.
    let err = keyproxy::config::parse(&text, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("client 'openclaw'") && err.contains("example's"),
        "{err}"
    );
    assert!(err.contains("two-agents.toml:"), "{err}");
    let own_digest = "0".repeat(63) + "1";
    let text = text.replace(
        "21528b2600d31fdb7209da6a7fd3b819c5125da3107090bb6c5dbb493c85d4d2",
        &own_digest,
    );
    let err = keyproxy::config::parse(&text, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("client 'claude-code'") && err.contains("example's"),
        "{err}"
    );
    let token = "kp-0123456789abcdef0123456789abcdef";
    let text = text.replace("kp-replace-me-with-openssl-rand-hex-24", token);
    let config = keyproxy::config::parse(&text, &path).unwrap();
    let routes: Vec<(String, String, String)> = config
        .routes
        .iter()
        .map(|r| (r.prefix.clone(), r.upstream.to_string(), r.profile.clone()))
        .collect();
    assert_eq!(
        routes,
        [
            (
                "/".into(),
                "https://openrouter.ai".into(),
                "openrouter:default".into()
            ),
            (
                "/anthropic".into(),
                "https://api.anthropic.com".into(),
                "anthropic:default".into()
            ),
        ]
    );
    let claude = config.clients.find(token).unwrap();
    for route in &config.routes {
        let own = match route.prefix.as_str() {
            "/" => "openrouter:work",
            _ => "anthropic:default",
        };
        assert_eq!(
            claude.profile_for(&route.profile, |p| route.allows(p)),
            Some(own)
        );
    }
    assert_eq!(config.clients.iter().count(), 2);
}
