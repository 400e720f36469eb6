//! The bench's subscriber: answers 200 at once and records, per webhook-id, when its first
//! attempt arrived and how many arrived; on the status path it also checks that every call's
//! sequence goes strictly 0, 1, 2, 3 with the statuses in order.
//!
//! Much lighter than [`crate::receive::Receiver`] (no printing, no files, no signatures), so
//! that it is not what limits the end-to-end figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use serde::Deserialize;

use super::load::{parse_id, STATUSES};
use super::sink::Server;

/// First arrival and attempt count of one webhook-id.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    first: Instant,
    count: u32,
}

/// What the handlers share.
#[derive(Default)]
struct Shared {
    arrivals: Mutex<HashMap<u128, Arrival>>,
    /// Last sequence delivered per callId (status path).
    calls: Mutex<HashMap<Box<str>, u64>>,
    unique: AtomicU64,
    order_violations: AtomicU64,
    malformed: AtomicU64,
}

/// A running bench receiver.
pub struct BenchReceiver {
    server: Server,
    shared: Arc<Shared>,
}

/// The counts a receiver saw, and when the last expected event first arrived.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Expected ids that arrived.
    pub found: u64,
    /// Expected ids that never arrived.
    pub lost: u64,
    /// Extra attempts of ids that already arrived (redeliveries).
    pub duplicates: u64,
    /// Ids that arrived but were not expected.
    pub unexpected: u64,
    /// Status events out of per-call order.
    pub order_violations: u64,
    /// Pushes without a UUID webhook-id, or status bodies without callId/sequence/status.
    pub malformed: u64,
    /// The latest first arrival among the expected ids.
    pub last_first: Option<Instant>,
}

impl BenchReceiver {
    /// Serves on 127.0.0.1:`port` (0 = any), sized for about `expected` distinct ids.
    pub async fn start(port: u16, expected: usize) -> anyhow::Result<BenchReceiver> {
        let shared = Arc::new(Shared { arrivals: Mutex::new(HashMap::with_capacity(expected)), ..Shared::default() });
        let router = Router::new().fallback(receive).with_state(shared.clone());
        let server = Server::bind(router, port).await?;
        Ok(BenchReceiver { server, shared })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// Distinct webhook-ids received so far.
    pub fn unique(&self) -> u64 {
        self.shared.unique.load(Relaxed)
    }

    /// Waits until `expected` distinct ids arrived, giving up when none arrived for `stall`
    /// or after `limit` in all; true if all arrived.
    pub async fn wait_for(&self, expected: u64, stall: Duration, limit: Duration) -> bool {
        let started = Instant::now();
        let (mut seen, mut progress_at) = (self.unique(), Instant::now());
        loop {
            let now = self.unique();
            if now >= expected {
                return true;
            }
            if now != seen {
                (seen, progress_at) = (now, Instant::now());
            }
            if progress_at.elapsed() >= stall || started.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// First-arrival instants of `ids`, in the same order (`None` = never arrived).
    pub fn first_arrivals(&self, ids: &[u128]) -> Vec<Option<Instant>> {
        let arrivals = self.shared.arrivals.lock().expect("arrivals lock");
        ids.iter().map(|id| arrivals.get(id).map(|a| a.first)).collect()
    }

    /// Counts against the ids the pusher accepted.
    pub fn tally(&self, expected: &[u128]) -> Tally {
        let arrivals = self.shared.arrivals.lock().expect("arrivals lock");
        let mut tally = Tally {
            order_violations: self.shared.order_violations.load(Relaxed),
            malformed: self.shared.malformed.load(Relaxed),
            ..Tally::default()
        };
        for id in expected {
            match arrivals.get(id) {
                Some(a) => {
                    tally.found += 1;
                    tally.last_first = tally.last_first.max(Some(a.first));
                }
                None => tally.lost += 1,
            }
        }
        tally.duplicates = arrivals.values().map(|a| u64::from(a.count - 1)).sum();
        tally.unexpected = (arrivals.len() as u64).saturating_sub(tally.found);
        tally
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

#[derive(Deserialize)]
struct StatusBody<'a> {
    #[serde(rename = "callId", borrow)]
    call_id: &'a str,
    sequence: u64,
    status: &'a str,
}

async fn receive(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()).and_then(parse_id) else {
        shared.malformed.fetch_add(1, Relaxed);
        return StatusCode::OK;
    };
    let first = {
        let mut arrivals = shared.arrivals.lock().expect("arrivals lock");
        let entry = arrivals.entry(id).or_insert(Arrival { first: at, count: 0 });
        entry.count += 1;
        entry.count == 1
    };
    if first {
        shared.unique.fetch_add(1, Relaxed);
        if uri.path().ends_with("/status") {
            check_order(&shared, &body);
        }
    }
    StatusCode::OK
}

/// Counts a violation unless this event's sequence follows the call's last one and its
/// status is the one bench calls have at that position.
fn check_order(shared: &Shared, body: &[u8]) {
    let Ok(event) = serde_json::from_slice::<StatusBody<'_>>(body) else {
        shared.malformed.fetch_add(1, Relaxed);
        return;
    };
    let in_place = STATUSES.get(event.sequence as usize) == Some(&event.status);
    let mut calls = shared.calls.lock().expect("calls lock");
    let follows = match calls.get_mut(event.call_id) {
        Some(last) => {
            let ok = event.sequence == *last + 1;
            *last = (*last).max(event.sequence);
            ok
        }
        None => {
            calls.insert(event.call_id.into(), event.sequence);
            event.sequence == 0
        }
    };
    if !(follows && in_place) {
        shared.order_violations.fetch_add(1, Relaxed);
    }
}
