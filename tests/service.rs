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

/// A directory name with everything systemd and a shell treat specially, short of a newline.
const HOSTILE: &str = "we$ird %n $HOME ${X} \"dq\" 'sq' back\\slash;semi &amp<x>";
/// The same without what systemd refuses in the path of the program it runs.
const HOSTILE_PROGRAM: &str = "we$ird %n $HOME ${X} semi;colon &amp<x>";

/// Splits a unit setting's value into words as systemd does (systemd.syntax "Quoting",
/// specifiers of systemd.unit), failing on anything it cannot read back for sure.
fn systemd_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return words;
        };
        let quote = match first {
            '"' | '\'' => chars.next(),
            _ => None,
        };
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if Some(c) == quote => break,
                c if quote.is_none() && c.is_whitespace() => break,
                '\\' => match chars.next() {
                    Some(e @ ('\\' | '"' | '\'' | ' ')) => word.push(e),
                    Some('n') => word.push('\n'),
                    other => panic!("escape \\{other:?} in {value:?}"),
                },
                '%' => match chars.next() {
                    Some('%') => word.push('%'),
                    other => panic!("specifier %{other:?} in {value:?}"),
                },
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

/// `$$` is `$` once systemd has expanded variables in a command line (systemd.service).
fn exec_expanded(word: &str) -> String {
    assert!(
        !word.replace("$$", "").contains('$'),
        "{word:?} would be expanded"
    );
    word.replace("$$", "$")
}

fn setting<'u>(unit: &'u str, name: &str) -> &'u str {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {unit}"))
}

#[test]
fn hostile_paths_reach_systemd_as_they_are() {
    let bin = Bin::new();
    let odd = bin.home.path().join(HOSTILE);
    std::fs::create_dir_all(&odd).unwrap();
    // The binary itself at an odd path: `systemd-analyze verify` then checks the parsed
    // ExecStart path is an executable that exists.
    let odd_program = bin.home.path().join(HOSTILE_PROGRAM);
    std::fs::create_dir_all(&odd_program).unwrap();
    let exe = odd_program.join("keyproxy");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_keyproxy"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_keyproxy"), &exe).unwrap();
    }
    let config = odd.join("keyproxy.toml");
    std::fs::write(&config, "keys_files = [\"keys.toml\"]\n").unwrap();
    let no_tools = tempfile::tempdir().unwrap();
    let install = |with_config: bool| {
        let unit_home = bin.home.path().join("units");
        let mut cmd = std::process::Command::new(&exe);
        cmd.env_clear()
            .env("HOME", bin.home.path())
            .env("PATH", no_tools.path())
            .env("XDG_CONFIG_HOME", &odd)
            .current_dir(bin.home.path());
        if with_config {
            cmd.arg("--config").arg(&config);
        }
        cmd.args(["service", "install", "--dry-run", "--manager", "systemd"]);
        let out = run(cmd);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let unit = out
            .stdout
            .split_once(":\n")
            .unwrap()
            .1
            .split_once("then run:")
            .unwrap()
            .0
            .to_owned();
        std::fs::create_dir_all(&unit_home).unwrap();
        let path = unit_home.join("keyproxy.service");
        std::fs::write(&path, &unit).unwrap();
        (unit, path)
    };
    let exe = std::fs::canonicalize(&exe).unwrap().display().to_string();

    let (unit, path) = install(true);
    // The program's path is taken as it is, its arguments have their variables expanded.
    let words: Vec<String> = systemd_words(setting(&unit, "ExecStart"))
        .iter()
        .enumerate()
        .map(|(i, w)| if i == 0 { w.clone() } else { exec_expanded(w) })
        .collect();
    let config = std::fs::canonicalize(&config)
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        words,
        [exe.as_str(), "--config", &config, "serve"],
        "{unit}"
    );
    verify(&path);

    // The embedded default: the keys folder is pinned through Environment=, where systemd
    // expands no `$`.
    let (unit, path) = install(false);
    let words = systemd_words(setting(&unit, "Environment"));
    assert_eq!(
        words,
        [format!("XDG_CONFIG_HOME={}", odd.display())],
        "{unit}"
    );
    verify(&path);
}

fn verify(unit: &std::path::Path) {
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("SKIPPED systemd-analyze verify: not installed"),
    }
}

#[test]
fn a_control_character_in_a_path_is_refused_for_either_manager() {
    let bin = Bin::new();
    let odd = bin
        .home
        .path()
        .join("a\nExecStartPre=/bin/touch /tmp/owned\n");
    std::fs::create_dir_all(&odd).unwrap();
    let config = odd.join("keyproxy.toml");
    std::fs::write(&config, "keys_files = [\"keys.toml\"]\n").unwrap();
    for manager in ["systemd", "launchd"] {
        for (env, args) in [
            (None, vec!["--config", config.to_str().unwrap()]),
            (Some(&odd), vec![]),
        ] {
            let mut cmd = bin.command();
            if let Some(dir) = env {
                cmd.env("XDG_CONFIG_HOME", dir);
            }
            cmd.args(&args)
                .args(["service", "install", "--no-start", "--manager", manager])
                .env("PATH", bin.home.path());
            let out = run(cmd);
            assert_eq!(out.code, Some(1), "{manager}: {}", out.stdout);
            assert!(
                out.stderr.contains("control character"),
                "{manager}: {}",
                out.stderr
            );
        }
    }
    assert!(!bin.home.path().join(".config/systemd").exists());
    assert!(!bin.home.path().join("Library").exists());
}

#[test]
fn the_launchd_plist_of_hostile_paths_is_well_formed() {
    let bin = Bin::new();
    let odd = bin.home.path().join(HOSTILE);
    std::fs::create_dir_all(&odd).unwrap();
    let mut cmd = bin.command();
    cmd.env("XDG_CONFIG_HOME", &odd).args([
        "service",
        "install",
        "--dry-run",
        "--manager",
        "launchd",
    ]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let expected = odd
        .display()
        .to_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        out.stdout.contains(&format!(
            "<key>XDG_CONFIG_HOME</key>\n    <string>{expected}</string>"
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn systemd_refuses_a_program_path_with_quotes_so_install_does_too() {
    let bin = Bin::new();
    let odd = bin.home.path().join("it's here");
    std::fs::create_dir_all(&odd).unwrap();
    let exe = odd.join("keyproxy");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_keyproxy"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_keyproxy"), &exe).unwrap();
    }
    let mut cmd = std::process::Command::new(&exe);
    cmd.env_clear()
        .env("HOME", bin.home.path())
        .current_dir(bin.home.path())
        .args(["service", "install", "--dry-run", "--manager", "systemd"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("move the keyproxy binary"),
        "{}",
        out.stderr
    );
}
