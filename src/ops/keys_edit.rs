//! `keyproxy keys add | remove`: edits a keys file the way a careful person would. Order and
//! formatting stay (toml_edit), and so does every comment: a value is changed where it is, and
//! the comments of what goes (a commented-out backup key under a profile, the example's
//! explanations) move to what follows it. The result must parse as a keys file before it is
//! written; `keys_write` locks, writes atomically and keeps owner, group and mode.

use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Table, TableLike, Value};

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

/// Makes the profile's inline keys `keys`, changing values where they are: `key = "..."` keeps
/// its line (and comments) for one key and becomes `keys = [...]` in its place for more; a pool
/// keeps its array, losing and gaining elements. Returns the comments of entries that went and
/// had nothing after them in the table, for the caller to keep after it.
fn set_inline_keys(table: &mut dyn TableLike, keys: &[String]) -> String {
    let mut left: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut orphans = String::new();
    let current = table.get("key").and_then(Item::as_str).map(str::to_owned);
    let pool = table.get("keys").is_some_and(Item::is_array);
    if let Some(current) = current {
        match left.iter().position(|k| *k == current) {
            Some(_) if !pool && keys.len() > 1 => {
                to_pool(table, &left);
                return orphans;
            }
            Some(i) => {
                left.remove(i);
            }
            None if pool || left.is_empty() => orphans += &remove_entry(table, "key"),
            None if left.len() == 1 => {
                set_keeping_decor(table, "key", value(left[0]));
                return orphans;
            }
            None => {
                to_pool(table, &left);
                return orphans;
            }
        }
    }
    if let Some(array) = table.get_mut("keys").and_then(Item::as_array_mut) {
        edit_array(array, &mut left);
        if array.is_empty() {
            orphans += &remove_entry(table, "keys");
        }
        return orphans;
    }
    match left.as_slice() {
        [] => {}
        [one] => {
            table.insert("key", value(*one));
        }
        many => {
            let array: Array = many.iter().copied().collect();
            table.insert("keys", value(array));
        }
    }
    orphans
}

/// Turns `key = "..."` into `keys = [...]` on the same line, with the same comments.
fn to_pool(table: &mut dyn TableLike, keys: &[&str]) {
    let array: Array = keys.iter().copied().collect();
    let entries: Vec<(toml_edit::Key, Item)> = table
        .iter()
        .filter_map(|(k, _)| table.get_key_value(k))
        .map(|(k, item)| (k.clone(), item.clone()))
        .collect();
    table.clear();
    for (k, mut item) in entries {
        let k = if k.get() == "key" {
            let decor = item.as_value().map(|v| v.decor().clone());
            item = value(array.clone());
            if let (Some(decor), Some(v)) = (decor, item.as_value_mut()) {
                *v.decor_mut() = decor;
            }
            toml_edit::Key::new("keys").with_leaf_decor(k.leaf_decor().clone())
        } else {
            k
        };
        table.entry_format(&k).or_insert(item);
    }
}

fn set_keeping_decor(table: &mut dyn TableLike, name: &str, mut new: Item) {
    if let Some(old) = table.get_mut(name) {
        if let (Some(decor), Some(v)) = (
            old.as_value().map(|v| v.decor().clone()),
            new.as_value_mut(),
        ) {
            *v.decor_mut() = decor;
        }
        *old = new;
    }
}

/// Drops the array's elements not in `left` and appends what `left` still has, taking each
/// kept one out of it. A dropped element's comments (and its line break) go to the element
/// after it, or before the closing bracket.
fn edit_array(array: &mut Array, left: &mut Vec<&str>) {
    // The whitespace and comments of the elements dropped since the last one kept.
    let mut carried: Option<String> = None;
    let mut i = 0;
    while i < array.len() {
        let here = array.get(i).and_then(Value::as_str).map(str::to_owned);
        match here.and_then(|k| left.iter().position(|l| *l == k)) {
            Some(at) => {
                left.remove(at);
                if let (Some(v), Some(carried)) = (array.get_mut(i), carried.take()) {
                    let own = raw(v.decor().prefix());
                    v.decor_mut().set_prefix(joined(&carried, &own));
                }
                i += 1;
            }
            None => {
                let gone = array.remove(i);
                let own = raw(gone.decor().prefix());
                carried = Some(match carried {
                    Some(before) => joined(&before, &own),
                    None => own,
                });
            }
        }
    }
    if let Some(carried) = carried {
        let trailing = raw(Some(array.trailing()));
        array.set_trailing(joined(&carried, &trailing));
    }
    for k in left.drain(..) {
        array.push(k);
    }
}

fn raw(text: Option<&toml_edit::RawString>) -> String {
    text.and_then(|r| r.as_str()).unwrap_or_default().to_owned()
}

/// Whitespace and comments of a dropped element followed by those of what comes next, without
/// the indentation between them or a doubled line break.
fn joined(first: &str, then: &str) -> String {
    let first = first.trim_end_matches([' ', '\t']);
    let then = then.trim_start_matches([' ', '\t']);
    let then = match (first.ends_with('\n'), then.strip_prefix('\n')) {
        (true, Some(rest)) => rest,
        _ => then,
    };
    format!("{first}{then}")
}

/// Removes an entry of a table, its comments moving to the entry after it; returns them when
/// no entry follows.
fn remove_entry(table: &mut dyn TableLike, name: &str) -> String {
    let names: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
    let next = names.iter().skip_while(|n| *n != name).nth(1).cloned();
    let mut comments = table
        .key(name)
        .map(|k| comment_lines(k.leaf_decor().prefix()))
        .unwrap_or_default();
    if let Some(v) = table.get(name).and_then(Item::as_value) {
        comments += &comment_lines(v.decor().suffix());
    }
    table.remove(name);
    match next.and_then(|n| table.key_mut(&n)) {
        Some(mut key) => {
            prepend_prefix(key.leaf_decor_mut(), &comments);
            String::new()
        }
        None => comments,
    }
}

/// Every comment of a profile that goes: above its header, on it, and in it.
fn comments_of_table(item: Option<&Item>) -> String {
    let Some(table) = item.and_then(Item::as_table) else {
        return String::new();
    };
    let mut text = table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_owned();
    text += &comment_lines(table.decor().suffix());
    for (name, item) in table.iter() {
        if let Some(k) = table.key(name) {
            text += &comment_lines(k.leaf_decor().prefix());
        }
        if let Some(v) = item.as_value() {
            text += &comment_lines(v.decor().suffix());
            if let Some(a) = v.as_array() {
                for e in a.iter() {
                    text += &comment_lines(e.decor().prefix());
                    text += &comment_lines(e.decor().suffix());
                }
                text += &comment_lines(Some(a.trailing()));
            }
        }
    }
    text
}

fn position(item: Option<&Item>) -> Option<usize> {
    item.and_then(Item::as_table).and_then(Table::position)
}

/// Keeps `comments` after `profile`'s table: before the next table, or at the end of the file.
fn keep_after(doc: &mut DocumentMut, profile: &str, comments: String) {
    let at = position(doc.get("profiles").and_then(|p| p.get(profile)));
    stash(doc, at, comments);
}

/// Puts `comments` before the first profile table after position `at`, or at the end.
fn stash(doc: &mut DocumentMut, at: Option<usize>, comments: String) {
    if comments.is_empty() {
        return;
    }
    let next = doc
        .get_mut("profiles")
        .and_then(Item::as_table_mut)
        .and_then(|profiles| {
            profiles
                .iter_mut()
                .filter_map(|(_, item)| item.as_table_mut())
                .filter(|t| matches!((t.position(), at), (Some(p), Some(a)) if p > a))
                .min_by_key(|t| t.position())
        });
    match next {
        Some(table) => prepend_prefix(table.decor_mut(), &comments),
        None => {
            let trailing = doc.trailing().as_str().unwrap_or_default().to_owned();
            doc.set_trailing(format!("{comments}{trailing}"));
        }
    }
}

fn prepend_prefix(decor: &mut toml_edit::Decor, text: &str) {
    if text.is_empty() {
        return;
    }
    let old = decor
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_owned();
    decor.set_prefix(format!("{text}{old}"));
}

/// The comment lines of a prefix or suffix, each ending in a newline; blank space dropped.
fn comment_lines(raw: Option<&toml_edit::RawString>) -> String {
    raw.and_then(|r| r.as_str())
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn write(locked: &Locked, doc: &DocumentMut) -> Result<(), EditError> {
    let text = doc.to_string();
    parse_keys_file(&text, &locked.path)
        .map_err(|m| EditError::Refused(format!("the edit would break the file: {m}")))?;
    keys_write::replace(locked, &text).map_err(EditError::Refused)
}
