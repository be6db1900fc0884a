//! `key_command`: keys printed by a secret manager's CLI. Real scripts stand in for `op`,
//! `pass` or `vault`: they print a key, fail, hang, print nothing or print a CR, and the key
//! they print rotates on refresh and on SIGHUP.

mod support;
use std::path::Path;

use support::*;

/// An executable shell script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn config(upstream: &str) -> String {
    format!(
        "poll_interval = \"1h\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"p\"\n"
    )
}

fn keys(command: &str, extra: &str) -> String {
    format!("[profiles.p]\nkey_command = [\"{command}\"]\n{extra}")
}

/// Starts keyproxy whose profile `p` runs `body` as its key command; `key.txt` holds KEY_A.
async fn with_command(up: &Mock, body: &str, extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), KEY_A).unwrap();
    let command = script(dir.path(), "get-key", body);
    let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys(&command, extra))]).await;
    // The script's folder lives as long as the test.
    std::mem::forget(dir);
    proxy
}

/// The folder of the script `with_command` wrote, where `key.txt` is.
fn script_dir(proxy: &Proxy) -> std::path::PathBuf {
    let keys = std::fs::read_to_string(proxy.path("keys.toml")).unwrap();
    let script = Path::new(keys.split('"').nth(1).unwrap());
    script.parent().unwrap().to_path_buf()
}

fn status_text(proxy: &Proxy) -> String {
    let log = proxy.status();
    let text = format!("{:?}", log.last_error);
    assert_no_key(&text);
    text
}

#[tokio::test]
async fn the_key_a_command_prints_is_injected() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let dir = tempfile::tempdir().unwrap();
        let command = script(dir.path(), "op", &format!("printf '%s\\n' '{KEY_A}'"));
        let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys(&command, ""))]).await;
        assert_eq!(proxy.keys_of("p"), [FP_A]);
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_A}").as_str()
        );
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .text();
        assert!(status.contains("\"kind\":\"key_command\""), "{status}");
        assert_no_key(&status);
    })
    .await;
}

#[tokio::test]
async fn a_failing_command_is_named_with_its_exit_code_and_the_last_good_key_stays() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        // Like a secret manager that quotes what it found in its error: the key must not show.
        let body = "cd \"$(dirname \"$0\")\"\nif [ -f fail ]; then echo \"denied for \\\"$(cat key.txt)\\\" and $(cat key.txt)\" >&2; exit 3; fi\ncat key.txt";
        let proxy = with_command(&up, body, "refresh = \"1h\"\n").await;
        assert_eq!(proxy.keys_of("p"), [FP_A]);
        std::fs::write(script_dir(&proxy).join("fail"), "").unwrap();
        let reload = proxy.running.reloader();
        reload
            .send(keyproxy::ops::reload::ReloadRequest {
                reason: "SIGHUP",
                done: None,
            })
            .await
            .unwrap();
        proxy
            .wait_until(|_| proxy.status().last_error.is_some())
            .await;
        let error = status_text(&proxy);
        assert!(error.contains("profile 'p'"), "{error}");
        assert!(error.contains("get-key exited with code 3"), "{error}");
        assert!(error.contains("denied for"), "{error}");
        assert!(error.contains("keeping the key it printed before"), "{error}");
        assert_eq!(proxy.keys_of("p"), [FP_A]);
    })
    .await;
}

#[tokio::test]
async fn a_command_that_hangs_is_killed_at_its_timeout_with_what_it_started() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let body = "cd \"$(dirname \"$0\")\"\nsleep 60 &\necho $! > sleeper.pid\nwait";
        let proxy = with_command(&up, body, "timeout = \"500ms\"\n").await;
        assert!(proxy.keys_of("p").is_empty());
        let error = status_text(&proxy);
        assert!(
            error.contains("did not finish within 500ms; killed it"),
            "{error}"
        );
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        assert!(
            reply.text().contains("did not finish within 500ms"),
            "{}",
            reply.text()
        );
        assert_eq!(up.count(), 0);
        // The whole process group went, not only the shell.
        let pid = std::fs::read_to_string(script_dir(&proxy).join("sleeper.pid")).unwrap();
        let proc = format!("/proc/{}", pid.trim());
        while Path::new(&proc).exists()
            && !std::fs::read_to_string(format!("{proc}/stat")).is_ok_and(|s| s.contains(") Z "))
        {
            // No readiness signal exists for another process's end.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_command_that_prints_nothing_or_a_bad_key_fails_without_quoting_it() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = with_command(&up, "exit 0", "").await;
        assert!(proxy.keys_of("p").is_empty());
        assert!(status_text(&proxy).contains("get-key printed nothing"));

        let body = "printf 'sk-or-v1-SECRETMIDDLE\\rrest-of-it\\n'";
        let proxy = with_command(&up, body, "").await;
        assert!(proxy.keys_of("p").is_empty());
        let error = status_text(&proxy);
        assert!(error.contains("printed a key that contains"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn a_key_ending_in_crlf_loses_its_line_end() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = with_command(&up, &format!("printf '{KEY_B}\\r\\n'"), "").await;
        assert_eq!(proxy.keys_of("p"), [FP_B]);
    })
    .await;
}

#[tokio::test]
async fn the_key_rotates_on_refresh() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let body = "cat \"$(dirname \"$0\")/key.txt\"";
        let proxy = with_command(&up, body, "refresh = \"100ms\"\n").await;
        assert_eq!(proxy.keys_of("p"), [FP_A]);
        std::fs::write(script_dir(&proxy).join("key.txt"), KEY_B).unwrap();
        proxy.wait_for_key("p", FP_B).await;
        assert_eq!(proxy.status().last_trigger, "key_command");
    })
    .await;
}

#[tokio::test]
async fn sighup_runs_the_command_again() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(dir.join("key.txt"), KEY_A).unwrap();
        let command = script(&dir, "get-key", "cat \"$(dirname \"$0\")/key.txt\"");
        std::fs::write(dir.join("keys.toml"), keys(&command, "refresh = \"1h\"\n")).unwrap();
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        let mut served = Served::start(bin.command()).await;
        std::fs::write(dir.join("key.txt"), KEY_B).unwrap();
        served.signal("HUP");
        served.wait_for_log("\"trigger\":\"key_command\"").await;
        let reply = get(&format!("{}/v1/models", served.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received().last().unwrap().headers["authorization"],
            format!("Bearer {KEY_B}").as_str()
        );
        let (_, stdout, log) = served.stop().await;
        assert_no_key(&stdout);
        assert_no_key(&log.join("\n"));
    })
    .await;
}

#[test]
fn bad_settings_name_the_line_and_profile() {
    let path = Path::new("keys.toml");
    let err = keyproxy::keys::parse_keys_file(
        "[profiles.p]\nkey_command = [\"op\"]\nrefresh = \"soon\"\n",
        path,
    )
    .unwrap_err();
    assert!(err.starts_with("keys.toml:3:"), "{err}");
    assert!(err.contains("profile 'p': refresh"), "{err}");
    let err =
        keyproxy::keys::parse_keys_file("[profiles.p]\nkey_command = []\n", path).unwrap_err();
    assert!(err.contains("key_command needs a program"), "{err}");
    let err =
        keyproxy::keys::parse_keys_file("[profiles.p]\ntimeout = \"1s\"\n", path).unwrap_err();
    assert!(err.contains("apply to key_command"), "{err}");
}

/// Processes whose command line is `sleep <marker>`.
fn sleeps(marker: &str) -> usize {
    let wanted = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
        .count()
}

/// Entries of a /proc folder; `None` when it cannot be read (keyproxy is not dumpable, so only
/// root reads its descriptors).
fn count_entries(path: &str) -> Option<usize> {
    std::fs::read_dir(path).ok().map(Iterator::count)
}

/// Waits (polling a file the command appends to) until the command has run `n` times.
async fn runs_reach(path: &Path, n: usize) {
    loop {
        let runs = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count();
        if runs >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_command_that_leaves_a_daemon_holding_stdout_is_served_and_leaks_nothing() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        let runs = dir.join("runs");
        let marker = "987651";
        // An agent-style helper: prints the key and leaves a daemon on the same stdout.
        let command = script(
            &dir,
            "get-key",
            &format!(
                "echo run >> '{}'\nprintf '%s\\n' '{KEY_A}'\nsleep {marker} &",
                runs.display()
            ),
        );
        write_private(
            &dir.join("keys.toml"),
            &keys(&command, "refresh = \"200ms\"\ntimeout = \"5s\"\n"),
        );
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        let served = Served::start(bin.command()).await;
        let pid = served.child.id().unwrap();

        let reply = get(&format!("{}/v1/models", served.url), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_A}").as_str()
        );

        let (tasks, fds) = (format!("/proc/{pid}/task"), format!("/proc/{pid}/fd"));
        runs_reach(&runs, 3).await;
        let before = (count_entries(&tasks), count_entries(&fds));
        runs_reach(&runs, 13).await;
        let after = (count_entries(&tasks), count_entries(&fds));
        // A run in progress holds two pipes for a moment; ten runs that leaked would hold more.
        let grew = |b: Option<usize>, a: Option<usize>, by: usize| match (b, a) {
            (Some(b), Some(a)) => a > b + by,
            _ => false,
        };
        assert!(before.0.is_some(), "/proc/{pid}/task must be readable");
        assert!(
            !grew(before.0, after.0, 1),
            "threads grew: {before:?} -> {after:?}"
        );
        assert!(
            !grew(before.1, after.1, 2),
            "descriptors grew: {before:?} -> {after:?}"
        );
        // A daemon killed a moment ago may not have died yet while the next run starts one:
        // leaked ones would stay, so at most one is left soon.
        let mut left = sleeps(marker);
        for _ in 0..100 {
            if left <= 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            left = sleeps(marker);
        }
        assert!(
            left <= 1,
            "the daemons of finished runs were left running: {left}"
        );
        served.stop().await;
    })
    .await;
}
