//! A keys file keyproxy cannot read, or that others can: the message names the user keyproxy
//! runs as and the file's owner, and its advice works for that owner (in a container the file
//! is often the host user's and keyproxy another uid, where `chmod 600` locks keyproxy out).

mod support;
use std::os::unix::fs::PermissionsExt;

use support::*;

const NOBODY: u32 = 65534;

fn euid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A config and keys file in a folder anyone may enter; `check` run as `uid` (through setpriv
/// when that is not this process's user, which needs root).
fn check_as(uid: u32, keys_mode: u32) -> (Output, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("keyproxy.toml");
    // An address no keyproxy answers on, so that `check` compares with no running one.
    let nothing = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "listen = \"{nothing}\"\n{}",
        simple_config("http://127.0.0.1:9", "p")
    );
    std::fs::write(&config, text).unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, keys_toml("p", KEY_A)).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(keys_mode)).unwrap();
    let mut cmd = if uid == euid() {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyproxy"))
    } else {
        let mut c = std::process::Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(env!("CARGO_BIN_EXE_keyproxy"));
        c
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("check");
    let out = run(cmd);
    assert_no_key(&out.stdout);
    assert_no_key(&out.stderr);
    (out, keys, dir)
}

fn user_named(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
        .and_then(|l| l.split(':').next())
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        format!("uid {uid}")
    } else {
        format!("uid {uid} ({name})")
    }
}

#[test]
fn permission_denied_names_the_user_keyproxy_runs_as_and_the_owner() {
    let me = euid();
    // Root reads any file: the spec runs keyproxy as nobody then, on a file of root's.
    let (runs_as, mode) = if me == 0 {
        (NOBODY, 0o600)
    } else {
        (me, 0o000)
    };
    let (out, _, _dir) = check_as(runs_as, mode);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "{text}");
    assert!(text.contains("keys.toml: permission denied"), "{text}");
    assert!(
        text.contains(&format!("keyproxy runs as {}", user_named(runs_as))),
        "{text}"
    );
    assert!(
        text.contains(&format!("owned by {}", user_named(me))),
        "{text}"
    );
}

#[test]
fn the_mode_warning_never_advises_locking_keyproxy_out() {
    if euid() != 0 {
        eprintln!("SKIPPED: needs root to run keyproxy as a user that does not own the file");
        return;
    }
    let (out, keys, _dir) = check_as(NOBODY, 0o644);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("readable by group or others"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr
            .contains(&format!("run: chmod 600 {}", keys.display())),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("chmod 640 {}", keys.display()))
            && out
                .stderr
                .contains(&format!("keyproxy runs as {}", user_named(NOBODY))),
        "{}",
        out.stderr
    );
}
