//! Reads a request body straight from its bytes: each item's members are parsed one value at
//! a time into a buffer reused across items, judged, and written out as the normalized body,
//! so a request never holds a JSON tree of the whole batch (nor an object map per event).
//!
//! Every value, and every item past the limit, is parsed by serde_json into the tree
//! `serde_json::Value` would build, in the same order, so the body is malformed exactly when
//! `serde_json::from_slice::<Value>` says so, with its message; but every object name is an
//! ordinary name (see [`super::plain`]: serde_json's private raw-value marker is not
//! honoured). `extra` is kept as the JSON text that was sent, which is what subscribers
//! receive, and its nesting is measured on that text before it is parsed.

use std::{borrow::Cow, fmt};

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

use super::{
    members::{Members, RawText, EXTRA},
    plain::{self, Plain},
    rules::MAX_EXTRA_DEPTH,
    Batch, BodyError, ValidEvent, MAX_BATCH,
};

/// Validates the body in `bytes` (see [`super::validate_bytes_with`]).
pub(super) fn read<T, F>(batch: Batch<T, F>, bytes: &[u8]) -> Result<Vec<T>, BodyError>
where
    F: FnMut(ValidEvent) -> T,
{
    let mut reader = Reader { batch, members: Members::default() };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let shape = Level { reader: &mut reader, index: None }.deserialize(&mut de).and_then(|s| de.end().map(|()| s));
    match shape {
        Ok(Shape::Array(len)) => super::batch_size(len).map_err(BodyError::Invalid)?,
        Ok(Shape::One) => {}
        Err(e) => return Err(BodyError::Malformed(e)),
    }
    reader.batch.finish().map_err(BodyError::Invalid)
}

/// What the top level of the body was.
enum Shape {
    /// One value (an object, or a scalar refused as not an object).
    One,
    /// An array of this many items.
    Array(usize),
}

struct Reader<'de, T, F> {
    batch: Batch<T, F>,
    members: Members<'de>,
}

/// The top level (`index` `None`) or one item of an array: an object is judged, anything
/// else is parsed and refused as not an object.
struct Level<'r, 'de, T, F> {
    reader: &'r mut Reader<'de, T, F>,
    index: Option<usize>,
}

impl<'r, 'de, T, F: FnMut(ValidEvent) -> T> Level<'r, 'de, T, F> {
    fn not_object(self) -> Shape {
        self.reader.batch.not_object(self.index.unwrap_or(0));
        Shape::One
    }

    fn items<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut len = 0;
        while len < MAX_BATCH {
            match seq.next_element_seed(Level { reader: &mut *self.reader, index: Some(len) })? {
                Some(_) => len += 1,
                None => return Ok(Shape::Array(len)),
            }
        }
        while seq.next_element::<Plain>()?.is_some() {
            len += 1;
        }
        Ok(Shape::Array(len))
    }
}

impl<'r, 'de, T, F: FnMut(ValidEvent) -> T> DeserializeSeed<'de> for Level<'r, 'de, T, F> {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'r, 'de, T, F: FnMut(ValidEvent) -> T> Visitor<'de> for Level<'r, 'de, T, F> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let reader = self.reader;
        reader.members.clear();
        while let Some(Name(name)) = map.next_key()? {
            if name == EXTRA {
                let raw: &'de RawValue = map.next_value()?;
                let (value, raw) = extra(raw.get()).map_err(A::Error::custom)?;
                reader.members.insert(name, value);
                reader.members.set_raw_extra(raw);
            } else {
                let Plain(value) = map.next_value()?;
                reader.members.insert(name, value);
            }
        }
        reader.batch.object(self.index.unwrap_or(0), &reader.members);
        Ok(Shape::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        if self.index.is_none() {
            return self.items(seq);
        }
        while seq.next_element::<Plain>()?.is_some() {}
        Ok(self.not_object())
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(self.not_object())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(self.not_object())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(self.not_object())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(self.not_object())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(self.not_object())
    }

    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(self.not_object())
    }
}

/// `extra`'s value from its JSON text as sent. Text nested deeper than its rule allows is
/// not parsed (it may be deeper than serde_json's recursion limit): an empty object stands in
/// for it, and the rule is judged on the depth kept with the text.
fn extra(text: &str) -> Result<(Value, RawText<'_>), serde_json::Error> {
    let depth = plain::depth(text);
    let value =
        if depth > MAX_EXTRA_DEPTH { Value::Object(Map::new()) } else { serde_json::from_str::<Plain>(text)?.0 };
    Ok((value, RawText { text, depth }))
}

/// A member name, borrowed from the body unless it holds escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}
