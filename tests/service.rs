//! `keyproxy service`: the unit a user service manager runs holds absolute paths and pins what
//! the embedded default reads, so the service never depends on the shell that installed it.
//! No test starts a real service: install runs with --no-start or --dry-run, and uninstall with
//! a PATH that has no systemctl.

mod support;
use support::*;

fn binary() -> String {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_keyproxy"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn install_dry_run_prints_a_unit_with_absolute_paths_and_writes_nothing() {
    let bin = Bin::new();
    let dir = bin.config_dir();
    std::fs::write(dir.join("keyproxy.toml"), "keys_files = [\"keys.toml\"]\n").unwrap();
    let mut cmd = bin.command();
    // A relative config path, as a user types it: the unit must hold the absolute one.
    cmd.args([
        "--config",
        ".config/keyproxy/keyproxy.toml",
        "service",
        "install",
        "--dry-run",
        "--manager",
        "systemd",
    ]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let config = std::fs::canonicalize(dir.join("keyproxy.toml")).unwrap();
    let exec = format!("ExecStart={} --config {} serve", binary(), config.display());
    assert!(out.stdout.contains(&exec), "{exec}\n{}", out.stdout);
    assert!(out.stdout.contains("Restart=on-failure"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("systemctl --user enable --now keyproxy.service"),
        "{}",
        out.stdout
    );
    assert!(!bin.home.path().join(".config/systemd").exists());
}

#[test]
fn install_writes_the_unit_into_xdg_config_home_and_uninstall_removes_it() {
    let bin = Bin::new();
    let xdg = bin.home.path().join("xdg");
    let no_tools = tempfile::tempdir().unwrap();
    let service = |args: &[&str]| {
        let mut cmd = bin.command();
        cmd.env("XDG_CONFIG_HOME", &xdg)
            .env("PATH", no_tools.path())
            .arg("service")
            .args(args)
            .args(["--manager", "systemd"]);
        run(cmd)
    };
    let out = service(&["install", "--no-start"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let unit_path = xdg.join("systemd/user/keyproxy.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    // No config file: the embedded default, with the folder it reads keys from pinned.
    assert!(
        unit.contains(&format!("ExecStart={} serve\n", binary())),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("Environment=XDG_CONFIG_HOME={}\n", xdg.display())),
        "{unit}"
    );
    assert!(
        out.stdout.contains("systemctl --user daemon-reload"),
        "{}",
        out.stdout
    );
    if let Ok(verify) = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    let out = service(&["status"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("installed: yes"), "{}", out.stdout);
    assert!(out.stdout.contains("answering: no"), "{}", out.stdout);

    let out = service(&["uninstall"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!unit_path.exists());
    assert!(out.stdout.contains("removed"), "{}", out.stdout);
    let out = service(&["uninstall"]);
    assert!(out.stdout.contains("not installed"), "{}", out.stdout);
}

#[test]
fn the_launchd_agent_holds_the_same_absolute_command() {
    let bin = Bin::new();
    let mut cmd = bin.command();
    cmd.args(["service", "install", "--dry-run", "--manager", "launchd"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let plist = &out.stdout;
    assert!(
        plist.contains(&format!(
            "<string>{}</string>\n    <string>serve</string>",
            binary()
        )),
        "{plist}"
    );
    assert!(plist.contains("<key>RunAtLoad</key>"), "{plist}");
    assert!(
        plist.contains("Library/LaunchAgents/dev.keyproxy.plist"),
        "{plist}"
    );
    assert!(plist.contains("launchctl bootstrap gui/"), "{plist}");
}
