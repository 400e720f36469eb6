//! The FreeSWITCH mod_json_cdr source (issue 13, point 1): the real app with
//! `sources.freeswitch` on, a real receiver, a real SQLite file. The switch side is played as
//! `mod_json_cdr.c` sends (`process_cdr`): `POST <url>?uuid=<leg uuid>` with
//! `User-Agent: freeswitch-json/1.0` and the body its `encode` param makes (raw JSON,
//! `cdr=` + `switch_url_encode`, `cdr=` + base64), from the real fixture and variants of it
//! written from the docs (`switch_ivr_generate_json_cdr`: a b-leg's caller profile has an
//! `originator`; older builds repeat the `callflow` key).

use std::time::Duration;

use base64::Engine as _;
use push_core::{
    config::{FreeswitchSettings, Secret},
    testing::{test_settings, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const FIXTURE: &str = include_str!("../../../../fixtures/freeswitch_cdr_sample.json");
const A_LEG: &str = "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4";
const B_LEG: &str = "9c1afb4f-1d4a-4e45-84a3-d25721981bf5";

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is JSON")
}

fn source(encoded_values: bool) -> FreeswitchSettings {
    FreeswitchSettings {
        service_type: 100,
        account_id: None,
        account_variable: None,
        encoded_values,
        variables: vec![],
    }
}

async fn app(receiver: &TestReceiver, dir: &std::path::Path, source: FreeswitchSettings) -> TestApp {
    let mut settings = test_settings(dir, &receiver.url());
    settings.sources.freeswitch = Some(source);
    TestApp::spawn(Service::Cdr, settings).await
}

/// POSTs as mod_json_cdr does: `?uuid=`, its user agent, `content_type`, `body`.
async fn post(app: &TestApp, uuid: &str, content_type: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
    let url = format!("{}/v1/sources/freeswitch?uuid={uuid}", app.url);
    let request = app.client.post(url).header("user-agent", "freeswitch-json/1.0");
    let response = request.header("content-type", content_type).body(body.into()).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `switch_url_encode` (switch_utils.c): bytes below ' ' or above '~' and those of
/// `SWITCH_URL_UNSAFE` become `%XX` (upper-case hex); a `%XX` already there stays.
fn switch_url_encode(text: &str) -> String {
    const UNSAFE: &[u8] = b"\r\n #%&+:;<=>?@[\\]^`{|}\"";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for (i, &b) in bytes.iter().enumerate() {
        let escape_already = b == b'%'
            && bytes.get(i + 1).is_some_and(|c| c.is_ascii_hexdigit())
            && bytes.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit());
        if !escape_already && (!(b' '..=b'~').contains(&b) || UNSAFE.contains(&b)) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The CDR the fixture gives, field by field from its variables and caller profile.
fn fixture_cdr() -> Value {
    json!({
        "callId": A_LEG,                    // variables.uuid, the a-leg
        "serviceType": 100,
        "callerNumber": "1001",             // callflow[0].caller_profile.caller_id_number
        "calleeNumber": "1002",             // callflow[0].caller_profile.destination_number
        "party": "CALLER",
        "beginCallTime": 1521025758006_i64, // start_uepoch 1521025758006702
        "ringTime": 1521025758116_i64,      // progress_uepoch 1521025758116123 (180)
        "startTime": 1521025767766_i64,     // answer_uepoch 1521025767766321
        "endTime": 1521025788366_i64,       // end_uepoch 1521025788366141
        "duration": 20,                     // floor(20600 ms / 1000)
        "direction": "INBOUND",             // channel_data.direction
        "disposition": "ANSWERED",
        "releaseDirection": "CALLER",       // sip_hangup_disposition recv_bye on the a-leg
        "hangupCause": 16,                  // NORMAL_CLEARING
        "sipCode": 200,                     // sip_term_status
        "extra": {
            "core-uuid": "63e2315b-d538-4dfa-9ed5-af73ba6210b6",
            "switchname": "teo",
            "uuid": A_LEG,
            "hangup_cause": "NORMAL_CLEARING",
            "sip_hangup_disposition": "recv_bye"
        }
    })
}

/// The one CDR pushed to the receiver (waits for it).
async fn pushed(receiver: &TestReceiver, n: usize) -> Vec<Value> {
    let pushes = receiver.wait_for_successes(n, Duration::from_secs(10)).await;
    pushes.iter().map(|p| p.json()).collect()
}

fn assert_fields(got: &Value, want: &Value) {
    for (field, value) in want.as_object().unwrap() {
        assert_eq!(&got[field], value, "{field} of {got:#}");
    }
    assert_eq!(got, want, "no other field");
}

#[tokio::test]
async fn the_fixture_posted_as_raw_json_gives_the_exact_cdr() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let app = app(&receiver, dir.path(), source(false)).await;
    let (status, body) = post(&app, A_LEG, "application/json", FIXTURE).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"][0]["callId"], A_LEG);
    assert_eq!(body["accepted"][0]["duplicate"], false);
    assert_fields(&pushed(&receiver, 1).await[0], &fixture_cdr());
}

#[tokio::test]
async fn the_urlencoded_and_base64_forms_give_the_same_cdr_and_a_resent_leg_is_pushed_once() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let app = app(&receiver, dir.path(), source(false)).await;
    let json_text = serde_json::to_string(&fixture()).unwrap(); // cJSON_PrintUnformatted
    let form = format!("cdr={}", switch_url_encode(&json_text));
    let (status, first) = post(&app, A_LEG, "application/x-www-form-urlencoded", form).await;
    assert_eq!((status, &first["accepted"][0]["duplicate"]), (202, &json!(false)), "{first}");
    assert_fields(&pushed(&receiver, 1).await[0], &fixture_cdr());

    // A variable the CDR does not show, whose bytes make base64's `+` and `/` (sent unescaped).
    let base64 = (0..3)
        .map(|pad| {
            let mut doc = fixture();
            doc["variables"]["x_padding"] = format!("{}>>>???>>>???", " ".repeat(pad)).into();
            format!("cdr={}", base64::engine::general_purpose::STANDARD.encode(doc.to_string()))
        })
        .find(|b| b.contains('+') && b.contains('/'))
        .expect("a body with + and /");
    let (status, again) = post(&app, A_LEG, "application/x-www-form-base64-encoded", base64).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["accepted"][0]["duplicate"], true, "the same leg again: a duplicate");
    assert_eq!(again["accepted"][0]["eventId"], first["accepted"][0]["eventId"]);
    let (status, raw) = post(&app, A_LEG, "application/json", FIXTURE).await;
    assert_eq!((status, &raw["accepted"][0]["duplicate"]), (202, &json!(true)));

    let (_, deliveries) = app.get_json("/v1/deliveries").await;
    assert_eq!(deliveries["items"].as_array().map(Vec::len), Some(1), "stored once, so pushed once");
    let (_, sources) = app.get_json("/v1/sources").await;
    let report = &sources["sources"][0];
    assert_eq!((report["name"].as_str(), report["state"].as_str()), (Some("freeswitch"), Some("listening")));
    assert_eq!((report["accepted"].as_u64(), report["duplicates"].as_u64()), (Some(1), Some(2)), "{report}");
}

#[tokio::test]
async fn encoded_values_are_percent_decoded_and_configured_variables_go_into_extra() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let mut settings = source(true);
    settings.variables = vec!["caller_id".into(), "sip_full_from".into(), "sip_call_id".into(), "absent".into()];
    settings.account_variable = Some("accountcode".into());
    let app = app(&receiver, dir.path(), settings).await;
    let mut doc = fixture();
    for value in doc["variables"].as_object_mut().unwrap().values_mut() {
        *value = switch_url_encode(value.as_str().unwrap()).into(); // encode-values=true
    }
    assert_eq!(doc["variables"]["caller_id"], "%221001%22%20%3C1001%3E", "encoded as FreeSWITCH does");
    let (status, body) = post(&app, A_LEG, "application/json", doc.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let mut want = fixture_cdr();
    want["accountId"] = "1001".into();
    want["extra"]["caller_id"] = "\"1001\" <1001>".into();
    want["extra"]["sip_full_from"] = "\"1001\" <sip:1001@192.168.56.202>;tag=df94d020".into();
    want["extra"]["sip_call_id"] = "985e365faa0ec79a7fa75d001ef2449f@0:0:0:0:0:0:0:0".into();
    assert_fields(&pushed(&receiver, 1).await[0], &want);
}

/// The fixture as an older build writes it: one `"callflow"` key per caller profile, the
/// current one first.
fn with_repeated_callflow_keys(mut doc: Value, first_destination: &str) -> String {
    let profiles = doc.as_object_mut().unwrap().remove("callflow").unwrap();
    let mut profiles = profiles.as_array().unwrap().clone();
    profiles[0]["caller_profile"]["destination_number"] = first_destination.into();
    let head = doc.to_string();
    let keys: Vec<String> = profiles.iter().map(|p| format!("\"callflow\":{p}")).collect();
    format!("{},{}}}", &head[..head.len() - 1], keys.join(","))
}

#[tokio::test]
async fn repeated_callflow_keys_keep_every_profile_and_the_current_one_gives_the_numbers() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let app = app(&receiver, dir.path(), source(false)).await;
    // As after a transfer: the current profile dialled 1003, the older one 1002.
    let text = with_repeated_callflow_keys(fixture(), "1003");
    assert_eq!(text.matches("\"callflow\":").count(), 2);
    let (status, body) = post(&app, A_LEG, "application/json", text).await;
    assert_eq!(status, 202, "{body}");
    let mut want = fixture_cdr();
    want["calleeNumber"] = "1003".into();
    assert_fields(&pushed(&receiver, 1).await[0], &want);
}

/// The b-leg of the fixture's call, as FreeSWITCH reports it: its own uuid, outbound, its
/// caller profile with an `originator` (the a-leg's profile), bridged to the a-leg, released
/// by FreeSWITCH (send_bye) after the caller hung up.
fn b_leg() -> Value {
    let a = fixture();
    let mut b = a.clone();
    b["channel_data"]["direction"] = "outbound".into();
    let vars = b["variables"].as_object_mut().unwrap();
    for gone in ["originated_legs", "originate_causes", "originate_disposition", "sip_term_status", "sip_term_cause"] {
        vars.remove(gone);
    }
    for (name, value) in [
        ("uuid", B_LEG),
        ("direction", "outbound"),
        ("call_uuid", A_LEG),
        ("bridge_uuid", A_LEG),
        ("last_bridge_to", A_LEG),
        ("signal_bond", A_LEG),
        ("last_bridge_role", "originatee"),
        ("sip_hangup_disposition", "send_bye"),
        ("start_uepoch", "1521025758060000"),
        ("end_uepoch", "1521025788380000"),
    ] {
        vars.insert(name.into(), value.into());
    }
    let mut profile = a["callflow"][0]["caller_profile"]["originatee"]["originatee_caller_profiles"][0].clone();
    let originator = a["callflow"][0]["caller_profile"].as_object().unwrap().clone();
    let mut originator = Value::Object(originator);
    originator.as_object_mut().unwrap().remove("originatee");
    profile["originator"] = json!({ "originator_caller_profiles": [originator] });
    b["callflow"] = json!([{ "dialplan": "XML", "profile_index": "1", "caller_profile": profile,
                             "times": a["callflow"][0]["times"].clone() }]);
    b
}

#[tokio::test]
async fn a_b_leg_is_the_callee_of_the_a_legs_call() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let app = app(&receiver, dir.path(), source(false)).await;
    assert_eq!(post(&app, A_LEG, "application/json", FIXTURE).await.0, 202);
    let (status, body) = post(&app, B_LEG, "application/json", b_leg().to_string()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"][0]["callId"], A_LEG, "the a-leg's uuid");
    let pushes = pushed(&receiver, 2).await;
    let b = pushes.iter().find(|c| c["party"] == "CALLEE").expect("the b-leg's CDR");
    let want = json!({
        "callId": A_LEG, "serviceType": 100, "callerNumber": "1001", "calleeNumber": "1002",
        "party": "CALLEE", "beginCallTime": 1521025758060_i64, "ringTime": 1521025758116_i64,
        "startTime": 1521025767766_i64, "endTime": 1521025788380_i64, "duration": 20,
        "direction": "OUTBOUND", "disposition": "ANSWERED", "releaseDirection": "CALLER",
        "hangupCause": 16, "sipCode": 200,
        "extra": { "core-uuid": "63e2315b-d538-4dfa-9ed5-af73ba6210b6", "switchname": "teo",
                   "uuid": B_LEG, "hangup_cause": "NORMAL_CLEARING", "sip_hangup_disposition": "send_bye" }
    });
    assert_fields(b, &want);
    assert!(pushes.iter().any(|c| c["party"] == "CALLER" && c["callId"] == A_LEG));

    // A build that only sets originating_leg_uuid names the same call: the same leg again.
    let mut bare = b_leg();
    bare["callflow"][0]["caller_profile"].as_object_mut().unwrap().remove("originator");
    bare["variables"]["originating_leg_uuid"] = A_LEG.into();
    let (status, again) = post(&app, B_LEG, "application/json", bare.to_string()).await;
    assert_eq!((status, &again["accepted"][0]["duplicate"]), (202, &json!(true)), "{again}");
    assert_eq!(again["accepted"][0]["eventId"], body["accepted"][0]["eventId"]);
}

#[tokio::test]
async fn the_callee_legs_of_a_forked_call_each_keep_their_cdr() {
    // Simultaneous ring: the a-leg originates two b-legs; one answers, the other loses the
    // race. Both are legs of the a-leg's call (same callId, CALLEE): neither may be taken for
    // a duplicate of the other, whichever comes first.
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let app = app(&receiver, dir.path(), source(false)).await;
    const LOSER: &str = "4d1c0a9e-7b52-4f0e-9a5e-3f6b2c8d1e07";
    let mut lost = b_leg();
    lost["variables"]["uuid"] = LOSER.into();
    lost["callflow"][0]["caller_profile"]["uuid"] = LOSER.into();
    for (name, value) in [("hangup_cause", "LOSE_RACE"), ("hangup_cause_q850", "502"), ("answer_uepoch", "0")] {
        lost["variables"][name] = value.into();
    }
    let (status, first) = post(&app, LOSER, "application/json", lost.to_string()).await;
    assert_eq!((status, &first["accepted"][0]["duplicate"]), (202, &json!(false)), "{first}");
    let (status, won) = post(&app, B_LEG, "application/json", b_leg().to_string()).await;
    assert_eq!((status, &won["accepted"][0]["duplicate"]), (202, &json!(false)), "the answered leg is not lost: {won}");
    let pushes = pushed(&receiver, 2).await;
    let legs: Vec<(&str, &str)> =
        pushes.iter().map(|c| (c["extra"]["uuid"].as_str().unwrap(), c["disposition"].as_str().unwrap())).collect();
    assert!(legs.contains(&(B_LEG, "ANSWERED")) && legs.iter().any(|(uuid, _)| *uuid == LOSER), "{legs:?}");
    assert!(pushes.iter().all(|c| c["callId"] == A_LEG && c["party"] == "CALLEE"));
    let (_, again) = post(&app, LOSER, "application/json", lost.to_string()).await;
    assert_eq!(again["accepted"][0]["duplicate"], true, "the same leg again is a duplicate");
}

/// The fixture's a-leg with another uuid and the given variables changed.
fn variant(uuid: &str, changes: &[(&str, &str)], removed: &[&str]) -> String {
    let mut doc = fixture();
    doc["variables"]["uuid"] = uuid.into();
    doc["callflow"][0]["caller_profile"]["uuid"] = uuid.into();
    let vars = doc["variables"].as_object_mut().unwrap();
    for (name, value) in changes {
        vars.insert(name.to_string(), (*value).into());
    }
    for name in removed {
        vars.remove(*name);
    }
    doc.to_string()
}

const UNANSWERED: [(&str, &str); 4] =
    [("answer_uepoch", "0"), ("answer_epoch", "0"), ("progress_media_uepoch", "0"), ("billsec", "0")];

#[tokio::test]
async fn unanswered_outcomes_follow_the_cause_text_not_the_q850_number() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let app = app(&receiver, dir.path(), source(false)).await;
    let end = ("end_uepoch", "1521025765000000");
    let no_ring = ("progress_uepoch", "0");
    let bridge_vars = ["bridge_uuid", "last_bridge_to", "originate_disposition", "originated_legs", "originate_causes"];
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "cancel",
            variant(
                "cancel",
                &[
                    end,
                    ("hangup_cause", "ORIGINATOR_CANCEL"),
                    ("hangup_cause_q850", "16"),
                    ("sip_term_status", "487"),
                    ("sip_hangup_disposition", "recv_cancel"),
                ],
                &[],
            ),
            json!({"disposition": "CANCELLED", "releaseDirection": "CALLER", "sipCode": 487, "hangupCause": 16, "ringTime": 1521025758116_i64}),
        ),
        (
            "busy",
            variant(
                "busy",
                &[
                    end,
                    no_ring,
                    ("hangup_cause", "USER_BUSY"),
                    ("hangup_cause_q850", "17"),
                    ("sip_term_status", "486"),
                    ("sip_hangup_disposition", "send_refuse"),
                ],
                &[],
            ),
            json!({"disposition": "BUSY", "releaseDirection": "CALLEE", "sipCode": 486, "hangupCause": 17, "ringTime": null}),
        ),
        (
            "noanswer",
            variant(
                "noanswer",
                &[
                    end,
                    ("hangup_cause", "NO_ANSWER"),
                    ("hangup_cause_q850", "19"),
                    ("sip_term_status", "480"),
                    ("sip_hangup_disposition", "send_refuse"),
                ],
                &[],
            ),
            json!({"disposition": "NO_ANSWER", "releaseDirection": "PLATFORM", "sipCode": 480, "hangupCause": 19, "ringTime": 1521025758116_i64}),
        ),
        (
            "nonumber",
            variant(
                "nonumber",
                &[
                    end,
                    no_ring,
                    ("hangup_cause", "UNALLOCATED_NUMBER"),
                    ("hangup_cause_q850", "1"),
                    ("sip_term_status", "404"),
                    ("sip_hangup_disposition", "send_refuse"),
                ],
                &bridge_vars,
            ),
            json!({"disposition": "FAILED", "releaseDirection": "PLATFORM", "sipCode": 404, "hangupCause": 1, "ringTime": null}),
        ),
    ];
    for (uuid, body, _) in &cases {
        let mut doc: Value = serde_json::from_str(body).unwrap();
        for (name, value) in UNANSWERED {
            doc["variables"][name] = value.into();
        }
        let (status, answer) = post(&app, uuid, "application/json", doc.to_string()).await;
        assert_eq!(status, 202, "{uuid}: {answer}");
    }
    let pushes = pushed(&receiver, cases.len()).await;
    for (uuid, _, want) in &cases {
        let cdr = pushes.iter().find(|c| c["callId"] == *uuid).unwrap_or_else(|| panic!("{uuid} pushed"));
        for (field, value) in want.as_object().unwrap() {
            assert_eq!(&cdr[field], value, "{uuid}: {field} of {cdr:#}");
        }
        assert_eq!((cdr["startTime"].as_i64(), cdr["endTime"].as_i64()), (Some(1521025765000), Some(1521025765000)));
        assert_eq!(cdr["duration"], 0, "{uuid}: never answered");
    }
}

#[tokio::test]
async fn an_unmappable_or_unreadable_body_is_refused_with_its_reason_and_counted() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.sources.freeswitch = Some(source(false));
    settings.ingest.max_body_bytes = 10_000; // the fixture is 13 KB
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let no_variables = json!({"core-uuid": "x", "callflow": []}).to_string();
    let (status, body) = post(&app, "x", "application/json", no_variables).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("unmappable_record")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("variables"), "names the reason: {body}");
    let (status, body) = post(&app, "x", "application/x-www-form-base64-encoded", "cdr=!!!not base64").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("base64"), "{body}");
    let (status, body) = post(&app, "x", "application/json", "{\"variables\": ").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("JSON"), "{body}");
    let (status, body) = post(&app, A_LEG, "application/json", FIXTURE).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("payload_too_large")), "over ingest.max_body_bytes");

    let (_, deliveries) = app.get_json("/v1/deliveries").await;
    assert_eq!(deliveries["items"], json!([]), "nothing stored");
    let (_, sources) = app.get_json("/v1/sources").await;
    let report = &sources["sources"][0];
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(0), Some(3)), "{report}");
    assert!(report["lastRecordAt"].as_i64().is_some(), "{report}");
    let metrics = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("voice_push_source_records_total")
            && l.contains("outcome=\"rejected\"")
            && l.ends_with(" 3")),
        "counted in /metrics"
    );
    assert_eq!(receiver.arrivals(), 0);
}

#[tokio::test]
async fn basic_credentials_carry_an_ingest_token_as_mod_json_cdr_sends_them() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.sources.freeswitch = Some(source(false));
    settings.ingest.auth_tokens = vec![Secret::new("s3cret")];
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let url = format!("{}/v1/sources/freeswitch?uuid={A_LEG}", app.url);
    let send = |user: &'static str, password: &'static str| {
        let request = app.client.post(&url).header("content-type", "application/json").body(FIXTURE);
        request.basic_auth(user, Some(password)).send()
    };
    assert_eq!(send("freeswitch", "wrong").await.unwrap().status(), 401);
    assert_eq!(app.client.post(&url).body(FIXTURE).send().await.unwrap().status(), 401, "no credentials");
    assert_eq!(send("freeswitch", "s3cret").await.unwrap().status(), 202, "cred = freeswitch:s3cret");
    let bearer = app.client.post(&url).header("content-type", "application/json").bearer_auth("s3cret");
    assert_eq!(bearer.body(FIXTURE).send().await.unwrap().status(), 202);
    assert_fields(&pushed(&receiver, 1).await[0], &fixture_cdr());
}
