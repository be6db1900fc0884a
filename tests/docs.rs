//! The documentation keeps up with the code: docs/troubleshooting.md names every
//! `x-keyproxy-error` code and every start-up and reload error, the config and key source
//! errors it quotes are what the binary prints, and every link between the README and docs/
//! leads to a file and a heading that exist.

mod support;
use support::*;

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A text as a reader sees it: backticks and line breaks gone, spaces single.
fn plain(text: &str) -> String {
    text.replace('`', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn troubleshooting() -> String {
    plain(&read("docs/troubleshooting.md"))
}

/// The string literals of a function's body in a Rust source.
fn literals_of(source: &str, signature: &str) -> Vec<String> {
    let start = source
        .find(signature)
        .unwrap_or_else(|| panic!("no {signature}"));
    let body = &source[start..];
    let end = body.find("\n    }\n").expect("the function ends");
    body[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_x_keyproxy_error_code_is_in_troubleshooting() {
    let codes = literals_of(&read("src/proxy/error.rs"), "pub fn reason(&self)");
    assert!(codes.len() >= 20, "read too few codes: {codes:?}");
    let doc = read("docs/troubleshooting.md");
    let missing: Vec<&String> = codes
        .iter()
        .filter(|c| !doc.contains(&format!("`{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "x-keyproxy-error codes docs/troubleshooting.md does not name: {missing:?}"
    );
}

/// The first clause of each run of words between a format string's placeholders: `cannot listen
/// on {addr}: {source}` gives `cannot listen on`.
fn fixed_parts(format: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    for c in format.chars() {
        match c {
            '{' => {
                depth += 1;
                parts.push(std::mem::take(&mut current));
            }
            '}' => depth -= 1,
            _ if depth == 0 => current.push(c),
            _ => {}
        }
    }
    parts.push(current);
    parts
        .iter()
        .map(|p| p.trim_matches(|c: char| c == ':' || c == ';' || c.is_whitespace()))
        // The first clause names the error; the rest is advice the doc may put its own way.
        .map(|p| plain(p.split([';', ',', '(']).next().unwrap_or_default()))
        .filter(|p| p.chars().filter(|c| c.is_alphabetic()).count() >= 6)
        .collect()
}

/// The Rust string literal `text` starts with (after its opening quote): its text, with a
/// line continuation as one space.
fn literal(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('\n') => {
                    out.push(' ');
                    let rest = chars.as_str().trim_start();
                    chars = rest.chars();
                }
                Some(e) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// The `#[error("...")]` texts of a source file.
fn error_attributes(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("#[error(") {
        rest = &rest[i + "#[error(".len()..];
        if let Some(text) = rest.trim_start().strip_prefix('"') {
            found.push(literal(text));
        }
    }
    found
}

/// The message of every `tracing::error!` and `tracing::warn!` in a source file: the macro's
/// last string literal.
fn logged_problems(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["tracing::error!(", "tracing::warn!("] {
        let mut rest = source;
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            let call = &rest[..rest.find(");").unwrap()];
            if let Some(at) = call.rfind(", \"").map(|i| i + 2).or_else(|| call.find('"')) {
                found.push(literal(&call[at + 1..]));
            }
        }
    }
    found
}

#[test]
fn every_start_up_and_reload_error_is_in_troubleshooting() {
    let doc = troubleshooting();
    let mut missing = Vec::new();
    // The error types of a start and a reload: the config, the upstreams' TLS, the shared
    // store, the listener; and what the reloader logs and keeps as its last error.
    for file in [
        "src/config/mod.rs",
        "src/proxy/upstream.rs",
        "src/proxy/shared/mod.rs",
        "src/server/mod.rs",
        "src/ops/reload.rs",
    ] {
        let source = read(file);
        let mut messages = error_attributes(&source);
        if file == "src/ops/reload.rs" {
            messages.extend(logged_problems(&source));
            messages.extend(
                ["refusing this config", "the reloader stopped on a panic"]
                    .iter()
                    .inspect(|m| assert!(source.contains(*m), "{file} no longer says {m:?}"))
                    .map(|m| m.to_string()),
            );
        }
        for message in messages {
            for part in fixed_parts(&message) {
                if !doc.contains(&part) {
                    missing.push(format!("{file}: {part:?} (of {message:?})"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not name:\n{}",
        missing.join("\n")
    );
}

/// A broken setup, and the words of the error `keyproxy check` prints for it, which
/// docs/troubleshooting.md must quote.
struct Broken {
    config: &'static str,
    keys: &'static str,
    says: &'static str,
}

const BROKEN: &[Broken] = &[
    Broken {
        config: "listen = 127.0.0.1:8787\n",
        keys: "",
        says: "expected newline, `#`",
    },
    Broken {
        config: "listen = \"127.0.0.1:8787\n",
        keys: "",
        says: "invalid basic string",
    },
    Broken {
        config: "lisen = \"127.0.0.1:8787\"\n",
        keys: "",
        says: "unknown field `lisen`, expected one of `listen`",
    },
    Broken {
        config: "[routes]\nprefix = \"/\"\n",
        keys: "",
        says: "[routes] is a single table, but keyproxy takes a list: write [[routes]], once per route",
    },
    Broken {
        config: "listen = 5\n",
        keys: "",
        says: "invalid type: integer `5`, expected a string",
    },
    Broken {
        config: "poll_interval = \"0s\"\n",
        keys: "",
        says: "must be more than zero",
    },
    Broken {
        config: "[[clients]]\nname = \"a\"\ntoken = \"short\"\nprofiles = [\"openrouter:default\"]\n",
        keys: "",
        says: "token is shorter than 16 characters",
    },
    Broken {
        config: "[shared]\nredis = \"http://127.0.0.1:9\"\n",
        keys: "",
        says: "[shared] redis must be a redis:// or rediss:// URL",
    },
    Broken {
        config: "[[routes]]\nprefix = \"/\"\nprovider = \"openrouter\"\nca_file = \"missing.pem\"\n",
        keys: "",
        says: "ca_file",
    },
    Broken {
        config: "",
        keys: "[profiles.\"openrouter:default\"]\nkey = \"sk-or-v1-replace-me-with-your-key-0000000000000000000000000000000000\"\n",
        says: "key is the example's placeholder; put your key in (or run keyproxy keys add openrouter:default)",
    },
    Broken {
        config: "",
        keys: "[profiles.\"openrouter:default\"]\nkey = \"\\\"sk-or-v1-0123456789abcdef0123456789abcdef\\\"\"\n",
        says: "key is in quotes, which are not part of a key; give the key without them",
    },
    Broken {
        config: "",
        keys: "[profiles.\"openrouter:default\"]\nkeyz = \"x\"\n",
        says: "unknown field `keyz`, expected one of `key`, `keys`, `key_env`",
    },
    Broken {
        config: "",
        keys: "[profiles.\"openrouter:work\"]\nkey_env = \"NOT_SET_ANYWHERE\"\n",
        says: "(no such profile)",
    },
    Broken {
        config: "",
        keys: "[profiles.\"openrouter:default\"]\nkey_env = \"NOT_SET_ANYWHERE\"\n",
        says: "(key_env) not set",
    },
    Broken {
        config: "",
        keys: "[profiles.\"openrouter:default\"]\nkey_file = \"missing-secret\"\n",
        says: "not found",
    },
    Broken {
        config: "",
        keys: "[profiles.\"openrouter:default\"]\nkey_command = [\"false\"]\n",
        says: "exited with code 1",
    },
];

#[test]
fn the_config_and_key_errors_troubleshooting_quotes_are_what_check_prints() {
    let doc = troubleshooting();
    for broken in BROKEN {
        let bin = Bin::new();
        let dir = bin.home.path().join("etc");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("keyproxy.toml");
        std::fs::write(
            &config,
            format!("keys_files = [\"keys.toml\"]\n{}", broken.config),
        )
        .unwrap();
        write_private(&dir.join("keys.toml"), broken.keys);
        let mut cmd = bin.command();
        cmd.arg("--config").arg(&config).arg("check");
        let out = run(cmd);
        let said = plain(&format!("{}{}", out.stdout, out.stderr));
        let says = plain(broken.says);
        assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
        assert!(
            said.contains(&says),
            "check no longer says {says:?} for\n{}{}\nit said:\n{}{}",
            broken.config,
            broken.keys,
            out.stdout,
            out.stderr
        );
        assert!(
            doc.contains(&says),
            "docs/troubleshooting.md does not quote {says:?}"
        );
    }
}

/// GitHub's anchor for a heading: lowercase, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_link_between_the_readme_and_docs_leads_somewhere() {
    let mut pages = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        let folder = Path::new(page).parent().unwrap();
        for link in text.split("](").skip(1) {
            let target = &link[..link.find(')').unwrap_or(link.len())];
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                Path::new(page).to_path_buf()
            } else {
                folder.join(file)
            };
            let Ok(linked) = std::fs::read_to_string(root().join(&file)) else {
                broken.push(format!("{page}: {target}: no file {}", file.display()));
                continue;
            };
            if !fragment.is_empty() && !anchors(&linked).iter().any(|a| a == fragment) {
                broken.push(format!("{page}: {target}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_fits_in_a_sitting() {
    let words = read("README.md").split_whitespace().count();
    assert!(
        words < 3000,
        "README.md has {words} words; move reference text to docs/"
    );
}
