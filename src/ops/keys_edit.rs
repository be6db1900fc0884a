//! `keyproxy keys add | remove`: edits a keys file the way a careful person would. Comments,
//! order and formatting stay (toml_edit); the result must parse as a keys file before it is
//! written; the write is atomic (temporary file in the same folder, fsync, rename, fsync of the
//! folder) with mode 0600, so a running keyproxy reads either the old file or the new one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Table};

use crate::keys::{fingerprint, parse_keys_file, Secret};

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
/// profile has none, else joining its pool in `keys`; with `replace`, instead of its keys.
pub fn add(path: &Path, profile: &str, key: &str, replace: bool) -> Result<Edited, EditError> {
    let secret = Secret::new(key).map_err(EditError::BadKey)?;
    let fp = secret.fingerprint();
    let path = real_path(path);
    let mut doc = read(&path)?;
    let table = profile_table(&mut doc, profile)?;
    let mut keys = inline_keys_of(table);
    if keys.iter().any(|k| k == key) && !replace {
        return Ok(Edited::AlreadyThere { fingerprint: fp });
    }
    if replace {
        keys.clear();
    }
    keys.push(key.to_owned());
    set_inline_keys(table, &keys);
    write(&path, &doc)?;
    Ok(Edited::Added { fingerprint: fp })
}

/// Removes the key with fingerprint `fp` from `profile`, or the whole profile when `fp` is None.
/// A profile left with nothing to give a key goes too.
pub fn remove(path: &Path, profile: &str, fp: Option<&str>) -> Result<Edited, EditError> {
    let path = real_path(path);
    let mut doc = read(&path)?;
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
    let removed: Vec<String> = match fp {
        None => keys.iter().map(|k| fingerprint(k)).collect(),
        Some(fp) => {
            let kept: Vec<String> = keys
                .iter()
                .filter(|k| fingerprint(k) != fp)
                .cloned()
                .collect();
            if kept.len() == keys.len() {
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
            set_inline_keys(table, &kept);
            vec![fp.to_owned()]
        }
    };
    let empty = ["key", "keys", "key_env", "key_file", "key_command"]
        .iter()
        .all(|f| !table.contains_key(f));
    let profile_gone = fp.is_none() || empty;
    if profile_gone {
        profiles.remove(profile);
    }
    write(&path, &doc)?;
    Ok(Edited::Removed {
        fingerprints: removed,
        profile_gone,
    })
}

/// A keys file that is a symlink (a dotfiles repository) is edited where it lives.
fn real_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read(path: &Path) -> Result<DocumentMut, EditError> {
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
    // The same checks as a load, so that an edit never starts from (or makes) a broken file.
    parse_keys_file(&text, path)
        .map_err(|message| EditError::Refused(format!("{message}; fix the file first")))?;
    text.parse()
        .map_err(|e: toml_edit::TomlError| EditError::Parse {
            path: path.to_path_buf(),
            message: crate::text::redact_quoted(e.message()),
        })
}

fn profile_table<'d>(
    doc: &'d mut DocumentMut,
    profile: &str,
) -> Result<&'d mut dyn toml_edit::TableLike, EditError> {
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

fn inline_keys_of(table: &dyn toml_edit::TableLike) -> Vec<String> {
    let one = table.get("key").and_then(Item::as_str).map(str::to_owned);
    let many = table
        .get("keys")
        .and_then(Item::as_array)
        .into_iter()
        .flat_map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)));
    one.into_iter().chain(many).collect()
}

/// The profile's inline keys become `keys`: one as `key = "..."`, more as `keys = [...]`, none
/// as neither.
fn set_inline_keys(table: &mut dyn toml_edit::TableLike, keys: &[String]) {
    table.remove("key");
    table.remove("keys");
    match keys {
        [] => {}
        [one] => {
            table.insert("key", value(one.as_str()));
        }
        _ => {
            let array: Array = keys.iter().map(String::as_str).collect();
            table.insert("keys", value(array));
        }
    }
}

fn write(path: &Path, doc: &DocumentMut) -> Result<(), EditError> {
    let io = |source| EditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = doc.to_string();
    parse_keys_file(&text, path)
        .map_err(|m| EditError::Refused(format!("the edit would break the file: {m}")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir).map_err(io)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".keys-")
        .suffix(".tmp")
        .permissions(private_file())
        .tempfile_in(&dir)
        .map_err(io)?;
    tmp.write_all(text.as_bytes()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn private_file() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o600)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
