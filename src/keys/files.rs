//! Reading the files keys come from, remembering what each held, so that a reload happens only
//! when contents change. Events and polls only suggest a change (see `ops::watch`): the contents
//! of the files, read through their paths, decide.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}
