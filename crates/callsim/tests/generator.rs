//! Generator invariants over thousands of seeded calls: SPEC validity, status order,
//! outcome consistency, CDR/status agreement, privacy bindings, callback legs,
//! reproducibility.

mod common;

use std::collections::{BTreeMap, HashSet};

use callsim::generator::{CallGenerator, GenConfig};
use callsim::mix::{parse_scenario_mix, parse_service_mix};
use callsim::model::{Call, Payload, ScheduledPost};
use common::spec::{validate_cdr, validate_status};
use serde_json::Value;

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const CALLS: usize = 5_000;

fn config() -> GenConfig {
    GenConfig {
        accounts: vec!["acc1".into(), "acc2".into()],
        callback_share: 0.3,
        call_id_prefix: "t-".into(),
        ..GenConfig::default()
    }
}

fn generate(config: GenConfig, seed: u64, n: usize) -> Vec<Call> {
    let mut generator = CallGenerator::new(config, seed);
    (0..n).map(|i| generator.next_call(BASE_MS + i as i64 * 200)).collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(-1)
}

/// The JSON of one leg's statuses and CDR, keyed by party ("" for single-leg calls).
fn legs(call: &Call) -> BTreeMap<String, (Vec<Value>, Vec<Value>)> {
    let mut legs: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for post in &call.posts {
        let json = post.payload.to_json();
        let party = s(&json, "party").to_string();
        let entry = legs.entry(party).or_default();
        match post.payload {
            Payload::Status(_) => entry.0.push(json),
            Payload::Cdr(_) => entry.1.push(json),
        }
    }
    legs
}

#[test]
fn every_record_passes_spec_validation() {
    for call in generate(config(), 42, CALLS) {
        for post in &call.posts {
            let json = post.payload.to_json();
            let errs = match post.payload {
                Payload::Status(_) => validate_status(&json),
                Payload::Cdr(_) => validate_cdr(&json),
            };
            assert!(errs.is_empty(), "{json}: {errs:?}");
            assert_eq!(s(&json, "callId"), call.call_id);
        }
    }
}

#[test]
fn posts_are_in_time_order_and_each_cdr_follows_its_hangup() {
    for call in generate(config(), 7, CALLS) {
        assert!(call.posts.windows(2).all(|w| w[0].at <= w[1].at));
        let mut hung_up = HashSet::new();
        for ScheduledPost { at, payload } in &call.posts {
            match payload {
                Payload::Status(st) => {
                    assert_eq!(*at, st.timestamp);
                    if s(&payload.to_json(), "status") == "HANGUP" {
                        hung_up.insert(st.party);
                    }
                }
                Payload::Cdr(cdr) => {
                    assert!(hung_up.contains(&cdr.party), "CDR before HANGUP");
                    assert_eq!(*at, cdr.end_time);
                }
            }
        }
    }
}

/// Checks one leg: status order, outcome consistency, CDR agreement.
fn check_leg(statuses: &[Value], cdrs: &[Value]) {
    assert_eq!(cdrs.len(), 1, "one CDR per leg");
    let cdr = &cdrs[0];
    let names: Vec<&str> = statuses.iter().map(|v| s(v, "status")).collect();
    let times: Vec<i64> = statuses.iter().map(|v| n(v, "timestamp")).collect();
    assert_eq!(names.first(), Some(&"DIALING"));
    assert_eq!(names.last(), Some(&"HANGUP"));
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{names:?} {times:?}");
    let order = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];
    let ranks: Vec<usize> = names.iter().map(|x| order.iter().position(|o| o == x).unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    let at = |name: &str| names.iter().position(|x| *x == name).map(|i| times[i]);
    let hangup = &statuses[statuses.len() - 1];
    for key in ["disposition", "releaseDirection", "hangupCause", "sipCode"] {
        assert_eq!(hangup.get(key), cdr.get(key), "{key} agrees");
    }
    for key in ["callerNumber", "calleeNumber", "serviceType", "accountId", "userData", "phoneNoX"] {
        assert_eq!(hangup.get(key), cdr.get(key), "{key} agrees");
    }
    assert_eq!(n(cdr, "beginCallTime"), at("DIALING").unwrap());
    assert_eq!(cdr.get("ringTime").and_then(Value::as_i64), at("RINGING"));
    assert_eq!(n(cdr, "endTime"), at("HANGUP").unwrap());
    let start = at("ANSWERED").unwrap_or(at("HANGUP").unwrap());
    assert_eq!(n(cdr, "startTime"), start);
    assert_eq!(n(cdr, "duration"), (n(cdr, "endTime") - start) / 1000);
    check_outcome(cdr, &names);
    if let Some(ring) = at("RINGING") {
        let rang_until = at("ANSWERED").unwrap_or(at("HANGUP").unwrap());
        assert!((2_000..=30_000).contains(&(rang_until - ring)), "ring 2-30 s in every branch: {names:?} {times:?}");
    }
    assert!(n(cdr, "duration") <= 3_600, "talk capped at an hour");
}

/// Q.850 cause and SIP status pairs of RFC 3398 section 7 (as INTEGRATIONS.md section 4 lists
/// them, both directions): 16 normal clearing is 200 when answered and 487 when the caller
/// cancelled (487 maps to 16).
const RFC_3398: [(i64, i64); 15] = [
    (16, 200),
    (16, 487),
    (17, 486),
    (18, 408),
    (19, 480),
    (21, 603),
    (21, 403),
    (1, 404),
    (3, 404),
    (27, 502),
    (31, 480),
    (34, 503),
    (41, 503),
    (127, 500),
    (28, 484),
];

/// Disposition, cause, SIP code, release direction and reached states agree.
fn check_outcome(cdr: &Value, names: &[&str]) {
    let answered = names.contains(&"ANSWERED");
    let rang = names.contains(&"RINGING");
    let (cause, sip, dir) = (n(cdr, "hangupCause"), n(cdr, "sipCode"), s(cdr, "releaseDirection"));
    match s(cdr, "disposition") {
        "ANSWERED" => {
            assert!(answered && cause == 16 && sip == 200);
            assert!(["CALLER", "CALLEE", "PLATFORM"].contains(&dir));
        }
        "NO_ANSWER" => {
            assert!(rang && !answered);
            assert!((cause, sip, dir) == (19, 480, "CALLEE") || (cause, sip, dir) == (18, 408, "PLATFORM"));
        }
        "BUSY" => {
            assert!(!answered && dir == "CALLEE");
            assert!((cause, sip) == (17, 486) || (rang && (cause, sip) == (21, 603)), "busy, or rang and declined");
        }
        "FAILED" => {
            assert!(!answered && dir == "PLATFORM");
            assert!([(34, 503), (41, 503), (127, 500), (31, 480), (1, 404), (3, 404), (27, 502), (21, 403)]
                .contains(&(cause, sip)));
            if [1, 3].contains(&cause) {
                assert!(!rang, "a number that does not exist never rings");
            }
        }
        "CANCELLED" => assert!(rang && !answered && cause == 16 && sip == 487 && dir == "CALLER"),
        other => panic!("unexpected disposition {other}"),
    }
    assert!(RFC_3398.contains(&(cause, sip)), "({cause}, {sip}) is not an RFC 3398 pair");
    if !answered {
        assert_eq!(n(cdr, "duration"), 0);
        assert!(cdr.get("recordUrl").is_none());
    }
}

#[test]
fn legs_are_coherent() {
    for call in generate(config(), 11, CALLS) {
        for (statuses, cdrs) in legs(&call).values() {
            check_leg(statuses, cdrs);
        }
    }
}

#[test]
fn privacy_calls_carry_a_consistent_binding() {
    let (mut directions, mut subs) = (HashSet::new(), HashSet::new());
    for call in generate(config(), 13, CALLS) {
        for post in &call.posts {
            let v = post.payload.to_json();
            if call.service_type == 100 {
                assert!(v.get("phoneNoX").is_none() && v.get("numberPoolNo").is_none());
                continue;
            }
            let (x, a, b) = (s(&v, "phoneNoX"), s(&v, "phoneNoA"), s(&v, "phoneNoB"));
            assert!(!s(&v, "subscriptionId").is_empty() && s(&v, "numberPoolNo").starts_with("NP"));
            assert!((1..=4).contains(&n(&v, "callDisplayType")));
            let shown = if n(&v, "callDisplayType") == 2 { a } else { x };
            assert_eq!(s(&v, "calledDisplayNumber"), shown);
            assert_eq!(s(&v, "calleeNumber"), x, "the X number is dialled");
            let expected_caller = match n(&v, "secretCallType") {
                11 | 12 => a,
                10 => b,
                other => panic!("secretCallType {other}"),
            };
            assert_eq!(s(&v, "callerNumber"), expected_caller);
            directions.insert(n(&v, "secretCallType"));
            if let Payload::Cdr(_) = post.payload {
                let sub = n(&v, "subServiceType");
                assert!((201..=205).contains(&sub));
                assert_eq!(v.get("phoneNoE").is_some(), sub == 203, "an extension with AXNE only");
                subs.insert(sub);
                if n(&v, "secretCallType") == 12 {
                    assert_eq!((s(&v, "disposition"), n(&v, "hangupCause"), n(&v, "sipCode")), ("FAILED", 21, 403));
                    assert!(v.get("ringTime").is_none(), "an intercepted call never rings");
                }
            }
        }
    }
    assert_eq!(directions, HashSet::from([10, 11, 12]), "A->B, B->A and intercepted calls");
    assert_eq!(subs, (201..=205).collect(), "every privacy sub-service");
}

#[test]
fn every_sub_service_and_outcome_code_occurs() {
    let (mut subs, mut pairs) = (HashSet::new(), HashSet::new());
    for call in generate(config(), 21, CALLS) {
        subs.insert(call.sub_service_type);
        for post in &call.posts {
            if let Payload::Cdr(_) = post.payload {
                let v = post.payload.to_json();
                pairs.insert((n(&v, "hangupCause"), n(&v, "sipCode")));
            }
        }
    }
    let expected: HashSet<u16> = (101..=105).chain(201..=205).collect();
    assert_eq!(subs, expected);
    assert!(pairs.contains(&(21, 603)), "a rejected call occurs");
    assert!(pairs.contains(&(1, 404)) && pairs.contains(&(18, 408)), "{pairs:?}");
}

#[test]
fn callback_calls_have_two_parties() {
    let mut two_leg = 0;
    for call in generate(config(), 17, CALLS) {
        if call.sub_service_type != 105 {
            assert!(call.posts.iter().all(|p| p.payload.party().is_none()));
            continue;
        }
        assert_eq!(call.service_type, 100);
        let legs = legs(&call);
        assert!(!legs.contains_key(""), "every record of a callback has a party");
        let caller = &legs["CALLER"];
        if let Some(callee) = legs.get("CALLEE") {
            two_leg += 1;
            let a = s(&caller.1[0], "calleeNumber");
            assert_eq!(s(&callee.1[0], "callerNumber"), a, "B sees A's number");
            assert_eq!(s(&caller.1[0], "disposition"), "ANSWERED", "A took the callback");
            let a_answer = n(&caller.1[0], "startTime");
            assert!(n(&callee.1[0], "beginCallTime") > a_answer, "B dialled after A answered");
        }
    }
    assert!(two_leg > 100, "{two_leg} two-leg calls");
}

#[test]
fn same_seed_same_calls_and_other_seed_other_calls() {
    let a = generate(config(), 42, 500);
    let b = generate(config(), 42, 500);
    assert_eq!(a, b);
    let json = |calls: &[Call]| -> Vec<String> {
        calls.iter().flat_map(|c| c.posts.iter().map(|p| p.payload.to_json().to_string())).collect()
    };
    assert_eq!(json(&a), json(&b));
    assert_ne!(json(&a), json(&generate(config(), 43, 500)));
}

#[test]
fn mixes_are_honoured_and_ids_unique() {
    let config = GenConfig {
        service_mix: parse_service_mix("100=0.5,200=0.5").unwrap(),
        scenario_mix: parse_scenario_mix("answered=0.5,busy=0.5").unwrap(),
        ..config()
    };
    let calls = generate(config, 99, 4_000);
    let ids: HashSet<&str> = calls.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids.len(), calls.len());
    let privacy = calls.iter().filter(|c| c.service_type == 200).count();
    assert!((1_800..2_200).contains(&privacy), "{privacy}");
    let busy = calls.iter().filter(|c| c.scenario.cli_name() == "busy").count();
    assert!((1_800..2_200).contains(&busy), "{busy}");
    let mut accounts = HashSet::new();
    for call in &calls {
        let v = call.posts[0].payload.to_json();
        accounts.insert(s(&v, "accountId").to_string());
    }
    assert_eq!(accounts, HashSet::from(["acc1".to_string(), "acc2".to_string()]));
}

#[test]
fn phone_numbers_are_realistic() {
    let mobile = |x: &str| x.len() == 11 && x.starts_with('1') && (b'3'..=b'9').contains(&x.as_bytes()[1]);
    let fixed = |x: &str| x.starts_with('0') && (10..=12).contains(&x.len());
    let platform = |x: &str| x.starts_with("400") && x.len() == 10;
    for call in generate(config(), 5, 2_000) {
        for post in &call.posts {
            let v = post.payload.to_json();
            for key in ["callerNumber", "calleeNumber"] {
                let number = s(&v, key);
                assert!(number.bytes().all(|b| b.is_ascii_digit()), "{number}");
                assert!(mobile(number) || fixed(number) || platform(number), "{number}");
            }
        }
    }
}
