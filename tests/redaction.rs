//! Red team: a secret manager's CLI that fails with a key in its stderr, in every shape tools
//! print one (quoted, bracketed, followed by punctuation, after a tab, in a Python dict, inside a
//! dotted token), must not put that key in any output: the serve log, `/_keyproxy/status`,
//! `keyproxy status`, `keyproxy check` (text and JSON), nor the 401 an agent gets. A key keyproxy
//! knows (a command's last good key) is hidden even when it does not look like a key.

mod support;
use std::path::Path;

use support::*;

/// Lines a failing `key_command` prints on stderr; `KEY` stands for a key keyproxy never saw.
const SHAPES: &[&str] = &[
    "error: key KEY was revoked",
    "error: key 'KEY' was revoked",
    "error: key \"KEY\" was revoked",
    "error: key `KEY` was revoked",
    "error: key (KEY) was revoked",
    "error: key <KEY> was revoked",
    "error: key [KEY] was revoked",
    "error: key KEY, which was revoked",
    "error: revoked key KEY.",
    "error:\tKEY",
    "{'api_key': 'KEY', 'status': 'revoked'}",
    "{\"error\":{\"message\":\"key KEY revoked\"}}",
    "error: token eyJhbGciOiJIUzI1NiJ9.KEY.c2lnbmF0dXJl expired",
    "error: key=KEY&state=revoked",
    "KEY",
    "Authorization: Bearer KEY!",
    "error: key:KEY;revoked",
];

/// A key that does not look like one (its parts, split at `/`, are short): only knowing it
/// hides it.
const ODD_KEY: &str = "odd/SECRETMIDDLE/key.v9~2024";
const ODD_FP: &str = "...2024";

fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Writes a config whose profile `openrouter:sN` runs a command failing with shape N, and
/// `openrouter:lastgood` one that prints [`ODD_KEY`] until `revoke` exists, then fails quoting it.
fn setup(bin: &Bin, upstream: &str) -> std::path::PathBuf {
    let dir = bin.config_dir();
    let mut keys = String::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        let line = dir.join(format!("shape{i}.txt"));
        std::fs::write(&line, format!("{}\n", shape.replace("KEY", KEY_B))).unwrap();
        let command = script(
            &dir,
            &format!("get-s{i}"),
            &format!("cat '{}' >&2\nexit 1", line.display()),
        );
        keys += &format!("[profiles.\"openrouter:s{i}\"]\nkey_command = [\"{command}\"]\n");
    }
    std::fs::write(dir.join("odd.txt"), ODD_KEY).unwrap();
    std::fs::write(
        dir.join("odd-err.txt"),
        format!("error: key '{ODD_KEY}' was revoked\n"),
    )
    .unwrap();
    let d = dir.display();
    let lastgood = script(
        &dir,
        "get-lastgood",
        &format!(
            "if [ -e '{d}/revoke' ]; then cat '{d}/odd-err.txt' >&2; exit 1; fi\ncat '{d}/odd.txt'"
        ),
    );
    // A command line that holds the key itself: the source's name must not show it.
    keys += &format!(
        "[profiles.\"openrouter:inline\"]\nkey_command = [\"printf\", \"%s\", \"{KEY_A}\"]\n"
    );
    keys += &format!(
        "[profiles.\"openrouter:lastgood\"]\nkey_command = [\"{lastgood}\"]\nrefresh = \"300ms\"\n"
    );
    write_private(&dir.join("keys.toml"), &keys);
    std::fs::write(
        dir.join("keyproxy.toml"),
        format!(
            "poll_interval = \"1h\"\nstate_dir = \"state\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:s0\"\n"
        ),
    )
    .unwrap();
    dir
}

async fn cli(bin: &Bin, url: &str, args: &[&str]) -> Output {
    let mut cmd = bin.command();
    cmd.arg("--config")
        .arg(bin.config_dir().join("keyproxy.toml"))
        .args(["--listen", url.trim_start_matches("http://")])
        .args(args);
    tokio::task::spawn_blocking(move || run(cmd)).await.unwrap()
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(KEY_B), "{what}: a full key leaked:\n{text}");
    assert!(!text.contains(KEY_A), "{what}: a full key leaked:\n{text}");
    assert!(
        !text.contains("SECRETMIDDLE"),
        "{what}: part of a key leaked:\n{text}"
    );
    assert!(
        !text.contains("bbbbbbbbbb"),
        "{what}: part of a key leaked:\n{text}"
    );
}

#[tokio::test]
async fn no_key_from_a_failing_commands_stderr_reaches_any_output() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let dir = setup(&bin, &up.url);
        let mut served = Served::start(bin.command()).await;

        // The last good key is in use; then the command starts failing, quoting it.
        std::fs::write(dir.join("revoke"), "").unwrap();
        served.wait_for_log("get-lastgood exited with code 1").await;
        served.wait_for_log("reload kept the last good keys").await;

        let status = get(&format!("{}/_keyproxy/status", served.url), &[])
            .await
            .text();
        assert_hidden("/_keyproxy/status", &status);
        assert!(
            status.contains("sk-or-v1...22222222"),
            "the masked key is shown by its fingerprint: {status}"
        );
        assert!(
            status.contains(&format!("'{ODD_FP}' was revoked")),
            "the known key is shown by its fingerprint: {status}"
        );
        // The last good key is still served, and so is the key on a command line.
        assert!(status.contains(ODD_FP), "{status}");
        assert!(
            status.contains(&format!("key_command printf %s {FP_A}")),
            "{status}"
        );

        for i in 0..SHAPES.len() {
            let profile = format!("openrouter:s{i}");
            let reply = get(
                &format!("{}/v1/models", served.url),
                &[("x-keyproxy-profile", &profile)],
            )
            .await;
            assert_eq!(reply.status, 401, "{profile}: {}", reply.text());
            assert!(
                reply.text().contains("exited with code 1"),
                "{}",
                reply.text()
            );
            assert_hidden(&format!("401 body for {profile}"), &reply.text());
        }

        let out = cli(&bin, &served.url, &["status"]).await;
        assert_hidden("keyproxy status", &format!("{}{}", out.stdout, out.stderr));
        assert!(out.stdout.contains("exited with code 1"), "{}", out.stdout);

        // check runs each command itself, as a new process that never saw the last good key; it
        // is run with the command printing it again (nothing can hide a key that neither looks
        // like one nor was ever seen).
        std::fs::remove_file(dir.join("revoke")).unwrap();
        for args in [&["check"][..], &["check", "--json"]] {
            let out = cli(&bin, &served.url, args).await;
            let all = format!("{}{}", out.stdout, out.stderr);
            assert_hidden(&args.join(" "), &all);
            assert!(all.contains("sk-or-v1...22222222"), "{all}");
        }

        let (_, _, log) = served.stop().await;
        let log = log.join("\n");
        assert_hidden("serve log", &log);
        assert!(log.contains(&format!("'{ODD_FP}' was revoked")), "{log}");
    })
    .await;
}
