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

/// serde quotes the value it could not use (`invalid type: string "sk-or-v1-..."`), and a key
/// pasted where a field name belongs comes back as ``unknown field `sk-or-v1-...` ``; in a keys
/// or config file that text may be a key. So every double-quoted run is replaced, and a run in
/// backticks is kept only when it reads as one of keyproxy's field names
/// (short, lowercase, `_`), which keeps typos such as ``unknown field `upstrem` `` helpful.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let after = &rest[start + 1..];
        let Some(len) = after.find(quote) else {
            // An unclosed quote: what follows it may be the value.
            out.push_str(&rest[..=start]);
            out.push('…');
            return out;
        };
        let inner = &after[..len];
        out.push_str(&rest[..start]);
        out.push(quote);
        if quote != '"' && looks_like_a_field_name(inner) {
            out.push_str(inner);
        } else {
            out.push('…');
        }
        out.push(quote);
        rest = &after[len + 1..];
    }
    out.push_str(rest);
    out
}

fn looks_like_a_field_name(text: &str) -> bool {
    (1..=24).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
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
        assert_eq!(
            redact_quoted("unknown field `sk-or-v1-0123456789abcdef`, expected `key` or `keys`"),
            "unknown field `…`, expected `key` or `keys`"
        );
        assert_eq!(redact_quoted("no closing \"sk-secret"), "no closing \"…");
        assert_eq!(redact_quoted("it can't be"), "it can't be");
    }
}
