//! `keyproxy openclaw connect | status` as a user runs them, with OpenClaw's files laid out as
//! OpenClaw 2026.9 writes them (the real OpenClaw runs in tests/openclaw_e2e.rs).

mod support;
use std::path::Path;

use support::*;

fn openclaw_json(dir: &Path, provider: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("openclaw.json"),
        format!(
            "// written by OpenClaw\n{{models: {{providers: {{openrouter: {{{provider}}}}}}}}}\n"
        ),
    )
    .unwrap();
}

#[test]
fn status_names_a_gateway_service_that_runs_with_another_folder() {
    let bin = Bin::new();
    let home = bin.home.path();
    openclaw_json(
        &home.join(".openclaw"),
        "baseUrl: 'http://127.0.0.1:8787/api/v1', apiKey: 'keyproxy'",
    );
    let service_dir = home.join("srv/openclaw");
    openclaw_json(&service_dir, "");
    let units = home.join(".config/systemd/user");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("openclaw-gateway.service"),
        format!(
            "[Service]\nExecStart=/usr/bin/node openclaw.mjs gateway run\nEnvironment=\"OPENCLAW_STATE_DIR={}\" \"NODE_ENV=production\"\n",
            service_dir.display()
        ),
    )
    .unwrap();
    write_private(
        &bin.config_dir().join("keys.toml"),
        &keys_toml("openrouter:default", KEY_A),
    );
    let mut cmd = bin.command_with_config_listen();
    cmd.args(["openclaw", "status"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("  ok ~/.openclaw (used by the openclaw CLI in this shell)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("apiKey placeholder; profile 'openrouter:default' has 1 key(s) in keyproxy"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  -- ~/srv/openclaw (used by the OpenClaw gateway service (~/.config/systemd/user/openclaw-gateway.service))"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "models.providers.openrouter.baseUrl is not set, so OpenClaw calls OpenRouter directly"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("note: the gateway service runs with ~/srv/openclaw but this shell's openclaw uses ~/.openclaw"),
        "{}",
        out.stdout
    );
    assert_no_key(&out.stdout);

    let mut cmd = bin.command_with_config_listen();
    cmd.args(["openclaw", "status", "--json"]);
    let out = run(cmd);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["folders"][0]["points_at_keyproxy"], true);
    assert_eq!(v["folders"][1]["points_at_keyproxy"], false);
}

#[test]
fn connect_prints_the_commands_when_openclaw_is_not_on_path() {
    let bin = Bin::new();
    let mut cmd = bin.command_with_config_listen();
    cmd.env("PATH", "/nonexistent")
        .args(["--listen", "127.0.0.1:9999", "openclaw", "connect"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("openclaw is not on PATH"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  openclaw config set models.providers.openrouter.baseUrl http://127.0.0.1:9999/api/v1\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  openclaw config set models.providers.openrouter.apiKey keyproxy\n"),
        "{}",
        out.stdout
    );
    let dir = bin.home.path().join(".openclaw").display().to_string();
    assert!(
        out.stdout
            .contains(&format!("openclaw_state_dirs = [\"{dir}\"]")),
        "keyproxy says how to serve OpenClaw's own key: {}",
        out.stdout
    );
}

#[test]
fn connect_with_clients_needs_a_client_token_and_never_prints_it() {
    let bin = Bin::new();
    let config = bin.config_dir().join("keyproxy.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[clients]]\nname = \"openclaw\"\ntoken = \"kp-openclaw-0123456789abcdef\"\nprofiles = [\"p\"]\n",
            simple_config("http://127.0.0.1:9", "p")
        ),
    )
    .unwrap();
    let mut cmd = bin.command_with_config_listen();
    cmd.env("PATH", "/nonexistent")
        .args(["openclaw", "connect"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("--api-key or KEYPROXY_CLIENT_TOKEN"),
        "{}",
        out.stderr
    );

    let mut cmd = bin.command_with_config_listen();
    cmd.env("PATH", "/nonexistent")
        .env("KEYPROXY_CLIENT_TOKEN", "kp-openclaw-0123456789abcdef")
        .args(["openclaw", "connect"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("apiKey <your client token>"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("kp-openclaw-0123456789abcdef"),
        "{}",
        out.stdout
    );
}
