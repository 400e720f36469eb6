//! The Asterisk CSV source (issue 13, point 2) on real parts: the real app follows a real file
//! that the test appends to as Asterisk's cdr_csv / cdr_custom do (one whole line per CDR,
//! opened in append mode), the real outbox keeps its position, and a real receiver gets the
//! CDRs. The fixtures are the real samples in the repository's `fixtures/`.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use push_core::{
    config::{AsteriskCsvSettings, CsvColumns, CsvLayout},
    testing::{eventually, test_settings, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

fn fixture(name: &str) -> String {
    let path = format!("{}/../../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn source(path: &Path, columns: CsvColumns, timezone: &str) -> AsteriskCsvSettings {
    AsteriskCsvSettings {
        path: path.to_path_buf(),
        columns,
        timezone: timezone.into(),
        service_type: 100,
        account_id: None,
    }
}

const CDR_CSV: CsvColumns = CsvColumns::Named(CsvLayout::CdrCsv);

fn settings(dir: &Path, receiver: &TestReceiver, files: Vec<AsteriskCsvSettings>) -> Settings {
    let mut s = test_settings(dir, &receiver.url());
    s.sources.asterisk_csv = files;
    s
}

/// Appends as Asterisk does: open in append mode, write, close.
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A cdr_csv line (18 columns: loguniqueid, loguserfield) of a call `id` answered after 10 s
/// and released after 70 s, starting at `2023-12-01 00:MM:00`.
fn line(id: u32) -> String {
    let m = id % 60;
    format!(
        "\"\",\"1000\",\"2{id:03}\",\"from-internal\",\"\"\"Alice\"\" <1000>\",\"PJSIP/1000-{id:08x}\",\"PJSIP/2000-{id:08x}\",\"Dial\",\"PJSIP/2000,30\",\"2023-12-01 00:{m:02}:00\",\"2023-12-01 00:{m:02}:10\",\"2023-12-01 00:{:02}:10\",70,60,\"ANSWERED\",\"DOCUMENTATION\",\"1701388800.{id}\",\"\"\n",
        m + 1
    )
}

/// The CDR bodies pushed so far, by callId (a callId pushed twice panics: nothing doubled).
fn pushed(receiver: &TestReceiver) -> std::collections::BTreeMap<String, Value> {
    let mut by_call = std::collections::BTreeMap::new();
    for push in receiver.received().iter().filter(|r| r.answered == 200) {
        let body = push.json();
        let id = body["callId"].as_str().unwrap().to_string();
        assert!(by_call.insert(id.clone(), body).is_none(), "{id} pushed twice");
    }
    by_call
}

async fn report(app: &TestApp, name: &str) -> Value {
    let (_, body) = app.get_json("/v1/sources").await;
    body["sources"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().expect("the source is listed")
}

fn name(path: &Path) -> String {
    format!("asterisk_csv:{}", path.display())
}

fn file_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("Master.csv")
}

#[tokio::test]
async fn the_cdr_csv_fixture_maps_exactly() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    std::fs::write(&path, fixture("asterisk_cdr_sample.csv")).unwrap();
    let mut file = source(&path, CDR_CSV, "UTC");
    file.account_id = Some("pbx-1".into());
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![file])).await;
    receiver.wait_for_successes(3, WAIT).await;
    let got = pushed(&receiver);
    let extra = |clid: &str, disposition: &str, duration: i64, billsec: i64, uniqueid: &str| {
        json!({"dcontext": "production", "clid": clid, "channel": "NOT_AVAILABLE", "dstchannel": "NOT_AVAILABLE",
               "lastapp": "Dial", "lastdata": "NOT_AVAILABLE", "duration": duration, "billsec": billsec,
               "disposition": disposition, "amaflags": "DOCUMENTATION", "uniqueid": uniqueid})
    };
    let leanna = "\"Leanna Cuphus\" <609-326-2780>";
    let expected = [
        json!({"callId": "1498555635.0", "serviceType": 100, "callerNumber": "917-375-0980",
               "calleeNumber": "502-679-5153", "startTime": 1498555635000_i64, "endTime": 1498555635000_i64,
               "duration": 0, "beginCallTime": 1498555635000_i64, "disposition": "NO_ANSWER", "accountId": "pbx-1",
               "extra": extra(leanna, "NO ANSWER", 0, 0, "1498555635.0")}),
        json!({"callId": "1498559343.3", "serviceType": 100, "callerNumber": "917-375-0980",
               "calleeNumber": "334-442-8436", "startTime": 1498559354000_i64, "endTime": 1498559745000_i64,
               "duration": 391, "beginCallTime": 1498559343000_i64, "disposition": "ANSWERED", "accountId": "pbx-1",
               "extra": extra(leanna, "ANSWERED", 402, 390, "1498559343.3")}),
        json!({"callId": "1498581972.99", "serviceType": 100, "callerNumber": "253-433-5862",
               "calleeNumber": "989-326-7716", "startTime": 1498581989000_i64, "endTime": 1498581989000_i64,
               "duration": 0, "beginCallTime": 1498581972000_i64, "disposition": "BUSY", "accountId": "pbx-1",
               "extra": extra("\"Marget Biernacki\" <253-433-5862>", "BUSY", 16, 0, "1498581972.99")}),
    ];
    for cdr in expected {
        assert_eq!(got[cdr["callId"].as_str().unwrap()], cdr);
    }
    let figures = report(&app, &name(&path)).await;
    assert_eq!((figures["state"].as_str(), figures["accepted"].as_u64()), (Some("following"), Some(3)));
}

/// The cdr_custom sample was written in a zone 3 hours east of UTC: its uniqueids (the
/// channels' creation, epoch seconds) are its start times read in Europe/Moscow.
#[tokio::test]
async fn the_cdr_custom_fixture_maps_exactly_in_its_zone() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = dir.path().join("cdr-custom.csv");
    std::fs::write(&path, fixture("asterisk_cdr_custom_sample.csv")).unwrap();
    let file = source(&path, CsvColumns::Named(CsvLayout::CdrCustom), "Europe/Moscow");
    let _app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![file])).await;
    receiver.wait_for_successes(2, WAIT).await;
    let got = pushed(&receiver);
    let answered = json!({"callId": "1690325492.2", "serviceType": 100, "callerNumber": "client1",
        "calleeNumber": "6789", "startTime": 1690325510000_i64, "endTime": 1690325524000_i64, "duration": 14,
        "beginCallTime": 1690325492000_i64, "disposition": "ANSWERED",
        "extra": {"clid": "\"\" <client1>", "dcontext": "default", "channel": "PJSIP/client1-00000002",
                  "dstchannel": "PJSIP/client2-00000003", "lastapp": "Dial", "lastdata": "PJSIP/client2",
                  "duration": 31, "billsec": 13, "disposition": "ANSWERED", "amaflags": "DOCUMENTATION",
                  "uniqueid": "1690325492.2", "sequence": 2}});
    let unanswered = json!({"callId": "1690325531.5", "serviceType": 100, "callerNumber": "client2",
        "calleeNumber": "1234", "startTime": 1690325562000_i64, "endTime": 1690325562000_i64, "duration": 0,
        "beginCallTime": 1690325531000_i64, "disposition": "NO_ANSWER",
        "extra": {"clid": "\"\" <client2>", "dcontext": "default", "channel": "PJSIP/client2-00000004",
                  "dstchannel": "PJSIP/client1-00000005", "lastapp": "Dial", "lastdata": "PJSIP/client1",
                  "duration": 30, "billsec": 0, "disposition": "NO ANSWER", "amaflags": "DOCUMENTATION",
                  "uniqueid": "1690325531.5", "sequence": 4}});
    assert_eq!(got["1690325492.2"], answered);
    assert_eq!(got["1690325531.5"], unanswered);
}

/// newcdrcolumns (21 columns): both CDRs of a call carry its linkedid; the channel that is the
/// linkedid is the caller's leg. Local times in Asia/Shanghai (UTC+8); an accountcode is the
/// accountId; an unset answer time written empty (`,,`; older Asterisk: `""`) is unanswered.
#[tokio::test]
async fn legs_share_the_linkedid_and_local_times_are_read_in_the_zone() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let a_leg = "\"acme\",\"1000\",\"2000\",\"from-internal\",\"\"\"Alice\"\" <1000>\",\"PJSIP/1000-01\",\"PJSIP/2000-02\",\"Dial\",\"PJSIP/2000\",\"2023-12-01 08:00:00\",\"2023-12-01 08:00:05\",\"2023-12-01 08:01:05\",65,60,\"ANSWERED\",\"BILLING\",\"1701388800.1\",\"vip\",\"\",\"1701388800.1\",7\n";
    let b_leg = "\"\",\"2000\",\"3000\",\"from-internal\",\"\",\"PJSIP/2000-02\",\"\",\"Dial\",\"PJSIP/3000\",\"2023-12-01 08:00:30\",\"\",\"2023-12-01 08:00:50\",20,0,\"BUSY\",\"DOCUMENTATION\",\"1701388800.2\",\"\",\"acme\",\"1701388800.1\",8\n";
    append(&path, a_leg);
    append(&path, &b_leg.replace(",\"\",\"2023-12-01 08:00:50\"", ",,\"2023-12-01 08:00:50\""));
    let _app =
        TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![source(&path, CDR_CSV, "Asia/Shanghai")]))
            .await;
    let pushes = receiver.wait_for_successes(2, WAIT).await;
    let bodies: Vec<Value> = pushes.iter().map(|p| p.json()).collect();
    let leg = |party: &str| bodies.iter().find(|b| b["party"] == party).cloned().expect(party);
    let (caller, callee) = (leg("CALLER"), leg("CALLEE"));
    assert_eq!(caller["callId"], "1701388800.1");
    assert_eq!(callee["callId"], "1701388800.1", "one call, two legs");
    assert_eq!(caller["beginCallTime"], 1_701_388_800_000_i64, "08:00 in Shanghai is 00:00 UTC");
    assert_eq!(
        (caller["startTime"].as_i64(), caller["endTime"].as_i64()),
        (Some(1_701_388_805_000), Some(1_701_388_865_000))
    );
    assert_eq!((caller["duration"].as_i64(), caller["accountId"].as_str()), (Some(60), Some("acme")));
    assert_eq!(caller["extra"]["userfield"], "vip");
    assert_eq!(caller["extra"]["sequence"], 7);
    assert_eq!(callee["startTime"], callee["endTime"], "unanswered");
    assert_eq!((callee["disposition"].as_str(), callee.get("accountId")), (Some("BUSY"), None));
    assert_eq!(
        (callee["extra"]["peeraccount"].as_str(), callee["extra"]["linkedid"].as_str()),
        (Some("acme"), Some("1701388800.1"))
    );
}

/// A caller's channel that dials twice (the first attempt busy, the second answered) writes
/// two lines with its own uniqueid and the call's linkedid, told apart by their sequence:
/// each is a CDR, the answered attempt is not taken for a duplicate of the busy one, and the
/// same line read again still is one.
#[tokio::test]
async fn two_dial_attempts_of_one_channel_each_keep_their_cdr() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let busy = "\"\",\"1000\",\"2000\",\"from-internal\",\"\",\"PJSIP/1000-01\",\"PJSIP/2000-02\",\"Dial\",\"PJSIP/2000\",\"2023-12-01 00:00:00\",,\"2023-12-01 00:00:05\",5,0,\"BUSY\",\"DOCUMENTATION\",\"1701388800.1\",\"\",\"\",\"1701388800.1\",1\n";
    let answered = "\"\",\"1000\",\"2001\",\"from-internal\",\"\",\"PJSIP/1000-01\",\"PJSIP/2001-03\",\"Dial\",\"PJSIP/2001\",\"2023-12-01 00:00:06\",\"2023-12-01 00:00:10\",\"2023-12-01 00:01:10\",64,60,\"ANSWERED\",\"DOCUMENTATION\",\"1701388800.1\",\"\",\"\",\"1701388800.1\",2\n";
    append(&path, &format!("{busy}{answered}{busy}"));
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![source(&path, CDR_CSV, "UTC")])).await;
    let pushes = receiver.wait_for_successes(2, WAIT).await;
    let outcomes: Vec<(String, String, String)> = pushes
        .iter()
        .map(|p| p.json())
        .map(|b| (b["callId"].to_string(), b["party"].to_string(), b["disposition"].as_str().unwrap().to_string()))
        .collect();
    assert!(outcomes.iter().all(|(call, party, _)| call == "\"1701388800.1\"" && party == "\"CALLER\""));
    let mut dispositions: Vec<&str> = outcomes.iter().map(|o| o.2.as_str()).collect();
    dispositions.sort();
    assert_eq!(dispositions, ["ANSWERED", "BUSY"]);
    let figures = eventually(WAIT, "the third line counted", || async {
        Some(report(&app, &name(&path)).await).filter(|f| f["duplicates"].as_u64() == Some(1))
    })
    .await;
    assert_eq!(figures["accepted"].as_u64(), Some(2), "the busy line read twice is one CDR");
}

/// The file does not exist yet (error, with the reason); then Asterisk creates it and appends
/// line by line, one line in two writes (the follower must wait for its newline).
#[tokio::test]
async fn lines_appended_while_running_are_taken_and_a_partial_line_waits() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![source(&path, CDR_CSV, "UTC")])).await;
    let missing = eventually(WAIT, "the missing file reported", || async {
        let r = report(&app, &name(&path)).await;
        (r["state"] == "error").then_some(r)
    })
    .await;
    assert!(missing["error"].as_str().unwrap().contains("Master.csv"), "{missing}");
    assert_eq!(app.get_json("/readyz").await.0, 503, "a source in error makes the program not ready");

    append(&path, &line(1));
    receiver.wait_for_successes(1, WAIT).await;
    eventually(WAIT, "following", || async {
        (report(&app, &name(&path)).await["state"] == "following").then_some(())
    })
    .await;
    let whole = line(2);
    let (first_half, second_half) = whole.split_at(60);
    append(&path, first_half);
    // Negative check: give the follower several looks (every 200 ms) at the partial line.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(pushed(&receiver).len(), 1, "a line without its newline is not taken");
    append(&path, second_half);
    for id in 3..=40 {
        append(&path, &line(id));
    }
    receiver.wait_for_successes(40, WAIT).await;
    let got = pushed(&receiver);
    assert_eq!(got["1701388800.2"]["calleeNumber"], "2002", "the completed line, whole");
    let figures = report(&app, &name(&path)).await;
    assert_eq!((figures["accepted"].as_u64(), figures["rejected"].as_u64()), (Some(40), Some(0)), "{figures}");
}

/// Stopped after three lines, two more appended meanwhile: the restart takes exactly those two.
#[tokio::test]
async fn a_restart_resumes_at_the_kept_position() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let files = || vec![source(&path, CDR_CSV, "UTC")];
    (1..=3).for_each(|id| append(&path, &line(id)));
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, files())).await;
    receiver.wait_for_successes(3, WAIT).await;
    app.stop().await.unwrap();
    (4..=5).for_each(|id| append(&path, &line(id)));

    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, files())).await;
    receiver.wait_for_successes(5, WAIT).await;
    let figures = eventually(WAIT, "two taken", || async {
        let r = report(&app, &name(&path)).await;
        (r["accepted"] == 2).then_some(r)
    })
    .await;
    assert_eq!(figures["duplicates"], 0, "nothing read twice: {figures}");
    assert_eq!(pushed(&receiver).len(), 5);
}

/// logrotate's rename + create while following: the line written to the old file just before
/// the rename is taken, then the new file from its start.
#[tokio::test]
async fn a_rotated_file_is_finished_and_the_new_one_followed() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![source(&path, CDR_CSV, "UTC")])).await;
    append(&path, &line(1));
    receiver.wait_for_successes(1, WAIT).await;
    append(&path, &line(2));
    std::fs::rename(&path, dir.path().join("Master.csv.1")).unwrap();
    append(&path, &line(3));
    append(&path, &line(4));
    receiver.wait_for_successes(4, WAIT).await;
    let figures = report(&app, &name(&path)).await;
    assert_eq!((figures["accepted"].as_u64(), figures["duplicates"].as_u64()), (Some(4), Some(0)));
}

/// Rotated while the pusher was down: the rest of the old file (found by its inode) first,
/// its last line too, though its newline never came (the file will not grow any more).
#[tokio::test]
async fn a_file_rotated_while_stopped_is_finished_after_the_restart() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let files = || vec![source(&path, CDR_CSV, "UTC")];
    append(&path, &line(1));
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, files())).await;
    receiver.wait_for_successes(1, WAIT).await;
    app.stop().await.unwrap();
    append(&path, line(2).trim_end());
    std::fs::rename(&path, dir.path().join("Master.csv.1")).unwrap();
    append(&path, &line(3));

    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, files())).await;
    receiver.wait_for_successes(3, WAIT).await;
    assert_eq!(pushed(&receiver).keys().collect::<Vec<_>>(), ["1701388800.1", "1701388800.2", "1701388800.3"]);
    let figures = report(&app, &name(&path)).await;
    assert_eq!((figures["accepted"].as_u64(), figures["duplicates"].as_u64()), (Some(2), Some(0)));
}

/// copytruncate: the file cut to nothing and written again is read from its start.
#[tokio::test]
async fn a_truncated_file_is_read_again_from_the_start() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![source(&path, CDR_CSV, "UTC")])).await;
    append(&path, &format!("{}{}", line(1), line(2)));
    receiver.wait_for_successes(2, WAIT).await;
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    append(&path, &line(3));
    receiver.wait_for_successes(3, WAIT).await;
    assert_eq!(pushed(&receiver)["1701388800.3"]["calleeNumber"], "2003");
    assert_eq!(report(&app, &name(&path)).await["accepted"], 3);
}

async fn rejects(app: &TestApp) -> Vec<Value> {
    app.get_json("/v1/sources/rejects").await.1["items"].as_array().unwrap().clone()
}

async fn redrive(app: &TestApp, id: &Value) -> (u16, Value) {
    let r = app.client.post(format!("{}/v1/sources/rejects/{id}/redrive", app.url)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A line that is not a CDR is set aside with its reason and following goes on; re-driving it
/// answers 422 while it still cannot be mapped. Lines set aside because the columns were
/// configured wrong are re-driven once the configuration is fixed (a restart).
#[tokio::test]
async fn an_unmappable_line_is_set_aside_listed_and_re_driven_after_the_fix() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = file_in(&dir);
    let garbage = "\"this\",\"is\",\"not\",\"a\",\"CDR\"";
    append(&path, &format!("{}{garbage}\n{}", line(1), line(2)));
    let wrong = source(&path, CsvColumns::Named(CsvLayout::CdrCustom), "UTC");
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![wrong])).await;
    let items =
        eventually(WAIT, "three rejects", || async { Some(rejects(&app).await).filter(|r| r.len() == 3) }).await;
    assert!(items.iter().all(|r| r["source"] == name(&path)), "{items:?}");
    assert!(
        items.iter().any(|r| r["raw"] == garbage && r["reason"].as_str().unwrap().contains("5 columns")),
        "{items:?}"
    );
    // The rejects are readable once committed; the source counts them once the commit is
    // also on disk (the feed's answer), a moment later.
    let figures = eventually(WAIT, "three rejects counted", || async {
        Some(report(&app, &name(&path)).await).filter(|f| f["rejected"].as_u64() == Some(3))
    })
    .await;
    assert_eq!(figures["state"].as_str(), Some("following"));
    let garbage_id = &items.iter().find(|r| r["raw"] == garbage).unwrap()["id"];
    let (status, body) = redrive(&app, garbage_id).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("unmappable_record")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("5 columns"), "{body}");
    app.stop().await.unwrap();

    let fixed = source(&path, CDR_CSV, "UTC");
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![fixed])).await;
    for reject in items.iter().filter(|r| r["raw"] != garbage) {
        let (status, body) = redrive(&app, &reject["id"]).await;
        assert_eq!((status, body["accepted"].as_u64(), body["duplicates"].as_u64()), (200, Some(1), Some(0)), "{body}");
    }
    receiver.wait_for_successes(2, WAIT).await;
    assert_eq!(pushed(&receiver).keys().collect::<Vec<_>>(), ["1701388800.1", "1701388800.2"]);
    let left = rejects(&app).await;
    assert_eq!(left.len(), 1, "only the garbage line is left: {left:?}");
    let figures = report(&app, &name(&path)).await;
    assert_eq!(
        (figures["accepted"].as_u64(), figures["duplicates"].as_u64()),
        (Some(2), Some(0)),
        "re-driven, not re-read"
    );
}

/// An explicit `columns:` list as cdr_custom.conf writes it, with epoch start/end
/// (`start(int64)`), and no uniqueid: the callId is derived from the line, so the same line
/// appended again is a duplicate and another line another call.
#[tokio::test]
async fn listed_columns_and_a_derived_call_id() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let path = dir.path().join("simple.csv");
    let names = ["start(int64)", "src", "dst", "answer", "end(int64)", "disposition", "ds_type(uservar)"];
    let list = CsvColumns::List(names.iter().map(|n| n.to_string()).collect());
    let one = "1701388800,\"100\",\"200\",\"\",1701388830,\"NO ANSWER\",\"sales\"\n";
    append(&path, &format!("{one}{one}{}", one.replace("1701388830", "1701388831")));
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver, vec![source(&path, list, "UTC")])).await;
    let figures = eventually(WAIT, "three lines taken", || async {
        let r = report(&app, &name(&path)).await;
        (r["accepted"].as_u64().unwrap() + r["duplicates"].as_u64().unwrap() == 3).then_some(r)
    })
    .await;
    assert_eq!((figures["accepted"].as_u64(), figures["duplicates"].as_u64()), (Some(2), Some(1)));
    receiver.wait_for_successes(2, WAIT).await;
    let got = pushed(&receiver);
    let cdr = got.values().find(|c| c["endTime"] == 1_701_388_830_000_i64).unwrap();
    assert!(cdr["callId"].as_str().unwrap().starts_with("ast-"), "{cdr}");
    assert_eq!(cdr["beginCallTime"], 1_701_388_800_000_i64);
    assert_eq!(cdr["extra"], json!({"disposition": "NO ANSWER", "ds_type": "sales"}));
}

/// A zone that does not exist, or one file listed twice (they would share a position), stops
/// the program at start with a message naming the key.
#[tokio::test]
async fn a_bad_asterisk_csv_entry_stops_the_start_naming_the_key() {
    let receiver = TestReceiver::start().await;
    let path = Path::new("/var/log/asterisk/cdr-csv/Master.csv");
    let cases = [
        (vec![source(path, CDR_CSV, "Mars/Olympus")], "timezone"),
        (vec![source(path, CDR_CSV, "UTC"), source(path, CDR_CSV, "UTC")], "listed twice"),
    ];
    for (files, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = std::sync::Arc::new(push_core::clock::SystemClock);
        let built =
            push_core::Application::build_with(settings(dir.path(), &receiver, files), Service::Cdr, listener, clock);
        let error = format!("{:#}", built.await.err().expect("refused"));
        assert!(error.contains("sources.asterisk_csv") && error.contains(says), "{error}");
    }
}
