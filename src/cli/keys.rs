//! `keyproxy keys add | list | remove`.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::args::KeysAction;
use keyproxy::config::{self, Origin};
use keyproxy::tasks::keys_edit::{self, Edited};

pub fn run(origin: Origin, action: KeysAction) -> ExitCode {
    let outcome = match action {
        KeysAction::List { json } => keyproxy::tasks::check::list(origin).map(|(text, value)| {
            if json {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            } else {
                text.trim_end().to_owned()
            }
        }),
        KeysAction::Add {
            profile,
            file,
            replace,
        } => target(&origin, file).and_then(|path| {
            let key = read_key(&profile)?;
            let edited =
                keys_edit::add(&path, &profile, &key, replace).map_err(|e| e.to_string())?;
            Ok(said(&edited, &profile, &path))
        }),
        KeysAction::Remove {
            profile,
            fingerprint,
            file,
        } => target(&origin, file).and_then(|path| {
            let edited = keys_edit::remove(&path, &profile, fingerprint.as_deref())
                .map_err(|e| e.to_string())?;
            Ok(said(&edited, &profile, &path))
        }),
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("keyproxy keys: {why}");
            ExitCode::FAILURE
        }
    }
}

fn said(edited: &Edited, profile: &str, path: &std::path::Path) -> String {
    let path = path.display();
    match edited {
        Edited::Added { fingerprint } => format!(
            "added {fingerprint} to profile '{profile}' in {path}; a running keyproxy picks it up"
        ),
        Edited::AlreadyThere { fingerprint } => {
            format!("profile '{profile}' in {path} already has {fingerprint}; nothing changed")
        }
        Edited::Removed {
            fingerprints,
            profile_gone,
        } => {
            let keys = match fingerprints.as_slice() {
                [] => "no key written in the file".to_owned(),
                fps => fps.join(", "),
            };
            let gone = if *profile_gone {
                " and the profile with it"
            } else {
                ""
            };
            format!("removed {keys}{gone} from profile '{profile}' in {path}; a running keyproxy picks it up")
        }
    }
}

/// `--file`, or the config's first keys file.
fn target(origin: &Origin, file: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(file) = file {
        return Ok(file);
    }
    let config = config::load(origin).map_err(|e| e.to_string())?;
    config
        .keys_files
        .first()
        .cloned()
        .ok_or_else(|| "the config names no keys_files; add one, or pass --file PATH".to_owned())
}

const STDIN_LIMIT: u64 = 1024 * 1024;

/// From a prompt that does not echo, or from stdin when it is a pipe; one trailing newline
/// (or CRLF) is not part of the key.
fn read_key(profile: &str) -> Result<String, String> {
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("key for {profile} (not shown): "))
            .map_err(|e| format!("cannot read the key: {e}"))?
    } else {
        // Read well past the longest key accepted, so that too much is refused as too long
        // rather than cut to a key that was never given.
        let mut text = String::new();
        std::io::stdin()
            .take(STDIN_LIMIT)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
        text
    };
    let key = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if key.is_empty() {
        return Err("no key given (type it at the prompt, or pipe it in: pass show x | keyproxy keys add PROFILE)".into());
    }
    Ok(key.to_owned())
}
