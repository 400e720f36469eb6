//! The compiled `cdr-pusher` reading a Redis list (mod_cti) is killed with SIGKILL while it
//! is taking items: after the restart every CDR is stored exactly once (one event per call)
//! and delivered, and both lists are empty. Items between BLMOVE and LREM at the kill are
//! re-driven from the processing list; those already stored are recognized as duplicates.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use push_core::{
    testing::{write_config, Program, RedisServer, TestReceiver},
    Service,
};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_cdr-pusher");
const CALLS: usize = 3000;

/// The test config with `sources.redis` on `redis`.
fn config(dir: &Path, receiver_url: &str, redis: &RedisServer) -> std::path::PathBuf {
    let path = write_config(dir, receiver_url);
    let mut yaml = std::fs::read_to_string(&path).unwrap();
    yaml.push_str(&format!(
        "sources:\n  redis: {{url: \"{}\", list: cdr, processing_list: \"cdr:processing\"}}\n",
        redis.url()
    ));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// mod_cti's a-leg of call `i`.
fn item(i: usize) -> String {
    json!({
        "uuid": format!("kill-{i}"), "originator": "", "caller_id_number": "1001", "dial_number": "1002",
        "start_epoch": "1701388800", "answer_epoch": "1701388805", "end_epoch": "1701388865",
        "hangup_cause": "NORMAL_CLEARING", "hangup_cause_q850": "16"
    })
    .to_string()
}

#[tokio::test]
async fn sigkill_while_taking_items_loses_and_doubles_nothing() {
    let (redis, dir) = (RedisServer::start().await, tempfile::tempdir().unwrap());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    let program = Program::start(EXE, Service::Cdr, &config(dir.path(), &dead_url, &redis), &[]);
    let items: Vec<String> = (0..CALLS).map(item).collect();
    for chunk in items.chunks(500) {
        redis.lpush("cdr", chunk).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.llen("cdr").await > CALLS / 2 {
        assert!(Instant::now() < deadline, "cdr-pusher never took an item");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    program.signal(Signal::SIGKILL);
    drop(program);
    let left = redis.llen("cdr").await + redis.llen("cdr:processing").await;
    eprintln!("killed with {left} items not yet removed from the lists");

    let receiver = TestReceiver::start().await;
    let _program = Program::start(EXE, Service::Cdr, &config(dir.path(), &receiver.url(), &redis), &[]);
    let pushes = receiver.wait_for_successes(CALLS, Duration::from_secs(60)).await;
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for push in pushes.iter().filter(|p| p.answered == 200) {
        let call = push.json()["callId"].as_str().unwrap().to_string();
        ids.entry(call).or_default().insert(push.header("webhook-id").unwrap().to_string());
    }
    assert_eq!(ids.len(), CALLS, "every call delivered");
    assert!(ids.values().all(|events| events.len() == 1), "each call stored once (one event id)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.llen("cdr").await + redis.llen("cdr:processing").await > 0 {
        assert!(Instant::now() < deadline, "every item removed from both lists");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
