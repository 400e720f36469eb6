//! The `callsim` binary itself: `generate` output, `calls` summary table, and `receive`
//! printing its summary and exiting 0 on SIGTERM.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sink::{Answer, Sink};
use common::spec::{validate_cdr, validate_status};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_callsim");

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn generate_is_valid_and_reproducible() {
    let args = ["generate", "--count", "50", "--seed", "9", "--start-ms", "1767225600000"];
    let (ok, first) = run(&args);
    assert!(ok);
    assert_eq!(first, run(&args).1, "same seed, same output");
    let lines: Vec<Value> = first.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() > 150);
    for v in &lines {
        let errs = if v.get("status").is_some() { validate_status(v) } else { validate_cdr(v) };
        assert!(errs.is_empty(), "{v}: {errs:?}");
    }
    let (_, cdrs) = run(&["generate", "--count", "5", "--kind", "cdr", "--seed", "1"]);
    assert!(cdrs.lines().all(|l| l.contains("\"endTime\"")));
    assert!(!run(&["generate", "--service-mix", "300=1"]).0, "bad mix refused");
}

#[tokio::test]
async fn calls_prints_the_summary_table() {
    let sink = Sink::start(Answer::Accept, Answer::Accept).await;
    let url = sink.url();
    let args = [
        "calls",
        "--status-url",
        &url,
        "--cdr-url",
        &url,
        "--count",
        "4",
        "--rate",
        "50",
        "--speed",
        "5000",
        "--seed",
        "3",
        "--quiet",
    ];
    let out = tokio::process::Command::new(BIN).args(args).output().await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("calls: 4 started"), "{text}");
    for row in ["status events", "CDRs", "total"] {
        assert!(text.contains(row), "{text}");
    }
    let total: Vec<&str> = text.lines().find(|l| l.starts_with("total")).unwrap().split_whitespace().collect();
    let posted = sink.received().len().to_string();
    assert_eq!(total[1..3], [posted.as_str(), posted.as_str()], "sent and accepted");
}

/// Waits (bounded) until the child exits.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn receive_prints_a_summary_and_exits_0_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["receive", "--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let body = r#"{"callId":"c1","serviceType":100,"status":"DIALING","timestamp":1767225600000,"sequence":0}"#;
    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.is_none() && Instant::now() < deadline {
        let sent = client.post(format!("http://{listen}/status")).header("webhook-id", "e1").body(body).send().await;
        match sent {
            Ok(r) => answered = Some(r.status().as_u16()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(answered, Some(200));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(stdout.contains("status c1 #0 DIALING id=e1"), "{stdout}");
    assert!(stdout.contains("receiver summary"), "{stdout}");
    let pushes = stdout.lines().find(|l| l.starts_with("pushes")).unwrap();
    assert!(pushes.ends_with(" 1"), "{pushes}");
}
