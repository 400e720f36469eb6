//! Reading JSON values without serde_json's private markers.
//!
//! serde_json's own `Value` reads an object whose first name is
//! `$serde_json::private::RawValue` as the JSON text held in its value (its `raw_value`
//! feature, which axum turns on), so `{"$serde_json::private::RawValue":"\"c1\""}` would
//! become the string `c1`. A caller could use that to smuggle any value past the type rules.
//! [`Plain`] builds the same `Value` tree from the same JSON with every name read as an
//! ordinary name, so such an object stays an object.
//!
//! It also measures and checks `extra`'s nesting on its JSON text ([`depth`]) before the text
//! is parsed, so a deep `extra` is refused by its rule rather than by the parser's recursion
//! limit.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A `serde_json::Value` read with every object name taken as a plain name.
pub(super) struct Plain(pub(super) Value);

impl<'de> serde::Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PlainVisitor).map(Plain)
    }
}

/// The same as [`Plain`], as a seed (for `next_value_seed` and friends).
struct PlainSeed;

impl<'de> DeserializeSeed<'de> for PlainSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(PlainVisitor)
    }
}

struct PlainVisitor;

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(PlainSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(PlainSeed)?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

/// How deeply the JSON text `raw` nests: 0 for a scalar, 1 for `{}` or `[1]`, 2 for
/// `{"a":{}}`, and so on. `raw` is known to be JSON (serde_json checked its syntax), so
/// only brackets outside strings are counted.
pub(super) fn depth(raw: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in raw.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_raw_value_marker_is_an_ordinary_name() {
        let text = r#"{"$serde_json::private::RawValue":"\"c1\""}"#;
        let honoured: Value = serde_json::from_str(text).unwrap();
        assert_eq!(honoured, json!("c1"), "serde_json's Value honours the marker");
        let Plain(plain) = serde_json::from_str(text).unwrap();
        assert_eq!(plain, json!({"$serde_json::private::RawValue": "\"c1\""}));
        let Plain(number) = serde_json::from_str(r#"{"$serde_json::private::Number":"1"}"#).unwrap();
        assert!(number.is_object());
    }

    #[test]
    fn plain_reads_what_value_reads() {
        let text = r#"{"z":1,"a":[1,-0,1e2,1.5,18446744073709551615,-9223372036854775808,null,true,"é\/"],"z":2}"#;
        let Plain(plain) = serde_json::from_str(text).unwrap();
        assert_eq!(plain, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(plain.to_string(), serde_json::from_str::<Value>(text).unwrap().to_string());
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth("{}"), 1);
        assert_eq!(depth(r#"{"a":[{"b":1}],"c":{}}"#), 3);
        assert_eq!(depth(r#"{"a":"{[{[\"{"}"#), 1);
        assert_eq!(depth(r#"{"a\\":{"b":"\\"}}"#), 2);
    }
}
