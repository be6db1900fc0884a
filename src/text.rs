//! Small text helpers for error messages: positions in a file, and keeping values and keys out
//! of them; and a prefix check for header values.

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

/// The fingerprint of a key: first 8 characters, `...`, last 8, for keys of 40 characters or
/// more (as OpenClaw shows them); shorter keys show `...` and the last 4, since 16 characters of
/// a 20-character key would be most of it; keys of 8 characters or fewer show only `...`,
/// because their last 4 would be half the key. Here rather than in `keys` because a key-shaped
/// word in a message from outside is masked to the same form.
pub fn fingerprint(key: &str) -> String {
    let n = key.len();
    if !key.is_ascii() {
        return "...".into();
    }
    if n >= 40 {
        format!("{}...{}", &key[..8], &key[n - 8..])
    } else if n > 8 {
        format!("...{}", &key[n - 4..])
    } else {
        "...".into()
    }
}

/// Text from outside keyproxy (a command's stderr, a provider's error, a parser's message) with
/// every key-shaped word masked to its fingerprint, whatever surrounds it: quotes, brackets,
/// `=`, `:`, a comma, a full stop or a tab all end a word, since a tool may print a key in any
/// of them (`'sk-...'`, `(sk-...)`, `{'key': 'sk-...'}`, `key=sk-...`). Words joined by dots
/// (a JWT) are masked whole when any part is key-shaped, or when together they are long and
/// mixed like a key.
pub fn mask_key_shapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if !is_word_byte(bytes[i]) {
            // Copy up to the next word byte; every byte of a word is ASCII, so these are
            // character boundaries.
            let next = bytes[i..]
                .iter()
                .position(|&b| is_word_byte(b))
                .map_or(bytes.len(), |n| i + n);
            out.push_str(&text[i..next]);
            i = next;
            continue;
        }
        let end = bytes[i..]
            .iter()
            .position(|&b| !is_word_byte(b))
            .map_or(bytes.len(), |n| i + n);
        let run = &text[i..end];
        // Dots around a word are punctuation ("... was revoked.").
        let core = run.trim_matches('.');
        let lead = run.len() - run.trim_start_matches('.').len();
        out.push_str(&run[..lead]);
        if !core.is_empty() && dotted_key_shaped(core) {
            out.push_str(&fingerprint(core));
        } else {
            out.push_str(core);
        }
        out.push_str(&run[lead + core.len()..]);
        i = end;
    }
    out
}

/// Bytes that keys are made of, and the dot that joins the parts of a JWT.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'.')
}

fn dotted_key_shaped(word: &str) -> bool {
    if word.split('.').any(key_shaped) {
        return true;
    }
    word.contains('.') && word.len() >= 32 && classes(word) >= 2
}

/// 20 or more characters of the kinds keys are made of, mixing at least two of lowercase,
/// uppercase and digits: provider keys (`sk-or-v1-<hex>`, `sk-ant-api03-...`, `AIza...`, hex)
/// all do, while long words of the language (`allow_unauthenticated`, `OPENROUTER_API_KEY`) and
/// paths (split at `/`) do not.
fn key_shaped(word: &str) -> bool {
    word.len() >= 20
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+'))
        && classes(word) >= 2
}

fn classes(word: &str) -> usize {
    let has = |f: fn(&u8) -> bool| usize::from(word.as_bytes().iter().any(f));
    has(u8::is_ascii_lowercase) + has(u8::is_ascii_uppercase) + has(u8::is_ascii_digit)
}

/// Text from a parser or a tool, made safe to show: serde quotes the value it could not use
/// (`invalid type: string "sk-or-v1-..."`), and a key pasted where a field name belongs comes
/// back as ``unknown field `sk-or-v1-...` ``; in a keys or config file that text may be a key of
/// any shape. So every double-quoted run is replaced, a run in backticks is kept only when it
/// reads as one of keyproxy's field names (short, lowercase, `_`), which keeps typos such as
/// ``unknown field `upstrem` `` helpful, or as a few punctuation characters a parser expected
/// (``expected `=` ``), and what is left has its key-shaped words masked
/// ([`mask_key_shapes`]).
pub fn redact_quoted(message: &str) -> String {
    mask_key_shapes(&hide_quoted(message))
}

fn hide_quoted(message: &str) -> String {
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
        if quote != '"' && (looks_like_a_field_name(inner) || is_a_token(inner)) {
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

/// What a parser expected, such as TOML's ``expected newline, `#` ``: a few punctuation
/// characters, which no key is.
fn is_a_token(text: &str) -> bool {
    (1..=3).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_punctuation())
}

fn looks_like_a_field_name(text: &str) -> bool {
    (1..=24).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
}

/// When something `secs` seconds from now happens, for people: `at 2026-12-07 00:00 UTC, in
/// 19 h 21 min`. The time is rounded to the minute, since a period ends on one and the seconds
/// were counted an instant before.
pub fn resets(secs: u64) -> String {
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs.saturating_add(30));
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let minute = stamp.get(..16).unwrap_or(&stamp).replace('T', " ");
    format!("at {minute} UTC, in {}", span(secs))
}

/// A duration in the two largest units it has: `2 d 3 h`, `19 h 21 min`, `4 min 10 s`, `42 s`.
fn span(secs: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{} {name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// `text` starts with `prefix`, ASCII case aside (without a lowercased copy): a content type.
pub fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(span(69_686), "19 h 21 min");
        assert_eq!(span(183_600), "2 d 3 h");
        assert_eq!(span(250), "4 min 10 s");
        assert_eq!(span(42), "42 s");
        assert_eq!(span(0), "0 s");
        assert_eq!(span(3_600), "1 h");
        let said = resets(60);
        assert!(
            said.starts_with("at 20") && said.ends_with(" UTC, in 1 min"),
            "{said}"
        );
    }

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
        assert_eq!(
            redact_quoted("expected newline, `#`; expected `\"`, `'`, `.`"),
            "expected newline, `#`; expected `\"`, `'`, `.`"
        );
        assert_eq!(redact_quoted("expected `sk-1`"), "expected `…`");
    }

    const KEY: &str = "sk-or-v1-0123456789abcdef0123456789abcdef968304f4";

    #[test]
    fn key_shaped_words_are_masked_whatever_surrounds_them() {
        for shape in [
            "error: key 'KEY' was revoked",
            "revoked (KEY)",
            "revoked <KEY>",
            "revoked [KEY]",
            "revoked KEY, try again",
            "revoked KEY.",
            "revoked:\tKEY",
            "{'api_key': 'KEY', 'ok': False}",
            "key=KEY&x=1",
            "Bearer KEY",
        ] {
            let masked = mask_key_shapes(&shape.replace("KEY", KEY));
            assert_eq!(
                masked,
                shape.replace("KEY", "sk-or-v1...968304f4"),
                "{shape}"
            );
        }
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let masked = mask_key_shapes(&format!("token {jwt}."));
        assert!(!masked.contains("eyJzdWIi"), "{masked}");
        assert!(masked.ends_with('.'), "{masked}");
    }

    #[test]
    fn words_paths_and_names_stay_readable() {
        for text in [
            "unknown field `upstrem`, expected one of `allow_unauthenticated`, `openclaw_auth_profiles`",
            "item op://Private/OpenRouter not found",
            "/home/me/.config/keyproxy/keys.toml: permission denied",
            "environment variable OPENROUTER_API_KEY is not set",
            "https://openrouter.ai/api/v1/key answered 401 sk-or-v1...968304f4",
        ] {
            assert_eq!(mask_key_shapes(text), text);
        }
    }
}
