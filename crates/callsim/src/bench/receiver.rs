//! The bench's subscriber: answers 200 at once and records, per webhook-id, when its first
//! attempt arrived and how many arrived; on the status path it also checks that every call's
//! sequence goes strictly 0, 1, 2, 3 with the statuses in order.
//!
//! Started with [`BenchReceiver::start_per_subscriber`], it stands for many subscribers at
//! once: every subscriber posts the same webhook-id (the event's), so it records them per
//! subscriber, the first segment of the path (`s17` of `/s17/cdr`). That is for CDRs: the
//! status order check does not tell subscribers apart.
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

/// Arrivals by webhook-id.
type Arrivals = HashMap<u128, Arrival>;

/// What the handlers share.
#[derive(Default)]
struct Shared {
    arrivals: Mutex<Arrivals>,
    /// Arrivals per subscriber (first path segment), when started per subscriber.
    per_subscriber: Option<Mutex<HashMap<Box<str>, Arrivals>>>,
    /// Distinct ids expected per subscriber (the capacity of each map).
    capacity: usize,
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
        BenchReceiver::serve(
            port,
            Shared { arrivals: Mutex::new(HashMap::with_capacity(expected)), ..Shared::default() },
        )
        .await
    }

    /// Serves on 127.0.0.1:`port` for many subscribers that post the same ids, each under
    /// its own first path segment, about `expected` distinct ids each; see
    /// [`BenchReceiver::tallies`]. [`BenchReceiver::unique`] then counts distinct
    /// (subscriber, id) pairs.
    pub async fn start_per_subscriber(port: u16, expected: usize) -> anyhow::Result<BenchReceiver> {
        let per_subscriber = Some(Mutex::new(HashMap::new()));
        BenchReceiver::serve(port, Shared { per_subscriber, capacity: expected, ..Shared::default() }).await
    }

    async fn serve(port: u16, shared: Shared) -> anyhow::Result<BenchReceiver> {
        let shared = Arc::new(shared);
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
        Tally {
            order_violations: self.shared.order_violations.load(Relaxed),
            malformed: self.shared.malformed.load(Relaxed),
            ..tally_of(&arrivals, expected)
        }
    }

    /// Counts of each subscriber that posted anything (by first path segment) against the
    /// ids the pusher accepted, when started per subscriber; `malformed` and
    /// `order_violations` are left 0 (see [`BenchReceiver::malformed`]).
    pub fn tallies(&self, expected: &[u128]) -> HashMap<String, Tally> {
        let Some(per_subscriber) = &self.shared.per_subscriber else {
            return HashMap::new();
        };
        let per_subscriber = per_subscriber.lock().expect("arrivals lock");
        per_subscriber.iter().map(|(name, arrivals)| (name.to_string(), tally_of(arrivals, expected))).collect()
    }

    /// Pushes without a UUID webhook-id (or status bodies without their fields) so far.
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Relaxed)
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// Counts of `arrivals` against `expected` (no order or malformed counts).
fn tally_of(arrivals: &Arrivals, expected: &[u128]) -> Tally {
    let mut tally = Tally::default();
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

/// The subscriber a push at `path` came from: its first segment (`s17` of `/s17/cdr`).
fn subscriber_of(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

/// Counts an attempt of `id` arriving `at`; true if it is the id's first.
fn count_arrival(arrivals: &mut Arrivals, id: u128, at: Instant) -> bool {
    let entry = arrivals.entry(id).or_insert(Arrival { first: at, count: 0 });
    entry.count += 1;
    entry.count == 1
}

impl Shared {
    /// Records an attempt of `id` at `path` arriving `at`; true if it is the id's first (for
    /// the subscriber of `path`, when per subscriber).
    fn record(&self, path: &str, id: u128, at: Instant) -> bool {
        let Some(per_subscriber) = &self.per_subscriber else {
            return count_arrival(&mut self.arrivals.lock().expect("arrivals lock"), id, at);
        };
        let name = subscriber_of(path);
        let mut per_subscriber = per_subscriber.lock().expect("arrivals lock");
        if let Some(arrivals) = per_subscriber.get_mut(name) {
            return count_arrival(arrivals, id, at);
        }
        let arrivals = per_subscriber.entry(name.into()).or_insert_with(|| HashMap::with_capacity(self.capacity));
        count_arrival(arrivals, id, at)
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
    let first = shared.record(uri.path(), id, at);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscriber_is_the_first_path_segment() {
        assert_eq!(subscriber_of("/s17/cdr"), "s17");
        assert_eq!(subscriber_of("/cdr"), "cdr");
        assert_eq!(subscriber_of("/"), "");
    }

    async fn push(client: &reqwest::Client, url: String, id: &str) {
        let answer = client.post(url).header("webhook-id", id).body("{}").send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }

    #[tokio::test]
    async fn per_subscriber_arrivals_are_counted_apart() {
        let receiver = BenchReceiver::start_per_subscriber(0, 4).await.unwrap();
        let client = reqwest::Client::new();
        let ids = ["00000000-0000-7000-8000-000000000001", "00000000-0000-7000-8000-000000000002"];
        for (path, id) in [("/s0/cdr", ids[0]), ("/s1/cdr", ids[0]), ("/s1/cdr", ids[1]), ("/s1/cdr", ids[1])] {
            push(&client, receiver.url() + path, id).await;
        }
        assert_eq!(receiver.unique(), 3, "the same id at two subscribers is two deliveries");
        let expected: Vec<u128> = ids.iter().map(|id| parse_id(id).unwrap()).collect();
        let tallies = receiver.tallies(&expected);
        receiver.stop().await;
        assert_eq!(tallies.len(), 2);
        let (s0, s1) = (&tallies["s0"], &tallies["s1"]);
        assert_eq!((s0.found, s0.lost, s0.duplicates), (1, 1, 0));
        assert_eq!((s1.found, s1.lost, s1.duplicates), (2, 0, 1));
        assert!(s1.last_first.is_some());
    }
}
