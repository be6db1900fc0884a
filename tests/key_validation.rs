//! A key wrapped in something else (quotes kept by a `.env` line or a Docker `env_file`, a whole
//! `NAME=value` line), far too long (a file or command output read by mistake) or holding
//! whitespace is refused from every source, with the profile and the problem named and never
//! the key, instead of being sent to the provider on every request.

mod support;
use support::*;

/// `keyproxy check` on a config with two keys files and an OpenClaw store in `files`.
fn check(bin: &Bin, files: &[(&str, &str)], env: &[(&str, &str)]) -> Output {
    let dir = bin.home.path().join("etc");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        write_private(&dir.join(name), text);
    }
    let config = dir.join("keyproxy.toml");
    std::fs::write(
        &config,
        format!("listen = \"{}\"\n", nothing_listens()) + "keys_files = [\"inline.toml\", \"others.toml\"]\nopenclaw_auth_profiles = [\"auth.json\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nprofile = \"p\"\n",
    )
    .unwrap();
    let mut cmd = bin.command();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("--config").arg(&config).arg("check");
    let out = run(cmd);
    assert_no_key(&out.stdout);
    assert_no_key(&out.stderr);
    out
}

/// An address no keyproxy answers on, so that `check` compares with no running one (whatever
/// listens on the default port of this machine).
fn nothing_listens() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn quoted_prefixed_and_oversized_keys_are_refused_from_every_source() {
    let quoted = format!("\"{KEY_A}\"");
    let single = format!("'{KEY_A}'\n");
    let assigned = format!("OPENROUTER_API_KEY={KEY_A}");
    let others = "[profiles.\"env:quoted\"]\nkey_env = \"QUOTED\"\n\
        [profiles.\"file:quoted\"]\nkey_file = \"secret.txt\"\n\
        [profiles.\"command:long\"]\nkey_command = [\"sh\", \"-c\", \"head -c 100000 /dev/zero | tr '\\\\0' a\"]\n\
        [profiles.\"env:spaced\"]\nkey_env = \"SPACED\"\n";
    let openclaw = format!(
        r#"{{"version": 1, "profiles": {{"openrouter:oc": {{"type": "api_key", "provider": "openrouter", "key": "{assigned}"}}}}}}"#
    );
    for (inline, problem) in [
        (format!("key = '{quoted}'"), "in quotes"),
        (
            format!("key = \"{assigned}\""),
            "starts with a variable name and =",
        ),
        (
            format!("key = \"{}\"", "k".repeat(5000)),
            "longer than 4 KiB",
        ),
    ] {
        let bin = Bin::new();
        let out = check(
            &bin,
            &[
                (
                    "inline.toml",
                    &format!("[profiles.\"file:inline\"]\n{inline}\n"),
                ),
                ("others.toml", others),
                ("secret.txt", &single),
                ("auth.json", &openclaw),
            ],
            &[
                ("QUOTED", &quoted),
                ("SPACED", &format!("{KEY_A} \t")),
                ("OPENROUTER_API_KEY", &assigned),
            ],
        );
        assert_eq!(out.code, Some(1), "{}", out.stdout);
        let text = format!("{}{}", out.stdout, out.stderr);
        for (profile, why) in [
            ("file:inline", problem),
            ("env:quoted", "in quotes"),
            ("file:quoted", "in quotes"),
            ("command:long", "longer than 4 KiB"),
            ("env:spaced", "contains a space"),
            ("openrouter:oc", "starts with a variable name and ="),
            ("openrouter:default", "starts with a variable name and ="),
        ] {
            let named = text
                .lines()
                .flat_map(|l| l.split("; "))
                .any(|part| part.contains(&format!("profile '{profile}'")) && part.contains(why));
            assert!(named, "{profile}: {why} not said:\n{text}");
        }
        assert!(!text.contains("kkkkkkkkkkkkkkkk"), "{text}");
    }
}

#[test]
fn keys_add_refuses_what_the_loader_would() {
    let bin = Bin::new();
    let file = bin.home.path().join("keys.toml");
    for (given, why) in [
        (format!("\"{KEY_A}\"\n"), "in quotes"),
        (format!("'{KEY_A}'"), "in quotes"),
        (format!("OPENROUTER_API_KEY={KEY_A}\n"), "variable name"),
        ("k".repeat(100_000), "longer than 4 KiB"),
    ] {
        let mut cmd = bin.command();
        cmd.args(["keys", "add", "p", "--file"]).arg(&file);
        let out = run_with_stdin(cmd, &given);
        let stderr = out.stderr;
        assert_eq!(out.code, Some(1), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert_no_key(&stderr);
        assert!(!file.exists(), "written for {why}");
    }
}
