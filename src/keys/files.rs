//! Reading the files keys come from, remembering what each held, so that a reload happens only
//! when contents change. Events and polls only suggest a change (see `ops::watch`): the contents
//! of the files, read through their paths, decide. The one exception is a file too large to read
//! on every poll (OpenClaw's database), looked at by size, times and inode instead
//! ([`FileSet::stat`]); SQLite writes it in place, so those always move.

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
    Content {
        len: usize,
        hash: u64,
    },
    /// A file looked at by its metadata only ([`FileSet::stat`]).
    Stamped(Stamp),
}

/// A file's size, times and identity: what tells that a file too large to read on every look
/// (OpenClaw's database, 150 MB in the field) was written, replaced or truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed_ns: i128,
    inode: (u64, u64),
    /// Modified less than [`RACY`] before it was looked at: a write in the same tick of the
    /// file system's clock (a few ms on ext4) would leave size and times as they are, so such a
    /// stamp proves nothing (git's "racy clean" entries).
    racy: bool,
}

/// How recent a modification makes a stamp racy.
const RACY: std::time::Duration = std::time::Duration::from_secs(1);

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        let modified = meta.modified().ok();
        let racy = modified.is_none_or(|m| m.elapsed().map_or(true, |age| age < RACY));
        #[cfg(unix)]
        let (changed_ns, inode) = {
            use std::os::unix::fs::MetadataExt;
            (
                i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
                (meta.dev(), meta.ino()),
            )
        };
        #[cfg(not(unix))]
        let (changed_ns, inode) = (0, (0, 0));
        Self {
            len: meta.len(),
            modified,
            changed_ns,
            inode,
            racy,
        }
    }
}

impl Seen {
    /// Whether two looks at a file may be taken as the same contents.
    pub fn same_as(&self, other: &Seen) -> bool {
        self == other && !matches!(self, Seen::Stamped(s) if s.racy)
    }

    fn stat(path: &Path) -> Self {
        match std::fs::metadata(path) {
            Ok(meta) => Self::Stamped(Stamp::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::Missing,
            Err(e) => Self::Unreadable(e.kind()),
        }
    }
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

    fn stat(&self, path: &Path) -> Seen {
        self.set(Some((path.to_path_buf(), std::time::Instant::now())));
        let seen = Seen::stat(path);
        self.set(None);
        seen
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
    /// Files looked at by their metadata, not read.
    stamped: BTreeMap<PathBuf, Seen>,
    probe: Arc<ReadProbe>,
}

impl FileSet {
    /// A set whose reads are watched by `probe`.
    pub fn probed(probe: Arc<ReadProbe>) -> Self {
        Self {
            files: BTreeMap::new(),
            stamped: BTreeMap::new(),
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

    /// Looks at a file's metadata without reading it, and remembers it: for a file too large to
    /// read on every poll, whose writers change its size or times.
    pub fn stat(&mut self, path: &Path) -> Seen {
        let seen = self.probe.stat(path);
        self.stamped.insert(path.to_path_buf(), seen);
        seen
    }

    /// The first file that holds something else now than when it was read (or, for a file
    /// looked at by [`FileSet::stat`], whose metadata changed or was too recent to tell).
    pub fn changed(&self) -> Option<&Path> {
        self.files
            .iter()
            .find(|(path, seen)| Seen::of(&self.probe.read(path)) != **seen)
            .or_else(|| {
                self.stamped
                    .iter()
                    .find(|(path, seen)| !self.probe.stat(path).same_as(seen))
            })
            .map(|(path, _)| path.as_path())
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files
            .keys()
            .chain(self.stamped.keys())
            .map(PathBuf::as_path)
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
    fn a_stamped_file_changes_with_its_metadata_and_a_recent_write_proves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, "aaaa").unwrap();
        let mut set = FileSet::default();
        set.stat(&path);
        assert_eq!(
            set.changed(),
            Some(path.as_path()),
            "written just now: racy"
        );
        let age = |p: &Path| {
            let then = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(then).unwrap();
        };
        age(&path);
        set.stat(&path);
        assert_eq!(set.changed(), None);
        std::fs::write(&path, "aaaaa").unwrap();
        age(&path);
        assert_eq!(set.changed(), Some(path.as_path()), "size and ctime moved");
    }
}
