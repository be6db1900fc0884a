//! `keyproxy completions SHELL` and `keyproxy man`, generated from the clap definitions: each
//! shell gets a script naming the commands, bash's parses, and a reader that stops early is no
//! failure; the man pages cover every command.

mod support;
use std::process::{Command, Stdio};

use support::*;

fn keyproxy(args: &[&str]) -> std::process::Output {
    Bin::new()
        .command()
        .args(args)
        .output()
        .expect("the keyproxy binary runs")
}

#[test]
fn every_shell_gets_a_script_naming_the_commands() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = keyproxy(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["serve", "keys", "openclaw", "usage", "completions"] {
            assert!(script.contains(command), "{shell} script lacks {command}");
        }
    }
    let bash = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn();
    if let Ok(mut bash) = bash {
        let script = keyproxy(&["completions", "bash"]).stdout;
        std::io::Write::write_all(bash.stdin.as_mut().unwrap(), &script).unwrap();
        drop(bash.stdin.take());
        assert!(bash.wait().unwrap().success(), "bash -n refuses the script");
    }
    let refused = keyproxy(&["completions", "tcsh"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bash"));
}

#[test]
fn a_reader_that_stops_early_is_no_failure() {
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let mut child = Bin::new()
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{args:?}"
        );
    }
}

#[test]
fn the_man_pages_cover_every_command() {
    let page = String::from_utf8(keyproxy(&["man"]).stdout).unwrap();
    assert!(page.contains(".TH keyproxy 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = keyproxy(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    for name in [
        "keyproxy.1",
        "keyproxy-serve.1",
        "keyproxy-keys-add.1",
        "keyproxy-completions.1",
    ] {
        assert!(dir.path().join(name).is_file(), "no {name}");
    }
}
