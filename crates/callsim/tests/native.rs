//! `callsim calls --cdr-format freeswitch|asterisk-csv|ucm-tcp` against the real cdr-pusher
//! with that source configured and a real receiver: every generated CDR (one-leg calls and
//! two-leg callbacks, every outcome, fixed seed and start) is pushed once, and the pushed CDR
//! carries the generated fields that the format carries. These prove that callsim's writers
//! and cdr-pusher's sources agree on the switches' formats.

use std::collections::HashMap;
use std::time::Duration;

use callsim::{
    calls::{run_calls, CallsOptions, RunLimit},
    generator::{CallGenerator, GenConfig},
    model::{Cdr, Disposition, Party, Payload, ReleaseDirection},
    native::CdrFormat,
    stats::CallsSummary,
};
use push_core::{
    config::{AsteriskCsvSettings, CsvColumns, CsvLayout, FreeswitchSettings, RedisSettings, Settings, UcmSettings},
    testing::{eventually, test_settings, RedisServer, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const CALLS: u64 = 80;
const SEED: u64 = 11;
const START: i64 = 1_764_000_000_000;

fn options(format: CdrFormat, target: String) -> CallsOptions {
    CallsOptions {
        cdr_format: format,
        rate: 400.0,
        limit: RunLimit::Count(CALLS),
        speed: 200_000.0,
        seed: SEED,
        start_ms: Some(START),
        generator: GenConfig {
            callback_share: 0.5,
            accounts: vec!["acc-1".into(), "acc-2".into()],
            call_id_prefix: "nat-".into(),
            ..GenConfig::default()
        },
        ..CallsOptions::new(Some(target), None)
    }
}

/// The CDRs the run sends, generated again the way the driver does (same seed, same begins).
fn generated(opts: &CallsOptions) -> Vec<Cdr> {
    let mut generator = CallGenerator::new(opts.generator.clone(), opts.seed);
    let interval = 1.0 / opts.rate;
    let start = opts.start_ms.unwrap();
    (0..CALLS)
        .flat_map(|i| generator.next_call(start + (interval * i as f64 * opts.speed * 1000.0) as i64).posts)
        .filter_map(|p| match p.payload {
            Payload::Cdr(cdr) => Some(cdr),
            Payload::Status(_) => None,
        })
        .collect()
}

/// Runs the calls, checks the summary, and returns the CDRs the receiver got (exactly as
/// many as were sent, each once).
/// Sends the run's calls in `format` to `target`: the CDRs generated (checked to cover the
/// mix) and what the receiver got.
async fn send_all(app: &TestApp, receiver: &TestReceiver, format: CdrFormat, target: String) -> (Vec<Cdr>, Vec<Value>) {
    let opts = options(format, target);
    let cdrs = generated(&opts);
    covers_the_mix(&cdrs);
    let pushes = run_and_collect(app, receiver, opts, cdrs.len()).await;
    (cdrs, pushes)
}

async fn run_and_collect(app: &TestApp, receiver: &TestReceiver, opts: CallsOptions, sent: usize) -> Vec<Value> {
    let summary: CallsSummary = run_calls(opts).await.unwrap();
    let cdr = &summary.cdr;
    assert_eq!((cdr.sent, cdr.accepted), (sent as u64, sent as u64), "{summary:?}");
    assert_eq!((cdr.rejected, cdr.duplicates, cdr.errors), (0, 0, 0), "{summary:?}");
    receiver.wait_for_successes(sent, Duration::from_secs(30)).await;
    // Once the pusher has nothing left to deliver, what arrived is all that will.
    eventually(Duration::from_secs(10), "nothing pending", || async {
        let (_, stats) = app.get_json("/v1/stats").await;
        (stats["subscribers"]["demo"]["pending"] == 0).then_some(())
    })
    .await;
    let pushes: Vec<Value> = receiver.received().iter().filter(|r| r.answered == 200).map(|r| r.json()).collect();
    assert_eq!(pushes.len(), sent, "one push per CDR sent");
    pushes
}

fn ms_to_s(ms: i64) -> i64 {
    ms.div_euclid(1000) * 1000
}

/// The generated fields the format carries, in the pushed CDR's terms: `exact` times (ms)
/// or to the second; disposition as the format writes it.
fn expected(cdr: &Cdr, exact: bool, disposition: &str) -> Value {
    let t = |ms: i64| if exact { ms } else { ms_to_s(ms) };
    let duration = if exact { cdr.duration } else { (t(cdr.end_time) - t(cdr.start_time)) / 1000 };
    json!({
        "callerNumber": cdr.caller_number,
        "calleeNumber": cdr.callee_number,
        "beginCallTime": t(cdr.begin_call_time),
        "startTime": t(cdr.start_time),
        "endTime": t(cdr.end_time),
        "duration": duration,
        "accountId": cdr.common.account_id,
        "disposition": disposition,
    })
}

fn assert_carried(got: &Value, want: &Value, what: &str) {
    for (field, value) in want.as_object().unwrap() {
        assert_eq!(&got[field], value, "{field} of {what}: {got:#}");
    }
}

fn disposition(d: Disposition) -> &'static str {
    match d {
        Disposition::Answered => "ANSWERED",
        Disposition::NoAnswer => "NO_ANSWER",
        Disposition::Busy => "BUSY",
        Disposition::Failed => "FAILED",
        Disposition::Cancelled => "CANCELLED",
    }
}

/// Asterisk and the UCM write a caller who gave up as NO ANSWER (`main/cdr.c`).
fn asterisk_disposition(d: Disposition) -> &'static str {
    match d {
        Disposition::Cancelled => "NO_ANSWER",
        other => disposition(other),
    }
}

fn party(cdr: &Cdr) -> &'static str {
    // Every leg is a channel of its own in these switches: a one-leg call is the caller's.
    cdr.party.map_or("CALLER", |p| p.as_str())
}

fn by_leg(pushes: &[Value]) -> HashMap<(String, String), Value> {
    let map: HashMap<_, _> = pushes
        .iter()
        .map(|p| ((p["callId"].as_str().unwrap().to_string(), p["party"].as_str().unwrap().to_string()), p.clone()))
        .collect();
    assert_eq!(map.len(), pushes.len(), "no CDR pushed twice");
    map
}

fn covers_the_mix(cdrs: &[Cdr]) {
    assert!(cdrs.iter().any(|c| c.party.is_none()) && cdrs.iter().any(|c| c.party.is_some()), "one and two legs");
    for d in Disposition::ALL {
        assert!(cdrs.iter().any(|c| c.release.disposition == d), "{d:?} occurs");
    }
}

async fn app_with(receiver: &TestReceiver, dir: &std::path::Path, set: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(dir, &receiver.url());
    set(&mut settings);
    TestApp::spawn(Service::Cdr, settings).await
}

/// Where the FreeSWITCH source derives something else than the generated outcome from the
/// native fields (reported, not bent): the fields and what it derives.
fn freeswitch_deviations(cdr: &Cdr) -> Vec<(&'static str, Value)> {
    let r = &cdr.release;
    let mut found = Vec::new();
    let one_leg_callback = cdr.party == Some(Party::Caller) && r.disposition != Disposition::Answered;
    if one_leg_callback {
        // A leg FreeSWITCH placed (channel_data.direction outbound) refused by its far end
        // (recv_refuse): the source takes recv_* on an a-leg for the caller.
        let by_timer = r.disposition == Disposition::NoAnswer && r.release_direction == ReleaseDirection::Platform;
        if !by_timer {
            found.push(("releaseDirection", json!("CALLER")));
        }
    } else if cdr.party.is_none()
        && r.disposition == Disposition::NoAnswer
        && r.release_direction == ReleaseDirection::Callee
    {
        // The a-leg of a received call only says FreeSWITCH refused it with NO_ANSWER
        // (send_refuse), which is its own timer's cause: PLATFORM. Only the b-leg knows more.
        found.push(("releaseDirection", json!("PLATFORM")));
    } else if cdr.party == Some(Party::Callee) && r.disposition == Disposition::Failed {
        // The network refused the b-leg (recv_refuse): the source takes its far end for the callee.
        found.push(("releaseDirection", json!("CALLEE")));
    }
    found
}

#[tokio::test]
async fn freeswitch_documents_give_the_generated_cdrs() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let app = app_with(&receiver, dir.path(), |s| {
        s.sources.freeswitch = Some(FreeswitchSettings {
            service_type: 100,
            account_id: None,
            account_variable: Some("accountcode".into()),
            encoded_values: false,
            variables: vec![],
        })
    })
    .await;
    let (cdrs, pushes) = send_all(&app, &receiver, CdrFormat::Freeswitch, app.url.clone()).await;
    let pushed = by_leg(&pushes);
    let mut deviations = Vec::new();
    for cdr in &cdrs {
        let what = format!("{} {}", cdr.common.call_id, party(cdr));
        let got = &pushed[&(cdr.common.call_id.clone(), party(cdr).to_string())];
        let mut want = expected(cdr, true, disposition(cdr.release.disposition));
        want["ringTime"] = json!(cdr.ring_time);
        want["hangupCause"] = json!(cdr.release.hangup_cause);
        want["sipCode"] = json!(cdr.release.sip_code);
        want["releaseDirection"] = json!(cdr.release.release_direction);
        if let Some(direction) = cdr.direction {
            want["direction"] = json!(direction);
        }
        for (field, value) in freeswitch_deviations(cdr) {
            want[field] = value;
        }
        for (field, value) in want.as_object().unwrap() {
            if &got[field] != value {
                deviations.push(format!(
                    "{what} {:?}/{:?} {}/{}: {field} {} != {value}",
                    cdr.release.disposition,
                    cdr.release.release_direction,
                    cdr.release.hangup_cause,
                    cdr.release.sip_code,
                    got[field]
                ));
            }
        }
        assert_eq!(got["extra"]["uuid"], json!(callsim::native::freeswitch::leg_uuid(cdr)));
    }
    assert!(deviations.is_empty(), "{} deviations:\n{}", deviations.len(), deviations.join("\n"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn asterisk_master_csv_lines_give_the_generated_cdrs() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let file = dir.path().join("Master.csv");
    let source = AsteriskCsvSettings {
        path: file.clone(),
        columns: CsvColumns::Named(CsvLayout::CdrCsv),
        timezone: "UTC".into(),
        service_type: 100,
        account_id: None,
    };
    let app = app_with(&receiver, dir.path(), |s| s.sources.asterisk_csv = vec![source]).await;
    let (cdrs, pushes) = send_all(&app, &receiver, CdrFormat::AsteriskCsv, file.display().to_string()).await;
    let pushed = by_leg(&pushes);
    for cdr in &cdrs {
        let what = format!("{} {}", cdr.common.call_id, party(cdr));
        let got = &pushed[&(cdr.common.call_id.clone(), party(cdr).to_string())];
        assert_carried(got, &expected(cdr, false, asterisk_disposition(cdr.release.disposition)), &what);
        assert_eq!(got["extra"]["linkedid"], json!(cdr.common.call_id), "{what}");
        assert!(got.get("hangupCause").is_none() && got.get("sipCode").is_none(), "cdr_csv carries neither");
    }
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(lines.lines().count(), cdrs.len(), "one line per CDR");
    assert!(lines.lines().all(|l| l.split(',').count() >= 21), "21 columns at least");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn ucm_tcp_records_give_the_generated_cdrs() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let source = UcmSettings {
        tcp_listen: Some("127.0.0.1:0".into()),
        idle_timeout: Duration::from_secs(5),
        timezone: "UTC".into(),
        service_type: 100,
        account_id: None,
    };
    let app = app_with(&receiver, dir.path(), |s| s.sources.ucm = Some(source)).await;
    let (_, sources) = app.get_json("/v1/sources").await;
    let address = sources["sources"][0]["address"].as_str().expect("the listener's address");
    let (cdrs, pushes) =
        send_all(&app, &receiver, CdrFormat::UcmTcp, address.trim_start_matches("tcp://").to_string()).await;
    // The UCM names its CDRs itself (uniqueid-AcctId): a leg is found by its numbers and begin.
    let key = |caller: &str, callee: &str, begin: i64| format!("{caller}>{callee}@{begin}");
    let mut by_key = HashMap::new();
    for p in &pushes {
        let k = key(
            p["callerNumber"].as_str().unwrap(),
            p["calleeNumber"].as_str().unwrap(),
            p["beginCallTime"].as_i64().unwrap(),
        );
        assert_eq!(
            p["callId"],
            json!(format!("{}-{}", p["extra"]["uniqueid"].as_str().unwrap(), p["extra"]["AcctId"].as_str().unwrap()))
        );
        assert!(p.get("party").is_none(), "the UCM's records carry no leg");
        assert!(by_key.insert(k, p.clone()).is_none(), "no leg pushed twice: {p}");
    }
    let ids: std::collections::HashSet<&str> = pushes.iter().map(|p| p["callId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), pushes.len(), "every segment its own callId");
    for cdr in &cdrs {
        let what = format!("{} {}", cdr.common.call_id, party(cdr));
        let got = &by_key[&key(&cdr.caller_number, &cdr.callee_number, ms_to_s(cdr.begin_call_time))];
        assert_carried(got, &expected(cdr, false, asterisk_disposition(cdr.release.disposition)), &what);
        if let Some(direction) = cdr.direction {
            assert_eq!(got["direction"], json!(direction), "{what}");
        }
        assert!(got["extra"]["session"].as_str().unwrap().ends_with(&cdr.common.call_id), "legs share the session");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn redis_list_items_give_the_generated_cdrs() {
    let redis = RedisServer::start().await;
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let source = RedisSettings {
        url: redis.url(),
        list: "cdr".into(),
        processing_list: "cdr:processing".into(),
        channel: None,
        timezone: "UTC".into(),
        service_type: 100,
        account_id: None,
    };
    let app = app_with(&receiver, dir.path(), |s| s.sources.redis = Some(source)).await;
    let (cdrs, pushes) = send_all(&app, &receiver, CdrFormat::Redis, format!("{}?list=cdr", redis.url())).await;
    let pushed = by_leg(&pushes);
    for cdr in &cdrs {
        let what = format!("{} {}", cdr.common.call_id, party(cdr));
        let got = &pushed[&(cdr.common.call_id.clone(), party(cdr).to_string())];
        // mod_cti carries the variables mod_json_cdr does: the numbers, the exact times, the
        // account and, for an answered leg, its outcome.
        let answered = cdr.release.disposition == Disposition::Answered;
        let disposition = if answered { "ANSWERED" } else { got["disposition"].as_str().unwrap() };
        assert_carried(got, &expected(cdr, true, disposition), &what);
        assert_eq!(got["extra"]["uuid"], json!(callsim::native::freeswitch::leg_uuid(cdr)), "{what}");
    }
    app.stop().await.unwrap();
}
