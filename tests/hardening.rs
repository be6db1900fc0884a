//! Found by adversarial runs: rules that must hold after every reload, keys that must not leak
//! through a parse error, values that must not panic the server, and methods not to forward.

mod support;
use support::*;

const CLIENTS: &str =
    "[[clients]]\nname = \"laptop\"\ntoken = \"kp-laptop-0123456789\"\nprofiles = [\"p\"]\n";

#[tokio::test]
async fn a_reload_cannot_open_a_network_listener_to_everyone() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join("keys.toml"), &keys_toml("p", KEY_A));
        let path = dir.path().join("keyproxy.toml");
        let with_clients = format!("{}{CLIENTS}", simple_config(&up.url, "p"));
        std::fs::write(&path, &with_clients).unwrap();
        let running = keyproxy::start(
            keyproxy::Origin::File(path.clone()),
            Some("0.0.0.0:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let url = format!("http://127.0.0.1:{}/v1/models", running.local_addr.port());
        assert_eq!(get(&url, &[]).await.status, 401);

        // The clients table is deleted while keyproxy listens on every interface.
        std::fs::write(&path, simple_config(&up.url, "p")).unwrap();
        running.reload("test").await;
        let (_, error) = running
            .state
            .log()
            .last_error
            .expect("the reload is refused");
        assert!(error.contains("refusing this config"), "{error}");
        let reply = get(&url, &[]).await;
        assert_eq!(
            reply.status,
            401,
            "still only for clients: {}",
            reply.text()
        );
        assert_eq!(reply.headers["x-keyproxy-error"], "missing-token");
        assert_eq!(up.count(), 0);

        // Putting the clients back is accepted.
        std::fs::write(&path, &with_clients).unwrap();
        running.reload("test").await;
        assert!(running.state.log().last_error.is_none());
        running.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_key_written_as_a_field_name_is_never_echoed() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let keys = format!("[profiles.p]\n{KEY_A} = 1\n");
        let proxy = Proxy::start(&simple_config(&up.url, "p"), &[("keys.toml", &keys)]).await;
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        assert!(reply.text().contains("unknown field"), "{}", reply.text());
        assert_no_key(&reply.text());
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[]).await;
        assert!(status.text().contains("unknown field"), "{}", status.text());
        assert_no_key(&status.text());
        assert_no_key(&proxy.status().last_error.unwrap().1);

        let bin = Bin::new();
        let config = bin.config_dir().join("keyproxy.toml");
        std::fs::write(&config, simple_config(&up.url, "p")).unwrap();
        write_private(&bin.config_dir().join("keys.toml"), &keys);
        let mut cmd = bin.command();
        cmd.args(["check", "--json"]);
        let out = run(cmd);
        assert_eq!(out.code, Some(1));
        assert_no_key(&out.stdout);
        assert_no_key(&out.stderr);
        // A key pasted into the config file as a field name is not echoed either.
        std::fs::write(&config, format!("{KEY_B} = true\n")).unwrap();
        let mut cmd = bin.command();
        cmd.arg("check");
        let out = run(cmd);
        assert_eq!(out.code, Some(1));
        assert!(out.stdout.contains("unknown field"), "{}", out.stdout);
        assert_no_key(&out.stdout);
    })
    .await;
}

#[tokio::test]
async fn trace_is_refused_locally_so_no_upstream_can_echo_the_key() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let reply = send(
            &client(),
            request("TRACE", &format!("{}/v1/x", proxy.url), &[], ""),
        )
        .await;
        assert_eq!(reply.status, 405);
        assert_eq!(reply.headers["x-keyproxy-error"], "trace-refused");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn durations_that_would_panic_are_refused_at_start_and_on_reload() {
    bounded(async {
        let bin = Bin::new();
        let config = bin.config_dir().join("keyproxy.toml");
        for bad in [
            "poll_interval = \"0s\"",
            "idle_timeout = \"500000000000y\"",
            "header_read_timeout = \"0s\"",
        ] {
            std::fs::write(&config, format!("{bad}\n")).unwrap();
            let mut cmd = bin.command();
            cmd.arg("check");
            let out = run(cmd);
            assert_eq!(out.code, Some(1), "{bad}: {}", out.stdout);
            assert!(
                out.stdout.contains("keyproxy.toml:1:"),
                "{bad}: {}",
                out.stdout
            );
        }

        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        std::fs::write(
            proxy.path("keyproxy.toml"),
            format!("poll_interval = \"0s\"\n{}", simple_config(&up.url, "p")),
        )
        .unwrap();
        proxy.running.reload("test").await;
        assert!(proxy.status().last_error.is_some());
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200, "the last good config keeps serving");
        // The reloader still works after the refused value.
        std::fs::write(proxy.path("keys.toml"), keys_toml("p", KEY_B)).unwrap();
        proxy.running.reload("test").await;
        assert_eq!(proxy.keys_of("p"), vec![FP_B.to_owned()]);
    })
    .await;
}

#[tokio::test]
async fn a_keys_file_that_never_answers_stops_neither_health_nor_sigterm() {
    let up = Mock::start(ok_handler()).await;
    let bin = Bin::new();
    let dir = bin.config_dir();
    std::fs::write(dir.join("keyproxy.toml"), simple_config(&up.url, "p")).unwrap();
    write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
    let mut served = Served::start(bin.command()).await;

    // A FIFO with no writer stands in for a hung NFS or FUSE mount: opening it blocks for ever.
    let keys = dir.join("keys.toml");
    std::fs::remove_file(&keys).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&keys)
        .status()
        .unwrap();
    assert!(made.success());
    served.signal("HUP");
    served.wait_for_log("SIGHUP").await;

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let health = get(&format!("{}/_keyproxy/health", served.url), &[]).await;
        assert_eq!(health.status, 200);
        let status = get(&format!("{}/_keyproxy/status", served.url), &[]).await;
        if status.text().contains("not answering") {
            let reply = get(&format!("{}/v1/models", served.url), &[]).await;
            assert_eq!(reply.status, 200, "the keys it had keep serving");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never named the stuck read: {}",
            status.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (code, _, _) = served.stop().await;
    assert_eq!(code, Some(0), "SIGTERM still ends keyproxy cleanly");
}

/// Runs `args` as the unprivileged user `nobody`, so that /proc's access rules apply.
fn as_nobody(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .env_clear()
        .env("HOME", "/nonexistent")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("OPENROUTER_API_KEY", KEY_A)
        .current_dir("/");
    cmd
}

#[tokio::test]
async fn another_process_of_the_same_user_cannot_read_keyproxys_environment() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    let setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output();
    if root.ok() != Some(true) || setpriv.is_err() {
        eprintln!("SKIPPED: needs root and setpriv to run processes as another user");
        return;
    }
    let proc_readable = |pid: u32| {
        let out = as_nobody(&["cat", &format!("/proc/{pid}/environ")])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OPENROUTER_API_KEY")
    };
    // Control: an ordinary process of that user is readable by the user's other processes.
    let mut plain = as_nobody(&["sleep", "30"]).spawn().unwrap();
    // Until setpriv has exec'd sleep, the process is setpriv's own, not yet dumpable again.
    let readable = (0..100).any(|_| {
        proc_readable(plain.id()) || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            false
        }
    });
    assert!(
        readable,
        "the check itself must be able to read a dumpable process"
    );
    plain.kill().unwrap();
    let _ = plain.wait();

    let served = Served::start(as_nobody(&[env!("CARGO_BIN_EXE_keyproxy")])).await;
    let pid = served.child.id().unwrap();
    // The pid is setpriv's, which exec'd keyproxy in place.
    assert!(
        !proc_readable(pid),
        "keyproxy's environment must not be readable through /proc"
    );
    let (code, _, log) = served.stop().await;
    assert_eq!(code, Some(0));
    assert_no_key(&log.join("\n"));
}

#[test]
fn no_parse_error_of_a_key_source_ever_shows_the_key() {
    let toml_cases = [
        format!("[profiles.p]\n{KEY_A} = 1\n"),
        format!("[profiles.p]\nkey = {KEY_A}\n"),
        format!("[profiles.p]\nkeys = \"{KEY_A}\"\n"),
        format!("[profiles.p]\nkey = \"{KEY_A}\n"),
        format!("[profiles.p]\nkeys = [1, \"{KEY_A}\"]\n"),
        format!("[profiles.p]\nkey = '''{KEY_A}\n"),
        format!("[profiles.p]\nkey = \"{KEY_A}\"\nkey = \"{KEY_A}\"\n"),
        format!("{KEY_A}\n"),
    ];
    let json_cases = [
        format!("{{\"profiles\": {{\"p\": {{\"type\": \"api_key\", \"key\": {KEY_A}}}}}}}"),
        format!("{{\"profiles\": {{\"{KEY_A}\" {{}}}}}}"),
        format!("{{\"profiles\": {{\"p\": {{\"type\": \"api_key\", \"key\": \"{KEY_A}\\q\"}}}}}}"),
        format!("{{\"profiles\": [\"{KEY_A}\"]}}"),
    ];
    let env_cases = [
        format!("OPENROUTER_API_KEY {KEY_A}\n"),
        format!("OPENROUTER_API_KEY=\"{KEY_A}\n"),
        format!("{KEY_A}\n"),
    ];
    let bin = Bin::new();
    let dir = bin.config_dir();
    std::fs::write(
        dir.join("keyproxy.toml"),
        "keys_files = [\"keys.toml\"]\nenv_files = [\"keys.env\"]\nopenclaw_auth_profiles = [\"auth-profiles.json\"]\n",
    )
    .unwrap();
    let check = |what: &str| {
        for args in [&["check"][..], &["check", "--json"][..]] {
            let mut cmd = bin.command();
            cmd.args(args);
            let out = run(cmd);
            assert_eq!(out.code, Some(1), "{what}: {}", out.stdout);
            assert!(
                !out.stdout.contains("SECRETMIDDLE") && !out.stderr.contains("SECRETMIDDLE"),
                "{what} leaked the key:\n{}{}",
                out.stdout,
                out.stderr
            );
        }
    };
    for case in &toml_cases {
        write_private(&dir.join("keys.toml"), case);
        check(&format!("keys file {case:?}"));
    }
    write_private(&dir.join("keys.toml"), "");
    for case in &json_cases {
        write_private(&dir.join("auth-profiles.json"), case);
        check(&format!("OpenClaw store {case:?}"));
    }
    std::fs::remove_file(dir.join("auth-profiles.json")).unwrap();
    for case in &env_cases {
        write_private(&dir.join("keys.env"), case);
        check(&format!("env file {case:?}"));
    }
}
