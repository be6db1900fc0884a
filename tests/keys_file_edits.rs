//! What `keyproxy keys add | remove` keeps of the file it edits: every key of concurrent edits
//! (a lock), every comment (commented-out keys too), the file where a symlink says it lives,
//! its owner and group, and its mode less any access for others; and what it refuses: an
//! ambiguous fingerprint. The example's placeholder is replaced, as its first step says.

mod support;
use std::os::unix::fs::PermissionsExt;

use support::*;

/// Runs `keyproxy keys ARGS` with `stdin` piped in.
fn keys(bin: &Bin, args: &[&str], stdin: &str) -> Output {
    let mut cmd = bin.command();
    cmd.arg("keys").args(args);
    let out = run_with_stdin(cmd, stdin);
    assert_no_key(&out.stdout);
    assert_no_key(&out.stderr);
    out
}

/// `keys add --file FILE PROFILE` with `key` on stdin.
fn add_to(bin: &Bin, file: &std::path::Path, profile: &str, key: &str, more: &[&str]) -> Output {
    let mut args = vec!["add", profile, "--file", file.to_str().unwrap()];
    args.extend_from_slice(more);
    keys(bin, &args, key)
}

fn a_key(i: usize) -> String {
    format!("sk-or-v1-{i:0>8}SECRETMIDDLE0000000000000000000{i:0>8}")
}

#[test]
fn twenty_concurrent_adds_all_keep_their_keys() {
    let bin = Bin::new();
    let file = bin.home.path().join("keys.toml");
    std::thread::scope(|scope| {
        let adds: Vec<_> = (0..20)
            .map(|i| {
                let (bin, file) = (&bin, &file);
                scope.spawn(move || add_to(bin, file, "openrouter:default", &a_key(i), &[]))
            })
            .collect();
        for add in adds {
            let out = add.join().unwrap();
            assert_eq!(out.code, Some(0), "{}", out.stderr);
        }
    });
    let text = std::fs::read_to_string(&file).unwrap();
    let kept = keyproxy::keys::parse_keys_file(&text, &file).unwrap();
    assert_eq!(kept.profiles["openrouter:default"].keys.len(), 20, "{text}");
}

#[test]
fn the_example_placeholder_is_replaced_and_every_comment_survives_replace_and_remove() {
    let bin = Bin::new();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys.example.toml"
    ))
    .unwrap();
    // Uncommented as its first comment says, with a backup key kept commented out under it.
    let text = example
        .replace(
            "# [profiles.\"openrouter:default\"]",
            "[profiles.\"openrouter:default\"]",
        )
        .replace(
            "# key = \"sk-or-v1-replace-me",
            "key = \"sk-or-v1-replace-me",
        );
    let text = text.replacen(
        "0000000000\"\n",
        "0000000000\"\n# key = \"sk-or-v1-my-old-backup\"\n",
        1,
    );
    let file = bin.home.path().join("keys.toml");
    std::fs::write(&file, &text).unwrap();
    let comments: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let all_kept = |stage: &str| {
        let now = std::fs::read_to_string(&file).unwrap();
        for c in &comments {
            assert!(now.contains(c), "{stage}: lost {c:?}:\n{now}");
        }
        now
    };

    let out = add_to(&bin, &file, "openrouter:default", KEY_A, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let now = all_kept("add over the placeholder");
    assert_eq!(now.lines().count(), text.lines().count(), "{now}");
    assert!(
        now.contains(&format!("key = \"{KEY_A}\"")) && !now.contains("replace-me"),
        "{now}"
    );

    let out = add_to(&bin, &file, "openrouter:default", KEY_B, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    all_kept("add to the pool");
    let out = add_to(&bin, &file, "openrouter:default", KEY_A, &["--replace"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let now = all_kept("add --replace");
    assert!(!now.contains(KEY_B), "{now}");
    let out = keys(
        &bin,
        &[
            "remove",
            "openrouter:default",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let now = all_kept("remove");
    assert!(!now.contains(KEY_A), "{now}");
}

#[test]
fn mode_owner_and_group_are_kept_less_any_access_for_others() {
    use std::os::unix::fs::MetadataExt;
    let bin = Bin::new();
    let file = bin.home.path().join("keys.toml");
    for (before, after) in [
        (0o644, 0o640),
        (0o640, 0o640),
        (0o600, 0o600),
        (0o666, 0o660),
    ] {
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(before)).unwrap();
        let out = add_to(&bin, &file, "p", KEY_A, &["--replace"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, after, "{before:o}");
    }
    if rustix_free_euid() != 0 {
        eprintln!("SKIPPED the owner part: needs root to give the file to another user");
        return;
    }
    // Root editing a file the service user owns: it stays the service user's.
    std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(&file)
        .status()
        .unwrap();
    let out = add_to(&bin, &file, "p", KEY_B, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert!(std::fs::read_to_string(&file).unwrap().contains(KEY_B));
}

/// The effective uid, from `id -u` (the specs use no libc).
fn rustix_free_euid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_symlinked_keys_file_is_edited_where_it_lives_even_before_it_exists() {
    let bin = Bin::new();
    let dotfiles = bin.home.path().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    let link = bin.home.path().join("keys.toml");
    std::os::unix::fs::symlink("dotfiles/keys.toml", &link).unwrap();

    // Dangling: the target is created, the link stays.
    let out = add_to(&bin, &link, "p", KEY_A, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(dotfiles.join("keys.toml"))
        .unwrap()
        .contains(KEY_A));

    let out = add_to(&bin, &link, "p", KEY_B, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(dotfiles.join("keys.toml")).unwrap();
    assert!(text.contains(KEY_A) && text.contains(KEY_B), "{text}");
}

#[test]
fn an_ambiguous_fingerprint_is_refused_with_the_candidates() {
    let bin = Bin::new();
    let file = bin.home.path().join("keys.toml");
    let (one, two) = (
        "sk-or-v1-aaaaaaaaaaaaaaaaSECRETMIDDLEaaaaaaaaaa11111111",
        "sk-or-v1-bbbbbbbbbbbbbbbbSECRETMIDDLEbbbbbbbbbb11111111",
    );
    let text = format!("[profiles.p]\nkeys = [\n  \"{one}\",\n  \"{KEY_B}\",\n  \"{two}\",\n]\n");
    std::fs::write(&file, &text).unwrap();
    let out = keys(
        &bin,
        &["remove", "p", FP_A, "--file", file.to_str().unwrap()],
        "",
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("2 different keys with fingerprint"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("lines 3 and 5"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}
