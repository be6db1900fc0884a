//! Reading one source file with its last good contents kept: a file that does not read or parse
//! gives what it held before, with the reason, so a bad edit never takes keys away.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::FileSet;
use super::SourceStatus;

/// Why a source could not be read. `NotFound` is kept apart: a secret mounted a second late is
/// an ordinary state, not a failure.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SourceError {
    NotFound,
    Failed(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("not found"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

pub(super) fn read_error(path: &Path, e: &io::Error) -> SourceError {
    match e.kind() {
        io::ErrorKind::NotFound => SourceError::NotFound,
        io::ErrorKind::PermissionDenied => SourceError::Failed(format!(
            "{}: permission denied; {}",
            path.display(),
            super::owner::denied(path)
        )),
        _ => SourceError::Failed(format!("{}: {e}", path.display())),
    }
}

/// Reads a file through `files` (so that a change to it is noticed) and parses it. A file that
/// does not read or parse gives the last good value from `cache`, with the reason.
pub(super) fn read_cached<T>(
    cache: &mut HashMap<PathBuf, Arc<T>>,
    files: &mut FileSet,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> (Option<Arc<T>>, Option<SourceError>) {
    let fresh = files
        .read(path)
        .map_err(|e| read_error(path, &e))
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| SourceError::Failed(format!("{}: not UTF-8 text", path.display())))
        })
        .and_then(|text| parse(&text).map_err(SourceError::Failed));
    match fresh {
        Ok(value) => {
            let value = Arc::new(value);
            cache.insert(path.to_path_buf(), value.clone());
            (Some(value), None)
        }
        Err(e) => (cache.get(path).cloned(), Some(e)),
    }
}

/// A source's health for `status`: its error, and whether its last good contents are in use.
pub(super) fn source_status<T>(
    kind: &'static str,
    path: &Path,
    value: &Option<Arc<T>>,
    error: &Option<SourceError>,
) -> SourceStatus {
    SourceStatus {
        kind,
        path: path.display().to_string(),
        ok: error.is_none(),
        error: error.as_ref().map(|e| match value {
            Some(_) => format!("{e} (keeping what was last read from it)"),
            None => e.to_string(),
        }),
    }
}

/// A failure worth a reload error: anything but a file that is simply not there (yet), unless
/// it was there before.
pub(super) fn push_error<T>(
    errors: &mut Vec<String>,
    path: &Path,
    value: &Option<Arc<T>>,
    error: &Option<SourceError>,
) {
    match error {
        Some(SourceError::Failed(m)) => errors.push(m.clone()),
        Some(SourceError::NotFound) if value.is_some() => {
            errors.push(format!("{}: not found", path.display()))
        }
        _ => {}
    }
}

/// The 401 message already says which file; its errors start with the path again.
pub(super) fn without_path(message: &str, path: &Path) -> String {
    let shown = path.display().to_string();
    match message.strip_prefix(shown.as_str()) {
        Some(rest) if rest.starts_with(": ") => rest[2..].to_owned(),
        Some(rest) if rest.starts_with(':') => format!("line {}", &rest[1..]),
        _ => message.to_owned(),
    }
}

/// ssh refuses a private key others can read; keyproxy warns. Group-readable is fine when the
/// group is one keyproxy is in (a user-private group, or the fsGroup of a Kubernetes pod).
#[cfg(unix)]
pub(super) fn warn_if_shared(path: &Path) {
    if let Some((mode, advice)) = super::owner::shared(path) {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{mode:o}"),
            "keys file is readable by group or others; {advice}"
        );
    }
}

#[cfg(not(unix))]
pub(super) fn warn_if_shared(_path: &Path) {}

/// What a source says of a profile it does not give: why it could not be read, or that it has
/// no such profile.
pub(super) fn absent<T>(value: &Option<Arc<T>>, error: Option<SourceError>, path: &Path) -> String {
    match (value, error) {
        (Some(_), _) | (None, None) => "no such profile".to_owned(),
        (None, Some(e)) => without_path(&e.to_string(), path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_401_does_not_repeat_the_file_path() {
        let p = Path::new("/etc/k.toml");
        assert_eq!(
            without_path("/etc/k.toml:2:7: invalid string", p),
            "line 2:7: invalid string"
        );
        assert_eq!(
            without_path("/etc/k.toml: permission denied", p),
            "permission denied"
        );
        assert_eq!(without_path("not found", p), "not found");
    }
}
