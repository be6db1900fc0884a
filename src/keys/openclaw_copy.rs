//! Private copies of OpenClaw's database, made only when it changed.
//!
//! Reading the database means copying it with its `-wal` (see `openclaw_state`). OpenClaw's
//! database grows with its sessions (150 MB in the field), so copying and hashing it whole on
//! every poll cost 161 MiB of RSS and 12% of a CPU at idle: the database and its side files are
//! now looked at by size, times and inode, and copied only when one of those moved (or is too
//! recent to tell).
//!
//! The copies hold keys, so they go in a folder of keyproxy's own (`<state_dir>/openclaw-copy`,
//! 0700), never bare TMPDIR, and each is removed after its read. A keyproxy killed mid-copy
//! (SIGKILL, OOM) cannot remove its own: every copy folder holds a lock file that its process
//! locks while it reads, and on start-up any copy whose lock nobody holds is removed.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cached::SourceError;
use super::files::{FileSet, Seen};

/// The database and the side files SQLite may need to see what was committed.
const FILES: [&str; 3] = ["", "-wal", "-journal"];
const LOCK: &str = ".lock";
const PREFIX: &str = "copy-";
/// A copy folder without a lock file is left alone this long: its process may be about to lock
/// it. Also the age past which a copy an earlier keyproxy made in TMPDIR is taken as abandoned.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);
/// How keyproxy named its copies in TMPDIR before they had a folder of their own.
const LEGACY_PREFIX: &str = "keyproxy-openclaw-";

/// The last row read from each database, with the looks at its files it was read after.
#[derive(Default)]
pub(crate) struct Copies {
    folder: Option<PathBuf>,
    last: HashMap<PathBuf, (Vec<Seen>, DbRow)>,
}

/// What one read of a database gave: its `PRAGMA user_version`, the store row, if any, and (for
/// the shared database) the team entries of OpenClaw's secret store that `store` refs name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DbRow {
    pub user_version: i64,
    pub json: Option<String>,
    pub secrets: StoreSecrets,
}

/// `openclaw secrets store set` entries by name: the value as a key, or why it is not one.
pub(crate) type StoreSecrets = Vec<(String, Result<super::Secret, String>)>;

impl Copies {
    /// The `authProfiles.store` row of `db` (`None` when the database has no such row,
    /// `NotFound` when there is no database): the last one read when no file of the database
    /// changed since, else `query` run on a private copy.
    pub fn row(
        &mut self,
        db: &Path,
        files: &mut FileSet,
        state_dir: Option<&Path>,
        query: impl FnOnce(&Path) -> Result<DbRow, String>,
    ) -> Result<DbRow, SourceError> {
        let failed = |why: String| SourceError::Failed(format!("{}: {why}", db.display()));
        let seen: Vec<Seen> = FILES.iter().map(|s| files.stat(&side(db, s))).collect();
        match seen[0] {
            Seen::Missing => return Err(SourceError::NotFound),
            Seen::Unreadable(io::ErrorKind::PermissionDenied) => {
                return Err(failed("permission denied".into()))
            }
            Seen::Unreadable(kind) => return Err(failed(io::Error::from(kind).to_string())),
            _ => {}
        }
        if let Some((before, row)) = self.last.get(db) {
            if before.len() == seen.len() && before.iter().zip(&seen).all(|(b, s)| s.same_as(b)) {
                return Ok(row.clone());
            }
        }
        let folder = self
            .folder(state_dir)
            .map_err(|e| failed(format!("cannot make a private folder to copy it into: {e}")))?;
        let copy = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&folder)
            .map_err(|e| failed(format!("cannot make a private copy to read: {e}")))?;
        // Held until the copy is removed, so another keyproxy starting meanwhile leaves it.
        let lock = File::create(copy.path().join(LOCK)).and_then(|f| {
            f.try_lock().map_err(io::Error::other)?;
            Ok(f)
        });
        let _lock = lock.map_err(|e| failed(format!("cannot lock the private copy: {e}")))?;
        let target = copy.path().join("openclaw.sqlite");
        for (suffix, seen) in FILES.iter().zip(&seen) {
            if !matches!(seen, Seen::Stamped(_)) {
                continue;
            }
            match std::fs::copy(side(db, suffix), side(&target, suffix)) {
                Ok(_) => {}
                // A side file a checkpoint removed since it was looked at.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !suffix.is_empty() => {}
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(failed("permission denied".into()))
                }
                Err(e) => return Err(failed(format!("cannot make a private copy to read: {e}"))),
            }
        }
        tracing::debug!(database = %db.display(), "copied OpenClaw's database to read it");
        let row = query(&target).map_err(failed)?;
        self.last.insert(db.to_path_buf(), (seen, row.clone()));
        Ok(row)
    }

    /// The private folder, made on first use, when copies left by a killed keyproxy are removed.
    fn folder(&mut self, state_dir: Option<&Path>) -> io::Result<PathBuf> {
        if let Some(folder) = &self.folder {
            return Ok(folder.clone());
        }
        let folder = state_dir
            .map(|d| d.join("openclaw-copy"))
            .ok_or_else(|| io::Error::other("no state_dir (nor XDG_STATE_HOME or HOME)"))?;
        private_folder(&folder)?;
        remove_stale(&folder);
        remove_legacy(&std::env::temp_dir());
        self.folder = Some(folder.clone());
        Ok(folder)
    }
}

fn side(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
fn private_folder(folder: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)?;
    // An existing folder keeps its mode through create; copies of keys are for no one else.
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn private_folder(folder: &Path) -> io::Result<()> {
    std::fs::create_dir_all(folder)
}

/// Removes every copy no running keyproxy holds the lock of.
fn remove_stale(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let stale = match File::open(path.join(LOCK)) {
            Ok(lock) => lock.try_lock().is_ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m.elapsed().is_ok_and(|age| age > UNLOCKED_GRACE)),
            Err(_) => false,
        };
        if stale {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(
                    copy = %path.display(),
                    "removed a copy of OpenClaw's database left by a keyproxy that was stopped while reading it"
                ),
                Err(e) => {
                    tracing::warn!(copy = %path.display(), "cannot remove a stale copy of OpenClaw's database: {e}")
                }
            }
        }
    }
}

/// Removes copies an earlier keyproxy left in TMPDIR when it was killed mid-copy: this user's,
/// older than [`UNLOCKED_GRACE`] (such a copy took well under a second).
#[cfg(unix)]
fn remove_legacy(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = rustix::process::getuid().as_raw();
    for entry in entries.filter_map(Result::ok) {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(LEGACY_PREFIX)
        {
            continue;
        }
        // Not followed: a link planted by someone else is not ours to remove the target of.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let old = meta
            .modified()
            .is_ok_and(|m| m.elapsed().is_ok_and(|age| age > UNLOCKED_GRACE));
        if meta.is_dir() && meta.uid() == me && old && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            tracing::info!(copy = %entry.path().display(), "removed a copy of OpenClaw's database an earlier keyproxy left in TMPDIR");
        }
    }
}

#[cfg(not(unix))]
fn remove_legacy(_tmp: &Path) {}
