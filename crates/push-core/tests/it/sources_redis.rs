//! The Redis list source (issue 13, point 4) against a real `redis-server` started by the
//! test: the test plays mod_cti, LPUSHing its JSON CDRs (seed 002's field names, written as
//! `cti.json`'s `fields` make them: strings, and numbers where a field has `number:`) onto
//! the list, and cdr-pusher takes them with BLMOVE into the processing list, stores them and
//! only then LREMs them.

use std::{collections::HashSet, time::Duration};

use push_core::{
    config::{RedisSettings, Settings},
    testing::{eventually, test_settings, RedisServer, TestApp, TestReceiver},
    Service,
};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use crate::readiness::Immutable;

const WAIT: Duration = Duration::from_secs(15);
const A_LEG: &str = "6f1c2a8e-0c41-4a55-9a0e-3f3b7d1a0001";
const B_LEG: &str = "6f1c2a8e-0c41-4a55-9a0e-3f3b7d1a0002";

/// mod_cti's a-leg of extension 1001 calling 1002 (seed 002: `originator` empty,
/// `direction` inbound), times as µs strings, answered, the caller hung up.
fn a_leg() -> Value {
    json!({
        "uuid": A_LEG, "direction": "inbound", "originator": "", "bridge_uuid": B_LEG,
        "account": "1001", "call_source": "dialplan", "source_name": "1001", "dial_number": "1002",
        "caller_id_number": "1001", "callee_id_number": "1002", "destination_number": "1002",
        "start_uepoch": "1701388800120000", "progress_uepoch": "1701388802250000",
        "answer_uepoch": "1701388806500000", "end_uepoch": "1701389106900000",
        "billsec": 300, "duration": 306, "hangup_cause": "NORMAL_CLEARING", "hangup_cause_q850": "16",
        "sip_term_status": "200", "sip_hangup_disposition": "recv_bye",
        "rtp_last_audio_codec_string": "PCMA", "record_filename": "/var/lib/freeswitch/recordings/a.wav"
    })
}

/// Its b-leg (`originator` = the a-leg's uuid, `direction` outbound), times as epoch
/// seconds written as numbers (`number:` fields), an account code of its own.
fn b_leg() -> Value {
    json!({
        "uuid": B_LEG, "direction": "outbound", "originator": A_LEG, "bridge_uuid": A_LEG,
        "account": "1002", "call_source": "dialplan", "source_name": "1001", "dial_number": "1002",
        "caller_id_number": "1001", "destination_number": "1002", "accountcode": "tenant-b",
        "start_epoch": 1701388801, "progress_media_epoch": 1701388802, "answer_epoch": 1701388806,
        "end_epoch": 1701389106, "billsec": 300, "hangup_cause": "NORMAL_CLEARING",
        "hangup_cause_q850": 16, "sip_term_status": 200, "sip_hangup_disposition": "send_bye"
    })
}

/// A small answered a-leg with its own uuid (for the tests that count).
fn leg(uuid: &str) -> String {
    json!({
        "uuid": uuid, "originator": "", "caller_id_number": "1001", "dial_number": "1002",
        "start_epoch": "1701388800", "answer_epoch": "1701388805", "end_epoch": "1701388865",
        "hangup_cause": "NORMAL_CLEARING"
    })
    .to_string()
}

/// `sources.redis` on `redis`, with `more` settings.
fn with_redis(settings: &mut Settings, redis: &RedisServer, more: Value) {
    let mut source =
        json!({"url": redis.url(), "list": "cdr", "processing_list": "cdr:processing", "account_id": "acme"});
    source.as_object_mut().unwrap().extend(more.as_object().cloned().unwrap_or_default());
    settings.sources.redis = Some(serde_json::from_value::<RedisSettings>(source).expect("redis settings"));
}

/// cdr-pusher reading `redis` (the list only), its database in `dir`.
async fn app(dir: &std::path::Path, receiver: &TestReceiver, redis: &RedisServer) -> TestApp {
    app_with(dir, receiver, redis, json!({})).await
}

async fn app_with(dir: &std::path::Path, receiver: &TestReceiver, redis: &RedisServer, more: Value) -> TestApp {
    let mut settings = test_settings(dir, &receiver.url());
    with_redis(&mut settings, redis, more);
    TestApp::spawn(Service::Cdr, settings).await
}

async fn lpush(conn: &mut MultiplexedConnection, list: &str, items: &[String]) {
    redis::cmd("LPUSH").arg(list).arg(items).query_async::<()>(conn).await.expect("LPUSH");
}

async fn items(conn: &mut MultiplexedConnection, list: &str) -> Vec<String> {
    redis::cmd("LRANGE").arg(list).arg(0).arg(-1).query_async(conn).await.expect("LRANGE")
}

/// The source's entry in `GET /v1/sources`.
async fn source(app: &TestApp) -> Value {
    let (_, body) = app.get_json("/v1/sources").await;
    body["sources"].as_array().and_then(|s| s.first().cloned()).unwrap_or(Value::Null)
}

/// Waits until both lists are empty: every item taken and removed.
async fn drained(conn: &mut MultiplexedConnection) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (list, processing) = (items(conn, "cdr").await, items(conn, "cdr:processing").await);
        if list.is_empty() && processing.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "left: list {list:?}, processing {processing:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The CDRs pushed with 2xx, by (callId, party).
fn pushed(receiver: &TestReceiver) -> Vec<((String, String), Value)> {
    let ok = receiver.received().into_iter().filter(|r| r.answered == 200);
    let key = |cdr: &Value| (cdr["callId"].as_str().unwrap_or("").to_string(), cdr["party"].to_string());
    ok.map(|r| r.json()).map(|cdr| (key(&cdr), cdr)).collect()
}

#[tokio::test]
async fn mod_cti_legs_are_delivered_as_the_exact_canonical_cdrs_and_removed() {
    let (redis, receiver, dir) =
        (RedisServer::start().await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, &redis).await;
    let mut conn = redis.connect().await;
    lpush(&mut conn, "cdr", &[a_leg().to_string(), b_leg().to_string()]).await;
    receiver.wait_for_successes(2, WAIT).await;
    drained(&mut conn).await;
    let pushes = pushed(&receiver);
    let cdr = |party: &str| pushes.iter().find(|(k, _)| k.1 == format!("\"{party}\"")).map(|(_, c)| c.clone());
    assert_eq!(
        cdr("CALLER").expect("the a-leg's CDR"),
        json!({
            "callId": A_LEG, "serviceType": 100, "callerNumber": "1001", "calleeNumber": "1002",
            "startTime": 1701388806500_i64, "endTime": 1701389106900_i64, "duration": 300, "party": "CALLER",
            "accountId": "acme", "beginCallTime": 1701388800120_i64, "ringTime": 1701388802250_i64,
            "disposition": "ANSWERED", "hangupCause": 16, "sipCode": 200, "releaseDirection": "CALLER",
            "extra": {
                "uuid": A_LEG, "direction": "inbound", "originator": "", "bridge_uuid": B_LEG, "account": "1001",
                "call_source": "dialplan", "source_name": "1001", "callee_id_number": "1002",
                "destination_number": "1002", "hangup_cause": "NORMAL_CLEARING",
                "sip_hangup_disposition": "recv_bye", "rtp_last_audio_codec_string": "PCMA",
                "record_filename": "/var/lib/freeswitch/recordings/a.wav"
            }
        })
    );
    assert_eq!(
        cdr("CALLEE").expect("the b-leg's CDR"),
        json!({
            "callId": A_LEG, "serviceType": 100, "callerNumber": "1001", "calleeNumber": "1002",
            "startTime": 1701388806000_i64, "endTime": 1701389106000_i64, "duration": 300, "party": "CALLEE",
            "accountId": "tenant-b", "beginCallTime": 1701388801000_i64, "ringTime": 1701388802000_i64,
            "disposition": "ANSWERED", "hangupCause": 16, "sipCode": 200, "releaseDirection": "CALLER",
            "extra": {
                "uuid": B_LEG, "direction": "outbound", "originator": A_LEG, "bridge_uuid": A_LEG,
                "account": "1002", "call_source": "dialplan", "source_name": "1001",
                "destination_number": "1002", "hangup_cause": "NORMAL_CLEARING", "sip_hangup_disposition": "send_bye"
            }
        })
    );
    let report = source(&app).await;
    assert_eq!((report["name"].as_str(), report["state"].as_str()), (Some("redis"), Some("connected")), "{report}");
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(2), Some(0)), "{report}");
}

#[tokio::test]
async fn an_item_leaves_the_processing_list_only_after_its_cdr_is_durable() {
    let (redis, receiver, dir) =
        (RedisServer::start().await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, &redis).await;
    let mut conn = redis.connect().await;
    lpush(&mut conn, "cdr", &[leg("warm-up")]).await;
    receiver.wait_for_successes(1, WAIT).await;
    drained(&mut conn).await;
    let db = dir.path().join("cdr.db");
    let Some(immutable) = Immutable::set(vec![db.clone(), db.with_extension("db-wal")]) else {
        eprintln!("SKIPPED: `chattr +i` is not available or not permitted here");
        return;
    };
    let held = leg("held");
    lpush(&mut conn, "cdr", std::slice::from_ref(&held)).await;
    eventually(WAIT, "the source reporting that it cannot store", || async {
        let report = source(&app).await;
        report["error"].as_str().is_some_and(|e| e.starts_with("cannot store CDRs")).then_some(())
    })
    .await;
    assert_eq!(
        items(&mut conn, "cdr:processing").await,
        std::slice::from_ref(&held),
        "taken, not removed: the store failed"
    );
    assert!(items(&mut conn, "cdr").await.is_empty());
    assert_eq!(app.get_json("/readyz").await.0, 503);
    drop(immutable);
    drained(&mut conn).await;
    let pushes = receiver.wait_for_successes(2, WAIT).await;
    assert!(pushes.iter().any(|p| p.json()["callId"] == "held"), "stored once the outbox could write");
    eventually(WAIT, "connected again", || async { (source(&app).await["state"] == "connected").then_some(()) }).await;
}

#[tokio::test]
async fn the_processing_list_is_re_driven_at_start_and_a_re_sent_item_is_pushed_once() {
    let (redis, receiver, dir) =
        (RedisServer::start().await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let mut conn = redis.connect().await;
    let first = app(dir.path(), &receiver, &redis).await;
    lpush(&mut conn, "cdr", &[leg("stored")]).await;
    receiver.wait_for_successes(1, WAIT).await;
    drained(&mut conn).await;
    first.stop().await.expect("a clean stop");
    // A crash between BLMOVE and LREM leaves items in the processing list: one whose CDR was
    // stored (LREM never came), two that were not.
    let left = [leg("stored"), leg("left-1"), leg("left-2")];
    redis::cmd("RPUSH").arg("cdr:processing").arg(&left).query_async::<()>(&mut conn).await.unwrap();
    lpush(&mut conn, "cdr", &[leg("new")]).await;
    let second = app(dir.path(), &receiver, &redis).await;
    drained(&mut conn).await;
    receiver.wait_for_successes(4, WAIT).await;
    let report = eventually(WAIT, "the figures", || async {
        let report = source(&second).await;
        (report["accepted"] == 3 && report["duplicates"] == 1).then_some(report)
    })
    .await;
    assert_eq!(report["state"], "connected", "{report}");
    let ids: Vec<String> = pushed(&receiver).into_iter().map(|(k, _)| k.0).collect();
    assert_eq!(ids.len(), 4, "the stored one is pushed once: {ids:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4, "{ids:?}");
}

#[tokio::test]
async fn a_bad_item_becomes_a_reject_and_leaves_the_processing_list() {
    let (redis, receiver, dir) =
        (RedisServer::start().await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, &redis).await;
    let mut conn = redis.connect().await;
    let no_uuid = json!({"caller_id_number": "1001", "dial_number": "1002", "end_epoch": "1701388865"}).to_string();
    lpush(&mut conn, "cdr", &["not json".to_string(), no_uuid.clone(), leg("good")]).await;
    receiver.wait_for_successes(1, WAIT).await;
    drained(&mut conn).await;
    let (status, rejects) = app.get_json("/v1/sources/rejects?source=redis").await;
    assert_eq!(status, 200, "{rejects}");
    let mut listed: Vec<(String, String)> = rejects["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| (r["raw"].as_str().unwrap().to_string(), r["reason"].as_str().unwrap().to_string()))
        .collect();
    listed.sort();
    assert_eq!(listed.len(), 2, "{rejects}");
    assert_eq!(listed[0].0, "not json");
    assert!(listed[0].1.starts_with("not JSON"), "{listed:?}");
    assert_eq!(listed[1], (no_uuid, "uuid: missing (the leg's uuid)".to_string()));
    let report = source(&app).await;
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(1), Some(2)), "{report}");
    let metrics = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    let counted = metrics.lines().any(|l| {
        l.starts_with("voice_push_source_records_total")
            && l.contains("source=\"redis\"")
            && l.contains("outcome=\"rejected\"")
            && l.ends_with(" 2")
    });
    assert!(counted, "counted in /metrics");
    let id = rejects["items"].as_array().unwrap().iter().find(|r| r["raw"] == "not json").unwrap()["id"].clone();
    let redrive = app.client.post(format!("{}/v1/sources/rejects/{id}/redrive", app.url)).send().await.unwrap();
    assert_eq!(redrive.status(), 422, "re-parsed by the source's parser, still not JSON");
}

#[tokio::test]
async fn redis_killed_and_restarted_reads_as_error_then_connected_and_loses_nothing() {
    let (mut redis, receiver, dir) =
        (RedisServer::start_persistent().await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, &redis).await;
    eventually(WAIT, "/readyz 200", || async { (app.get_json("/readyz").await.0 == 200).then_some(()) }).await;
    let mut conn = redis.connect().await;
    let before: Vec<String> = (0..2000).map(|i| leg(&format!("before-{i}"))).collect();
    lpush(&mut conn, "cdr", &before).await;
    // Killed while cdr-pusher is taking them: some stored, some between BLMOVE and LREM,
    // some still in the list (the append-only file keeps both lists).
    while redis.llen("cdr").await == before.len() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    redis.kill();
    eventually(WAIT, "the source in error", || async { source(&app).await["error"].as_str().map(String::from) }).await;
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("a source is failing")), "{ready}");
    assert!(ready["sources"]["redis"].is_string(), "{ready}");
    redis.restart().await;
    eventually(WAIT, "connected again", || async { (source(&app).await["state"] == "connected").then_some(()) }).await;
    eventually(WAIT, "/readyz 200 again", || async { (app.get_json("/readyz").await.0 == 200).then_some(()) }).await;
    let mut conn = redis.connect().await;
    let after: Vec<String> = (0..100).map(|i| leg(&format!("after-{i}"))).collect();
    lpush(&mut conn, "cdr", &after).await;
    drained(&mut conn).await;
    receiver.wait_for_successes(2100, Duration::from_secs(60)).await;
    let ids: Vec<String> = pushed(&receiver).into_iter().map(|(k, _)| k.0).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (2100, 2100), "every CDR pushed once");
}

#[tokio::test]
async fn a_published_record_comes_through_the_channel_and_one_also_listed_is_pushed_once() {
    let (redis, receiver, dir) =
        (RedisServer::start().await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app_with(dir.path(), &receiver, &redis, json!({"channel": "cdr"})).await;
    let mut conn = redis.connect().await;
    eventually(WAIT, "cdr-pusher subscribed to the channel", || {
        let mut conn = conn.clone();
        async move {
            let numsub: (String, u64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg("cdr").query_async(&mut conn).await.ok()?;
            (numsub.1 == 1).then_some(())
        }
    })
    .await;
    let publisher = conn.clone();
    let publish = |item: String| {
        let mut conn = publisher.clone();
        async move { redis::cmd("PUBLISH").arg("cdr").arg(item).query_async::<u64>(&mut conn).await.expect("PUBLISH") }
    };
    assert_eq!(publish(leg("published")).await, 1, "one subscriber got it");
    receiver.wait_for_successes(1, WAIT).await;
    // mod_cti configured with both a list and a channel sends each record both ways.
    lpush(&mut conn, "cdr", &[leg("both")]).await;
    publish(leg("both")).await;
    drained(&mut conn).await;
    eventually(WAIT, "one stored, one duplicate", || async {
        let report = source(&app).await;
        (report["accepted"] == 2 && report["duplicates"] == 1).then_some(())
    })
    .await;
    let ids: Vec<String> = pushed(&receiver).into_iter().map(|(k, _)| k.0).collect();
    let expected = ["published".to_string(), "both".to_string()];
    assert_eq!(ids.iter().collect::<HashSet<_>>(), expected.iter().collect::<HashSet<_>>(), "{ids:?}");
    assert_eq!(ids.len(), 2, "pushed once each: {ids:?}");
}
