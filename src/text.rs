//! Small text helpers for error messages: positions in a file, and keeping values out of them.

/// Maps byte offsets in a file to 1-based line and column numbers.
pub struct LineIndex<'a> {
    text: &'a str,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// 1-based (line, column) of a byte offset.
    pub fn line_of(&self, offset: usize) -> (usize, usize) {
        let head = &self.text.as_bytes()[..offset.min(self.text.len())];
        let line = head.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = head.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        (line, offset.min(self.text.len()) - line_start + 1)
    }
}

/// A path as people write it: the home folder as `~`, as the messages agents show have little room.
pub fn tilde(path: &std::path::Path) -> String {
    if let Some(home) = std::env::var_os("HOME").filter(|h| h.len() > 1) {
        if let Ok(rest) = path.strip_prefix(&home) {
            return format!("~/{}", rest.display());
        }
    }
    path.display().to_string()
}

/// serde quotes the value it could not use (`invalid type: string "sk-or-v1-..."`); in a keys
/// file that value may be a key, so every double-quoted run is replaced before a message is shown.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…");
        } else {
            out.push('"');
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let idx = LineIndex::new("ab\ncd\n");
        assert_eq!(idx.line_of(0), (1, 1));
        assert_eq!(idx.line_of(4), (2, 2));
        assert_eq!(idx.line_of(99), (3, 1));
    }

    #[test]
    fn quoted_values_are_hidden() {
        assert_eq!(
            redact_quoted("invalid type: string \"sk-secret\", expected a sequence"),
            "invalid type: string \"…\", expected a sequence"
        );
        assert_eq!(redact_quoted("unknown field `kee`"), "unknown field `kee`");
    }
}
