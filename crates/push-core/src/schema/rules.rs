//! Field rules: one small check per kind of value, shared by the CDR and status tables.

use serde_json::Value;

/// Earliest plausible event time: 2000-01-01T00:00:00Z in epoch milliseconds.
pub const MIN_MILLIS: i64 = 946_684_800_000;
/// Latest plausible event time: 2100-01-01T00:00:00Z in epoch milliseconds.
pub const MAX_MILLIS: i64 = 4_102_444_800_000;
/// Below this a "millisecond" time is really seconds (1e11 ms is 1973, 1e11 s is year 5138).
const SECONDS_LOOKALIKE: i64 = 100_000_000_000;

/// How deeply `extra` may nest: the object itself is level 1, each object or array in it one
/// more. Deeper is refused (422) so that a subscriber's parser never meets a bomb of brackets.
pub const MAX_EXTRA_DEPTH: usize = 32;

/// What a field's value must look like.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// A string of `min..=max` Unicode characters.
    Text { min: usize, max: usize },
    /// 1-128 printable ASCII characters (call ids).
    CallId,
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// Epoch milliseconds between 2000 and 2100.
    Millis,
    /// One of a fixed set of strings.
    Word(&'static [&'static str]),
    /// One of a fixed set of integers.
    Code(&'static [i64]),
    /// An http(s) URL of at most 2048 characters.
    Url,
    /// A JSON object whose serialized form fits in `max_bytes`, nested at most `max_depth`
    /// levels deep (the object itself is level 1).
    Object { max_bytes: usize, max_depth: usize },
}

impl Rule {
    /// Checks `value`; `Err` is the sentence the API shows after the field name.
    pub fn check(self, value: &Value) -> Result<(), String> {
        match self {
            Rule::Text { min, max } => text(value, min, max),
            Rule::CallId => call_id(value),
            Rule::Int { min, max } => int(value).and_then(|n| in_range(n, min, max)),
            Rule::Millis => int(value).and_then(millis),
            Rule::Word(words) => word(value, words),
            Rule::Code(codes) => int(value)
                .and_then(|n| codes.contains(&n).then_some(()).ok_or_else(|| format!("must be one of {codes:?}"))),
            Rule::Url => url(value),
            Rule::Object { max_bytes, max_depth } => object(value, max_bytes, max_depth),
        }
    }

    /// Checks how deeply a value nests, measured on its JSON text (the bytes path, where
    /// text too deep for its rule is never parsed); rules without a depth bound pass.
    pub fn check_depth(self, depth: usize) -> Result<(), String> {
        match self {
            Rule::Object { max_depth, .. } if depth > max_depth => Err(too_deep(max_depth, depth)),
            _ => Ok(()),
        }
    }
}

fn text(value: &Value, min: usize, max: usize) -> Result<(), String> {
    let s = value.as_str().ok_or("must be a string")?;
    let chars = s.chars().count();
    if chars < min {
        return Err(format!("must be at least {min} character{}", if min == 1 { "" } else { "s" }));
    }
    if chars > max {
        return Err(format!("must be at most {max} characters (got {chars})"));
    }
    Ok(())
}

fn call_id(value: &Value) -> Result<(), String> {
    let s = value.as_str().ok_or("must be a string")?;
    if s.is_empty() || s.len() > 128 {
        return Err(format!("must be 1 to 128 characters (got {})", s.chars().count()));
    }
    if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("must be printable ASCII".into());
    }
    Ok(())
}

/// Reads an integer; floats, strings and out-of-range numbers are refused.
pub fn int(value: &Value) -> Result<i64, String> {
    value.as_i64().ok_or_else(|| "must be an integer".to_string())
}

fn in_range(n: i64, min: i64, max: i64) -> Result<(), String> {
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be between {min} and {max} (got {n})"))
    }
}

fn millis(n: i64) -> Result<(), String> {
    if (0..SECONDS_LOOKALIKE).contains(&n) {
        return Err(format!("looks like seconds ({n}); times are epoch milliseconds, e.g. {}", n.saturating_mul(1000)));
    }
    if !(MIN_MILLIS..MAX_MILLIS).contains(&n) {
        return Err(format!("must be epoch milliseconds between years 2000 and 2100 (got {n})"));
    }
    Ok(())
}

fn word(value: &Value, words: &[&str]) -> Result<(), String> {
    let s = value.as_str().ok_or("must be a string")?;
    if words.contains(&s) {
        Ok(())
    } else {
        Err(format!("must be one of {}", words.join(", ")))
    }
}

fn url(value: &Value) -> Result<(), String> {
    text(value, 1, 2048)?;
    let s = value.as_str().unwrap_or_default();
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err("must be an http:// or https:// URL".into()),
    }
}

fn object(value: &Value, max_bytes: usize, max_depth: usize) -> Result<(), String> {
    if !value.is_object() {
        return Err("must be a JSON object".into());
    }
    let depth = depth(value);
    if depth > max_depth {
        return Err(too_deep(max_depth, depth));
    }
    let size = serde_json::to_string(value).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(format!("must serialize to at most {max_bytes} bytes (got {size})"));
    }
    Ok(())
}

fn too_deep(max_depth: usize, depth: usize) -> String {
    format!("must be nested at most {max_depth} levels deep (got {depth})")
}

/// How deeply a value nests: 0 for a scalar, 1 for `{}` or `[1]`, one more per level.
fn depth(value: &Value) -> usize {
    let inner = |items: &mut dyn Iterator<Item = &Value>| items.map(depth).max().unwrap_or(0);
    match value {
        Value::Array(items) => 1 + inner(&mut items.iter()),
        Value::Object(members) => 1 + inner(&mut members.values()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_counts_characters_not_bytes() {
        let rule = Rule::Text { min: 1, max: 3 };
        assert!(rule.check(&json!("中文字")).is_ok(), "3 characters, 9 bytes");
        assert!(rule.check(&json!("中文字符")).is_err());
        assert!(rule.check(&json!("")).is_err());
        assert!(rule.check(&json!(5)).is_err());
    }

    #[test]
    fn millis_refuses_seconds_and_far_times() {
        assert!(Rule::Millis.check(&json!(1_701_388_800_000_i64)).is_ok());
        let err = Rule::Millis.check(&json!(1_701_388_800)).unwrap_err();
        assert!(err.contains("looks like seconds"), "{err}");
        assert!(Rule::Millis.check(&json!(MAX_MILLIS)).is_err());
        assert!(Rule::Millis.check(&json!(-5)).is_err());
        assert!(Rule::Millis.check(&json!(1.701_388_8e12)).is_err(), "floats are not integers");
    }

    #[test]
    fn call_id_is_printable_ascii() {
        assert!(Rule::CallId.check(&json!("abc-123 x")).is_ok());
        assert!(Rule::CallId.check(&json!("abc\n")).is_err());
        assert!(Rule::CallId.check(&json!("é")).is_err());
        assert!(Rule::CallId.check(&json!("x".repeat(129))).is_err());
        assert!(Rule::CallId.check(&json!("x".repeat(128))).is_ok());
    }

    #[test]
    fn url_and_object_rules() {
        assert!(Rule::Url.check(&json!("https://rec.example/1.wav")).is_ok());
        assert!(Rule::Url.check(&json!("ftp://x/1.wav")).is_err());
        let rule = Rule::Object { max_bytes: 4096, max_depth: 3 };
        let big = json!({"k": "v".repeat(5000)});
        assert!(rule.check(&big).is_err());
        assert!(rule.check(&json!([1])).is_err());
        assert!(rule.check(&json!({"a": [{"b": 1}]})).is_ok());
        let err = rule.check(&json!({"a": [{"b": []}]})).unwrap_err();
        assert_eq!(err, "must be nested at most 3 levels deep (got 4)");
        assert_eq!(rule.check_depth(4), Err(err));
        assert!(rule.check_depth(3).is_ok() && Rule::Url.check_depth(99).is_ok());
    }
}
