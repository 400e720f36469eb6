//! The UCM's TCP way in: real connections to the listener.

use std::time::{Duration, Instant};

use push_core::testing::{eventually, TestReceiver};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::*;

#[tokio::test]
async fn a_json_record_over_tcp_is_durable_before_the_connection_closes() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    send(&addr, fixture_body().as_bytes()).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "stored when the listener closed");
    assert_eq!(pushed(&receiver, FIXTURE_CALL_ID).await, [fixture_cdr(0)]);
}

#[tokio::test]
async fn a_csv_row_quoted_with_single_quotes_maps_like_the_json() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) =
        spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.account_id = Some("tenant-1".into()))).await;
    let mut record = fixture();
    record["caller_name"] = json!("O'Brien, Pat");
    record["recordfiles"] = json!("auto-1769422021-231****797-331.wav@");
    send(&addr, format!("{}\r\n", csv_row(&record)).as_bytes()).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1);
    let mut want = fixture_cdr(0);
    want["accountId"] = json!("tenant-1");
    let extra = want["extra"].as_object_mut().unwrap();
    for not_a_column in ["sn", "new_src"] {
        extra.remove(not_a_column);
    }
    extra.insert("caller_name".into(), json!("O'Brien, Pat"));
    extra.insert("recordfiles".into(), json!("auto-1769422021-231****797-331.wav@"));
    assert_eq!(pushed(&receiver, FIXTURE_CALL_ID).await, [want]);

    // An accountcode of the record wins over the configured account; an answered segment
    // is connected at its answer time.
    let mut answered = fixture();
    for (field, value) in [
        ("AcctId", "3031"),
        ("accountcode", "acct-77"),
        ("disposition", "ANSWERED"),
        ("answer", "2026-01-26 12:07:10"),
        ("end", "2026-01-26 12:08:40"),
        ("billsec", "90"),
    ] {
        answered[field] = json!(value);
    }
    send(&addr, csv_row(&answered).as_bytes()).await;
    let cdr = pushed(&receiver, "1769422021.5655-3031").await.remove(0);
    assert_eq!(cdr["accountId"], "acct-77");
    assert_eq!(cdr["disposition"], "ANSWERED");
    assert_eq!(
        (cdr["startTime"].as_i64(), cdr["endTime"].as_i64()),
        (Some(1_769_429_230_000), Some(1_769_429_320_000))
    );
    assert_eq!(cdr["duration"], 90);
}

#[tokio::test]
async fn the_segments_of_one_call_each_keep_their_cdr_and_share_the_session() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    // A ring group rings two extensions from the same channel (same uniqueid), then the
    // call is transferred (a segment of another channel); two segments come on one
    // connection, one per line, as a UCM emptying its buffer sends them.
    let ring_a = segment("4001", "1769422021.5655", "PJSIP/111-00000a50", "RINGGROUP[6400]", "NO ANSWER");
    let ring_b = segment("4002", "1769422021.5655", "PJSIP/331-00000a52", "RINGGROUP[6400]", "NO ANSWER");
    let transfer = segment("4003", "1769422030.5660", "PJSIP/222-00000a60", "TRANSFER", "BUSY");
    send(&addr, ring_a.to_string().as_bytes()).await;
    send(&addr, format!("{ring_b}\n{}\n", csv_row(&transfer)).as_bytes()).await;
    let ids = ["1769422021.5655-4001", "1769422021.5655-4002", "1769422030.5660-4003"];
    let mut cdrs = Vec::new();
    for id in ids {
        assert_eq!(deliveries_now(&app, id).await, 1, "{id} stored before its connection closed");
        cdrs.push(pushed(&receiver, id).await.remove(0));
    }
    for cdr in &cdrs {
        assert_eq!(cdr["extra"]["session"], "1769422021553915-231****797", "joined by the session");
    }
    assert_eq!(cdrs[1]["extra"]["dstchannel"], "PJSIP/331-00000a52");
    assert_eq!(cdrs[2]["disposition"], "BUSY");
    assert_eq!(cdrs[2]["extra"]["action_type"], "TRANSFER");
    let report = source_report(&app).await;
    assert_eq!((report["accepted"].as_u64(), report["duplicates"].as_u64()), (Some(3), Some(0)), "none a duplicate");
}

#[tokio::test]
async fn a_resent_record_is_a_duplicate_and_is_pushed_once() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    let body = fixture_body();
    send(&addr, body.as_bytes()).await;
    // The UCM re-sends what it thinks failed: over TCP (as CSV too) and over HTTP.
    send(&addr, body.as_bytes()).await;
    send(&addr, csv_row(&fixture()).as_bytes()).await;
    let (status, answer) = post(&app, &body).await;
    assert_eq!((status, &answer["accepted"][0]["duplicate"]), (202, &json!(true)));
    // A later record pushed shows the resends had their turn.
    let later = segment("5000", "1769422099.1", "PJSIP/115-1", "DIAL", "NO ANSWER");
    send(&addr, later.to_string().as_bytes()).await;
    pushed(&receiver, "1769422099.1-5000").await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "one delivery for the record");
    assert_eq!(pushed(&receiver, FIXTURE_CALL_ID).await.len(), 1, "pushed once");
    let report = source_report(&app).await;
    assert_eq!((report["accepted"].as_u64(), report["duplicates"].as_u64()), (Some(2), Some(3)));
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout_with_its_record_stored() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_millis(400);
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.idle_timeout = idle)).await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();
    let n = tokio::time::timeout(WAIT, silent.read(&mut [0; 16])).await.expect("closed by the listener").unwrap();
    assert_eq!(n, 0, "closed, nothing sent");
    assert!(
        opened.elapsed() >= idle - Duration::from_millis(50),
        "not before the idle timeout: {:?}",
        opened.elapsed()
    );

    // A row without its line end, the connection left open: taken when the peer goes idle.
    let mut open = TcpStream::connect(&addr).await.unwrap();
    open.write_all(csv_row(&fixture()).as_bytes()).await.unwrap();
    let n = tokio::time::timeout(WAIT, open.read(&mut [0; 16])).await.expect("closed by the listener").unwrap();
    assert_eq!(n, 0);
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "stored before the close");
}

#[tokio::test]
async fn garbage_over_tcp_is_set_aside_listed_as_a_reject_and_the_listener_goes_on() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ucm_settings(dir.path(), &receiver.url(), |_| {});
    settings.ingest.max_body_bytes = 2048;
    let (app, addr) = spawn(settings).await;
    send(&addr, b"hello, this is not a CDR\n").await;
    send(&addr, b"<cdr><src>1</src></cdr>").await;
    // Garbage first, then a good record, on one connection: the good one is stored.
    send(&addr, format!("'1','2'\n{}", fixture_body()).as_bytes()).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1);
    // An endless record: set aside with its beginning once over ingest.max_body_bytes.
    let mut endless = TcpStream::connect(&addr).await.unwrap();
    let huge = format!("{{\"src\": \"{}", "9".repeat(4096));
    let _ = endless.write_all(huge.as_bytes()).await;
    let closed = tokio::time::timeout(WAIT, endless.read_to_end(&mut Vec::new())).await;
    assert!(closed.is_ok(), "the listener closed the connection");

    let listed =
        eventually(WAIT, "four rejects", || async { Some(rejects(&app).await).filter(|r| r.len() == 4) }).await;
    let reason_of = |raw_start: &str| -> String {
        let reject = listed.iter().find(|r| r["raw"].as_str().unwrap().starts_with(raw_start)).expect(raw_start);
        assert_eq!(reject["source"], "ucm");
        reject["reason"].as_str().unwrap().to_string()
    };
    assert!(reason_of("hello").contains("2 columns"));
    assert!(reason_of("<cdr>").contains("XML"));
    assert!(reason_of("'1','2'").contains("2 columns"));
    assert!(reason_of("{\"src\": \"999").contains("larger than ingest.max_body_bytes"));
    let report = source_report(&app).await;
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(1), Some(4)));

    // Re-driving one re-parses it: still unmappable, still listed.
    let id = listed[0]["id"].as_i64().unwrap();
    let redrive = app.client.post(format!("{}/v1/sources/rejects/{id}/redrive", app.url)).send().await.unwrap();
    assert_eq!(redrive.status(), 422);
    assert_eq!(rejects(&app).await.len(), 4);
    let metrics = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"voice_push_source_records_total{source="ucm",outcome="rejected"}"#), "counted");
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_one_closes() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.idle_timeout = WAIT * 2)).await;
    let mut held = Vec::new();
    for _ in 0..push_core::sources::ucm::MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b" ").await.unwrap();
        held.push(stream);
    }
    let waiting = tokio::spawn({
        let addr = addr.clone();
        async move { send(&addr, fixture_body().as_bytes()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 0, "not served while every slot is taken");
    drop(held.pop());
    waiting.await.unwrap();
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "served once a slot was free");
}

#[tokio::test]
async fn a_peer_outside_ingest_allowed_ips_is_closed_unread() {
    let receiver = TestReceiver::start().await;
    for (allowed, stored) in [("10.0.0.0/8", 0), ("127.0.0.0/8", 1)] {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = ucm_settings(dir.path(), &receiver.url(), |_| {});
        settings.ingest.allowed_ips = vec![allowed.parse().unwrap()];
        let (app, addr) = spawn(settings).await;
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let _ = stream.write_all(fixture_body().as_bytes()).await;
        let _ = stream.shutdown().await;
        let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut Vec::new())).await;
        assert!(closed.is_ok(), "closed by the listener");
        assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, stored, "allowed_ips {allowed}");
    }
}

#[tokio::test]
async fn a_record_cut_short_by_a_stop_is_reset_not_closed_in_order() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.idle_timeout = WAIT * 2)).await;
    let mut unfinished = TcpStream::connect(&addr).await.unwrap();
    unfinished.write_all(b"{\"AcctId\": \"1\", \"src\": ").await.unwrap();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // Both are being served once a record sent after them is.
    send(&addr, fixture_body().as_bytes()).await;
    tokio::time::timeout(WAIT, app.stop()).await.expect("the listener stops").unwrap();
    let cut = unfinished.read_to_end(&mut Vec::new()).await;
    assert_eq!(cut.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset), "not taken for delivered");
    assert_eq!(silent.read(&mut [0; 8]).await.unwrap(), 0, "a connection that carried nothing closes in order");
}
