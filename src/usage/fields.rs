//! The fields of a JSON object, as raw slices of its text, found by skipping every value byte
//! by byte rather than parsing it: strings by searching for their closing quote (SIMD, through
//! memchr), objects and arrays by counting brackets outside strings. Only the few values usage
//! is read from are then parsed. serde_json's struct deserializer spent about 8,000
//! instructions on a 260-byte chat answer, almost all of it skipping `choices`.
//!
//! Where it agrees with serde_json: a key written with escapes is unescaped before it is
//! compared; a named field given twice makes the object unreadable (serde's duplicate-field
//! error); `null` is no value; a document that is not an object is none. Where it is lenient: a
//! value it skips is not checked to be valid JSON, and nothing after the object is looked at.
//! No recursion, so no nesting is too deep; every index is checked, so no input panics.

use std::borrow::Cow;

/// The values of `names` in the object `text`, `None` each where absent or `null`; `None` when
/// `text` is not an object, is cut short, or names one of them twice.
pub(super) fn pick<'a, const N: usize>(
    text: &'a str,
    names: [&str; N],
) -> Option<[Option<&'a str>; N]> {
    let b = text.as_bytes();
    let mut out = [None; N];
    let mut seen = [false; N];
    members(b, b'{', b'}', |i| {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i + 1)?;
        let raw = text.get(i + 1..key_end - 1)?;
        let key: Cow<'_, str> = match raw.contains('\\') {
            true => Cow::Owned(serde_json::from_str(text.get(i..key_end)?).ok()?),
            false => Cow::Borrowed(raw),
        };
        let slot = names.iter().position(|n| *n == key);
        let colon = space(b, key_end);
        if b.get(colon) != Some(&b':') {
            return None;
        }
        let start = space(b, colon + 1);
        let end = value_end(b, start)?;
        if let Some(at) = slot {
            if std::mem::replace(&mut seen[at], true) {
                return None;
            }
            out[at] = Some(text.get(start..end)?).filter(|v| *v != "null");
        }
        Some(end)
    })?;
    Some(out)
}

/// The elements of the array `text`, as raw slices; `None` when it is not an array or is cut
/// short.
pub(super) fn elements(text: &str) -> Option<Vec<&str>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    members(b, b'[', b']', |i| {
        let end = value_end(b, i)?;
        out.push(text.get(i..end)?);
        Some(end)
    })?;
    Some(out)
}

/// Walks the members of the object or array that `b` starts with (`open` and `close` its
/// brackets): `member` reads the one starting at the index it is given and says where it ends.
/// `None` when `b` does not start with `open`, a member cannot be read, or the end is missing.
fn members(
    b: &[u8],
    open: u8,
    close: u8,
    mut member: impl FnMut(usize) -> Option<usize>,
) -> Option<()> {
    let mut i = space(b, 0);
    if b.get(i) != Some(&open) {
        return None;
    }
    i = space(b, i + 1);
    if b.get(i) == Some(&close) {
        return Some(());
    }
    loop {
        i = space(b, member(i)?);
        match b.get(i) {
            Some(b',') => i = space(b, i + 1),
            Some(&c) if c == close => return Some(()),
            _ => return None,
        }
    }
}

/// Where the value starting at `i` ends (one past its last byte).
pub(super) fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(&c) = b.get(j) {
                match c {
                    b'"' => {
                        j = string_end(b, j + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let rest = b.get(i..)?;
            let n = rest
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            (n > 0).then_some(i + n)
        }
    }
}

/// One past the quote closing the string whose contents start at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[at] == b'\\' {
            i = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// The first index from `i` that is not JSON whitespace.
fn space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_fields_whatever_comes_between() {
        let text = r#" { "id" : "a\"}{[" , "choices":[{"message":{"content":"usage\":{\"cost\":9}}"}},[]],
            "n": -1.5e3, "t": true, "usage" : {"prompt_tokens":3} , "model":"m" } trailing"#;
        let [usage, model, missing] = pick(text, ["usage", "model", "cost"]).unwrap();
        assert_eq!(usage, Some(r#"{"prompt_tokens":3}"#));
        assert_eq!(model, Some(r#""m""#));
        assert_eq!(missing, None);
    }

    #[test]
    fn agrees_with_serde_on_keys_nulls_and_duplicates() {
        assert_eq!(pick(r#"{"us\u0061ge":1}"#, ["usage"]), Some([Some("1")]));
        assert_eq!(pick(r#"{"usage":null}"#, ["usage"]), Some([None]));
        assert_eq!(pick(r#"{"usage":1,"usage":2}"#, ["usage"]), None);
        assert_eq!(pick(r#"{"x":1,"x":2}"#, ["usage"]), Some([None]));
        assert_eq!(pick("{}", ["usage"]), Some([None]));
    }

    #[test]
    fn refuses_what_is_not_an_object_or_is_cut_short() {
        for text in [
            "",
            "[1]",
            "\"x\"",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\":\"x",
            "{\"a\":[1,",
            "{\"a\":\"\\",
            "{\"a\" 1}",
            "{\"a\":1 \"b\":2}",
            "{a:1}",
        ] {
            assert_eq!(pick(text, ["a"]), None, "{text:?}");
        }
    }

    #[test]
    fn no_input_panics_or_recurses() {
        let deep = "[".repeat(100_000);
        assert_eq!(pick(&format!("{{\"a\":{deep}"), ["a"]), None);
        let text = r#"{"a":[{"b":"c\\"},"\\\""],"d":"é"}"#;
        for end in 0..=text.len() {
            if let Some(cut) = text.get(..end) {
                let _ = pick(cut, ["a", "d"]);
                let _ = elements(cut);
            }
        }
        assert_eq!(
            pick(text, ["a", "d"]),
            Some([Some(r#"[{"b":"c\\"},"\\\""]"#), Some("\"é\"")])
        );
    }

    #[test]
    fn splits_arrays() {
        assert_eq!(
            elements(r#" [ {"a":1} , {"b":"]"} ] "#),
            Some(vec![r#"{"a":1}"#, r#"{"b":"]"}"#])
        );
        assert_eq!(elements("[]"), Some(vec![]));
        assert_eq!(elements("[1,"), None);
    }
}
