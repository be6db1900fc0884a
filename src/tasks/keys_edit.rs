//! `keyproxy keys add | remove`: edits a keys file the way a careful person would. Order and
//! formatting stay (toml_edit), and so does every comment: a value is changed where it is, and
//! the comments of what goes (a commented-out backup key under a profile, the example's
//! explanations) move to what follows it. The result must parse as a keys file before it is
//! written; `keys_write` locks, writes atomically and keeps owner, group and mode.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, TableLike};

use super::keys_toml::{comments_of_table, keep_after, position, set_inline_keys, stash};
use super::keys_write::{self, Locked};
use crate::keys::{fingerprint, is_placeholder, parse_keys_file, parse_keys_file_to_edit, Secret};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key {0}")]
    BadKey(&'static str),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Write(#[from] keys_write::WriteError),
}

/// What an edit did, for the line the command prints.
#[derive(Debug, PartialEq, Eq)]
pub enum Edited {
    Added {
        fingerprint: String,
    },
    AlreadyThere {
        fingerprint: String,
    },
    Removed {
        fingerprints: Vec<String>,
        /// The profile went too: asked for, or left with nothing to give a key.
        profile_gone: bool,
    },
}

/// Adds `key` to `profile` in the keys file at `path` (created when missing): as `key` when the
/// profile has none, else joining its pool in `keys`; with `replace`, instead of its keys. The
/// example's placeholder is replaced, never joined.
pub fn add(path: &Path, profile: &str, key: &str, replace: bool) -> Result<Edited, EditError> {
    let secret = Secret::new(key).map_err(EditError::BadKey)?;
    let fp = secret.fingerprint();
    let locked = lock(path)?;
    let (mut doc, _) = read(&locked.path)?;
    let table = profile_table(&mut doc, profile)?;
    let had = inline_keys_of(table);
    if had.iter().any(|k| k == key) && !replace {
        return Ok(Edited::AlreadyThere { fingerprint: fp });
    }
    let mut keys: Vec<String> = match replace {
        true => Vec::new(),
        false => had.into_iter().filter(|k| !is_placeholder(k)).collect(),
    };
    keys.push(key.to_owned());
    let orphans = set_inline_keys(table, &keys);
    keep_after(&mut doc, profile, orphans);
    write(&locked, &doc)?;
    Ok(Edited::Added { fingerprint: fp })
}

/// Removes the key with fingerprint `fp` from `profile`, or the whole profile when `fp` is None.
/// A profile left with nothing to give a key goes too. A fingerprint two different keys share
/// is refused: which one is meant cannot be told.
pub fn remove(path: &Path, profile: &str, fp: Option<&str>) -> Result<Edited, EditError> {
    let locked = lock(path)?;
    let path = &locked.path;
    let (mut doc, text) = read(path)?;
    let missing = || EditError::Refused(format!("{}: no profile '{profile}'", path.display()));
    let profiles = doc
        .get_mut("profiles")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(missing)?;
    let table = profiles
        .get_mut(profile)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(missing)?;
    let keys = inline_keys_of(table);
    let mut orphans = String::new();
    let removed: Vec<String> = match fp {
        None => keys.iter().map(|k| fingerprint(k)).collect(),
        Some(fp) => {
            let mut matching: Vec<&String> = keys.iter().filter(|k| fingerprint(k) == fp).collect();
            // The same key written twice is one key: removing it removes both.
            matching.sort();
            matching.dedup();
            match matching.as_slice() {
                [] => {
                    let there: Vec<String> = keys.iter().map(|k| fingerprint(k)).collect();
                    return Err(EditError::Refused(format!(
                        "{}: profile '{profile}' has no key {fp}; its keys: {}",
                        path.display(),
                        if there.is_empty() {
                            "none written in this file".into()
                        } else {
                            there.join(", ")
                        }
                    )));
                }
                [one] => {
                    let one = (*one).clone();
                    let kept: Vec<String> = keys.iter().filter(|k| **k != one).cloned().collect();
                    orphans = set_inline_keys(table, &kept);
                    vec![fp.to_owned()]
                }
                several => {
                    return Err(EditError::Refused(ambiguous(
                        path, profile, fp, several, &text,
                    )))
                }
            }
        }
    };
    let empty = ["key", "keys", "key_env", "key_file", "key_command"]
        .iter()
        .all(|f| !table.contains_key(f));
    let profile_gone = fp.is_none() || empty;
    if profile_gone {
        orphans = comments_of_table(profiles.get(profile)) + &orphans;
        let at = position(profiles.get(profile));
        profiles.remove(profile);
        stash(&mut doc, at, orphans);
    } else {
        keep_after(&mut doc, profile, orphans);
    }
    write(&locked, &doc)?;
    Ok(Edited::Removed {
        fingerprints: removed,
        profile_gone,
    })
}

/// Several keys share the fingerprint: where each is, so the user can edit the one they mean.
fn ambiguous(path: &Path, profile: &str, fp: &str, keys: &[&String], text: &str) -> String {
    let lines: Vec<String> = keys
        .iter()
        .filter_map(|k| text.find(k.as_str()))
        .map(|at| (text[..at].matches('\n').count() + 1).to_string())
        .collect();
    format!(
        "{}: profile '{profile}' has {} different keys with fingerprint {fp} (on lines {}); nothing removed: delete the one you mean in the file",
        path.display(),
        keys.len(),
        lines.join(" and ")
    )
}

fn lock(path: &Path) -> Result<Locked, EditError> {
    keys_write::lock(path).map_err(|source| EditError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The document, and its text. A missing file is an empty one.
fn read(path: &Path) -> Result<(DocumentMut, String), EditError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(EditError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // The same checks as a load, so that an edit never starts from (or makes) a broken file;
    // only the example's placeholder is let through, for `keys add` to replace.
    parse_keys_file_to_edit(&text, path)
        .map_err(|message| EditError::Refused(format!("{message}; fix the file first")))?;
    let doc = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Parse {
            path: path.to_path_buf(),
            message: crate::text::redact_quoted(e.message()),
        })?;
    Ok((doc, text))
}

fn profile_table<'d>(
    doc: &'d mut DocumentMut,
    profile: &str,
) -> Result<&'d mut dyn TableLike, EditError> {
    let not_table = |what: &str| EditError::Refused(format!("{what} is not a table"));
    let is_new = doc.get("profiles").and_then(|p| p.get(profile)).is_none();
    // A new profile goes at the end of the file, after comments there (such as the example's
    // commented profiles), not above the file's opening comment.
    let mut new_table = Table::new();
    if is_new {
        new_table.set_position(usize::MAX);
        let trailing = doc.trailing().as_str().unwrap_or_default().to_owned();
        let blank = if doc.as_table().is_empty() && trailing.trim().is_empty() {
            ""
        } else {
            "\n"
        };
        let before = trailing.trim_end_matches('\n');
        let sep = if before.is_empty() { "" } else { "\n" };
        new_table
            .decor_mut()
            .set_prefix(format!("{before}{sep}{blank}"));
        doc.set_trailing("");
    }
    let profiles = doc.entry("profiles").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    profiles
        .as_table_like_mut()
        .ok_or_else(|| not_table("profiles"))?
        .entry(profile)
        .or_insert_with(|| Item::Table(new_table))
        .as_table_like_mut()
        .ok_or_else(|| not_table(&format!("profile '{profile}'")))
}

fn inline_keys_of(table: &dyn TableLike) -> Vec<String> {
    let one = table.get("key").and_then(Item::as_str).map(str::to_owned);
    let many = table
        .get("keys")
        .and_then(Item::as_array)
        .into_iter()
        .flat_map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)));
    one.into_iter().chain(many).collect()
}

fn write(locked: &Locked, doc: &DocumentMut) -> Result<(), EditError> {
    let text = doc.to_string();
    parse_keys_file(&text, &locked.path)
        .map_err(|m| EditError::Refused(format!("the edit would break the file: {m}")))?;
    Ok(keys_write::replace(locked, &text)?)
}
