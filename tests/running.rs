//! `keyproxy status`, `keyproxy reload` and `check` against a running keyproxy, started (as a
//! service is) with another environment than the shell that asks.

mod support;
use support::*;

fn config(upstream: &str) -> String {
    format!(
        "poll_interval = \"1h\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n"
    )
}

/// Runs the binary with `args` against the keyproxy at `url`, off the async runtime.
async fn cli(bin: &Bin, url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = bin.command();
    let config = bin.config_dir().join("keyproxy.toml");
    cmd.arg("--config").arg(config);
    cmd.args(["--listen", url.trim_start_matches("http://")])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || run(cmd)).await.unwrap()
}

#[tokio::test]
async fn status_shows_what_the_running_keyproxy_serves() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        write_private(
            &dir.join("keys.toml"),
            &keys_toml("openrouter:default", KEY_A),
        );
        let served = Served::start(bin.command()).await;

        let out = cli(&bin, &served.url, &["status"], &[]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout
                .contains(&format!("keyproxy {}", env!("CARGO_PKG_VERSION"))),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!("{FP_A} from keys file")),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("reloads: 0 (last: start"),
            "{}",
            out.stdout
        );
        assert_no_key(&out.stdout);

        let out = cli(&bin, &served.url, &["status", "--json"], &[]).await;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(v["uptime_secs"].is_u64());
        served.stop().await;

        // Nothing running there any more: a clear failure, not a hang.
        let out = cli(&bin, &served_url_gone(), &["status"], &[]).await;
        assert_eq!(out.code, Some(1));
        assert!(
            out.stderr.contains("is keyproxy running?"),
            "{}",
            out.stderr
        );
    })
    .await;
}

/// An address nothing listens on.
fn served_url_gone() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn check_names_the_key_the_service_does_not_see() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        // The service starts with no key at all; this shell has one in its environment.
        let served = Served::start(bin.command()).await;
        let out = cli(&bin, &served.url, &["check"], &[("OPENROUTER_API_KEY", KEY_A)]).await;
        assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains(&format!(
                "the running keyproxy has no key for 'openrouter:default'; this shell has {FP_A} from environment variable OPENROUTER_API_KEY, which the service does not see"
            )),
            "{}",
            out.stdout
        );
        assert_no_key(&out.stdout);

        // Once the service has the same key, check passes and says so.
        write_private(&dir.join("keys.toml"), &keys_toml("openrouter:default", KEY_A));
        let out = cli(&bin, &served.url, &["reload"], &[]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let out = cli(&bin, &served.url, &["check"], &[]).await;
        assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("serves the same keys as this shell loads"), "{}", out.stdout);
        served.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reload_needs_no_pid_and_runs_key_commands_again() {
    use std::os::unix::fs::PermissionsExt;
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(dir.join("key.txt"), KEY_A).unwrap();
        let script = dir.join("get-key");
        std::fs::write(&script, "#!/bin/sh\ncat \"$(dirname \"$0\")/key.txt\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let keys = format!(
            "[profiles.\"openrouter:default\"]\nkey_command = [\"{}\"]\nrefresh = \"1h\"\n",
            script.display()
        );
        write_private(&dir.join("keys.toml"), &keys);
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        let mut served = Served::start(bin.command()).await;

        std::fs::write(dir.join("key.txt"), KEY_B).unwrap();
        let out = cli(&bin, &served.url, &["reload"], &[]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains("no errors"), "{}", out.stdout);
        served.wait_for_log("\"trigger\":\"key_command\"").await;
        let out = cli(&bin, &served.url, &["status"], &[]).await;
        assert!(out.stdout.contains(FP_B), "{}", out.stdout);

        // Only POST reloads, so a link or a preload cannot.
        let reply = get(&format!("{}/_keyproxy/reload", served.url), &[]).await;
        assert_eq!(reply.status, 405);
        served.stop().await;
    })
    .await;
}

/// Runs the binary with `args` and no --listen: the address comes from the config file.
async fn cli_by_config(bin: &Bin, args: &[&str]) -> Output {
    let mut cmd = bin.command_with_config_listen();
    cmd.arg("--config")
        .arg(bin.config_dir().join("keyproxy.toml"))
        .args(args);
    tokio::task::spawn_blocking(move || run(cmd)).await.unwrap()
}

#[tokio::test]
async fn status_and_reload_work_when_the_config_has_a_typo() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        write_private(
            &dir.join("keys.toml"),
            &keys_toml("openrouter:default", KEY_A),
        );
        let served = Served::start(bin.command()).await;
        let addr = served.url.trim_start_matches("http://").to_owned();
        let path = dir.join("keyproxy.toml");

        // A field the config does not know: the TOML parses, the config does not load.
        let typo = format!("listen = \"{addr}\"\nkeys_fils = [\"keys.toml\"]\n");
        std::fs::write(&path, &typo).unwrap();
        let out = cli_by_config(&bin, &["status"]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout.contains(&format!("{FP_A} from keys file")),
            "{}",
            out.stdout
        );
        assert!(out.stderr.contains("does not load"), "{}", out.stderr);
        assert!(out.stderr.contains(&addr), "{}", out.stderr);

        // Not even TOML: the listen line above every table is still read.
        let broken = format!("listen = \"{addr}\"  # mine\n[[routes]\nprefix = \"/\"\n");
        std::fs::write(&path, &broken).unwrap();
        let out = cli_by_config(&bin, &["reload"]).await;
        assert!(
            out.stdout.contains("reloaded") || out.stderr.contains("reloaded (reload"),
            "{}{}",
            out.stdout,
            out.stderr
        );
        served.stop().await;

        // Nothing listens there: the message says which address was tried and how to give
        // another.
        let gone = served_url_gone();
        let gone = gone.trim_start_matches("http://");
        std::fs::write(&path, format!("listen = \"{gone}\"\nbad = 1\n")).unwrap();
        let out = cli_by_config(&bin, &["status"]).await;
        assert_eq!(out.code, Some(1));
        assert!(
            out.stderr.contains(&format!(
                "tried http://{gone}/_keyproxy/status (listen in {}",
                path.display()
            )),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("--listen ADDR or --url URL"),
            "{}",
            out.stderr
        );
    })
    .await;
}
