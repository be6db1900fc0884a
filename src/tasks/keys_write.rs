//! How `keyproxy keys` reads and replaces a keys file: under an advisory lock, so that edits run
//! one after the other instead of each writing over the last; through symlinks, so the file is
//! edited where it lives; atomically (temporary file in the same folder, fsync, rename, fsync of
//! the folder), so a running keyproxy reads either the old file or the new one; and with the old
//! file's owner, group and mode, less any access for others, so that a service that could read
//! the file still can.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why a keys file could not be written; nothing was, in every case.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot keep its owner {uid}:{gid} ({source}); nothing written")]
    Owner {
        path: PathBuf,
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error("{path}: cannot keep its group {gid}, through which others read it ({source}); nothing written: run this as root or as a member of that group")]
    Group {
        path: PathBuf,
        gid: u32,
        source: std::io::Error,
    },
}

/// A keys file held for one edit: the lock is released when this is dropped.
pub(super) struct Locked {
    /// The file itself, every symlink on the way followed.
    pub path: PathBuf,
    _lock: File,
}

/// How many symlinks are followed before giving up, as the kernel's ELOOP does.
const MAX_LINKS: usize = 40;

/// Follows `path`'s symlinks to the file they name, whether or not it exists yet (a dangling
/// link is a file to create where the link points).
pub(super) fn real_path(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "more than {MAX_LINKS} symlinks to follow"
    )))
}

/// Takes the edit lock of the keys file at `path`: `flock` on `.NAME.lock` beside the file it
/// names (not on the file itself, which each edit replaces by a rename).
pub(super) fn lock(path: &Path) -> std::io::Result<Locked> {
    let path = real_path(path)?;
    let dir = folder(&path);
    create_private_dir(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let lock = options.open(dir.join(format!(".{name}.lock")))?;
    lock.lock()?;
    Ok(Locked { path, _lock: lock })
}

/// Replaces the file with `text`, keeping what the old one had of owner, group and mode.
pub(super) fn replace(locked: &Locked, text: &str) -> Result<(), WriteError> {
    let path = &locked.path;
    let io = |source| WriteError::Io {
        path: path.clone(),
        source,
    };
    let dir = folder(path);
    let old = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".keys-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(io)?;
    tmp.write_all(text.as_bytes()).map_err(io)?;
    if let Some(old) = &old {
        keep_owner(tmp.as_file(), old, path)?;
        // Others lose what they had: a keys file is never for everyone.
        let mode = old.permissions().mode() & 0o770;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Gives the new file the old one's owner and group. Root (a container, sudo) can give both, so
/// a file the service user owns stays the service user's. Anyone else keeps the group when they
/// are in it; when they cannot and the group could read the old file, nothing is written, since
/// the service reading it through that group would be locked out.
fn keep_owner(new: &File, old: &std::fs::Metadata, path: &Path) -> Result<(), WriteError> {
    let (uid, gid) = (old.uid(), old.gid());
    let me = rustix::process::geteuid().as_raw();
    if me == 0 {
        return std::os::unix::fs::fchown(new, Some(uid), Some(gid)).map_err(|source| {
            WriteError::Owner {
                path: path.to_path_buf(),
                uid,
                gid,
                source,
            }
        });
    }
    let mine = new.metadata().map(|m| m.gid()).unwrap_or(gid);
    if mine == gid {
        return Ok(());
    }
    match std::os::unix::fs::fchown(new, None, Some(gid)) {
        Ok(()) => Ok(()),
        Err(_) if old.permissions().mode() & 0o070 == 0 => Ok(()),
        Err(source) => Err(WriteError::Group {
            path: path.to_path_buf(),
            gid,
            source,
        }),
    }
}

fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
