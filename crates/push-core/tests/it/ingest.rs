//! Ingest API (SPEC §3): the 202 body, the first push of the seed examples with the SPEC §4
//! headers, every error status the service answers itself (400, 413, 415, 422, 409) storing and
//! pushing nothing, all-or-nothing arrays, and idempotent duplicates.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use push_core::{
    api::ingest_path,
    testing::{eventually, seed_cdr, status_event, test_settings, Received, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const T0: i64 = 1_701_388_800_000;
/// The seed examples of SPEC §2.1 and §2.2, verbatim.
const SEED_CDR: &str = r#"{"callId":"202312010001","serviceType":100,"callerNumber":"1380000001","calleeNumber":"02188888888","startTime":1701388800000,"endTime":1701389100000,"duration":300,"userData":"test-data"}"#;
const SEED_STATUS: &str =
    r#"{"callId":"202312010001","serviceType":100,"status":"ANSWERED","timestamp":1701388800000}"#;

/// One accepted item: (callId, eventId, duplicate).
type Item = (String, String, bool);

/// A program, its receiver (subscriber `demo`) and its temporary directory.
struct Rig {
    app: TestApp,
    receiver: TestReceiver,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(service: Service) -> Rig {
        Rig::start_with(service, |_| {}).await
    }

    async fn start_with(service: Service, tweak: impl FnOnce(&mut Settings)) -> Rig {
        let receiver = TestReceiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut settings = test_settings(dir.path(), &receiver.url());
        tweak(&mut settings);
        let app = TestApp::spawn(service, settings).await;
        Rig { app, receiver, _dir: dir }
    }

    /// POSTs raw bytes with an optional Content-Type; answers the status and the JSON reply.
    async fn post(&self, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let url = format!("{}{}", self.app.url, ingest_path(self.app.service));
        let mut request = self.app.client.post(url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("ingest request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, body: &Value) -> (u16, Value) {
        self.post(Some("application/json"), body.to_string()).await
    }

    /// POSTs events that must be accepted.
    async fn accept(&self, body: &Value) -> Vec<Item> {
        let (status, reply) = self.send(body).await;
        assert_eq!(status, 202, "{reply}");
        accepted(&reply)
    }

    /// POSTs one event that must be accepted; answers its eventId and duplicate flag.
    async fn accept_one(&self, event: &Value) -> (String, bool) {
        match &self.accept(event).await[..] {
            [(call_id, id, duplicate)] if event["callId"] == call_id.as_str() => (id.clone(), *duplicate),
            other => panic!("one item of {} expected, got {other:?}", event["callId"]),
        }
    }

    /// Waits until `n` deliveries are delivered and none is pending or dead; answers every push.
    async fn settled(&self, n: u64) -> Vec<Received> {
        eventually(WAIT, &format!("{n} deliveries delivered, none pending"), || async {
            let (_, stats) = self.app.get_json("/v1/stats").await;
            let demo = &stats["subscribers"]["demo"];
            (demo["delivered"] == n && demo["pending"] == 0 && demo["dead"] == 0).then_some(())
        })
        .await;
        self.receiver.received()
    }

    /// Proves that what was refused so far stored and pushed nothing: no delivery exists, and an
    /// event accepted now becomes the only delivery and the only push.
    async fn assert_nothing_stored_or_pushed(&self, probe: &Value) {
        let (status, page) = self.app.get_json("/v1/deliveries").await;
        assert_eq!((status, &page["items"]), (200, &json!([])), "nothing stored: {page}");
        let (_, stats) = self.app.get_json("/v1/stats").await;
        let zero = json!({"pending": 0, "delivered": 0, "dead": 0, "superseded": 0, "oldestDueAt": null, "oldestDueAgeMs": null});
        assert_eq!(stats["subscribers"]["demo"], zero, "nothing stored: {stats}");
        let (id, duplicate) = self.accept_one(probe).await;
        assert!(!duplicate);
        let pushes = self.settled(1).await;
        let ids: Vec<_> = pushes.iter().map(|p| p.header("webhook-id")).collect();
        assert_eq!(ids, [Some(id.as_str())], "only the probe was pushed");
    }
}

/// Reads a 202 body: exactly `{"accepted":[{"callId","eventId","duplicate"}, ...]}`.
fn accepted(reply: &Value) -> Vec<Item> {
    assert_eq!(reply.as_object().map(|o| o.len()), Some(1), "{reply}");
    let items = reply["accepted"].as_array().expect("an accepted list");
    let item = |i: &Value| -> Item {
        let keys: Vec<&String> = i.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["callId", "eventId", "duplicate"], "{reply}");
        let id = i["eventId"].as_str().expect("eventId");
        uuid::Uuid::parse_str(id).expect("the eventId is a UUID");
        let call_id = i["callId"].as_str().expect("callId");
        (call_id.into(), id.into(), i["duplicate"].as_bool().expect("duplicate"))
    };
    items.iter().map(item).collect()
}

/// Asserts the SPEC §3 error JSON: its kind, a message, and details naming (index, field).
#[track_caller]
fn assert_error(reply: &Value, kind: &str, details: &[(u64, &str)]) {
    assert_eq!(reply["error"], kind, "{reply}");
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
    fn detail(d: &Value) -> (u64, &str) {
        assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "a detail without message: {d}");
        (d["index"].as_u64().expect("index"), d["field"].as_str().expect("field"))
    }
    let details_got = reply["details"].as_array().expect("details");
    let mut got: Vec<(u64, &str)> = details_got.iter().map(detail).collect();
    let mut want = details.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{reply}");
}

/// The SPEC §4 headers of a first attempt to a subscriber without a secret.
fn assert_spec_headers(push: &Received, event_id: &str) {
    assert_eq!(push.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(push.header("webhook-id"), Some(event_id));
    let at = push.header("webhook-timestamp").expect("webhook-timestamp");
    let at: u64 = at.parse().expect("unix seconds");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(at.abs_diff(now) <= 5, "webhook-timestamp {at} is not now ({now})");
    assert_eq!(push.header("x-push-attempt"), Some("1"));
    let user_agent = concat!("voice-push/", env!("CARGO_PKG_VERSION"));
    assert_eq!(push.header("user-agent"), Some(user_agent));
    assert_eq!(push.header("webhook-signature"), None, "no secret, no signature");
}

fn with(mut event: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        event[k] = v.clone();
    }
    event
}

/// A status event of `call_id` (no party).
fn st(call_id: &str, status: &str) -> Value {
    status_event(call_id, status, T0)
}

/// A status event of one party of a two-leg call.
fn leg(call_id: &str, party: &str, status: &str) -> Value {
    with(st(call_id, status), json!({ "party": party }))
}

/// The pushes by webhook-id.
fn by_id(pushes: &[Received]) -> HashMap<String, Value> {
    let id = |p: &Received| p.header("webhook-id").expect("webhook-id").to_string();
    pushes.iter().map(|p| (id(p), p.json())).collect()
}

/// Posts a seed example verbatim; it must reach the receiver once, as `expected`, with the
/// SPEC §4 headers.
async fn assert_seed_arrives(service: Service, seed: &str, path: &str, expected: &str) {
    let rig = Rig::start(service).await;
    let (status, reply) = rig.post(Some("application/json"), seed.to_string()).await;
    assert_eq!(status, 202, "{reply}");
    let items = accepted(&reply);
    let [(call_id, event_id, false)] = &items[..] else { panic!("{reply}") };
    assert_eq!(call_id, "202312010001");
    let pushes = rig.settled(1).await;
    assert_eq!(pushes.len(), 1, "exactly one POST");
    let push = &pushes[0];
    assert_eq!((push.path.as_str(), &push.body[..]), (path, expected.as_bytes()));
    assert_spec_headers(push, event_id);
}

#[tokio::test]
async fn the_seed_cdr_arrives_once_with_the_same_fields_and_the_spec_headers() {
    assert_seed_arrives(Service::Cdr, SEED_CDR, "/cdr", SEED_CDR).await;
}

#[tokio::test]
async fn the_seed_status_arrives_once_with_sequence_filled_in() {
    let expected = SEED_STATUS.replace('}', r#","sequence":0}"#);
    assert_seed_arrives(Service::Status, SEED_STATUS, "/status", &expected).await;
}

#[tokio::test]
async fn malformed_json_is_400_and_stores_nothing() {
    let rig = Rig::start(Service::Cdr).await;
    for body in ["", r#"{"callId":"#, "{} x", "[1,]", "not json", r#"{"callId":"a",}"#] {
        let (status, reply) = rig.post(Some("application/json"), body).await;
        assert_eq!(status, 400, "{body:?}: {reply}");
        assert_error(&reply, "malformed_json", &[]);
    }
    rig.assert_nothing_stored_or_pushed(&seed_cdr("probe")).await;
}

#[tokio::test]
async fn a_wrong_or_missing_content_type_is_415_and_stores_nothing() {
    let rig = Rig::start(Service::Cdr).await;
    let form = "application/x-www-form-urlencoded";
    for content_type in [None, Some("text/plain"), Some(form), Some("application/jsonl"), Some("text/json"), Some("")] {
        let (status, reply) = rig.post(content_type, SEED_CDR).await;
        assert_eq!(status, 415, "{content_type:?}: {reply}");
        assert_error(&reply, "unsupported_media_type", &[]);
    }
    rig.assert_nothing_stored_or_pushed(&seed_cdr("probe")).await;
    let (status, reply) = rig.post(Some("Application/JSON; charset=utf-8"), SEED_CDR).await;
    assert_eq!(status, 202, "parameters and case do not matter: {reply}");
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413_and_stores_nothing() {
    let rig = Rig::start_with(Service::Cdr, |s| s.ingest.max_body_bytes = 2048).await;
    // Exactly at the limit is fine: the probe below is 2048 bytes.
    let probe = seed_cdr("probe");
    let pad = 2048 - probe.to_string().len() + "test-data".len();
    let probe = with(probe, json!({"userData": "x".repeat(pad)}));
    assert_eq!(probe.to_string().len(), 2048);
    let over = with(probe.clone(), json!({"userData": "x".repeat(pad + 1)}));
    let array = Value::Array((0..12).map(|i| seed_cdr(&format!("c{i}"))).collect());
    for body in [over, array] {
        let (status, reply) = rig.send(&body).await;
        assert_eq!(status, 413, "{reply}");
        assert_error(&reply, "payload_too_large", &[]);
        assert!(reply["message"].as_str().unwrap().contains("2048"), "{reply}");
    }
    rig.assert_nothing_stored_or_pushed(&probe).await;
}

#[tokio::test]
async fn cdr_validation_errors_are_422_naming_each_field_and_store_nothing() {
    let rig = Rig::start(Service::Cdr).await;
    let seed = || seed_cdr("v1");
    let mut no_caller = seed();
    no_caller.as_object_mut().unwrap().remove("callerNumber");
    let many = json!({"callId": "", "duration": 1, "hangupCause": 300, "phoneNoB": "1"});
    let many = with(seed(), many);
    let array = json!([seed(), no_caller, with(seed(), json!({"sipCode": 99}))]);
    let patched = |patch: Value| with(seed(), patch);
    #[rustfmt::skip]
    let table: Vec<(Value, &[(u64, &str)])> = vec![
        (no_caller.clone(), &[(0, "callerNumber")]),
        (patched(json!({"serviceType": "100"})), &[(0, "serviceType")]),
        (patched(json!({"direction": "inbound"})), &[(0, "direction")]),
        (patched(json!({"userData": "中".repeat(2049)})), &[(0, "userData")]),
        (patched(json!({"phoneNoA": "13800000000"})), &[(0, "phoneNoA")]),
        (patched(json!({"serviceType": 200})), &[(0, "phoneNoX")]),
        (patched(json!({"startTime": T0 / 1000})), &[(0, "startTime")]),
        (patched(json!({"endTime": T0 - 1000, "duration": 0})), &[(0, "endTime")]),
        (patched(json!({"duration": 301})), &[(0, "duration")]),
        (patched(json!({"callid": "x"})), &[(0, "callid")]),
        (many, &[(0, "callId"), (0, "hangupCause"), (0, "phoneNoB"), (0, "duration")]),
        (array, &[(1, "callerNumber"), (2, "sipCode")]),
        (json!([]), &[(0, "")]),
        (Value::Array(vec![seed(); 1001]), &[(0, "")]),
        (json!("a string"), &[(0, "")]),
        (json!(null), &[(0, "")]),
    ];
    for (body, details) in table {
        let (status, reply) = rig.send(&body).await;
        assert_eq!(status, 422, "{reply}");
        assert_error(&reply, "validation_failed", details);
    }
    let (_, reply) = rig.send(&patched(json!({"callid": "x"}))).await;
    let hint = "is not a known field; did you mean `callId`?";
    assert_eq!(reply["details"][0]["message"], hint);
    let (_, reply) = rig.send(&patched(json!({"userData": "中".repeat(2049)}))).await;
    let limit = "must be at most 2048 characters (got 2049)";
    assert_eq!(reply["details"][0]["message"], limit);
    rig.assert_nothing_stored_or_pushed(&seed_cdr("probe")).await;
}

#[tokio::test]
async fn status_validation_errors_are_422_naming_each_field_and_store_nothing() {
    let rig = Rig::start(Service::Status).await;
    let answered = || st("v1", "ANSWERED");
    let mut no_status = answered();
    no_status.as_object_mut().unwrap().remove("status");
    let patched = |patch: Value| with(answered(), patch);
    let array = json!([answered(), patched(json!({"startTime": T0}))]);
    #[rustfmt::skip]
    let table: Vec<(Value, &[(u64, &str)])> = vec![
        (no_status, &[(0, "status")]),
        (patched(json!({"status": "HUNG_UP"})), &[(0, "status")]),
        (patched(json!({"sipCode": 200, "disposition": "BUSY"})), &[(0, "sipCode"), (0, "disposition")]),
        (patched(json!({"sequence": 0})), &[(0, "sequence")]),
        (patched(json!({"timestamp": T0 / 1000})), &[(0, "timestamp")]),
        (patched(json!({"callerNumber": "中".repeat(65)})), &[(0, "callerNumber")]),
        (array, &[(1, "startTime")]),
    ];
    for (body, details) in table {
        let (status, reply) = rig.send(&body).await;
        assert_eq!(status, 422, "{reply}");
        assert_error(&reply, "validation_failed", details);
    }
    rig.assert_nothing_stored_or_pushed(&st("probe", "DIALING")).await;
}

#[tokio::test]
async fn character_limits_count_characters_not_bytes() {
    let rig = Rig::start(Service::Cdr).await;
    let over = with(seed_cdr("cjk"), json!({"userData": "中".repeat(2049)}));
    assert_eq!(rig.send(&over).await.0, 422);
    let max = "中".repeat(2048);
    assert_eq!(max.len(), 6144);
    let event = json!({"userData": max, "callerNumber": "号".repeat(64)});
    let event = with(seed_cdr("cjk"), event);
    let (id, _) = rig.accept_one(&event).await;
    let pushes = rig.settled(1).await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(by_id(&pushes)[&id], event, "echoed unchanged");
}

#[tokio::test]
async fn an_array_with_one_invalid_item_stores_none_of_the_valid_ones() {
    let rig = Rig::start(Service::Cdr).await;
    let good = ["a", "b", "d"].map(seed_cdr);
    let bad = with(seed_cdr("c"), json!({"userData": "x".repeat(2049)}));
    let (status, reply) = rig.send(&json!([good[0], good[1], bad, good[2]])).await;
    assert_eq!(status, 422, "{reply}");
    assert_error(&reply, "validation_failed", &[(2, "userData")]);
    let (_, page) = rig.app.get_json("/v1/deliveries").await;
    assert_eq!(page["items"], json!([]), "nothing stored");
    // Had the valid items been stored, they would now be duplicates.
    let items = rig.accept(&json!(good)).await;
    assert!(items.iter().all(|(_, _, duplicate)| !duplicate), "{items:?}");
    assert_eq!(rig.settled(3).await.len(), 3);
}

#[tokio::test]
async fn a_status_after_hangup_is_409_a_repeated_status_is_a_duplicate() {
    let rig = Rig::start(Service::Status).await;
    let (dialing, _) = rig.accept_one(&st("c1", "DIALING")).await;
    let (hangup, _) = rig.accept_one(&st("c1", "HANGUP")).await;
    for late in ["ANSWERED", "RINGING"] {
        let (code, reply) = rig.send(&st("c1", late)).await;
        assert_eq!(code, 409, "{reply}");
        assert_error(&reply, "status_after_hangup", &[(0, "status")]);
        assert!(reply["message"].as_str().unwrap().contains("c1"), "{reply}");
    }
    assert_eq!(rig.accept_one(&st("c1", "HANGUP")).await, (hangup.clone(), true));
    assert_eq!(rig.accept_one(&st("c1", "DIALING")).await, (dialing.clone(), true));
    // Per (callId, party): the other party's statuses go on after one party hung up.
    let (caller_hangup, _) = rig.accept_one(&leg("c2", "CALLER", "HANGUP")).await;
    let (callee_answered, duplicate) = rig.accept_one(&leg("c2", "CALLEE", "ANSWERED")).await;
    assert!(!duplicate);
    let (code, reply) = rig.send(&leg("c2", "CALLER", "RINGING")).await;
    assert_eq!(code, 409, "{reply}");
    let pushes = by_id(&rig.settled(4).await);
    assert_eq!(pushes.len(), 4, "refused and duplicate events are not pushed");
    let sequences = [(dialing, 0), (hangup, 1), (caller_hangup, 0), (callee_answered, 1)];
    for (id, sequence) in sequences {
        assert_eq!(pushes[&id]["sequence"], sequence, "a 409 takes no sequence number");
    }
}

#[tokio::test]
async fn an_array_with_a_409_item_stores_nothing() {
    let rig = Rig::start(Service::Status).await;
    rig.accept_one(&st("c3", "HANGUP")).await;
    let batch = json!([st("c4", "DIALING"), st("c3", "HANGUP"), st("c3", "RINGING")]);
    let (code, reply) = rig.send(&batch).await;
    assert_eq!(code, 409, "{reply}");
    assert_error(&reply, "status_after_hangup", &[(2, "status")]);
    let (code, reply) = rig.send(&json!([st("c5", "HANGUP"), st("c5", "ANSWERED")])).await;
    assert_eq!(code, 409, "{reply}");
    assert_error(&reply, "status_after_hangup", &[(1, "status")]);
    // Neither c4 DIALING nor c5 HANGUP was stored: both are new now, c4 still at sequence 0.
    let (c4, c4_duplicate) = rig.accept_one(&st("c4", "DIALING")).await;
    let (_, c5_duplicate) = rig.accept_one(&st("c5", "HANGUP")).await;
    assert!(!c4_duplicate && !c5_duplicate);
    let pushes = by_id(&rig.settled(3).await);
    assert_eq!(pushes.len(), 3);
    assert_eq!(pushes[&c4]["sequence"], 0);
}

#[tokio::test]
async fn a_duplicate_cdr_gets_its_event_id_back_and_is_not_pushed_again() {
    let rig = Rig::start(Service::Cdr).await;
    let (first, duplicate) = rig.accept_one(&seed_cdr("d1")).await;
    assert!(!duplicate);
    rig.settled(1).await;
    let again = with(seed_cdr("d1"), json!({"userData": "changed"}));
    let answer = rig.accept_one(&again).await;
    assert_eq!(answer, (first.clone(), true), "(callId, party) was accepted");
    let leg = with(seed_cdr("d1"), json!({"party": "CALLER"}));
    let (caller_leg, duplicate) = rig.accept_one(&leg).await;
    assert!(!duplicate, "another party is another record");
    assert_eq!(rig.accept_one(&leg).await, (caller_leg.clone(), true));
    let (other, _) = rig.accept_one(&seed_cdr("d2")).await;
    let pushes = rig.settled(3).await;
    let pushed = by_id(&pushes);
    assert_eq!(pushes.len(), 3, "no second push of a duplicate");
    assert!([&first, &caller_leg, &other].iter().all(|id| pushed.contains_key(*id)));
    assert_eq!(pushed[&first]["userData"], "test-data", "the original was pushed");
}

#[tokio::test]
async fn accepted_items_come_back_in_input_order_with_duplicates_inside_one_array() {
    let rig = Rig::start(Service::Cdr).await;
    let items = rig.accept(&json!(["c", "a", "b", "a", "c"].map(seed_cdr))).await;
    let order: Vec<(&str, bool)> = items.iter().map(|(c, _, d)| (c.as_str(), *d)).collect();
    let expected = [("c", false), ("a", false), ("b", false), ("a", true), ("c", true)];
    assert_eq!(order, expected);
    let ids: Vec<&str> = items.iter().map(|i| i.1.as_str()).collect();
    assert_eq!((ids[3], ids[4]), (ids[1], ids[0]), "a duplicate has its first eventId");
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    let pushes = by_id(&rig.settled(3).await);
    assert_eq!(pushes.len(), 3);
    assert!(items.iter().all(|(_, id, _)| pushes.contains_key(id)));
}

#[tokio::test]
async fn status_duplicates_inside_one_array() {
    let rig = Rig::start(Service::Status).await;
    let batch = ["DIALING", "DIALING", "HANGUP", "HANGUP"].map(|s| st("s1", s));
    let items = rig.accept(&json!(batch)).await;
    let duplicates: Vec<bool> = items.iter().map(|i| i.2).collect();
    assert_eq!(duplicates, [false, true, false, true]);
    assert_eq!((&items[1].1, &items[3].1), (&items[0].1, &items[2].1));
    let pushes = by_id(&rig.settled(2).await);
    assert_eq!(pushes.len(), 2);
    let sequences = (&pushes[&items[0].1]["sequence"], &pushes[&items[2].1]["sequence"]);
    assert_eq!(sequences, (&json!(0), &json!(1)));
}
