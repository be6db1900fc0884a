//! A limited client's JSON request body, read as an upstream would read it: one object's
//! members in order, each value left as its raw text, and a member named twice refused —
//! serde_json keeps the last of `{"model":"a","model":"b"}`, an upstream may keep either.

use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One JSON object's members: names decoded (`"mod\u0065l"` is `model`), values raw.
pub(super) struct Members<'a> {
    list: Vec<(String, &'a RawValue)>,
}

/// Why a value is not an object keyproxy can read.
#[derive(Debug, PartialEq)]
pub(super) enum NotMembers {
    /// Not a JSON object (or not JSON at all).
    NotObject,
    /// This member is named more than once.
    Twice(String),
}

impl<'a> Members<'a> {
    /// The members of the object `text` is, or why it is not one.
    pub(super) fn of(text: &'a str) -> Result<Self, NotMembers> {
        let mut de = serde_json::Deserializer::from_str(text);
        let list = de
            .deserialize_map(ObjectVisitor)
            .map_err(|_| NotMembers::NotObject)?;
        de.end().map_err(|_| NotMembers::NotObject)?;
        let mut names: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(NotMembers::Twice(w[0].to_owned()));
        }
        Ok(Self { list })
    }

    /// The members of an object given as a raw value.
    pub(super) fn of_raw(raw: &'a RawValue) -> Result<Self, NotMembers> {
        Self::of(raw.get())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.list.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            // Every value is validated, kept as the slice of the body it is, never copied.
            list.push((name, map.next_value::<&RawValue>()?));
        }
        Ok(list)
    }
}

/// A JSON string, decoded; None for any other value.
pub(super) fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

/// A JSON array's elements, raw; None for any other value.
pub(super) fn array(raw: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()
}

/// A count the upstream would read from this number: integers, and floats rounded up (an
/// upstream may accept `1e5`); None for anything else, negative numbers included.
pub(super) fn count(raw: &RawValue) -> Option<u64> {
    match serde_json::from_str::<serde_json::Number>(raw.get()).ok()? {
        n if n.is_u64() => n.as_u64(),
        n => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.ceil().min(u64::MAX as f64) as u64),
    }
}

/// `true` only for the JSON literal `true`.
pub(super) fn is_true(raw: &RawValue) -> bool {
    raw.get() == "true"
}

/// Where `raw` (a value borrowed from `text`) starts in `text`.
pub(super) fn offset_in(text: &str, raw: &RawValue) -> Option<usize> {
    let at = (raw.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (at + raw.get().len() <= text.len()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_in_order_with_escaped_names_decoded() {
        let m = Members::of(r#" {"mod\u0065l":"a","n":[1,{"x":2}],"s":true} "#).unwrap();
        let names: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["model", "n", "s"]);
        assert_eq!(string(m.get("model").unwrap()).as_deref(), Some("a"));
        assert!(is_true(m.get("s").unwrap()));
        assert_eq!(array(m.get("n").unwrap()).unwrap().len(), 2);
    }

    #[test]
    fn a_member_named_twice_is_refused() {
        for text in [
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a","x":1,"m\u006fdel":"b"}"#,
        ] {
            assert_eq!(
                Members::of(text).err(),
                Some(NotMembers::Twice("model".into()))
            );
        }
    }

    #[test]
    fn what_is_not_one_object() {
        for text in ["[]", "\"x\"", "{} {}", "{\"a\":}", "model=x", ""] {
            assert_eq!(
                Members::of(text).err(),
                Some(NotMembers::NotObject),
                "{text}"
            );
        }
    }

    #[test]
    fn counts() {
        let raw = |s: &str| RawValue::from_string(s.into()).unwrap();
        assert_eq!(count(&raw("100")), Some(100));
        assert_eq!(count(&raw("1e5")), Some(100_000));
        assert_eq!(count(&raw("2.5")), Some(3));
        assert_eq!(count(&raw("-1")), None);
        assert_eq!(count(&raw("\"100\"")), None);
    }
}
