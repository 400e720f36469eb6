//! Table-driven tests of every rule of SPEC §2.1 (CDR) and §2.2 (status event).

use serde_json::{json, Value};

use super::{validate_body, validate_event, FieldError, ValidEvent, MAX_BATCH};
use crate::config::Service::{self, Cdr, Status};

const START: i64 = 1_701_388_800_000;
const END: i64 = 1_701_389_100_000;

/// CDR fields in the order of the SPEC §2.1 tables.
const CDR_ORDER: &str = "callId serviceType callerNumber calleeNumber startTime endTime duration userData accountId \
    party subServiceType direction beginCallTime ringTime disposition releaseDirection hangupCause sipCode recordUrl \
    extra phoneNoX phoneNoA phoneNoB phoneNoE subscriptionId numberPoolNo secretCallType callDisplayType \
    calledDisplayNumber";
/// Status fields in the order of the SPEC §2.2 table (privacy fields in §2.1's order).
const STATUS_ORDER: &str = "callId serviceType status timestamp sequence party callerNumber calleeNumber accountId \
    userData disposition releaseDirection hangupCause sipCode phoneNoX phoneNoA phoneNoB phoneNoE subscriptionId \
    numberPoolNo secretCallType callDisplayType calledDisplayNumber";

/// The nine privacy-number fields with a valid value each.
fn privacy() -> [(&'static str, Value); 9] {
    #[rustfmt::skip]
    let fields = [
        ("phoneNoX", json!("13900000000")), ("phoneNoA", json!("1380000001")), ("phoneNoB", json!("1390000002")),
        ("phoneNoE", json!("8001")), ("subscriptionId", json!("sub-1")), ("numberPoolNo", json!("pool-1")),
        ("secretCallType", json!(11)), ("callDisplayType", json!(2)), ("calledDisplayNumber", json!("13900000000")),
    ];
    fields
}

/// The seed examples of SPEC §2.1 and §2.2, verbatim.
const SEED_CDR: &str = r#"{"callId":"202312010001","serviceType":100,"callerNumber":"1380000001","calleeNumber":"02188888888","startTime":1701388800000,"endTime":1701389100000,"duration":300,"userData":"test-data"}"#;
const SEED_STATUS: &str =
    r#"{"callId":"202312010001","serviceType":100,"status":"ANSWERED","timestamp":1701388800000}"#;

/// The SPEC seed example of `service`, valid as is.
fn seed(service: Service) -> Value {
    let text = if service == Cdr { SEED_CDR } else { SEED_STATUS };
    serde_json::from_str(text).expect("the seed is JSON")
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

fn ok(service: Service, value: &Value) -> ValidEvent {
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
fn refused(service: Service, value: &Value, field: &str, msg: &str) {
    let errs = errors(service, value);
    assert!(
        errs.len() == 1 && errs[0].0 == field && errs[0].1.contains(msg),
        "expected only `{field}: ..{msg}..`, got {errs:?} for {value}"
    );
}

fn triples(errors: &[FieldError]) -> Vec<(usize, &str, &str)> {
    errors.iter().map(|e| (e.index, e.field.as_str(), e.message.as_str())).collect()
}

fn keys(event: &ValidEvent) -> Vec<String> {
    event.body().keys().cloned().collect()
}

#[test]
fn the_seed_examples_are_valid_and_kept_as_sent() {
    let cdr = ok(Cdr, &seed(Cdr));
    assert_eq!(cdr.body_json(None), SEED_CDR, "byte-for-byte as sent");
    assert_eq!((cdr.call_id.as_str(), cdr.service_type), ("202312010001", 100));
    assert_eq!((cdr.party, cdr.status, cdr.account_id), (None, None, None));
    let status = ok(Status, &seed(Status));
    assert_eq!(status.status.as_deref(), Some("ANSWERED"));
    assert_eq!(Value::Object(status.body()), set(seed(Status), "sequence", json!(0)));
    ok(Cdr, &seed200(Cdr));
    ok(Status, &seed200(Status));
}

#[test]
fn each_required_field_is_required() {
    let cdr = "callId serviceType callerNumber calleeNumber startTime endTime duration";
    let status = "callId serviceType status timestamp";
    for (service, required) in [(Cdr, cdr), (Status, status)] {
        for field in required.split_whitespace() {
            refused(service, &without(seed(service), field), field, "is required");
            refused(service, &set(seed(service), field, Value::Null), field, "is required");
        }
    }
    // Optional fields may be absent or null.
    ok(Cdr, &without(seed(Cdr), "userData"));
    let nulls = json!({"userData": null, "party": null, "extra": null, "phoneNoA": null});
    ok(Cdr, &with(seed(Cdr), nulls));
    ok(Status, &with(seed(Status), json!({"sequence": null, "sipCode": null})));
}

#[test]
fn wrong_types_are_refused_naming_the_field() {
    let (string, integer) = ("must be a string", "must be an integer");
    #[rustfmt::skip]
    let table = [
        (Cdr, "callId", json!(202312010001_i64), string), (Cdr, "serviceType", json!("100"), integer),
        (Cdr, "serviceType", json!(100.0), integer), (Cdr, "callerNumber", json!(1380000001), string),
        (Cdr, "calleeNumber", json!(["02188888888"]), string), (Cdr, "startTime", json!("1701388800000"), integer),
        (Cdr, "endTime", json!(1.7013891e12), integer), (Cdr, "duration", json!("300"), integer),
        (Cdr, "duration", json!(-1), "between 0 and"), (Cdr, "userData", json!({"a": 1}), string),
        (Cdr, "accountId", json!(42), string), (Cdr, "party", json!(true), string),
        (Cdr, "hangupCause", json!("16"), integer), (Cdr, "sipCode", json!(486.5), integer),
        (Cdr, "recordUrl", json!(1), string), (Cdr, "extra", json!([1, 2]), "must be a JSON object"),
        (Cdr, "extra", json!("{}"), "must be a JSON object"), (Status, "callId", json!({"id": 1}), string),
        (Status, "status", json!(3), string), (Status, "timestamp", json!("1701388800000"), integer),
        (Status, "callerNumber", json!(1380000001), string),
    ];
    for (service, field, value, msg) in table {
        refused(service, &set(seed(service), field, value), field, msg);
    }
    for not_an_object in [json!("x"), json!(5), json!(null), json!([seed(Cdr)])] {
        let errs = validate_event(Cdr, 3, &not_an_object).unwrap_err();
        assert_eq!(triples(&errs), [(3, "", "must be a JSON object")]);
    }
}

#[test]
fn enums_take_each_spec_value_and_nothing_else() {
    let unanswered = with(seed(Cdr), json!({"endTime": START, "duration": 0}));
    let party = "CALLER CALLEE";
    let disposition = "ANSWERED NO_ANSWER BUSY FAILED CANCELLED";
    let release = "CALLER CALLEE PLATFORM UNKNOWN";
    #[rustfmt::skip]
    let table = [
        (Cdr, &unanswered, "party", party),
        (Cdr, &unanswered, "direction", "INBOUND OUTBOUND INTERNAL"),
        (Cdr, &unanswered, "disposition", disposition),
        (Cdr, &unanswered, "releaseDirection", release),
        (Status, &hangup(), "status", "DIALING RINGING ANSWERED HANGUP"),
        (Status, &hangup(), "party", party),
        (Status, &hangup(), "disposition", disposition),
        (Status, &hangup(), "releaseDirection", release),
    ];
    for (service, base, field, values) in table {
        let values: Vec<&str> = values.split_whitespace().collect();
        for value in &values {
            ok(service, &set(base.clone(), field, json!(value)));
        }
        let first = values[0];
        for bad in [first.to_lowercase(), String::new(), "OTHER".into(), format!(" {first}")] {
            refused(service, &set(base.clone(), field, json!(bad)), field, "must be one of");
        }
    }
}

/// (service, base event, field, accepted values, refused values, message of the refusal).
type Range = (Service, Value, &'static str, &'static [i64], &'static [i64], &'static str);

#[test]
fn integer_ranges_and_codes() {
    let (one_of, cause) = ("must be one of", "between 0 and 127");
    let (sip, display) = ("between 100 and 699", "between 1 and 4");
    #[rustfmt::skip]
    let table: [Range; 11] = [
        (Cdr, seed(Cdr), "serviceType", &[100], &[0, 101, 300], one_of),
        (Cdr, seed(Cdr), "hangupCause", &[0, 16, 127], &[-1, 128], cause),
        (Cdr, seed(Cdr), "sipCode", &[100, 486, 699], &[99, 700], sip),
        (Cdr, seed(Cdr), "subServiceType", &[101, 102, 103, 104, 105], &[100, 106, 301], one_of),
        (Cdr, seed200(Cdr), "subServiceType", &[201, 202, 203, 204, 205], &[200, 206], one_of),
        (Cdr, seed200(Cdr), "secretCallType", &[10, 11, 12], &[0, 9, 13], one_of),
        (Cdr, seed200(Cdr), "callDisplayType", &[1, 2, 3, 4], &[0, 5], display),
        (Status, hangup(), "hangupCause", &[0, 127], &[-1, 128], cause),
        (Status, hangup(), "sipCode", &[100, 699], &[99, 700], sip),
        (Status, seed200(Status), "secretCallType", &[10, 11, 12], &[9, 13], one_of),
        (Status, seed200(Status), "callDisplayType", &[1, 4], &[0, 5], display),
    ];
    for (service, base, field, good, bad, msg) in table {
        for n in good {
            ok(service, &set(base.clone(), field, json!(n)));
        }
        for n in bad {
            refused(service, &set(base.clone(), field, json!(n)), field, msg);
        }
    }
    // subServiceType must belong to the serviceType's family.
    for (base, sub, family) in [(seed(Cdr), 201, 100), (seed200(Cdr), 101, 200)] {
        let msg = format!("{sub} does not belong to serviceType {family}");
        refused(Cdr, &set(base, "subServiceType", json!(sub)), "subServiceType", &msg);
    }
}

#[test]
fn text_limits_count_characters_not_bytes() {
    let plain = ["callerNumber", "calleeNumber", "accountId"];
    let plain = plain.into_iter().flat_map(|f| [(Cdr, seed(Cdr), f), (Status, seed(Status), f)]);
    let privacy_text = privacy().into_iter().filter(|(_, v)| v.is_string());
    let privacy_text = privacy_text.map(|(f, _)| (Cdr, seed200(Cdr), f));
    let (max, over) = ("中".repeat(64), "中".repeat(65));
    assert_eq!(max.len(), 192);
    for (service, base, field) in plain.chain(privacy_text) {
        ok(service, &set(base.clone(), field, json!(max)));
        ok(service, &set(base.clone(), field, json!("0")));
        let too_long = set(base.clone(), field, json!(over));
        refused(service, &too_long, field, "at most 64 characters (got 65)");
        refused(service, &set(base, field, json!("")), field, "at least 1 character");
    }
}

#[test]
fn user_data_holds_2048_characters_whatever_their_bytes() {
    for service in [Cdr, Status] {
        for (unit, bytes) in [("x", 1), ("中", 3), ("😀", 4)] {
            let max = unit.repeat(2048);
            assert_eq!(max.len(), 2048 * bytes);
            let event = ok(service, &set(seed(service), "userData", json!(max)));
            assert_eq!(event.body()["userData"], json!(max), "echoed unchanged");
            let over = set(seed(service), "userData", json!(unit.repeat(2049)));
            refused(service, &over, "userData", "at most 2048 characters (got 2049)");
        }
        ok(service, &set(seed(service), "userData", json!("")));
    }
}

#[test]
fn call_id_is_1_to_128_printable_ascii() {
    for service in [Cdr, Status] {
        for good in ["a".to_string(), "x".repeat(128), " !~".into(), "abc-123_.:/ @+0".into()] {
            ok(service, &set(seed(service), "callId", json!(good)));
        }
        let ascii = "printable ASCII";
        #[rustfmt::skip]
        let bad = [
            (String::new(), "1 to 128"), ("x".repeat(129), "1 to 128"), ("café".into(), ascii),
            ("中".into(), ascii), ("a\tb".into(), ascii), ("a\n".into(), ascii), ("a\u{7f}".into(), ascii),
        ];
        for (id, msg) in bad {
            refused(service, &set(seed(service), "callId", json!(id)), "callId", msg);
        }
    }
}

#[test]
fn times_are_epoch_milliseconds_not_seconds() {
    let timed = json!({"beginCallTime": START - 20_000, "ringTime": START - 10_000});
    let timed = with(seed(Cdr), timed);
    ok(Cdr, &timed);
    let cdr_times = ["startTime", "endTime", "beginCallTime", "ringTime"].map(|f| (Cdr, &timed, f));
    let status = seed(Status);
    for (service, base, field) in cdr_times.into_iter().chain([(Status, &status, "timestamp")]) {
        let seconds = base[field].as_i64().unwrap() / 1000;
        let msg = format!("looks like seconds ({seconds}); times are epoch milliseconds");
        refused(service, &set(base.clone(), field, json!(seconds)), field, &msg);
        for far in [-1, 4_102_444_800_001_i64] {
            let far = set(base.clone(), field, json!(far));
            refused(service, &far, field, "between years 2000 and 2100");
        }
    }
}

#[test]
fn cdr_times_must_agree_with_each_other() {
    let cdr = |patch: Value| with(seed(Cdr), patch);
    ok(Cdr, &cdr(json!({"endTime": START + 300_999})));
    ok(Cdr, &cdr(json!({"beginCallTime": START, "ringTime": START})));
    ok(Cdr, &cdr(json!({"disposition": "ANSWERED"})));
    for disposition in ["NO_ANSWER", "BUSY", "FAILED", "CANCELLED"] {
        let unanswered = json!({"disposition": disposition, "endTime": START, "duration": 0});
        ok(Cdr, &cdr(unanswered));
        let talked = cdr(json!({"disposition": disposition}));
        let msg = "must equal endTime when the call was not answered";
        refused(Cdr, &talked, "startTime", msg);
    }
    let after_start = "must not be after startTime";
    #[rustfmt::skip]
    let table = [
        (json!({"endTime": START - 1, "duration": 0}), "endTime", "must not be before startTime"),
        (json!({"duration": 299}), "duration", "= 300 (got 299)"),
        (json!({"duration": 301}), "duration", "= 300 (got 301)"),
        (json!({"endTime": START + 299_999}), "duration", "= 299 (got 300)"),
        (json!({"beginCallTime": START - 1000, "ringTime": START - 2000}), "beginCallTime", "after ringTime"),
        (json!({"ringTime": START + 1}), "ringTime", after_start),
        (json!({"beginCallTime": START + 1}), "beginCallTime", after_start),
    ];
    for (patch, field, msg) in table {
        refused(Cdr, &cdr(patch), field, msg);
    }
}

#[test]
fn extra_is_an_object_of_at_most_4096_serialized_bytes_passed_through_in_order() {
    let extra = |value: Value| set(seed(Cdr), "extra", value);
    let fits = json!({"k": "x".repeat(4088)});
    assert_eq!(fits.to_string().len(), 4096);
    ok(Cdr, &extra(fits));
    let over = json!({"k": "x".repeat(4089)});
    refused(Cdr, &extra(over), "extra", "at most 4096 bytes (got 4097)");
    refused(Cdr, &extra(json!({"k": "中".repeat(1363)})), "extra", "(got 4097)");
    let event = ok(Cdr, &extra(json!({"z": 1, "a": {"y": [1, null], "b": null}, "m": "é"})));
    let extra = event.body()["extra"].as_object().unwrap().clone();
    assert_eq!(extra.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
    let sent = r#""extra":{"z":1,"a":{"y":[1,null],"b":null},"m":"é"}"#;
    assert!(event.body_json(None).contains(sent), "{}", event.body_json(None));
}

#[test]
fn record_url_is_an_http_url() {
    for good in ["https://rec.example/1.wav", "http://10.0.0.1:8080/rec?id=1"] {
        ok(Cdr, &set(seed(Cdr), "recordUrl", json!(good)));
    }
    let long = format!("https://rec.example/{}", "a".repeat(2048));
    let http = "http:// or https://";
    #[rustfmt::skip]
    let bad = [
        ("ftp://rec.example/1.wav", http), ("rec.example/1.wav", http), ("not a url", http),
        ("", "at least 1 character"), (long.as_str(), "at most 2048 characters"),
    ];
    for (url, msg) in bad {
        refused(Cdr, &set(seed(Cdr), "recordUrl", json!(url)), "recordUrl", msg);
    }
}

#[test]
fn unknown_fields_are_refused_with_a_did_you_mean_hint() {
    #[rustfmt::skip]
    let table = [
        (Cdr, "colour", None), (Cdr, "sequence", None), (Cdr, "status", None),
        (Cdr, "USERDATA", Some("userData")), (Status, "startTime", None), (Status, "extra", None),
        (Status, "subServiceType", None), (Status, "SipCode", Some("sipCode")),
    ];
    for (service, field, hint) in table {
        let errs = errors(service, &set(seed(service), field, json!(1)));
        let message = match hint {
            Some(name) => format!("is not a known field; did you mean `{name}`?"),
            None => "is not a known field".into(),
        };
        assert_eq!(errs, [(field.to_string(), message)]);
    }
    let renamed = set(without(seed(Cdr), "callId"), "callid", json!("202312010001"));
    let errs = errors(Cdr, &renamed);
    let hint = ("callid".into(), "is not a known field; did you mean `callId`?".into());
    assert_eq!(errs, [hint, ("callId".into(), "is required".into())]);
}

#[test]
fn privacy_fields_only_with_service_type_200_which_requires_phone_no_x() {
    let only_200 = "is a privacy-number field, only allowed with serviceType 200";
    let required = "is required with serviceType 200";
    for service in [Cdr, Status] {
        for (field, value) in privacy() {
            refused(service, &set(seed(service), field, value), field, only_200);
        }
        let base = set(seed(service), "serviceType", json!(200));
        let all = privacy().into_iter().fold(base.clone(), |v, (f, x)| set(v, f, x));
        let event = ok(service, &all);
        assert_eq!(event.service_type, 200);
        let sequence = usize::from(service == Status);
        let expected = seed(service).as_object().unwrap().len() + 9 + sequence;
        assert_eq!(keys(&event).len(), expected);
        refused(service, &base, "phoneNoX", required);
        refused(service, &set(base, "phoneNoX", Value::Null), "phoneNoX", required);
    }
}

#[test]
fn status_events_hangup_only_fields_output_only_sequence() {
    #[rustfmt::skip]
    let only_hangup = [
        ("disposition", json!("NO_ANSWER")), ("releaseDirection", json!("CALLER")),
        ("hangupCause", json!(16)), ("sipCode", json!(200)),
    ];
    for (field, value) in only_hangup {
        ok(Status, &set(hangup(), field, value.clone()));
        for status in ["DIALING", "RINGING", "ANSWERED"] {
            let event = set(set(seed(Status), "status", json!(status)), field, value.clone());
            let msg = format!("is only allowed with status HANGUP (got {status})");
            refused(Status, &event, field, &msg);
        }
    }
    for sequence in [json!(0), json!(5), json!("x")] {
        let event = set(seed(Status), "sequence", sequence);
        refused(Status, &event, "sequence", "is output only");
    }
    let hung_up = set(seed(Status), "status", json!("HUNG_UP"));
    refused(Status, &hung_up, "status", "DIALING, RINGING, ANSWERED, HANGUP");
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

fn sorted_fields(service: Service, value: &Value) -> Vec<String> {
    let mut fields: Vec<String> = errors(service, value).into_iter().map(|e| e.0).collect();
    fields.sort();
    fields
}

#[test]
fn every_violated_rule_of_an_item_is_reported() {
    let bad = json!({"callId": "", "serviceType": 100, "callerNumber": 5, "startTime": 1701388800,
        "endTime": END, "duration": "300", "userData": "中".repeat(2049), "hangupCause": 128, "colour": 1});
    let expected = "callId calleeNumber callerNumber colour duration hangupCause startTime userData";
    assert_eq!(sorted_fields(Cdr, &bad), words(expected));
    // Rules across fields are reported together with rules of single fields.
    let mixed = json!({"userData": "x".repeat(2049), "phoneNoA": "1", "duration": 301, "ringTime": END});
    let mixed = with(seed(Cdr), mixed);
    assert_eq!(sorted_fields(Cdr, &mixed), words("duration phoneNoA ringTime userData"));
    let status = json!({"timestamp": 1701388800, "sipCode": 200, "sequence": 1, "phoneNoX": "1"});
    let status = with(seed(Status), status);
    assert_eq!(sorted_fields(Status, &status), words("phoneNoX sequence sipCode timestamp"));
    // A wrong serviceType leaves the rules that depend on it unjudged instead of misjudged.
    let wrong = json!({"serviceType": "100", "subServiceType": 201, "phoneNoA": "1"});
    refused(Cdr, &with(seed(Cdr), wrong), "serviceType", "must be an integer");
}

#[test]
fn arrays_hold_1_to_1000_items_and_errors_carry_the_index() {
    assert_eq!(MAX_BATCH, 1000);
    for (body, got) in [(json!([]), 0), (Value::Array(vec![seed(Cdr); 1001]), 1001)] {
        let errs = validate_body(Cdr, &body).unwrap_err();
        let msg = format!("an array must hold 1 to 1000 items (got {got})");
        assert_eq!(triples(&errs), [(0, "", msg.as_str())]);
    }
    let full = validate_body(Cdr, &Value::Array(vec![seed(Cdr); 1000])).unwrap();
    assert_eq!(full.len(), 1000);
    let ids = ["c", "a", "b"].map(|id| set(seed(Status), "callId", json!(id)));
    let events = validate_body(Status, &json!(ids)).unwrap();
    let order: Vec<&str> = events.iter().map(|e| e.call_id.as_str()).collect();
    assert_eq!(order, ["c", "a", "b"]);
    let one = validate_body(Cdr, &seed(Cdr)).unwrap();
    assert_eq!(one.len(), 1, "one object is one event");
    let two_wrongs = with(seed(Cdr), json!({"userData": "x".repeat(2049), "duration": 1}));
    let mixed = json!([seed(Cdr), without(seed(Cdr), "callId"), seed(Cdr), two_wrongs, 5]);
    let errs = validate_body(Cdr, &mixed).unwrap_err();
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(got, [(1, "callId"), (3, "userData"), (3, "duration"), (4, "")]);
}

#[test]
fn the_normalized_body_keeps_spec_order_and_drops_null_optionals() {
    let cdr = json!({"accountId": "acct-1", "party": "CALLER", "subServiceType": 201, "direction": "INBOUND",
        "beginCallTime": START - 20_000, "ringTime": START - 10_000, "disposition": "ANSWERED",
        "releaseDirection": "CALLEE", "hangupCause": 16, "sipCode": 200, "recordUrl": "https://rec.example/1.wav",
        "extra": {"z": 1, "a": 2}});
    let cdr = privacy().into_iter().fold(with(seed(Cdr), cdr), |v, (f, x)| set(v, f, x));
    let status = json!({"status": "HANGUP", "party": "CALLEE", "callerNumber": "1", "calleeNumber": "2",
        "accountId": "acct-1", "userData": "u", "disposition": "ANSWERED", "releaseDirection": "CALLER",
        "hangupCause": 16, "sipCode": 200});
    let status = privacy().into_iter().fold(with(seed(Status), status), |v, (f, x)| set(v, f, x));
    for (service, full, order) in [(Cdr, cdr, CDR_ORDER), (Status, status, STATUS_ORDER)] {
        let full = set(full, "serviceType", json!(200));
        let reversed = full.as_object().unwrap().iter().rev();
        let event = ok(service, &Value::Object(reversed.map(|(k, v)| (k.clone(), v.clone())).collect()));
        assert_eq!(keys(&event), words(order), "{service:?} fields come out in SPEC order");
    }
    let nulls = json!({"party": null, "accountId": null, "extra": null, "recordUrl": null});
    let event = ok(Cdr, &with(seed(Cdr), nulls));
    assert_eq!(event.body_json(None), SEED_CDR, "null optionals are dropped");
    assert_eq!((event.party, event.account_id), (None, None));
}

#[test]
fn a_status_body_gets_a_sequence_slot_filled_on_output() {
    let event = with(seed(Status), json!({"party": "CALLER", "accountId": "acct-1"}));
    let event = ok(Status, &event);
    assert_eq!(keys(&event), words("callId serviceType status timestamp sequence party accountId"));
    assert_eq!(event.body()["sequence"], 0);
    let out = SEED_STATUS.replace('}', r#","sequence":7,"party":"CALLER","accountId":"acct-1"}"#);
    assert_eq!(event.body_json(Some(7)), out);
    assert_eq!(ok(Cdr, &seed(Cdr)).body().get("sequence"), None, "a CDR has no sequence");
}

#[test]
fn routing_facts_and_idempotency_keys() {
    let status = |patch: Value| ok(Status, &with(seed(Status), patch));
    let caller = status(json!({"party": "CALLER", "accountId": "acct-1"}));
    let facts = (caller.party.as_deref(), caller.account_id.as_deref());
    assert_eq!((facts, caller.service_type), ((Some("CALLER"), Some("acct-1")), 100));
    let callee = status(json!({"party": "CALLEE"}));
    let ringing = status(json!({"party": "CALLER", "status": "RINGING"}));
    let caller_hangup = status(json!({"party": "CALLER", "status": "HANGUP"}));
    assert_ne!(caller.dedup_key(), callee.dedup_key(), "parties are apart");
    assert_ne!(caller.dedup_key(), ringing.dedup_key(), "statuses are apart");
    assert_eq!(caller.hangup_key(), caller_hangup.dedup_key());
    assert_ne!(callee.hangup_key(), caller_hangup.dedup_key());
    let cdr = ok(Cdr, &seed(Cdr)).dedup_key();
    let other_data = ok(Cdr, &set(seed(Cdr), "userData", json!("other"))).dedup_key();
    assert_eq!(cdr, other_data, "a CDR is keyed by (callId, party) only");
    assert_ne!(cdr, ok(Cdr, &set(seed(Cdr), "party", json!("CALLER"))).dedup_key());
}
