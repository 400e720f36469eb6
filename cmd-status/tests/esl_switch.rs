//! The compiled `status-pusher` against `callsim switch --esl` and `--ami` (issue 16, point
//! 5): callsim plays FreeSWITCH's event socket or Asterisk's manager interface (its `serve`,
//! in-process, on a real TCP listener), status-pusher connects to it as `sources.esl` /
//! `sources.ami` configures, and every generated call's statuses reach the subscriber once
//! each, in the order the switch sent them.

use std::{collections::HashMap, io::Write as _, time::Duration};

use callsim::{
    generator::{CallGenerator, GenConfig},
    model::{Party, Payload},
    native::switch::{serve, Protocol},
};
use push_core::{
    testing::{write_config, Program, TestReceiver},
    Service,
};

const EXE: &str = env!("CARGO_BIN_EXE_status-pusher");
const CALLS: u64 = 300;
const SEED: u64 = 16;

fn config() -> GenConfig {
    GenConfig { callback_share: 0.3, call_id_prefix: "esl-".into(), ..GenConfig::default() }
}

/// What the subscriber should get for each call: (party, status) in order, each once (ESL
/// names a leg's party: a one-leg call's statuses are the CALLER's).
fn expected() -> HashMap<String, Vec<(String, String)>> {
    let mut generator = CallGenerator::new(config(), SEED);
    let mut calls = HashMap::new();
    for _ in 0..CALLS {
        let call = generator.next_call(0);
        let mut statuses: Vec<(String, String)> = Vec::new();
        for post in &call.posts {
            if let Payload::Status(s) = &post.payload {
                let party = if s.party == Some(Party::Callee) { "CALLEE" } else { "CALLER" };
                let key = (party.to_string(), s.status.as_str().to_string());
                if !statuses.contains(&key) {
                    statuses.push(key);
                }
            }
        }
        calls.insert(call.call_id, statuses);
    }
    calls
}

#[tokio::test]
async fn status_pusher_takes_every_call_of_callsim_switch_in_order() {
    let protocol = Protocol::Esl { password: "ClueCon".into() };
    takes_every_call(protocol, |port| format!("esl: {{host: 127.0.0.1, port: {port}, password: ClueCon}}")).await;
}

#[tokio::test]
async fn status_pusher_takes_every_call_of_callsim_switch_ami_in_order() {
    let protocol = Protocol::Ami { username: "voice".into(), secret: "push".into() };
    let source = |port| format!("ami: {{host: 127.0.0.1, port: {port}, username: voice, secret: push}}");
    takes_every_call(protocol, source).await;
}

/// callsim's switch speaking `protocol`, status-pusher configured with `source(port)` under
/// `sources:`; every call's statuses once each, in order.
async fn takes_every_call(protocol: Protocol, source: impl Fn(u16) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let switch = tokio::spawn(async move {
        let mut generator = CallGenerator::new(config(), SEED);
        serve(&listener, &protocol, &mut generator, CALLS, 0.0).await
    });
    let config = write_config(dir.path(), &receiver.url());
    let mut file = std::fs::OpenOptions::new().append(true).open(&config).unwrap();
    writeln!(file, "sources:\n  {}", source(port)).unwrap();
    let program = Program::start(EXE, Service::Status, &config, &[]);
    let expected = expected();
    let total: usize = expected.values().map(Vec::len).sum();
    let pushes = receiver.wait_for_successes(total, Duration::from_secs(60)).await;
    let served = tokio::time::timeout(Duration::from_secs(20), switch).await.unwrap().unwrap().unwrap();
    assert_eq!(served.calls, CALLS);
    let mut got: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for push in &pushes {
        let body = push.json();
        let entry = got.entry(body["callId"].as_str().unwrap().to_string()).or_default();
        entry.push((body["party"].as_str().unwrap().to_string(), body["status"].as_str().unwrap().to_string()));
    }
    assert_eq!(got.len(), expected.len());
    for (call, statuses) in &expected {
        assert_eq!(got.get(call), Some(statuses), "call {call}: every status once, in order");
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // nothing more is on its way
    assert_eq!(receiver.received().iter().filter(|r| r.answered == 200).count(), total);
    drop(program);
}
