//! One JSON object's members as validation sees them: a flat list in the order they were
//! sent, instead of a `serde_json::Map` (an IndexMap with SipHash per object).

use std::{borrow::Cow, collections::HashMap};

use serde_json::{Map, Value};

/// The one member kept as the JSON text that was sent, besides its parsed value: subscribers
/// receive `extra` exactly as sent (SPEC §2.1, "passed through unchanged").
pub(super) const EXTRA: &str = "extra";

/// A member's JSON text as it was sent, with how deeply it nests (see [`super::plain::depth`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct RawText<'a> {
    /// The text, as it stands in the request body.
    pub(super) text: &'a str,
    /// Its nesting depth.
    pub(super) depth: usize,
}

/// Up to this many members a name is found by a linear search; a longer object (never a
/// valid one: the field tables have at most 29 names) gets a hash index so that a body of
/// many thousand names cannot make reading it quadratic.
const LINEAR: usize = 32;

/// The members of one object, deduplicated as `serde_json::Map` does it: a repeated name
/// keeps its first position and takes the last value. Names borrow from the request body
/// when they hold no escapes; each carries a [`tag`] so that a search rarely compares text.
#[derive(Debug, Default)]
pub(super) struct Members<'a> {
    tags: Vec<u64>,
    entries: Vec<(Cow<'a, str>, Value)>,
    index: Option<HashMap<String, usize>>,
    raw_extra: Option<RawText<'a>>,
}

impl<'a> Members<'a> {
    /// The members of an object already parsed (the `&Value` entry points).
    pub(super) fn from_map(map: &'a Map<String, Value>) -> Self {
        let mut members = Members::default();
        for (name, value) in map {
            members.insert(Cow::Borrowed(name), value.clone());
        }
        members
    }

    /// Empties the list, keeping its buffer for the next object.
    pub(super) fn clear(&mut self) {
        self.tags.clear();
        self.entries.clear();
        self.index = None;
        self.raw_extra = None;
    }

    /// Records the text of the last `extra` read (a repeated name takes the last value).
    pub(super) fn set_raw_extra(&mut self, raw: RawText<'a>) {
        self.raw_extra = Some(raw);
    }

    /// The text of `extra` as sent, when the object was read from its bytes.
    pub(super) fn raw_extra(&self) -> Option<RawText<'a>> {
        self.raw_extra
    }

    /// How many distinct names there are.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds a member, or replaces the value of an earlier one of the same name in place.
    pub(super) fn insert(&mut self, name: Cow<'a, str>, value: Value) {
        if let Some(at) = self.position(&name) {
            self.entries[at].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(name.to_string(), self.entries.len());
        }
        self.tags.push(tag(&name));
        self.entries.push((name, value));
        if self.index.is_none() && self.entries.len() > LINEAR {
            let index = self.entries.iter().enumerate().map(|(at, (name, _))| (name.to_string(), at));
            self.index = Some(index.collect());
        }
    }

    /// The value of `name`, `null` included.
    #[cfg(test)]
    fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).map(|at| &self.entries[at].1)
    }

    /// The names, in the order they were first sent.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_ref())
    }

    /// Each member with its [`tag`], in the order the names were first sent.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &str, &Value)> {
        self.tags.iter().zip(&self.entries).map(|(tag, (name, value))| (*tag, name.as_ref(), value))
    }

    fn position(&self, name: &str) -> Option<usize> {
        if let Some(index) = &self.index {
            return index.get(name).copied();
        }
        let tag = tag(name);
        let mut from = 0;
        while let Some(at) = self.tags[from..].iter().position(|t| *t == tag) {
            if self.entries[from + at].0 == name {
                return Some(from + at);
            }
            from += at + 1;
        }
        None
    }
}

/// A name's length and first 8 bytes in one word: equal names have equal tags, and the
/// field names of the SPEC all have different ones (a test checks it), so a lookup compares
/// words, and text only to confirm. `const` so that the tables' tags are computed once.
#[inline]
pub(super) const fn tag(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let head = match bytes.first_chunk::<8>() {
        Some(head) => u64::from_le_bytes(*head),
        None => {
            let (mut word, mut at) = (0, bytes.len());
            while at > 0 {
                at -= 1;
                word = word << 8 | bytes[at] as u64;
            }
            word
        }
    };
    head ^ (bytes.len() as u64).rotate_right(8)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_repeated_name_keeps_its_place_and_takes_the_last_value() {
        for n in [3, 100] {
            let mut members = Members::default();
            for i in 0..n {
                members.insert(Cow::Owned(format!("k{i}")), json!(i));
            }
            members.insert(Cow::Borrowed("k1"), json!("last"));
            members.insert(Cow::Borrowed("k0"), json!(null));
            let names: Vec<&str> = members.names().take(3).collect();
            assert_eq!(names, ["k0", "k1", "k2"]);
            assert_eq!(members.names().count(), n);
            assert_eq!((members.get("k1"), members.get("k0")), (Some(&json!("last")), Some(&json!(null))));
            assert_eq!(members.get(&format!("k{}", n - 1)), Some(&json!(n - 1)));
            assert_eq!(members.get("k"), None);
        }
        // Same length and first 8 bytes, so the same tag: still two names.
        let mut members = Members::default();
        members.insert(Cow::Borrowed("callerNumber"), json!(1));
        members.insert(Cow::Borrowed("callerNumbex"), json!(2));
        assert_eq!((members.get("callerNumber"), members.get("callerNumbex")), (Some(&json!(1)), Some(&json!(2))));
    }
}
