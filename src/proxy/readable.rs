//! The rules agents' filters impose on keyproxy's messages, as a check the specs run on every
//! [`LocalError`](super::error::LocalError) variant.

/// Checks a message against the rules agents' filters impose (see [`LocalError`]): `keyproxy:`
/// first, at most 180 characters before the first full stop, and nothing that redaction of
/// `NAME: value` or `NAME=value` (NAME ending in KEY, TOKEN, SECRET or PASSWORD) would mask.
pub fn check_agent_readable(message: &str) -> Result<(), String> {
    if !message.starts_with("keyproxy: ") {
        return Err(format!("does not start with 'keyproxy: ': {message}"));
    }
    let first = message.find(". ").map_or(message, |end| &message[..=end]);
    if first.chars().count() > 180 {
        return Err(format!(
            "first sentence is {} characters, over 180: {first}",
            first.chars().count()
        ));
    }
    for (i, c) in message.char_indices() {
        if c != ':' && c != '=' {
            continue;
        }
        let before = message[..i].trim_end();
        let name: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
            .to_ascii_uppercase();
        let masked = ["KEY", "TOKEN", "SECRET", "PASSWORD"]
            .iter()
            .any(|n| name.ends_with(n));
        let value_follows = message[i + 1..]
            .trim_start()
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace());
        if masked && value_follows {
            return Err(format!(
                "has the shape {name}{c} value, which log redaction masks: {message}"
            ));
        }
    }
    Ok(())
}
