//! The compiled `cdr-pusher` with the Grandstream UCM source, killed with SIGKILL while a UCM
//! sends records to its TCP listener (issue 13, point 5). The UCM is played as its real-time
//! output behaves: one record per connection; a record whose connection the listener closed
//! in order is delivered, one whose connection was reset or refused stays in its buffer and
//! is sent again once the listener is back. After the restart every record is pushed, each
//! as one event: none lost, none doubled.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use nix::sys::signal::Signal;
use push_core::{
    testing::{eventually, write_config, Program, TestReceiver},
    Service,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const EXE: &str = env!("CARGO_BIN_EXE_cdr-pusher");
const RECORDS: usize = 300;
const SENDERS: usize = 4;

/// Record `i` as the UCM's JSON output writes it: every value a string.
fn record(i: usize) -> String {
    json!({
        "AcctId": i.to_string(), "accountcode": "", "src": "1001", "dst": "2002",
        "start": "2026-01-26 12:00:00", "answer": "2026-01-26 12:00:03", "end": "2026-01-26 12:01:03",
        "duration": "63", "billsec": "60", "disposition": "ANSWERED", "uniqueid": format!("1769500000.{i}"),
        "userfield": "Outbound", "session": format!("1769500000{i}-1001")
    })
    .to_string()
}

fn call_id(i: usize) -> String {
    format!("1769500000.{i}-{i}")
}

/// Offers one record as the UCM does; true when the listener closed the connection in order.
async fn offer(addr: &str, record: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else { return false };
    if stream.write_all(record.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return false;
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut Vec::new())).await;
    matches!(closed, Ok(Ok(0)))
}

/// The program with `sources.ucm` listening on a port of its own choosing, and that port.
async fn start(dir: &std::path::Path, receiver_url: &str) -> (Program, String) {
    let config = write_config(dir, receiver_url);
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str("sources:\n  ucm:\n    tcp_listen: \"127.0.0.1:0\"\n");
    std::fs::write(&config, yaml).unwrap();
    let program = Program::start(EXE, Service::Cdr, &config, &[]);
    let sources: Value = reqwest::get(format!("{}/v1/sources", program.url)).await.unwrap().json().await.unwrap();
    let address = sources["sources"][0]["address"].as_str().expect("the listener's address");
    let address = address.trim_start_matches("tcp://").to_string();
    (program, address)
}

#[tokio::test]
async fn sigkill_while_a_ucm_sends_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // First run: pushes go nowhere (nothing listens there), so every record stays pending.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (program, addr) = start(dir.path(), &format!("http://{}", nowhere.local_addr().unwrap())).await;
    // One record half sent when the kill comes: read by the listener, not whole, not stored.
    let held_record = record(RECORDS);
    let mut held = TcpStream::connect(&addr).await.unwrap();
    held.write_all(&held_record.as_bytes()[..held_record.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // read by the listener by then
    let next = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let buffered = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (next, delivered, buffered, addr) = (next.clone(), delivered.clone(), buffered.clone(), addr.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= RECORDS {
                        break;
                    }
                    if offer(&addr, &record(i)).await {
                        delivered.fetch_add(1, Ordering::SeqCst);
                    } else {
                        buffered.lock().unwrap().push(i);
                    }
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(30), "a third of the records delivered", || async {
        (delivered.load(Ordering::SeqCst) >= RECORDS / 3).then_some(())
    })
    .await;
    program.signal(Signal::SIGKILL);
    drop(program);
    for sender in senders {
        sender.await.unwrap();
    }
    let cut = held.read_to_end(&mut Vec::new()).await.map_err(|e| e.kind());
    assert_eq!(cut, Err(std::io::ErrorKind::ConnectionReset), "a record not stored is not taken for delivered");
    let mut buffered = buffered.lock().unwrap().clone();
    assert!(!buffered.is_empty(), "the kill came mid-stream");
    assert_eq!(delivered.load(Ordering::SeqCst) + buffered.len(), RECORDS);
    buffered.push(RECORDS);

    // Second run: the UCM empties its buffer; everything is pushed.
    let receiver = TestReceiver::start().await;
    let (program, addr) = start(dir.path(), &receiver.url()).await;
    for &i in &buffered {
        assert!(offer(&addr, &record(i)).await, "record {i} taken after the restart");
    }
    let pushes = eventually(Duration::from_secs(60), "every record pushed", || async {
        let pushes: Vec<Value> = receiver.received().iter().filter(|r| r.answered == 200).map(|r| r.json()).collect();
        let calls: HashSet<&str> = pushes.iter().filter_map(|p| p["callId"].as_str()).collect();
        (calls.len() == RECORDS + 1).then(|| receiver.received())
    })
    .await;
    let mut events: HashMap<String, HashSet<String>> = HashMap::new();
    for push in &pushes {
        let id = push.header("webhook-id").unwrap().to_string();
        events.entry(push.json()["callId"].as_str().unwrap().to_string()).or_default().insert(id);
    }
    let want: HashSet<String> = (0..=RECORDS).map(call_id).collect();
    assert_eq!(events.keys().cloned().collect::<HashSet<_>>(), want, "none lost");
    assert!(events.values().all(|ids| ids.len() == 1), "each record stored as one event, pushed as one");
    drop(program);
}
