//! The receiver on 127.0.0.1:0: signed, unsigned, duplicate and out-of-order pushes,
//! failure and delay injection, counters and the JSONL file.

mod common;

use std::time::{Duration, Instant};

use callsim::calls::now_ms;
use callsim::receive::{Receiver, ReceiverConfig, ReceiverHandle};
use callsim::signature::WebhookSecret;
use serde_json::{json, Value};

const SECRET: &str = "whsec_dm9pY2UtcHVzaCB0ZXN0IGtleSAwMTIzNDU2Nzg5ISE=";

async fn start(config: ReceiverConfig) -> ReceiverHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Receiver::start(config, listener).await.unwrap()
}

fn status_body(call: &str, seq: u64, status: &str) -> String {
    json!({"callId": call, "serviceType": 100, "status": status, "timestamp": 1767225600000i64 + seq as i64, "sequence": seq})
        .to_string()
}

/// Posts `body` like a pusher would; signs it when `secret` is given. Returns the status.
async fn push(url: &str, id: &str, body: &str, secret: Option<&WebhookSecret>, attempt: u32) -> u16 {
    let ts = now_ms() / 1000;
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("x-push-attempt", attempt.to_string())
        .body(body.to_string());
    if let Some(secret) = secret {
        request = request.header("webhook-signature", secret.sign(id, ts, body.as_bytes()));
    }
    request.send().await.unwrap().status().as_u16()
}

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn checks_signatures_duplicates_and_order_and_writes_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pushes.jsonl");
    let config = ReceiverConfig { secret: Some(SECRET.into()), out: Some(out.clone()), ..Default::default() };
    let rx = start(config).await;
    let key = WebhookSecret::parse(SECRET).unwrap();
    let status = rx.url("/status");
    assert_eq!(push(&status, "e0", &status_body("c1", 0, "DIALING"), Some(&key), 1).await, 200);
    assert_eq!(push(&status, "e1", &status_body("c1", 1, "RINGING"), Some(&key), 1).await, 200);
    assert_eq!(push(&status, "e1", &status_body("c1", 1, "RINGING"), Some(&key), 2).await, 200, "duplicate still 2xx");
    assert_eq!(push(&status, "e3", &status_body("c1", 3, "HANGUP"), Some(&key), 1).await, 200, "gap");
    assert_eq!(push(&status, "e2", &status_body("c1", 2, "ANSWERED"), Some(&key), 1).await, 200, "backwards");
    assert_eq!(push(&status, "u1", &status_body("c2", 0, "DIALING"), None, 1).await, 401, "unsigned");
    let other = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(push(&status, "b1", &status_body("c2", 0, "DIALING"), Some(&other), 1).await, 401, "wrong key");
    let cdr = json!({"callId": "c1", "serviceType": 100, "disposition": "ANSWERED", "duration": 42}).to_string();
    assert_eq!(push(&rx.url("/cdr"), "k1", &cdr, Some(&key), 1).await, 200);
    assert_eq!(push(&rx.url("/cdr"), "m1", "not json", Some(&key), 1).await, 400);
    let get = reqwest::get(rx.url("/status")).await.unwrap();
    assert_eq!(get.status().as_u16(), 405);

    assert_counters(&rx.shutdown().await);
    assert_jsonl(&read_lines(&out));
}

/// Counters after the pushes of the test above.
fn assert_counters(s: &callsim::receive::ReceiverStats) {
    assert_eq!((s.pushes, s.status, s.cdr), (9, 7, 2));
    assert_eq!(s.answered_2xx, 6);
    assert_eq!(s.duplicates, 1);
    assert_eq!((s.order_gaps, s.order_backwards, s.order_violations()), (1, 1, 2));
    assert_eq!((s.signatures_ok, s.bad_signatures, s.unsigned), (7, 2, 1));
    assert_eq!((s.malformed, s.failures_injected), (1, 0));
}

/// JSONL lines after the pushes of the test above.
fn assert_jsonl(lines: &[Value]) {
    assert_eq!(lines.len(), 9);
    assert_eq!(lines[0]["webhookId"], "e0");
    assert_eq!(lines[0]["kind"], "status");
    assert_eq!(lines[0]["signature"], "ok");
    assert_eq!(lines[0]["answered"], 200);
    assert_eq!(lines[0]["body"]["status"], "DIALING");
    assert_eq!(lines[2]["duplicate"], true);
    assert_eq!(lines[2]["attempt"], 2);
    assert_eq!(lines[3]["orderViolation"], "gap: expected 2, got 3");
    assert!(lines[4]["orderViolation"].as_str().unwrap().starts_with("backwards"));
    assert_eq!(lines[5]["signature"], "bad");
    assert_eq!(lines[5]["answered"], 401);
    assert_eq!(lines[7]["kind"], "cdr");
    assert_eq!(lines[8]["body"], "not json");
}

#[tokio::test]
async fn without_a_secret_signatures_are_not_checked() {
    let rx = start(ReceiverConfig::default()).await;
    let key = WebhookSecret::parse(SECRET).unwrap();
    let body = status_body("c9", 0, "DIALING");
    assert_eq!(push(&rx.url("/status"), "a", &body, Some(&key), 1).await, 200);
    assert_eq!(push(&rx.url("/status"), "b", &status_body("c9", 1, "HANGUP"), None, 1).await, 200);
    let s = rx.stats();
    assert_eq!((s.signatures_ok, s.bad_signatures, s.unsigned), (0, 0, 1));
    assert_eq!(s.order_violations(), 0);
    rx.shutdown().await;
}

#[tokio::test]
async fn injects_failures_with_the_configured_status() {
    let config = ReceiverConfig { fail_rate: 1.0, fail_status: 503, ..Default::default() };
    let rx = start(config).await;
    for i in 0..5 {
        let body = status_body("c1", i, "DIALING");
        assert_eq!(push(&rx.url("/status"), &format!("e{i}"), &body, None, 1).await, 503);
    }
    let s = rx.stats();
    assert_eq!((s.pushes, s.failures_injected, s.answered_2xx), (5, 5, 0));
    assert_eq!(s.order_gaps, 0, "gaps are excused after injected failures");
    rx.shutdown().await;
}

#[tokio::test]
async fn fail_rate_is_a_probability_and_seeded() {
    let run = |seed| async move {
        let config = ReceiverConfig { fail_rate: 0.3, seed: Some(seed), ..Default::default() };
        let rx = start(config).await;
        let mut answers = Vec::new();
        for i in 0..200 {
            let body = json!({"callId": format!("c{i}"), "endTime": 1}).to_string();
            answers.push(push(&rx.url("/hook"), &format!("e{i}"), &body, None, 1).await);
        }
        let s = rx.shutdown().await;
        assert_eq!(s.failures_injected + s.answered_2xx, 200);
        assert_eq!(s.cdr, 200, "classified by body");
        assert!((30..=90).contains(&s.failures_injected), "{}", s.failures_injected);
        answers
    };
    let a = run(5).await;
    assert_eq!(a, run(5).await, "same seed, same failures");
    assert!(a.iter().all(|s| *s == 200 || *s == 500));
}

#[tokio::test]
async fn delay_holds_the_answer() {
    let config = ReceiverConfig { delay: Duration::from_millis(150), ..Default::default() };
    let rx = start(config).await;
    let started = Instant::now();
    assert_eq!(push(&rx.url("/cdr"), "d1", "{}", None, 1).await, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    rx.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    for config in [
        ReceiverConfig { fail_rate: 1.5, ..Default::default() },
        ReceiverConfig { fail_status: 42, ..Default::default() },
        ReceiverConfig { secret: Some("whsec_***".into()), ..Default::default() },
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(Receiver::start(config, listener).await.is_err());
    }
}
