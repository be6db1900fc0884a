//! The errors a newcomer meets first say what is wrong and the fix, on the real binary: a TOML
//! syntax error keeps what TOML expected, `[routes]` is told to be `[[routes]]`, a host name in
//! `--listen` is resolved or refused with the reason, a profile without a provider part is
//! warned, and `openclaw status` says a folder that is not there is absent, never ok.

mod support;
use support::*;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

fn check_with(bin: &Bin, config: &str, keys: &str) -> Output {
    let dir = bin.home.path().join("etc");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keyproxy.toml");
    std::fs::write(&path, format!("keys_files = [\"keys.toml\"]\n{config}")).unwrap();
    write_private(&dir.join("keys.toml"), keys);
    let mut cmd = bin.command();
    cmd.arg("--config").arg(&path).arg("check");
    run(cmd)
}

#[test]
fn a_toml_syntax_error_keeps_the_characters_toml_expected() {
    let out = check_with(&Bin::new(), "listen = 127.0.0.1:8787\n", "");
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout
            .contains("keyproxy.toml:2:15: expected newline, `#`"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains('…'), "{}", out.stdout);
}

#[test]
fn a_single_routes_table_is_told_to_be_a_list() {
    let out = check_with(&Bin::new(), "[routes]\nprefix = \"/\"\n", "");
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout.contains(
            "keyproxy.toml:2:1: [routes] is a single table, but keyproxy takes a list: write [[routes]], once per route"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_profile_without_a_provider_part_is_warned() {
    let key = "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef";
    let out = check_with(
        &Bin::new(),
        "",
        &format!("[profiles.default]\nkey = \"{key}\"\n"),
    );
    assert!(
        out.stdout.contains(
            "profile 'default' has no provider part, so no route injects its keys; name it 'openrouter:default' (provider:name) in the keys file"
        ),
        "{}",
        out.stdout
    );
    assert_no_key(&out.stdout);
}

#[test]
fn a_host_name_in_listen_is_resolved() {
    let bin = Bin::new();
    let port = nobody_listens().port();
    let mut child = bin
        .command_with_config_listen()
        .args(["serve", "--listen", &format!("localhost:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wanted = format!("keyproxy is listening on http://127.0.0.1:{port}");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + LIMIT;
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let found = line.contains(&wanted);
        seen.push(line);
        if found {
            break;
        }
    }
    kill(child.id(), "TERM");
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains(&wanted)),
        "wanted {wanted:?}; stderr:\n{}",
        seen.join("\n")
    );
}

#[test]
fn a_listen_host_that_does_not_resolve_is_refused_with_the_reason() {
    let bin = Bin::new();
    let mut cmd = bin.command_with_config_listen();
    cmd.args(["serve", "--listen", "no-such-host.invalid:8787"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot resolve the host of listen address no-such-host.invalid:8787 (")
            && out
                .stderr
                .contains("give an IP address and port, like 127.0.0.1:8787"),
        "{}",
        out.stderr
    );
    let mut cmd = bin.command_with_config_listen();
    cmd.args(["serve", "--listen", "localhost"]);
    let out = run(cmd);
    assert!(
        out.stderr
            .contains("listen address localhost has no port; write HOST:PORT, like 127.0.0.1:8787"),
        "{}",
        out.stderr
    );
}

#[test]
fn openclaw_status_says_a_missing_folder_is_absent_not_ok() {
    let bin = Bin::new();
    let mut cmd = bin.command_with_config_listen();
    cmd.args(["openclaw", "status"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("  absent ~/.openclaw (used by the openclaw CLI in this shell)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "no OpenClaw state folder exists, so there is nothing to check: set up OpenClaw (openclaw onboard)"
        ),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("  ok "), "{}", out.stdout);
    assert!(out.stdout.ends_with("FAIL\n"), "{}", out.stdout);
}
