//! Noticing that a source changed. Folder watches (inotify through notify) see in-place writes,
//! editors' write-and-rename, `mv` over a file and Kubernetes' `..data` symlink swap; a watch on
//! a folder that was moved away or deleted goes silent (notify issue 164), so folders are
//! re-armed when their identity changes; and a periodic poll covers filesystems that never send
//! an event (NFS, some overlay and bind mounts). Events and polls only suggest a change: the
//! contents of the files, read through their paths, decide.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::Watcher as _;

/// A folder's identity: a folder moved away and replaced by a new one at the same path is a
/// different inode, and the old watch follows the old one.
#[cfg(unix)]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    dir.is_dir().then_some((0, 0))
}

/// The folder to watch for `file`: its own folder, or the nearest one that exists, so that a
/// secret folder mounted late is seen being created.
fn folder_for(file: &Path) -> PathBuf {
    let mut dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    while !dir.is_dir() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => return PathBuf::from("."),
        }
    }
    dir
}

/// Folder watches that wake [`Watcher::changed`] on any event but a mere read.
pub struct Watcher {
    inner: Option<notify::RecommendedWatcher>,
    armed: HashMap<PathBuf, Option<(u64, u64)>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Watcher {
    /// Without inotify (or out of watches) keyproxy still reloads, by polling; it says so.
    pub fn new() -> Self {
        let wake = Arc::new(tokio::sync::Notify::new());
        let waker = wake.clone();
        let inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                // keyproxy's own reads cause these (opens, closes, atime updates); a change
                // of contents always comes with a write, create, remove or rename.
                Ok(e)
                    if matches!(
                        e.kind,
                        notify::EventKind::Access(_)
                            | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
                    ) => {}
                Ok(_) => waker.notify_one(),
                Err(e) => {
                    tracing::debug!("file watch error: {e}");
                    waker.notify_one();
                }
            }
        });
        let inner = match inner {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot watch files ({e}); changes are found by polling only");
                None
            }
        };
        Self {
            inner,
            armed: HashMap::new(),
            wake,
        }
    }

    /// Watches the folders of `files`: new ones are added, ones no longer needed dropped, and a
    /// folder that was replaced since it was armed is armed again.
    ///
    /// Returns whether a folder was newly armed: a file written there before the watch existed
    /// sent no event, so the caller must look at the files once more.
    pub fn arm<'a>(&mut self, files: impl IntoIterator<Item = &'a Path>) -> bool {
        let Some(inner) = self.inner.as_mut() else {
            return false;
        };
        let mut armed_new = false;
        let wanted: HashMap<PathBuf, Option<(u64, u64)>> = files
            .into_iter()
            .map(folder_for)
            .map(|dir| {
                let id = identity(&dir);
                (dir, id)
            })
            .collect();
        self.armed.retain(|dir, id| {
            let keep = wanted.get(dir) == Some(id) && id.is_some();
            if !keep {
                // Already gone when its folder was deleted; nothing to undo then.
                let _ = inner.unwatch(dir);
            }
            keep
        });
        for (dir, id) in wanted {
            if self.armed.contains_key(&dir) {
                continue;
            }
            match inner.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(folder = %dir.display(), "watching");
                    self.armed.insert(dir, id);
                    armed_new = true;
                }
                Err(e) => {
                    tracing::warn!(folder = %dir.display(), "cannot watch ({e}); polling finds its changes");
                }
            }
        }
        armed_new
    }

    /// Waits for the next event in a watched folder; never returns when nothing can be watched.
    pub async fn changed(&self) {
        if self.inner.is_none() {
            std::future::pending::<()>().await;
        }
        self.wake.notified().await;
    }
}

impl Default for Watcher {
    fn default() -> Self {
        Self::new()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_is_watched_through_its_nearest_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not/yet/mounted/keys.toml");
        assert_eq!(folder_for(&file), dir.path());
        assert_eq!(folder_for(Path::new("keys.toml")), Path::new("."));
    }
}
