//! Noticing that a source changed. Folder watches (inotify through notify) see in-place writes,
//! editors' write-and-rename, `mv` over a file and Kubernetes' `..data` symlink swap; a watch on
//! a folder that was moved away or deleted goes silent (notify issue 164), so folders are
//! re-armed when their identity changes; and a periodic poll covers filesystems that never send
//! an event (NFS, some overlay and bind mounts). Events and polls only suggest a change: the
//! contents of the files, read through their paths, decide.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::Watcher as _;

/// What a file held when it was read. Reading through the path follows symlinks, and the bytes
/// are compared rather than mtimes, because a Kubernetes secret swap changes neither the path
/// nor, often, the mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Missing,
    Unreadable(io::ErrorKind),
    Content { len: usize, hash: u64 },
}

impl Seen {
    pub fn of(read: &io::Result<Vec<u8>>) -> Self {
        match read {
            Ok(bytes) => {
                let mut h = std::hash::DefaultHasher::new();
                bytes.hash(&mut h);
                Self::Content {
                    len: bytes.len(),
                    hash: h.finish(),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::Missing,
            Err(e) => Self::Unreadable(e.kind()),
        }
    }

    pub fn now(path: &Path) -> Self {
        Self::of(&std::fs::read(path))
    }
}

/// How long an empty file is given to fill before it is taken as empty.
const EMPTY_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The file the reloader is reading right now, if any, and since when: a read that never
/// returns (a hung NFS or FUSE mount, a FIFO) shows in `status` as a source not answering.
#[derive(Debug, Default)]
pub struct ReadProbe(std::sync::Mutex<Option<(PathBuf, std::time::Instant)>>);

impl ReadProbe {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.set(Some((path.to_path_buf(), std::time::Instant::now())));
        let read = std::fs::read(path);
        self.set(None);
        read
    }

    fn set(&self, value: Option<(PathBuf, std::time::Instant)>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }

    /// The file being read for longer than `patience`, and for how long.
    pub fn stuck(&self, patience: std::time::Duration) -> Option<(PathBuf, std::time::Duration)> {
        let guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (path, since) = guard.as_ref()?;
        let waited = since.elapsed();
        (waited > patience).then(|| (path.clone(), waited))
    }
}

/// Every file a snapshot was built from, as it was read.
#[derive(Debug, Default, Clone)]
pub struct FileSet {
    files: BTreeMap<PathBuf, Seen>,
    probe: Arc<ReadProbe>,
}

impl FileSet {
    /// A set whose reads are watched by `probe`.
    pub fn probed(probe: Arc<ReadProbe>) -> Self {
        Self {
            files: BTreeMap::new(),
            probe,
        }
    }

    /// Reads a file and remembers what it held.
    pub fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        let mut read = self.probe.read(path);
        if read.as_ref().is_ok_and(Vec::is_empty) {
            // An in-place writer truncates first and writes after: an empty file read for a
            // reload is most often half of a write, and applying it would drop every key until
            // the next event. Look once more after a pause (this is the reloader's own thread).
            std::thread::sleep(EMPTY_SETTLE);
            read = self.probe.read(path);
        }
        self.files.insert(path.to_path_buf(), Seen::of(&read));
        read
    }

    /// The first file that holds something else now than when it was read.
    pub fn changed(&self) -> Option<&Path> {
        self.files
            .iter()
            .find(|(path, seen)| Seen::of(&self.probe.read(path)) != **seen)
            .map(|(path, _)| path.as_path())
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }
}

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
    fn contents_decide_not_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut set = FileSet::default();
        assert!(set.read(&path).is_err());
        assert_eq!(set.changed(), None);
        std::fs::write(&path, "a").unwrap();
        assert_eq!(set.changed(), Some(path.as_path()));
        set.read(&path).unwrap();
        assert_eq!(set.changed(), None);
        std::fs::write(&path, "a").unwrap();
        assert_eq!(set.changed(), None, "rewriting the same bytes is no change");
        std::fs::write(&path, "b").unwrap();
        assert_eq!(set.changed(), Some(path.as_path()));
    }

    #[test]
    fn a_missing_folder_is_watched_through_its_nearest_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not/yet/mounted/keys.toml");
        assert_eq!(folder_for(&file), dir.path());
        assert_eq!(folder_for(Path::new("keys.toml")), Path::new("."));
    }
}
