//! Three compiled `status-pusher` replicas on one PostgreSQL database take statuses under
//! load; one is killed with SIGKILL (issue 15, point 4). Every acknowledged status is
//! delivered, none out of its call's order: the killed replica's leased deliveries are
//! attempted by the others once its leases run out (`delivery.lease: 3s` here), and a status
//! whose POST the dead replica never answered is sent again to another replica, as a carrier
//! would.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use nix::sys::signal::Signal;
use push_core::{
    testing::{status_event, write_config, PostgresServer, Program, TestReceiver},
    Service,
};

const EXE: &str = env!("CARGO_BIN_EXE_status-pusher");
const CALLS: usize = 400;
const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];
const T0: i64 = 1_800_000_000_000;

/// Posts call `i`'s four statuses in turn, each to the next replica that answers; returns
/// how many were acknowledged (202).
async fn post_call(client: &reqwest::Client, urls: &[String], i: usize) -> usize {
    let mut acked = 0;
    for (n, status) in STATUSES.iter().enumerate() {
        let body = status_event(&format!("kill-{i}"), status, T0 + n as i64 * 1000);
        for attempt in 0..urls.len() * 3 {
            let url = &urls[(i + n + attempt) % urls.len()];
            let sent = client.post(format!("{url}/v1/status-events")).json(&body).send().await;
            match sent.map(|r| r.status().as_u16()) {
                Ok(202) => {
                    acked += 1;
                    break;
                }
                Ok(other) => panic!("kill-{i} {status}: answered {other}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await, // that replica is gone
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_three_replicas_loses_nothing_acknowledged_and_keeps_every_calls_order() {
    let postgres = PostgresServer::start().await;
    let database = postgres.database().await;
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|_| (200, Duration::from_millis(5)));
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let env = [("VOICE_PUSH__STATUS__DATABASE", database.as_str()), ("VOICE_PUSH__DELIVERY__LEASE", "3s")];
    let mut programs: Vec<Program> = dirs
        .iter()
        .map(|d| Program::start(EXE, Service::Status, &write_config(d.path(), &receiver.url()), &env))
        .collect();
    let urls: Arc<Vec<String>> = Arc::new(programs.iter().map(|p| p.url.clone()).collect());

    let client = reqwest::Client::new();
    let (done, acked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..CALLS {
        let (client, urls, done, acked, gate) =
            (client.clone(), urls.clone(), done.clone(), acked.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            acked.fetch_add(post_call(&client, &urls, i).await, Ordering::Relaxed);
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    push_core::testing::eventually(Duration::from_secs(60), "half the calls posted", || async {
        (done.load(Ordering::Relaxed) >= CALLS / 2).then_some(())
    })
    .await;
    programs[0].signal(Signal::SIGKILL);
    programs[0].wait_exit(Duration::from_secs(5));
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(acked.load(Ordering::Relaxed), CALLS * 4, "every status acknowledged by some replica");

    // 0 acknowledged events lost: every (call, sequence) delivered with a 2xx.
    let pushes = push_core::testing::eventually(Duration::from_secs(60), "every status delivered", || async {
        let all = receiver.received();
        let delivered: std::collections::HashSet<(String, i64)> = all
            .iter()
            .filter(|p| p.answered == 200)
            .map(|p| {
                (p.json()["callId"].as_str().unwrap_or("").to_string(), p.json()["sequence"].as_i64().unwrap_or(-1))
            })
            .collect();
        (delivered.len() >= CALLS * 4).then_some(all)
    })
    .await;
    let mut per_call: HashMap<String, Vec<i64>> = HashMap::new();
    for p in pushes.iter().filter(|p| p.answered == 200) {
        let body = p.json();
        per_call.entry(body["callId"].as_str().unwrap().into()).or_default().push(body["sequence"].as_i64().unwrap());
    }
    let mut lost = 0;
    let mut violations = 0;
    for i in 0..CALLS {
        let seqs = per_call.get(&format!("kill-{i}")).cloned().unwrap_or_default();
        lost += (0..4).filter(|s| !seqs.contains(s)).count();
        // Arrival order: a repeat of the status in flight at the kill may come again, never
        // one before a status already delivered.
        violations += seqs.windows(2).filter(|w| w[1] < w[0]).count();
    }
    let duplicates = pushes.iter().filter(|p| p.answered == 200).count() - CALLS * 4;
    eprintln!("{} pushes, {duplicates} repeated after the kill", pushes.len());
    assert_eq!((lost, violations), (0, 0), "no acknowledged status lost, none out of order");
    for p in programs.iter().skip(1) {
        p.signal(Signal::SIGTERM);
    }
}
