//! Who keyproxy runs as and who owns a file, in words: a file that cannot be read, or that
//! others can read, is fixed by someone who needs both (in a container the keys file is often
//! the host user's, and keyproxy runs as another uid).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

/// `uid 1000 (alice)`, or `uid 1000` when /etc/passwd does not name it.
fn user(uid: u32) -> String {
    match name_in("/etc/passwd", uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// `group 1000 (alice)`, or `group 1000`.
fn group(gid: u32) -> String {
    match name_in("/etc/group", gid) {
        Some(name) => format!("group {gid} ({name})"),
        None => format!("group {gid}"),
    }
}

/// The name of id `id` in a passwd or group file (`name:x:id:...`).
fn name_in(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let found: u32 = fields.nth(1)?.parse().ok()?;
        (found == id && !name.is_empty()).then(|| name.to_owned())
    })
}

fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether keyproxy is in group `gid` (its own or a supplementary one).
fn in_group(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

/// What follows "permission denied" for `path`: who keyproxy is, who owns the file, and how
/// to let keyproxy read it.
pub(super) fn denied(path: &Path) -> String {
    let me = user(my_uid());
    let Ok(meta) = std::fs::metadata(path) else {
        return format!("keyproxy runs as {me}, which cannot reach the file");
    };
    format!(
        "keyproxy runs as {me}; the file is owned by {}, {}, mode {:o}: let keyproxy's user read it (a group it is in and chmod 640) or run keyproxy as the owner",
        user(meta.uid()),
        group(meta.gid()),
        meta.permissions().mode() & 0o777
    )
}

/// The mode and advice for a keys file others can read: `None` when only keyproxy's own user and
/// groups can. The advice works for the file's owner: `chmod 600` when keyproxy is the owner
/// (or root), but when it reads the file through its group or as "others", 600 would lock it
/// out, so the advice is a group keyproxy is in and 640.
pub(super) fn shared(path: &Path) -> Option<(u32, String)> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    let shared = mode & 0o007 != 0 || (mode & 0o070 != 0 && !in_group(meta.gid()));
    if !shared {
        return None;
    }
    let me = my_uid();
    let shown = path.display();
    if me == meta.uid() || me == 0 {
        return Some((mode, format!("run: chmod 600 {shown}")));
    }
    let mine = rustix::process::getegid().as_raw();
    let with_group = if in_group(meta.gid()) {
        String::new()
    } else {
        let name = name_in("/etc/group", mine).unwrap_or_else(|| mine.to_string());
        format!("chgrp {name} {shown} && ")
    };
    let advice = format!(
        "keyproxy runs as {}, not as the owner {}, so chmod 600 would lock it out; as the owner run: {with_group}chmod 640 {shown} (keyproxy reads it through {}), or run keyproxy as the owner",
        user(me),
        user(meta.uid()),
        group(if with_group.is_empty() { meta.gid() } else { mine }),
    );
    Some((mode, advice))
}
