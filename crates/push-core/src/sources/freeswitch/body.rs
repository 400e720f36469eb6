//! What mod_json_cdr sends, back to one JSON document (`mod_json_cdr.c`, `process_cdr`):
//! - `encode` unset or false: the JSON itself, `Content-Type: application/json`;
//! - `encode=true`: `cdr=` and the JSON through `switch_url_encode`,
//!   `application/x-www-form-urlencoded`;
//! - `encode=base64`: `cdr=` and the JSON in base64 (not percent-encoded, so `+` and `/`
//!   stay as they are), `application/x-www-form-base64-encoded`.
//!
//! The same three shapes are what its `err-log-dir` spool files hold (without `cdr=`), so a
//! body without a known Content-Type is recognized by its first bytes.
//!
//! The document is read with `callflow` as an array whether the build wrote an array (newer
//! builds) or repeated the `"callflow"` key once per caller profile (older builds, duplicate
//! keys that a plain JSON map would collapse to the last one).

use std::fmt;

use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// The three bodies mod_json_cdr sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `cdr=<percent-encoded JSON>`.
    Form,
    /// `cdr=<base64 JSON>`.
    Base64,
}

impl Encoding {
    /// The encoding a Content-Type names; `None` for another or no type (then the body's
    /// first bytes decide).
    pub fn of_content_type(content_type: Option<&str>) -> Option<Encoding> {
        let mime = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "text/json" => Some(Encoding::Json),
            "application/x-www-form-urlencoded" => Some(Encoding::Form),
            "application/x-www-form-base64-encoded" => Some(Encoding::Base64),
            _ => None,
        }
    }

    /// The encoding of a body (or spool file) by its first bytes: `{` JSON, `%7B` (with or
    /// without `cdr=`) percent-encoded, anything else base64.
    pub fn sniff(body: &[u8]) -> Encoding {
        let text = trim_ascii(body);
        let form = text.starts_with(b"cdr=");
        let text = text.strip_prefix(b"cdr=").unwrap_or(text);
        match text.first() {
            Some(b'{') if !form => Encoding::Json,
            Some(b'{' | b'%') => Encoding::Form,
            _ => Encoding::Base64,
        }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The JSON text of a body in `encoding`, or why there is none.
pub fn json_text(body: &[u8], encoding: Encoding) -> Result<String, String> {
    let body = trim_ascii(body);
    match encoding {
        Encoding::Json => String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_string()),
        Encoding::Form => form_value(body).ok_or_else(|| "the form body has no cdr= field".to_string()),
        Encoding::Base64 => {
            let value = body.strip_prefix(b"cdr=").unwrap_or(body);
            let value: Vec<u8> = value.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            // A proxy may have percent-encoded the base64 characters.
            let value = if value.contains(&b'%') { percent_decode(&value) } else { value };
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let bytes = engine.decode(&value).map_err(|e| format!("the cdr= field is not base64: {e}"))?;
            String::from_utf8(bytes).map_err(|_| "the base64 cdr= field is not UTF-8 text".to_string())
        }
    }
}

/// The `cdr` field of a form body; a body that is the percent-encoded JSON alone (a spool
/// file of `encode=true`) is taken as that field.
fn form_value(body: &[u8]) -> Option<String> {
    if !body.contains(&b'=') || body.starts_with(b"%7B") || body.starts_with(b"%7b") {
        return Some(url::form_urlencoded::parse(&[b"cdr=", body].concat()).next()?.1.into_owned());
    }
    url::form_urlencoded::parse(body).find(|(name, _)| name == "cdr").map(|(_, value)| value.into_owned())
}

/// Percent-decodes `%XX` escapes (as `switch_url_encode` writes them); anything else,
/// a `%` not followed by two hex digits included, stays as it is.
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// A mod_json_cdr document: its top-level members, `callflow` always an array of the caller
/// profiles in the order written (the current profile first).
#[derive(Debug, Clone, PartialEq)]
pub struct Document(pub Map<String, Value>);

impl Document {
    /// Parses the JSON text of one CDR.
    pub fn parse(text: &str) -> Result<Document, String> {
        serde_json::from_str(text).map_err(|e| format!("the CDR is not a JSON object: {e}"))
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mod_json_cdr JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut members = Map::new();
        let mut callflow = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            match (key.as_str(), value) {
                ("callflow", Value::Array(profiles)) => callflow.extend(profiles),
                ("callflow", profile) => callflow.push(profile),
                (_, value) => {
                    members.insert(key, value);
                }
            }
        }
        members.insert("callflow".into(), Value::Array(callflow));
        Ok(Document(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_callflow_keys_are_kept_in_order() {
        let doc = Document::parse(r#"{"a":1,"callflow":{"n":1},"callflow":{"n":2}}"#).unwrap();
        assert_eq!(doc.0["callflow"], serde_json::json!([{"n": 1}, {"n": 2}]));
        let doc = Document::parse(r#"{"callflow":[{"n":1},{"n":2}]}"#).unwrap();
        assert_eq!(doc.0["callflow"], serde_json::json!([{"n": 1}, {"n": 2}]));
        assert!(Document::parse("[1]").is_err());
    }

    #[test]
    fn percent_decoding_leaves_what_is_no_escape() {
        assert_eq!(percent_decode(b"Michael%20S%20Collins"), b"Michael S Collins");
        assert_eq!(percent_decode(b"100%"), b"100%");
        assert_eq!(percent_decode(b"%2"), b"%2");
        assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
        assert_eq!(percent_decode(b"%E4%BD%A0"), "你".as_bytes());
    }

    #[test]
    fn bodies_are_recognized_by_their_first_bytes() {
        assert_eq!(Encoding::sniff(b" {\"a\":1}\n"), Encoding::Json);
        assert_eq!(Encoding::sniff(b"cdr=%7B%22a%22"), Encoding::Form);
        assert_eq!(Encoding::sniff(b"%7B%22a%22"), Encoding::Form);
        assert_eq!(Encoding::sniff(b"cdr=eyJhIjox"), Encoding::Base64);
        assert_eq!(json_text(b"%7B%22a%22%3A1%7D\n", Encoding::Form).unwrap(), r#"{"a":1}"#);
        assert_eq!(json_text(b"cdr=eyJhIjoxfQ==", Encoding::Base64).unwrap(), r#"{"a":1}"#);
        assert_eq!(json_text(b"eyJhIjoxfQ", Encoding::Base64).unwrap(), r#"{"a":1}"#);
    }
}
