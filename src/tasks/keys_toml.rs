//! A profile's keys in a keys file's toml_edit document, changed so that every comment stays: a
//! value changes where it is, `key = "..."` becomes `keys = [...]` on its own line, and the
//! comments of what goes move to what follows it (the next entry, element or table, or the end
//! of the file). A commented-out backup key under a profile, or the example's explanations,
//! survive `keys remove` and `keys add --replace`.

use toml_edit::{value, Array, DocumentMut, Item, Table, TableLike, Value};

/// Makes the profile's inline keys `keys`, changing values where they are: `key = "..."` keeps
/// its line (and comments) for one key and becomes `keys = [...]` in its place for more; a pool
/// keeps its array, losing and gaining elements. Returns the comments of entries that went and
/// had nothing after them in the table, for the caller to keep after it.
pub(super) fn set_inline_keys(table: &mut dyn TableLike, keys: &[String]) -> String {
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
pub(super) fn comments_of_table(item: Option<&Item>) -> String {
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

pub(super) fn position(item: Option<&Item>) -> Option<usize> {
    item.and_then(Item::as_table).and_then(Table::position)
}

/// Keeps `comments` after `profile`'s table: before the next table, or at the end of the file.
pub(super) fn keep_after(doc: &mut DocumentMut, profile: &str, comments: String) {
    let at = position(doc.get("profiles").and_then(|p| p.get(profile)));
    stash(doc, at, comments);
}

/// Puts `comments` before the first profile table after position `at`, or at the end.
pub(super) fn stash(doc: &mut DocumentMut, at: Option<usize>, comments: String) {
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
