//! Table-driven tests of every rule of SPEC §2.1 (CDR) and §2.2 (status event).

use serde_json::{json, Value};

use super::{validate_body, validate_event, ValidEvent, MAX_BATCH};
use crate::config::Service::{self, Cdr, Status};

const START: i64 = 1_701_388_800_000;
const END: i64 = 1_701_389_100_000;

/// CDR fields in the order of the SPEC §2.1 tables.
const CDR_ORDER: [&str; 29] = [
    "callId",
    "serviceType",
    "callerNumber",
    "calleeNumber",
    "startTime",
    "endTime",
    "duration",
    "userData",
    "accountId",
    "party",
    "subServiceType",
    "direction",
    "beginCallTime",
    "ringTime",
    "disposition",
    "releaseDirection",
    "hangupCause",
    "sipCode",
    "recordUrl",
    "extra",
    "phoneNoX",
    "phoneNoA",
    "phoneNoB",
    "phoneNoE",
    "subscriptionId",
    "numberPoolNo",
    "secretCallType",
    "callDisplayType",
    "calledDisplayNumber",
];
/// Status fields in the order of the SPEC §2.2 table (privacy fields in §2.1's order).
const STATUS_ORDER: [&str; 23] = [
    "callId",
    "serviceType",
    "status",
    "timestamp",
    "sequence",
    "party",
    "callerNumber",
    "calleeNumber",
    "accountId",
    "userData",
    "disposition",
    "releaseDirection",
    "hangupCause",
    "sipCode",
    "phoneNoX",
    "phoneNoA",
    "phoneNoB",
    "phoneNoE",
    "subscriptionId",
    "numberPoolNo",
    "secretCallType",
    "callDisplayType",
    "calledDisplayNumber",
];

/// The nine privacy-number fields with a valid value each.
fn privacy() -> [(&'static str, Value); 9] {
    [
        ("phoneNoX", json!("13900000000")),
        ("phoneNoA", json!("1380000001")),
        ("phoneNoB", json!("1390000002")),
        ("phoneNoE", json!("8001")),
        ("subscriptionId", json!("sub-1")),
        ("numberPoolNo", json!("pool-1")),
        ("secretCallType", json!(11)),
        ("callDisplayType", json!(2)),
        ("calledDisplayNumber", json!("13900000000")),
    ]
}

/// The SPEC seed example of `service`, valid as is.
fn seed(service: Service) -> Value {
    match service {
        Cdr => json!({"callId":"202312010001","serviceType":100,"callerNumber":"1380000001",
            "calleeNumber":"02188888888","startTime":1701388800000_i64,"endTime":1701389100000_i64,
            "duration":300,"userData":"test-data"}),
        Status => json!({"callId":"202312010001","serviceType":100,"status":"ANSWERED","timestamp":1701388800000_i64}),
    }
}

/// The seed as a privacy-number (200) event.
fn seed200(service: Service) -> Value {
    with(seed(service), json!({"serviceType": 200, "phoneNoX": "13900000000"}))
}

/// The seed status event with status HANGUP.
fn hangup() -> Value {
    set(seed(Status), "status", json!("HANGUP"))
}

/// `base` with every field of `patch` set.
fn with(mut base: Value, patch: Value) -> Value {
    let object = base.as_object_mut().expect("an object");
    for (k, v) in patch.as_object().expect("a patch object") {
        object.insert(k.clone(), v.clone());
    }
    base
}

fn set(base: Value, field: &str, value: Value) -> Value {
    with(base, json!({ field: value }))
}

fn without(mut base: Value, field: &str) -> Value {
    base.as_object_mut().expect("an object").remove(field);
    base
}

fn accepted(service: Service, value: &Value) -> ValidEvent {
    validate_event(service, 0, value).unwrap_or_else(|e| panic!("refused {value}: {e:?}"))
}

/// The (field, message) pairs of a refused event.
fn errors(service: Service, value: &Value) -> Vec<(String, String)> {
    match validate_event(service, 0, value) {
        Ok(_) => panic!("accepted, but should be refused: {value}"),
        Err(errs) => errs.into_iter().map(|e| (e.field, e.message)).collect(),
    }
}

/// Asserts `value` is refused with exactly one error, on `field`, saying `msg`.
#[track_caller]
fn refused_on(service: Service, value: &Value, field: &str, msg: &str) {
    let errs = errors(service, value);
    assert!(
        errs.len() == 1 && errs[0].0 == field && errs[0].1.contains(msg),
        "expected only `{field}: ..{msg}..`, got {errs:?} for {value}"
    );
}

fn keys(event: &ValidEvent) -> Vec<&str> {
    event.body.keys().map(String::as_str).collect()
}

#[test]
fn the_seed_examples_are_valid_and_kept_as_sent() {
    let cdr = accepted(Cdr, &seed(Cdr));
    assert_eq!(cdr.body_json(None), seed(Cdr).to_string(), "byte-for-byte as sent");
    assert_eq!((cdr.call_id.as_str(), cdr.service_type), ("202312010001", 100));
    assert_eq!((cdr.party, cdr.status, cdr.account_id), (None, None, None));
    let status = accepted(Status, &seed(Status));
    assert_eq!(status.status.as_deref(), Some("ANSWERED"));
    assert_eq!(Value::Object(status.body), set(seed(Status), "sequence", json!(0)));
    accepted(Cdr, &seed200(Cdr));
    accepted(Status, &seed200(Status));
}

#[test]
fn each_required_field_is_required() {
    let cdr = [
        "callId",
        "serviceType",
        "callerNumber",
        "calleeNumber",
        "startTime",
        "endTime",
        "duration",
    ];
    let status = ["callId", "serviceType", "status", "timestamp"];
    for (service, required) in [(Cdr, &cdr[..]), (Status, &status[..])] {
        for field in required {
            refused_on(service, &without(seed(service), field), field, "is required");
            refused_on(service, &set(seed(service), field, Value::Null), field, "is required");
        }
    }
    // Optional fields may be absent or null.
    accepted(Cdr, &without(seed(Cdr), "userData"));
    accepted(
        Cdr,
        &with(
            seed(Cdr),
            json!({"userData": null, "party": null, "extra": null, "phoneNoA": null}),
        ),
    );
    accepted(Status, &with(seed(Status), json!({"sequence": null, "sipCode": null})));
}

#[test]
fn wrong_types_are_refused_naming_the_field() {
    let table = [
        (Cdr, "callId", json!(202312010001_i64), "must be a string"),
        (Cdr, "serviceType", json!("100"), "must be an integer"),
        (Cdr, "serviceType", json!(100.0), "must be an integer"),
        (Cdr, "callerNumber", json!(1380000001), "must be a string"),
        (Cdr, "calleeNumber", json!(["02188888888"]), "must be a string"),
        (Cdr, "startTime", json!("1701388800000"), "must be an integer"),
        (Cdr, "endTime", json!(1.7013891e12), "must be an integer"),
        (Cdr, "duration", json!("300"), "must be an integer"),
        (Cdr, "duration", json!(-1), "between 0 and"),
        (Cdr, "userData", json!({"a": 1}), "must be a string"),
        (Cdr, "accountId", json!(42), "must be a string"),
        (Cdr, "party", json!(true), "must be a string"),
        (Cdr, "hangupCause", json!("16"), "must be an integer"),
        (Cdr, "sipCode", json!(486.5), "must be an integer"),
        (Cdr, "recordUrl", json!(1), "must be a string"),
        (Cdr, "extra", json!([1, 2]), "must be a JSON object"),
        (Cdr, "extra", json!("{}"), "must be a JSON object"),
        (Status, "callId", json!({"id": 1}), "must be a string"),
        (Status, "status", json!(3), "must be a string"),
        (Status, "timestamp", json!("1701388800000"), "must be an integer"),
        (Status, "callerNumber", json!(1380000001), "must be a string"),
    ];
    for (service, field, value, msg) in table {
        refused_on(service, &set(seed(service), field, value), field, msg);
    }
    for not_an_object in [json!("x"), json!(5), json!(null), json!([seed(Cdr)])] {
        let errs = validate_event(Cdr, 3, &not_an_object).unwrap_err();
        assert_eq!(
            (errs.len(), errs[0].index, errs[0].field.as_str()),
            (1, 3, ""),
            "{errs:?}"
        );
        assert!(errs[0].message.contains("must be a JSON object"), "{errs:?}");
    }
}

#[test]
fn enums_take_each_spec_value_and_nothing_else() {
    let unanswered = with(seed(Cdr), json!({"endTime": START, "duration": 0}));
    let table: [(Service, &Value, &str, &[&str]); 8] = [
        (Cdr, &unanswered, "party", &["CALLER", "CALLEE"]),
        (Cdr, &unanswered, "direction", &["INBOUND", "OUTBOUND", "INTERNAL"]),
        (
            Cdr,
            &unanswered,
            "disposition",
            &["ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CANCELLED"],
        ),
        (
            Cdr,
            &unanswered,
            "releaseDirection",
            &["CALLER", "CALLEE", "PLATFORM", "UNKNOWN"],
        ),
        (
            Status,
            &hangup(),
            "status",
            &["DIALING", "RINGING", "ANSWERED", "HANGUP"],
        ),
        (Status, &hangup(), "party", &["CALLER", "CALLEE"]),
        (
            Status,
            &hangup(),
            "disposition",
            &["ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CANCELLED"],
        ),
        (
            Status,
            &hangup(),
            "releaseDirection",
            &["CALLER", "CALLEE", "PLATFORM", "UNKNOWN"],
        ),
    ];
    for (service, base, field, values) in table {
        for value in values {
            accepted(service, &set(base.clone(), field, json!(value)));
        }
        for bad in [
            values[0].to_lowercase(),
            String::new(),
            "OTHER".into(),
            format!(" {}", values[0]),
        ] {
            refused_on(service, &set(base.clone(), field, json!(bad)), field, "must be one of");
        }
    }
}

#[test]
fn integer_ranges_and_codes() {
    let table: [(Service, Value, &str, &[i64], &[i64], &str); 11] = [
        (Cdr, seed(Cdr), "serviceType", &[100], &[0, 101, 300], "must be one of"),
        (
            Cdr,
            seed(Cdr),
            "hangupCause",
            &[0, 16, 127],
            &[-1, 128],
            "between 0 and 127",
        ),
        (
            Cdr,
            seed(Cdr),
            "sipCode",
            &[100, 486, 699],
            &[99, 700],
            "between 100 and 699",
        ),
        (
            Cdr,
            seed(Cdr),
            "subServiceType",
            &[101, 102, 103, 104, 105],
            &[100, 106, 301],
            "must be one of",
        ),
        (
            Cdr,
            seed200(Cdr),
            "subServiceType",
            &[201, 202, 203, 204, 205],
            &[200, 206],
            "must be one of",
        ),
        (
            Cdr,
            seed200(Cdr),
            "secretCallType",
            &[10, 11, 12],
            &[0, 9, 13],
            "must be one of",
        ),
        (
            Cdr,
            seed200(Cdr),
            "callDisplayType",
            &[1, 2, 3, 4],
            &[0, 5],
            "between 1 and 4",
        ),
        (
            Status,
            hangup(),
            "hangupCause",
            &[0, 127],
            &[-1, 128],
            "between 0 and 127",
        ),
        (
            Status,
            hangup(),
            "sipCode",
            &[100, 699],
            &[99, 700],
            "between 100 and 699",
        ),
        (
            Status,
            seed200(Status),
            "secretCallType",
            &[10, 11, 12],
            &[9, 13],
            "must be one of",
        ),
        (
            Status,
            seed200(Status),
            "callDisplayType",
            &[1, 4],
            &[0, 5],
            "between 1 and 4",
        ),
    ];
    for (service, base, field, good, bad, msg) in table {
        for n in good {
            accepted(service, &set(base.clone(), field, json!(n)));
        }
        for n in bad {
            refused_on(service, &set(base.clone(), field, json!(n)), field, msg);
        }
    }
    // subServiceType must belong to the serviceType's family.
    for (service, base, sub, family) in [(Cdr, seed(Cdr), 201, 100), (Cdr, seed200(Cdr), 101, 200)] {
        let msg = format!("{sub} does not belong to serviceType {family}");
        refused_on(
            service,
            &set(base, "subServiceType", json!(sub)),
            "subServiceType",
            &msg,
        );
    }
}

#[test]
fn text_limits_count_characters_not_bytes() {
    let table = [
        (Cdr, seed(Cdr), "callerNumber"),
        (Cdr, seed(Cdr), "calleeNumber"),
        (Cdr, seed(Cdr), "accountId"),
        (Status, seed(Status), "callerNumber"),
        (Status, seed(Status), "calleeNumber"),
        (Status, seed(Status), "accountId"),
    ];
    let privacy_text = privacy()
        .into_iter()
        .filter(|(_, v)| v.is_string())
        .map(|(f, _)| (Cdr, seed200(Cdr), f));
    for (service, base, field) in table.into_iter().chain(privacy_text) {
        let max = "中".repeat(64);
        assert_eq!(max.len(), 192);
        accepted(service, &set(base.clone(), field, json!(max)));
        accepted(service, &set(base.clone(), field, json!("0")));
        let over = "中".repeat(65);
        refused_on(
            service,
            &set(base.clone(), field, json!(over)),
            field,
            "at most 64 characters (got 65)",
        );
        refused_on(service, &set(base, field, json!("")), field, "at least 1 character");
    }
}

#[test]
fn user_data_holds_2048_characters_whatever_their_bytes() {
    for service in [Cdr, Status] {
        for (unit, bytes) in [("x", 1), ("中", 3), ("😀", 4)] {
            let max = unit.repeat(2048);
            assert_eq!(max.len(), 2048 * bytes);
            let event = accepted(service, &set(seed(service), "userData", json!(max)));
            assert_eq!(event.body["userData"], json!(max), "echoed unchanged");
            let over = set(seed(service), "userData", json!(unit.repeat(2049)));
            refused_on(service, &over, "userData", "at most 2048 characters (got 2049)");
        }
        accepted(service, &set(seed(service), "userData", json!("")));
    }
}

#[test]
fn call_id_is_1_to_128_printable_ascii() {
    for service in [Cdr, Status] {
        for good in ["a".to_string(), "x".repeat(128), " !~".into(), "abc-123_.:/ @+0".into()] {
            accepted(service, &set(seed(service), "callId", json!(good)));
        }
        let bad = [
            (String::new(), "1 to 128"),
            ("x".repeat(129), "1 to 128"),
            ("café".into(), "printable ASCII"),
            ("中".into(), "printable ASCII"),
            ("a\tb".into(), "printable ASCII"),
            ("a\n".into(), "printable ASCII"),
            ("a\u{7f}".into(), "printable ASCII"),
        ];
        for (id, msg) in bad {
            refused_on(service, &set(seed(service), "callId", json!(id)), "callId", msg);
        }
    }
}

#[test]
fn times_are_epoch_milliseconds_not_seconds() {
    let timed = with(
        seed(Cdr),
        json!({"beginCallTime": START - 20_000, "ringTime": START - 10_000}),
    );
    accepted(Cdr, &timed);
    let table = [
        (Cdr, "startTime"),
        (Cdr, "endTime"),
        (Cdr, "beginCallTime"),
        (Cdr, "ringTime"),
        (Status, "timestamp"),
    ];
    for (service, field) in table {
        let base = if service == Cdr { timed.clone() } else { seed(Status) };
        let ms = base[field].as_i64().unwrap();
        let seconds = set(base.clone(), field, json!(ms / 1000));
        refused_on(
            service,
            &seconds,
            field,
            &format!("looks like seconds ({}); times are epoch milliseconds", ms / 1000),
        );
        for far in [-1, 4_102_444_800_001_i64] {
            refused_on(
                service,
                &set(base.clone(), field, json!(far)),
                field,
                "between years 2000 and 2100",
            );
        }
    }
}

#[test]
fn cdr_times_must_agree_with_each_other() {
    let cdr = |patch: Value| with(seed(Cdr), patch);
    accepted(Cdr, &cdr(json!({"endTime": START + 300_999})));
    accepted(Cdr, &cdr(json!({"beginCallTime": START, "ringTime": START})));
    accepted(Cdr, &cdr(json!({"disposition": "ANSWERED"})));
    for disposition in ["NO_ANSWER", "BUSY", "FAILED", "CANCELLED"] {
        accepted(
            Cdr,
            &cdr(json!({"disposition": disposition, "endTime": START, "duration": 0})),
        );
        let talked = cdr(json!({"disposition": disposition}));
        refused_on(
            Cdr,
            &talked,
            "startTime",
            "must equal endTime when the call was not answered",
        );
    }
    let table = [
        (
            json!({"endTime": START - 1, "duration": 0}),
            "endTime",
            "must not be before startTime",
        ),
        (json!({"duration": 299}), "duration", "= 300 (got 299)"),
        (json!({"duration": 301}), "duration", "= 300 (got 301)"),
        (json!({"endTime": START + 299_999}), "duration", "= 299 (got 300)"),
        (
            json!({"beginCallTime": START - 1000, "ringTime": START - 2000}),
            "beginCallTime",
            "after ringTime",
        ),
        (
            json!({"ringTime": START + 1}),
            "ringTime",
            "must not be after startTime",
        ),
        (
            json!({"beginCallTime": START + 1}),
            "beginCallTime",
            "must not be after startTime",
        ),
    ];
    for (patch, field, msg) in table {
        refused_on(Cdr, &cdr(patch), field, msg);
    }
}

#[test]
fn extra_is_an_object_of_at_most_4096_serialized_bytes_passed_through_in_order() {
    let fits = json!({"k": "x".repeat(4088)});
    assert_eq!(fits.to_string().len(), 4096);
    accepted(Cdr, &set(seed(Cdr), "extra", fits));
    let over = json!({"k": "x".repeat(4089)});
    refused_on(
        Cdr,
        &set(seed(Cdr), "extra", over),
        "extra",
        "at most 4096 bytes (got 4097)",
    );
    let wide = json!({"k": "中".repeat(1363)});
    refused_on(Cdr, &set(seed(Cdr), "extra", wide), "extra", "(got 4097)");
    let extra = json!({"z": 1, "a": {"y": [1, null], "b": null}, "m": "é"});
    let event = accepted(Cdr, &set(seed(Cdr), "extra", extra));
    let order: Vec<&str> = event.body["extra"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(order, ["z", "a", "m"]);
    assert!(event
        .body_json(None)
        .contains(r#""extra":{"z":1,"a":{"y":[1,null],"b":null},"m":"é"}"#));
}

#[test]
fn record_url_is_an_http_url() {
    for good in ["https://rec.example/1.wav", "http://10.0.0.1:8080/rec?id=1"] {
        accepted(Cdr, &set(seed(Cdr), "recordUrl", json!(good)));
    }
    let long = format!("https://rec.example/{}", "a".repeat(2048));
    let bad = [
        ("ftp://rec.example/1.wav", "http:// or https://"),
        ("rec.example/1.wav", "http:// or https://"),
        ("not a url", "http:// or https://"),
        ("", "at least 1 character"),
        (long.as_str(), "at most 2048 characters"),
    ];
    for (url, msg) in bad {
        refused_on(Cdr, &set(seed(Cdr), "recordUrl", json!(url)), "recordUrl", msg);
    }
}

#[test]
fn unknown_fields_are_refused_with_a_did_you_mean_hint() {
    let table = [
        (Cdr, "colour", None),
        (Cdr, "sequence", None),
        (Cdr, "status", None),
        (Cdr, "USERDATA", Some("userData")),
        (Status, "startTime", None),
        (Status, "extra", None),
        (Status, "SipCode", Some("sipCode")),
        (Status, "subServiceType", None),
    ];
    for (service, field, hint) in table {
        let errs = errors(service, &set(seed(service), field, json!(1)));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, field);
        match hint {
            Some(name) => assert!(errs[0].1.ends_with(&format!("did you mean `{name}`?")), "{errs:?}"),
            None => assert_eq!(errs[0].1, "is not a known field"),
        }
    }
    let renamed = set(without(seed(Cdr), "callId"), "callid", json!("202312010001"));
    let errs = errors(Cdr, &renamed);
    assert!(
        errs.contains(&("callid".into(), "is not a known field; did you mean `callId`?".into())),
        "{errs:?}"
    );
    assert!(errs.contains(&("callId".into(), "is required".into())), "{errs:?}");
}

#[test]
fn privacy_fields_only_with_service_type_200_which_requires_phone_no_x() {
    for service in [Cdr, Status] {
        for (field, value) in privacy() {
            let msg = "is a privacy-number field, only allowed with serviceType 200";
            refused_on(service, &set(seed(service), field, value), field, msg);
        }
        let all = privacy()
            .into_iter()
            .fold(set(seed(service), "serviceType", json!(200)), |v, (f, x)| set(v, f, x));
        let event = accepted(service, &all);
        assert_eq!(event.service_type, 200);
        assert_eq!(
            keys(&event).len(),
            seed(service).as_object().unwrap().len() + 9 + usize::from(service == Status)
        );
        let missing = set(seed(service), "serviceType", json!(200));
        refused_on(service, &missing, "phoneNoX", "is required with serviceType 200");
        refused_on(
            service,
            &set(missing, "phoneNoX", Value::Null),
            "phoneNoX",
            "is required with serviceType 200",
        );
    }
}

#[test]
fn status_events_hangup_only_fields_output_only_sequence() {
    let only_hangup = [
        ("disposition", json!("NO_ANSWER")),
        ("releaseDirection", json!("CALLER")),
        ("hangupCause", json!(16)),
        ("sipCode", json!(200)),
    ];
    for (field, value) in only_hangup {
        accepted(Status, &set(hangup(), field, value.clone()));
        for status in ["DIALING", "RINGING", "ANSWERED"] {
            let event = set(set(seed(Status), "status", json!(status)), field, value.clone());
            refused_on(
                Status,
                &event,
                field,
                &format!("is only allowed with status HANGUP (got {status})"),
            );
        }
    }
    for sequence in [json!(0), json!(5), json!("x")] {
        refused_on(
            Status,
            &set(seed(Status), "sequence", sequence),
            "sequence",
            "is output only",
        );
    }
    refused_on(
        Status,
        &set(seed(Status), "status", json!("HUNG_UP")),
        "status",
        "DIALING, RINGING, ANSWERED, HANGUP",
    );
}

#[test]
fn every_violated_rule_of_an_item_is_reported() {
    let bad = json!({"callId": "", "serviceType": 100, "callerNumber": 5, "startTime": 1701388800,
        "endTime": END, "duration": "300", "userData": "中".repeat(2049), "hangupCause": 128, "colour": 1});
    let mut fields: Vec<String> = errors(Cdr, &bad).into_iter().map(|e| e.0).collect();
    fields.sort();
    let expected = [
        "callId",
        "calleeNumber",
        "callerNumber",
        "colour",
        "duration",
        "hangupCause",
        "startTime",
        "userData",
    ];
    assert_eq!(fields, expected);
    // Rules across fields are reported together with rules of single fields.
    let mixed = with(
        seed(Cdr),
        json!({"userData": "x".repeat(2049), "phoneNoA": "1", "duration": 301, "ringTime": END}),
    );
    let mut fields: Vec<String> = errors(Cdr, &mixed).into_iter().map(|e| e.0).collect();
    fields.sort();
    assert_eq!(fields, ["duration", "phoneNoA", "ringTime", "userData"]);
    let status = with(
        seed(Status),
        json!({"timestamp": 1701388800, "sipCode": 200, "sequence": 1, "phoneNoX": "1"}),
    );
    let mut fields: Vec<String> = errors(Status, &status).into_iter().map(|e| e.0).collect();
    fields.sort();
    assert_eq!(fields, ["phoneNoX", "sequence", "sipCode", "timestamp"]);
    // A wrong serviceType leaves the rules that depend on it unjudged instead of misjudged.
    let wrong = with(
        seed(Cdr),
        json!({"serviceType": "100", "subServiceType": 201, "phoneNoA": "1"}),
    );
    refused_on(Cdr, &wrong, "serviceType", "must be an integer");
}

#[test]
fn arrays_hold_1_to_1000_items_and_errors_carry_the_index() {
    assert_eq!(MAX_BATCH, 1000);
    for (body, got) in [(json!([]), 0), (Value::Array(vec![seed(Cdr); 1001]), 1001)] {
        let errs = validate_body(Cdr, &body).unwrap_err();
        assert_eq!(
            (errs.len(), errs[0].index, errs[0].field.as_str()),
            (1, 0, ""),
            "{errs:?}"
        );
        assert!(
            errs[0].message.contains(&format!("1 to 1000 items (got {got})")),
            "{errs:?}"
        );
    }
    assert_eq!(
        validate_body(Cdr, &Value::Array(vec![seed(Cdr); 1000])).unwrap().len(),
        1000
    );
    let ids = ["c", "a", "b"].map(|id| set(seed(Status), "callId", json!(id)));
    let events = validate_body(Status, &json!(ids)).unwrap();
    assert_eq!(
        events.iter().map(|e| e.call_id.as_str()).collect::<Vec<_>>(),
        ["c", "a", "b"]
    );
    assert_eq!(
        validate_body(Cdr, &seed(Cdr)).unwrap().len(),
        1,
        "one object is one event"
    );
    let mixed = json!([
        seed(Cdr),
        without(seed(Cdr), "callId"),
        seed(Cdr),
        with(seed(Cdr), json!({"userData": "x".repeat(2049), "duration": 1})),
        5
    ]);
    let errs = validate_body(Cdr, &mixed).unwrap_err();
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(got, [(1, "callId"), (3, "userData"), (3, "duration"), (4, "")]);
}

#[test]
fn the_normalized_body_keeps_spec_order_and_drops_null_optionals() {
    let cdr = privacy().into_iter().fold(seed200(Cdr), |v, (f, x)| set(v, f, x));
    let cdr = with(
        cdr,
        json!({"accountId": "acct-1", "party": "CALLER", "subServiceType": 201, "direction": "INBOUND",
        "beginCallTime": START - 20_000, "ringTime": START - 10_000, "disposition": "ANSWERED",
        "releaseDirection": "CALLEE", "hangupCause": 16, "sipCode": 200, "recordUrl": "https://rec.example/1.wav",
        "extra": {"z": 1, "a": 2}}),
    );
    let status = privacy().into_iter().fold(seed200(Status), |v, (f, x)| set(v, f, x));
    let status = with(
        set(status, "status", json!("HANGUP")),
        json!({"party": "CALLEE", "callerNumber": "1", "calleeNumber": "2", "accountId": "acct-1",
        "userData": "u", "disposition": "ANSWERED", "releaseDirection": "CALLER", "hangupCause": 16, "sipCode": 200}),
    );
    for (service, full, order) in [(Cdr, cdr, &CDR_ORDER[..]), (Status, status, &STATUS_ORDER[..])] {
        let reversed: serde_json::Map<String, Value> = full
            .as_object()
            .unwrap()
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let event = accepted(service, &Value::Object(reversed));
        assert_eq!(keys(&event), order, "{service:?} fields come out in SPEC order");
    }
    let nulls = with(
        seed(Cdr),
        json!({"party": null, "accountId": null, "extra": null, "recordUrl": null}),
    );
    let event = accepted(Cdr, &nulls);
    assert_eq!(
        event.body_json(None),
        seed(Cdr).to_string(),
        "null optionals are dropped"
    );
    assert_eq!((event.party, event.account_id), (None, None));
}

#[test]
fn a_status_body_gets_a_sequence_slot_filled_on_output() {
    let event = accepted(
        Status,
        &with(seed(Status), json!({"party": "CALLER", "accountId": "acct-1"})),
    );
    assert_eq!(
        keys(&event),
        [
            "callId",
            "serviceType",
            "status",
            "timestamp",
            "sequence",
            "party",
            "accountId"
        ]
    );
    assert_eq!(event.body["sequence"], 0);
    let out = r#"{"callId":"202312010001","serviceType":100,"status":"ANSWERED","timestamp":1701388800000,"sequence":7,"party":"CALLER","accountId":"acct-1"}"#;
    assert_eq!(event.body_json(Some(7)), out);
    assert_eq!(
        accepted(Cdr, &seed(Cdr)).body.get("sequence"),
        None,
        "a CDR has no sequence"
    );
}

#[test]
fn routing_facts_and_idempotency_keys() {
    let caller = accepted(
        Status,
        &with(seed(Status), json!({"party": "CALLER", "accountId": "acct-1"})),
    );
    assert_eq!(
        (
            caller.party.as_deref(),
            caller.account_id.as_deref(),
            caller.service_type
        ),
        (Some("CALLER"), Some("acct-1"), 100)
    );
    let callee = accepted(Status, &set(seed(Status), "party", json!("CALLEE")));
    let ringing = accepted(
        Status,
        &with(seed(Status), json!({"party": "CALLER", "status": "RINGING"})),
    );
    let caller_hangup = accepted(Status, &with(hangup(), json!({"party": "CALLER"})));
    assert_ne!(caller.dedup_key(), callee.dedup_key(), "parties are apart");
    assert_ne!(caller.dedup_key(), ringing.dedup_key(), "statuses are apart");
    assert_eq!(caller.hangup_key(), caller_hangup.dedup_key());
    assert_ne!(callee.hangup_key(), caller_hangup.dedup_key());
    let cdr = accepted(Cdr, &seed(Cdr));
    let cdr_other_data = accepted(Cdr, &set(seed(Cdr), "userData", json!("other")));
    assert_eq!(
        cdr.dedup_key(),
        cdr_other_data.dedup_key(),
        "a CDR is keyed by (callId, party) only"
    );
    assert_ne!(
        cdr.dedup_key(),
        accepted(Cdr, &set(seed(Cdr), "party", json!("CALLER"))).dedup_key()
    );
}
