//! The real binary: `check`, config errors, the embedded default, and `serve` with SIGHUP and
//! SIGTERM. No full key may appear on stdout or stderr.

mod support;
use support::*;

fn write_config(
    bin: &Bin,
    upstream: &str,
    profile: &str,
    keys: Option<&str>,
) -> std::path::PathBuf {
    let dir = bin.home.path().join("etc");
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(keys) = keys {
        write_private(&dir.join("keys.toml"), keys);
    }
    let path = dir.join("keyproxy.toml");
    std::fs::write(&path, simple_config(upstream, profile)).unwrap();
    path
}

#[test]
fn check_passes_and_lists_each_profile_with_source_and_fingerprints() {
    let bin = Bin::new();
    let keys = format!("[profiles.p]\nkeys = [\"{KEY_A}\", \"{KEY_B}\"]\n");
    let config = write_config(&bin, "http://127.0.0.1:9", "p", Some(&keys));
    let mut cmd = bin.command();
    cmd.arg("--config").arg(&config).arg("check");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let keys_path = bin.shown(&config.with_file_name("keys.toml"));
    assert!(out.stdout.contains("p: 2 keys"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("{FP_A} from keys file {keys_path}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(FP_B), "{}", out.stdout);
    assert!(out.stdout.trim_end().ends_with("OK"), "{}", out.stdout);
    assert_no_key(&out.stdout);
    assert_no_key(&out.stderr);
}

#[test]
fn check_fails_naming_the_profile_without_a_key() {
    let bin = Bin::new();
    let config = write_config(
        &bin,
        "http://127.0.0.1:9",
        "openrouter:work",
        Some(&keys_toml("other", KEY_A)),
    );
    let mut cmd = bin.command();
    cmd.env("KEYPROXY_CONFIG", &config).arg("check");
    let out = run(cmd);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("problem: route / has no key for its profile 'openrouter:work'"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.trim_end().ends_with("FAIL"), "{}", out.stdout);
    assert_no_key(&out.stdout);
}

#[test]
fn check_json_is_json_whether_it_passes_or_fails() {
    let bin = Bin::new();
    let config = write_config(
        &bin,
        "http://127.0.0.1:9",
        "p",
        Some(&keys_toml("p", KEY_A)),
    );
    let mut cmd = bin.command();
    cmd.arg("--config").arg(&config).args(["check", "--json"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_no_key(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["profiles"]["p"]["keys"][0]["fingerprint"], FP_A);
    assert_eq!(v["routes"][0]["profile"], "p");

    write_private(&config.with_file_name("keys.toml"), "[profiles.p]\n");
    let mut cmd = bin.command();
    cmd.arg("--config").arg(&config).args(["check", "--json"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let problem = v["problems"][0].as_str().unwrap();
    assert!(problem.contains("'p'"), "{problem}");
    assert!(problem.contains("profile has no key"), "{problem}");
}

#[test]
fn unknown_config_fields_stop_check_and_serve_naming_file_line_and_field() {
    let bin = Bin::new();
    let config = write_config(&bin, "http://127.0.0.1:9", "p", None);
    let text = std::fs::read_to_string(&config).unwrap() + "profle = \"typo\"\n";
    std::fs::write(&config, text).unwrap();
    let shown = config.display().to_string();

    let mut cmd = bin.command();
    cmd.arg("--config").arg(&config).arg("check");
    let out = run(cmd);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout.contains(&format!("{shown}:8:1")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("unknown field `profle`"),
        "{}",
        out.stdout
    );

    let mut cmd = bin.command();
    cmd.arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let out = run(cmd);
    assert_eq!(
        out.code,
        Some(2),
        "serve must refuse to start: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{shown}:8:1")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("unknown field `profle`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_config_file_given_explicitly_is_an_error() {
    let bin = Bin::new();
    let mut cmd = bin.command();
    cmd.args(["--config", "nowhere.toml", "check"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("nowhere.toml"), "{}", out.stdout);
}

#[test]
fn embedded_default_takes_the_key_from_openrouter_api_key() {
    let bin = Bin::new();
    let mut cmd = bin.command();
    cmd.env("OPENROUTER_API_KEY", KEY_A).arg("check");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("config: embedded default"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("listen: 127.0.0.1:8787"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("/ -> https://openrouter.ai"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("{FP_A} from env OPENROUTER_API_KEY")),
        "{}",
        out.stdout
    );
    assert_no_key(&out.stdout);
    assert_no_key(&out.stderr);
}

#[test]
fn embedded_default_reads_the_default_keys_file() {
    let bin = Bin::new();
    write_private(
        &bin.config_dir().join("keys.toml"),
        &keys_toml("openrouter:default", KEY_B),
    );
    let mut cmd = bin.command();
    cmd.arg("check");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(FP_B), "{}", out.stdout);
}

#[test]
fn embedded_default_without_any_key_says_where_it_looked() {
    let bin = Bin::new();
    let mut cmd = bin.command();
    cmd.arg("check");
    let out = run(cmd);
    assert_eq!(out.code, Some(1));
    let keys_path = bin.shown(&bin.config_dir().join("keys.toml"));
    assert!(
        out.stdout.contains("'openrouter:default'"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("keys file {keys_path} (not found)")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("environment variable OPENROUTER_API_KEY (not set)"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_injects_reloads_on_sighup_and_exits_cleanly_on_sigterm() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        // The key lives behind a symlink in a folder keyproxy does not watch, and polling is
        // off, so only SIGHUP can make keyproxy see the new key.
        let vault = bin.home.path().join("vault");
        std::fs::create_dir_all(&vault).unwrap();
        write_private(&vault.join("secret"), KEY_A);
        let config = write_config(
            &bin,
            &up.url,
            "p",
            Some("[profiles.p]\nkey_file = \"secret\"\n"),
        );
        std::os::unix::fs::symlink(vault.join("secret"), config.with_file_name("secret")).unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("poll_interval = \"1h\"\n{text}")).unwrap();
        let mut cmd = bin.command();
        cmd.arg("--config").arg(&config);
        let mut served = Served::start(cmd).await;

        let url = format!("{}/api/v1/models", served.url);
        let reply = get(&url, &[("authorization", "Bearer client-own")]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_A}")
        );

        write_private(&vault.join("secret"), &format!("{KEY_B}\n"));
        served.signal("HUP");
        served.wait_for_log("reloaded").await;
        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received()[1].headers["authorization"],
            format!("Bearer {KEY_B}")
        );

        let status = get(&format!("{}/_keyproxy/status", served.url), &[]).await;
        assert_no_key(&status.text());
        assert_eq!(status.json()["reload"]["count"], 1);
        assert_eq!(status.json()["reload"]["last_trigger"], "SIGHUP");

        let (code, stdout, log) = served.stop().await;
        assert_eq!(code, Some(0), "{}", log.join("\n"));
        assert_no_key(&stdout);
        for line in &log {
            assert_no_key(line);
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(v["level"].is_string(), "{line}");
        }
        assert!(
            log.iter().any(|l| l.contains(FP_B)),
            "the reload logs fingerprints"
        );
    })
    .await;
}

#[test]
fn a_non_loopback_listen_address_is_refused_unless_allowed() {
    let bin = Bin::new();
    let config = write_config(
        &bin,
        "http://127.0.0.1:9",
        "p",
        Some(&keys_toml("p", KEY_A)),
    );
    let mut cmd = bin.command();
    cmd.arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "0.0.0.0:0"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("allow_unauthenticated = true"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listen_address_is_logged_as_needing_a_restart() {
    bounded(async {
        let bin = Bin::new();
        let config = write_config(
            &bin,
            "http://127.0.0.1:9",
            "p",
            Some(&keys_toml("p", KEY_A)),
        );
        let mut cmd = bin.command();
        cmd.arg("--config").arg(&config);
        let mut served = Served::start(cmd).await;
        let text = std::fs::read_to_string(&config).unwrap();
        rename_over(&config, &format!("listen = \"127.0.0.1:18787\"\n{text}"));
        let line = served
            .wait_for_log("the listen address changed; it takes effect at the next restart")
            .await;
        assert!(line.contains("127.0.0.1:18787"), "{line}");
        let ready = get(&format!("{}/_keyproxy/ready", served.url), &[]).await;
        assert_eq!(ready.status, 200, "still serving on the old address");
        let (code, _, _) = served.stop().await;
        assert_eq!(code, Some(0));
    })
    .await;
}

#[test]
fn a_taken_port_is_reported_once_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let bin = Bin::new();
    let config = write_config(
        &bin,
        "http://127.0.0.1:9",
        "p",
        Some(&keys_toml("p", KEY_A)),
    );
    let mut cmd = bin.command();
    cmd.arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &addr]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("Address already in use").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("cannot listen on {addr}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("keyproxy health"), "{}", out.stderr);
}

#[tokio::test]
async fn global_flags_work_after_the_subcommand() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let bin = Bin::new();
        let config = write_config(&bin, &up.url, "p", Some(&keys_toml("p", KEY_A)));
        let mut cmd = bin.command();
        cmd.arg("--config").arg(&config);
        let served = Served::start(cmd).await;
        let addr = served.url.trim_start_matches("http://").to_owned();
        let mut cmd = bin.command();
        cmd.args(["health", "--listen", &addr, "--config"])
            .arg(&config);
        let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
        assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
        served.stop().await;
    })
    .await;
}
