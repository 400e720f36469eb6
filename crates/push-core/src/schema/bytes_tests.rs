//! The bytes path of ingest ([`validate_bytes_with`]) against what parsing the whole body
//! into a `serde_json::Value` first gave: the same bodies byte for byte, the same errors, the
//! same serde_json messages for malformed JSON.

use serde_json::{Map, Value};

use super::{fields, validate_body, validate_bytes_with, BodyError, Need, ValidEvent};
use crate::config::Service::{self, Cdr, Status};

const SEED_CDR: &str = r#"{"callId":"202312010001","serviceType":100,"callerNumber":"1380000001","calleeNumber":"02188888888","startTime":1701388800000,"endTime":1701389100000,"duration":300,"userData":"test-data"}"#;
const SEED_STATUS: &str =
    r#"{"callId":"202312010001","serviceType":100,"status":"ANSWERED","timestamp":1701388800000}"#;

/// `seed` with `members` (raw JSON text, `"name":value,...`) added after its fields.
fn with(seed: &str, members: &str) -> String {
    format!("{},{members}}}", &seed[..seed.len() - 1])
}

fn events(service: Service, body: &str) -> Vec<ValidEvent> {
    validate_bytes_with(service, body.as_bytes(), |e| e).unwrap_or_else(|e| panic!("{body}: {e:?}"))
}

/// The body as it was built before: the parsed object's fields in SPEC order into a
/// `serde_json::Map`, `null` dropped, `sequence` set, serialized by serde_json.
fn reference(service: Service, item: &Value, sequence: i64) -> String {
    let object = item.as_object().unwrap();
    let mut body = Map::new();
    for spec in fields::specs(service) {
        if spec.need == Need::OutputOnly {
            body.insert(spec.name.into(), sequence.into());
        } else if let Some(v) = object.get(spec.name).filter(|v| !v.is_null()) {
            body.insert(spec.name.into(), v.clone());
        }
    }
    Value::Object(body).to_string()
}

#[test]
fn bodies_are_the_bytes_serde_json_wrote_for_the_parsed_tree() {
    #[rustfmt::skip]
    let cdr_members = [
        r#""userData":"caf\u00e9 \/ \"q\" \\ \n \t \u0001 \u001f \u007f \u2028 \ud83d\ude00 😀 中""#,
        r#""userData":"https:\/\/x\/y""#, r#""callerNumber":"\u0031380000001""#, r#""userData":"plain é 😀""#,
        r#""userData":"first","userData":"last""#, r#""callId":"first","userData":null,"callId":"x\/y""#,
        r#""party":"CALLER","accountId":"acct-1","party":null,"recordUrl":"https:\/\/rec.example\/1.wav""#,
        r#""call\u0049d":"escaped-name","hangupCause":16,"sipCode":200,"disposition":"ANSWERED""#,
    ];
    let status_members = [r#""party":"CALLEE","userData":"\u00e9\/""#, r#""status":"HANGUP","sipCode":486"#];
    let cases = cdr_members.iter().map(|m| (Cdr, with(SEED_CDR, m)));
    let cases = cases.chain(status_members.iter().map(|m| (Status, with(SEED_STATUS, m))));
    for (service, text) in cases {
        let event = &events(service, &text)[0];
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let seq = event.status.is_some().then_some(7);
        assert_eq!(event.body_json(seq), reference(service, &parsed, 7), "{text}");
        assert_eq!(event.clone().into_stored().body_json(seq), event.body_json(seq));
    }
    let event = &events(Cdr, &with(SEED_CDR, r#""userData":"caf\u00e9\/\"","extra":{ "a" : [1, -0, 1e2] }"#))[0];
    let expected = r#""duration":300,"userData":"café/\"","extra":{ "a" : [1, -0, 1e2] }}"#;
    assert!(event.body_json(None).ends_with(expected), "{}", event.body_json(None));
}

/// The errors of `body` by the bytes path, and by the `Value` path; `None` for a 202.
fn both(service: Service, body: &[u8]) -> (Option<String>, Option<String>) {
    let bytes = match validate_bytes_with(service, body, |e| e.body_json(Some(1))) {
        Ok(_) => None,
        Err(BodyError::Malformed(e)) => Some(format!("400 {e}")),
        Err(BodyError::Invalid(errors)) => Some(format!("422 {errors:?}")),
    };
    let value = match serde_json::from_slice::<Value>(body) {
        Err(e) => Some(format!("400 {e}")),
        Ok(value) => validate_body(service, &value).err().map(|errors| format!("422 {errors:?}")),
    };
    (bytes, value)
}

#[test]
fn malformed_json_gets_serde_json_s_own_message() {
    let deep = |depth: usize| format!(r#""userData":{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
    #[rustfmt::skip]
    let bodies: Vec<Vec<u8>> = [
        String::new(), " ".into(), "{".into(), "[".into(), "[{}".into(), "{}}".into(), "[{},]".into(),
        format!("{SEED_CDR} x"), format!("{SEED_CDR}{SEED_CDR}"), format!("\u{feff}{SEED_CDR}"),
        with(SEED_CDR, r#""userData":"\ud800""#), with(SEED_CDR, r#""colour":"\udc00""#),
        with(SEED_CDR, r#""userData":1e400"#), with(SEED_CDR, r#""duration":01"#), with(SEED_CDR, r#""x":tru"#),
        with(SEED_CDR, &deep(126)), format!("[{}]", with(SEED_CDR, &deep(125))), r#"[1,"\ud800"]"#.into(),
        format!("[{}]", vec!["{}"; 1001].join(",") + ",[1e400]"), SEED_CDR[..SEED_CDR.len() - 1].into(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([b"{\"callId\":\"\xff\"}".to_vec(), b"[\"\xc3\"]".to_vec(), b"{\"\xffx\":1}".to_vec()])
    .collect();
    for body in &bodies {
        let (bytes, value) = both(Cdr, body);
        assert!(value.as_deref().is_some_and(|v| v.starts_with("400 ")), "{value:?}");
        assert_eq!(bytes, value, "{}", String::from_utf8_lossy(body));
    }
    // One level less is still JSON: the limit is serde_json's, counted over the whole body.
    // (`extra` has its own bound, far below: see the test of its depth.)
    let (bytes, value) = both(Cdr, with(SEED_CDR, &deep(125)).as_bytes());
    assert!(bytes.as_deref().is_some_and(|b| b.starts_with("422 ") && b.contains("must be a string")), "{bytes:?}");
    assert_eq!(bytes, value);
}

#[test]
fn rule_violations_are_judged_as_on_the_parsed_tree() {
    let bad = with(SEED_CDR, r#""colour":1,"duration":"300","userData":null,"USERDATA":2,"colour":3"#);
    let seeds = vec![SEED_CDR; 1001].join(",");
    #[rustfmt::skip]
    let bodies = [
        "[]".to_string(), "{}".into(), "5".into(), "null".into(), r#""x""#.into(), "[[]]".into(), "[5,{},[1]]".into(),
        format!("[{SEED_CDR},{bad},7,{SEED_STATUS},[{SEED_CDR}]]"), format!("[{seeds}]"), format!("[{seeds},5]"),
        with(SEED_CDR, r#""callId":5,"callId":"ok""#), with(SEED_CDR, r#""callId":"ok","callId":5"#),
        with(SEED_CDR, r#""serviceType":"100","phoneNoA":"1""#), with(SEED_STATUS, r#""sequence":1"#),
        format!("[{}]", vec![SEED_CDR; 1000].join(",")), with(SEED_CDR, r#""\u0063olour":1"#),
    ];
    let many_names: String = (0..100).map(|i| format!(r#""n{i}":{i},"#)).collect();
    let bodies = bodies.into_iter().chain([with(SEED_CDR, &format!("{many_names}\"n7\":null,\"n0\":0"))]);
    for body in bodies {
        for service in [Cdr, Status] {
            let (bytes, value) = both(service, body.as_bytes());
            assert_eq!(bytes, value, "{service:?} {body}");
        }
    }
}

#[test]
fn an_object_named_as_serde_jsons_raw_value_is_an_ordinary_object() {
    // serde_json's `Value` (its `raw_value` feature is on) reads such an object as the JSON
    // text it holds; the bytes path reads it as the object it is.
    let token = r#""$serde_json::private::RawValue""#;
    let quoted = serde_json::to_string(SEED_CDR).unwrap();
    let call_id = SEED_CDR.replace(r#""202312010001""#, &format!(r#"{{{token}:"\"c1\""}}"#));
    let errors = |body: &str| match validate_bytes_with(Cdr, body.as_bytes(), |e| e) {
        Err(BodyError::Invalid(errors)) => {
            errors.into_iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<String>>()
        }
        other => panic!("{body}: {other:?}"),
    };
    assert_eq!(errors(&call_id), vec!["callId must be a string".to_string()]);
    assert_eq!(errors(&format!("{{{token}:{quoted}}}"))[0], "$serde_json::private::RawValue is not a known field");
    let skipped = format!("[{SEED_CDR},{{{token}:5}}]");
    assert_eq!(errors(&skipped)[0], "$serde_json::private::RawValue is not a known field");
    let extra = format!(r#"{{"k":{{{token}:"1"}}}}"#);
    let event = &events(Cdr, &with(SEED_CDR, &format!(r#""extra":{extra}"#)))[0];
    assert!(event.body_json(None).ends_with(&format!(r#""extra":{extra}}}"#)), "{}", event.body_json(None));
    assert_eq!(event.body()["extra"]["k"], serde_json::json!({"$serde_json::private::RawValue": "1"}));
}

#[test]
fn extra_is_pushed_as_the_text_that_was_sent() {
    #[rustfmt::skip]
    let extras = [
        r#"{ "z" : 1 , "a" : { "y" : [ 1 , null , -0 , 1e2 , 1.50 , 18446744073709551616 ] } , "m" : "\u00e9\/" }"#,
        r#"{"big":18446744073709551615,"neg":-9223372036854775808,"f":-0.0,"e":1E-7,"dup":1,"dup":2}"#,
        "{\n\t\"x\" :\r\n[ ]\n}", r#"{"a":null,"b":"\ud83d\ude00 😀","c":{}}"#,
    ];
    for extra in extras {
        let text = with(SEED_CDR, &format!(r#""extra" :  {extra} "#));
        let body = events(Cdr, &text)[0].body_json(None);
        let expected = format!(r#"{},"extra":{extra}}}"#, &SEED_CDR[..SEED_CDR.len() - 1]);
        assert_eq!(body, expected);
        assert!(serde_json::from_str::<Value>(&body).is_ok(), "{body}");
    }
    // A repeated name takes the last value, as for every other field.
    let body = events(Cdr, &with(SEED_CDR, r#""extra":{"first":1},"extra":{ "last":2 }"#))[0].body_json(None);
    assert!(body.ends_with(r#""extra":{ "last":2 }}"#), "{body}");
}

#[test]
fn extra_nests_at_most_32_levels_deep_even_past_serde_jsons_recursion_limit() {
    let nested = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    assert_eq!(both(Cdr, with(SEED_CDR, &format!(r#""extra":{}"#, nested(32))).as_bytes()).0, None);
    for depth in [33, 126, 500] {
        let body = with(SEED_CDR, &format!(r#""extra":{}"#, nested(depth)));
        let (bytes, _) = both(Cdr, body.as_bytes());
        let expected = format!("must be nested at most 32 levels deep (got {depth})");
        assert!(bytes.as_deref().is_some_and(|e| e.starts_with("422 ") && e.contains(&expected)), "{bytes:?}");
        assert!(bytes.unwrap().contains(r#"field: "extra""#));
    }
    let arrays = format!(r#""extra":{{"a":{}1{}}}"#, "[".repeat(32), "]".repeat(32));
    assert!(both(Cdr, with(SEED_CDR, &arrays).as_bytes()).0.unwrap().contains("(got 33)"));
}
