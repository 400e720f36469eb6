//! The compiled `status-pusher`: crash safety with per-call order, and graceful stop.

use std::{collections::HashMap, time::Duration};

use nix::sys::signal::Signal;
use push_core::{
    testing::{status_event, write_config, Program, TestReceiver},
    Service,
};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_status-pusher");
const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];

#[tokio::test]
async fn sigkill_then_restart_delivers_every_call_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = write_config(dir.path(), &format!("http://{nowhere}"));
    let program = Program::start(EXE, Service::Status, &config, &[]);
    let client = reqwest::Client::new();
    for call in 0..30 {
        let events: Vec<Value> = STATUSES
            .iter()
            .enumerate()
            .map(|(i, s)| status_event(&format!("c{call}"), s, 1_701_388_800_000 + i as i64))
            .collect();
        let r = client.post(format!("{}/v1/status-events", program.url)).json(&events).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    program.signal(Signal::SIGKILL);
    drop(program);

    let receiver = TestReceiver::start().await;
    let config = write_config(dir.path(), &receiver.url());
    let mut program = Program::start(EXE, Service::Status, &config, &[]);
    let pushes = receiver.wait_for_successes(120, Duration::from_secs(30)).await;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for p in &pushes {
        let body = p.json();
        seen.entry(body["callId"].as_str().unwrap().into()).or_default().push(body["sequence"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|s| s == &[0, 1, 2, 3]), "{seen:?}");

    program.signal(Signal::SIGTERM);
    assert!(program.wait_exit(Duration::from_secs(15)).success(), "{}", program.output());
}

#[tokio::test]
async fn sighup_reloads_the_subscribers_and_a_broken_file_leaves_the_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (TestReceiver::start().await, TestReceiver::start().await);
    let config = write_config(dir.path(), &first.url());
    let program = Program::start(EXE, Service::Status, &config, &[]);
    let client = reqwest::Client::new();
    let post = |call: &str| {
        let events: Vec<Value> =
            STATUSES.iter().enumerate().map(|(i, s)| status_event(call, s, 1_701_388_800_000 + i as i64)).collect();
        client.post(format!("{}/v1/status-events", program.url)).json(&events).send()
    };
    assert_eq!(post("before").await.unwrap().status(), 202);
    first.wait_for_successes(4, Duration::from_secs(10)).await;

    // A broken file: refused, logged with its key; the running subscribers stay.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("service_types: [100, 200]", "service_types: [300]")).unwrap();
    program.signal(Signal::SIGHUP);
    push_core::testing::eventually(Duration::from_secs(10), "the refusal logged", || async {
        program.output().contains("subscribers[0].service_types").then_some(())
    })
    .await;
    assert_eq!(post("refused").await.unwrap().status(), 202);
    first.wait_for_successes(8, Duration::from_secs(10)).await;

    // The subscriber's URL changes: the next call goes to the new one.
    std::fs::write(&config, good.replace(&first.url(), &second.url())).unwrap();
    program.signal(Signal::SIGHUP);
    push_core::testing::eventually(Duration::from_secs(10), "the reload logged", || async {
        program.output().contains("configuration reloaded").then_some(())
    })
    .await;
    assert_eq!(post("after").await.unwrap().status(), 202);
    let got = second.wait_for_successes(4, Duration::from_secs(10)).await;
    assert!(got.iter().all(|r| r.json()["callId"] == "after"), "only the call after the reload");
    assert_eq!(first.arrivals(), 8, "nothing more for the old URL");
}
