//! `keyproxy keys add | list | remove`: the key goes in through stdin, never an argument; the
//! file keeps its comments (commented-out keys too) and order, is written atomically under a
//! lock, through symlinks, with its owner, group and mode less any access for others (a new
//! file: 0600), and a running keyproxy serves the change.

mod support;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;

use support::*;

const COMMENTED: &str = "# my keys, do not share\n[profiles.\"openrouter:default\"]\n# the work account\nkey_env = \"OR_WORK\"\n\n[profiles.\"anthropic:default\"] # claude\nkey_file = \"/run/secrets/anthropic\"\n";

fn config(upstream: &str) -> String {
    format!(
        "poll_interval = \"1h\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n"
    )
}

/// Runs `keyproxy keys ARGS` with `stdin` piped in.
fn keys(bin: &Bin, args: &[&str], stdin: &str) -> Output {
    let mut cmd = bin.command();
    cmd.arg("--config")
        .arg(bin.config_dir().join("keyproxy.toml"));
    cmd.arg("keys").args(args);
    let out = run_with_stdin(cmd, stdin);
    assert_no_key(&out.stdout);
    assert_no_key(&out.stderr);
    out
}

#[tokio::test]
async fn keys_add_writes_through_stdin_and_a_running_keyproxy_serves_it() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(dir.join("keyproxy.toml"), config(&up.url)).unwrap();
        std::fs::write(dir.join("keys.toml"), COMMENTED).unwrap();
        std::fs::set_permissions(
            dir.join("keys.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let mut served = Served::start(bin.command()).await;

        let out = keys(&bin, &["add", "openrouter:default"], &format!("{KEY_A}\n"));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout
                .contains(&format!("added {FP_A} to profile 'openrouter:default'")),
            "{}",
            out.stdout
        );
        let text = std::fs::read_to_string(dir.join("keys.toml")).unwrap();
        for kept in [
            "# my keys, do not share",
            "# the work account",
            "key_env = \"OR_WORK\"",
            "# claude",
        ] {
            assert!(text.contains(kept), "{kept} lost:\n{text}");
        }
        assert!(
            text.find("openrouter:default") < text.find("anthropic:default"),
            "{text}"
        );
        assert!(text.starts_with("# my keys, do not share\n"), "{text}");
        let mode = std::fs::metadata(dir.join("keys.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o640,
            "others lose access, the group keeps it"
        );

        // "keys changed" names the key as the new store is built; the reload's own line comes
        // once that store is swapped in, and only then is the next request sure to get it.
        served.wait_for_log(FP_A).await;
        served.wait_for_log("reloaded config and keys").await;
        let reply = get(&format!("{}/v1/models", served.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received().last().unwrap().headers["authorization"],
            format!("Bearer {KEY_A}").as_str()
        );

        // A second key joins the pool; the same key again changes nothing.
        let out = keys(&bin, &["add", "openrouter:default"], KEY_B);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let out = keys(&bin, &["add", "openrouter:default"], KEY_B);
        assert!(out.stdout.contains("already has"), "{}", out.stdout);
        let out = keys(&bin, &["list"], "");
        assert!(
            out.stdout.contains(FP_A) && out.stdout.contains(FP_B),
            "{}",
            out.stdout
        );

        let out = keys(&bin, &["remove", "openrouter:default", FP_A], "");
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let text = std::fs::read_to_string(dir.join("keys.toml")).unwrap();
        assert!(text.contains(KEY_B) && !text.contains(KEY_A), "{text}");
        assert!(text.contains("# the work account"), "{text}");

        let out = keys(
            &bin,
            &["remove", "openrouter:default", "sk-or-v1...99999999"],
            "",
        );
        assert_eq!(out.code, Some(1));
        assert!(
            out.stderr.contains(&format!("its keys: {FP_B}")),
            "{}",
            out.stderr
        );
        served.stop().await;
    })
    .await;
}

#[test]
fn a_bad_key_or_a_broken_file_is_refused_and_nothing_is_written() {
    let bin = Bin::new();
    let dir = bin.config_dir();
    std::fs::write(dir.join("keyproxy.toml"), config("http://127.0.0.1:9")).unwrap();
    let out = keys(&bin, &["add", "p"], "sk-or-v1-has space SECRETMIDDLE\n");
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("contains a space"), "{}", out.stderr);
    assert!(!dir.join("keys.toml").exists());

    let out = keys(&bin, &["add", "p"], "");
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("no key given"), "{}", out.stderr);

    let broken = "[profiles.p]\nkey = \"unterminated\n";
    std::fs::write(dir.join("keys.toml"), broken).unwrap();
    let out = keys(&bin, &["add", "p"], KEY_A);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("fix the file first"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join("keys.toml")).unwrap(),
        broken
    );

    // A new profile goes after the comments at the end of a file, not above its first line.
    std::fs::write(
        dir.join("keys.toml"),
        "# header\n[profiles.a]\nkey_env = \"A\"\n# [profiles.example]\n",
    )
    .unwrap();
    let out = keys(&bin, &["add", "b"], KEY_A);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = std::fs::read_to_string(dir.join("keys.toml")).unwrap();
    assert!(
        text.starts_with(
            "# header\n[profiles.a]\nkey_env = \"A\"\n# [profiles.example]\n\n[profiles.b]\nkey = "
        ),
        "{text}"
    );

    // A new file in a new folder: created private.
    let fresh = bin.home.path().join("new/dir/keys.toml");
    let out = keys(
        &bin,
        &["add", "p", "--file", fresh.to_str().unwrap()],
        KEY_A,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        keyproxy::keys::parse_keys_file(&std::fs::read_to_string(&fresh).unwrap(), &fresh)
            .unwrap()
            .profiles["p"]
            .keys
            .len(),
        1
    );
}

/// At a terminal the key is typed at a prompt (rpassword turns echo off), through a real pty
/// that util-linux's `script` provides.
#[test]
fn at_a_terminal_the_key_is_read_from_a_prompt() {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: needs util-linux script(1) for a pty");
        return;
    }
    let bin = Bin::new();
    let file = bin.home.path().join("keys.toml");
    let inner = format!(
        "{} keys add p --file {}",
        env!("CARGO_BIN_EXE_keyproxy"),
        file.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("HOME", bin.home.path())
        .env_remove("XDG_CONFIG_HOME")
        .current_dir(bin.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = String::new();
    while !seen.contains("key for p (not shown): ") {
        seen = rx.recv_timeout(LIMIT).expect("no prompt");
    }
    stdin.write_all(format!("{KEY_A}\n").as_bytes()).unwrap();
    while !seen.contains("added ") || !seen.contains("picks it up") {
        seen = rx.recv_timeout(LIMIT).expect("no answer after the key");
    }
    let _ = child.wait();
    assert!(
        seen.contains(&format!("added {FP_A} to profile 'p'")),
        "{seen}"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains(KEY_A), "{written}");
}
