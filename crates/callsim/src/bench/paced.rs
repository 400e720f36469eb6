//! The paced (open-loop) driver of the latency phase: single CDRs at a steady rate from several
//! senders, each ticking on its own tokio interval and posting without waiting for earlier
//! answers, so a slow answer does not lower the rate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::load::{cdr_json, parse_accepted, post, sample};

/// Each sender ticks at most this many times per second.
const PER_SENDER_RATE: f64 = 100.0;
/// Most posts awaiting an answer, all senders together; beyond it the senders wait.
const MAX_OUTSTANDING: usize = 512;

/// A steady single-CDR load at `rate` events/s for `duration`.
#[derive(Clone, Debug)]
pub struct Paced {
    /// Endpoint URL.
    pub url: String,
    /// Events per second, all senders together.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Call-id prefix (unique per step).
    pub prefix: String,
}

/// One event of a paced load answered 202.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    /// Its event id.
    pub id: u128,
    /// When its post was started.
    pub sent: Instant,
    /// When its 202 was read.
    pub acked: Instant,
}

/// What a paced load achieved: when each event was posted and its 202 read.
#[derive(Debug, Default)]
pub struct PacedResult {
    /// The events answered 202.
    pub acks: Vec<Ack>,
    /// Posts not answered 2xx.
    pub failures: u64,
    /// The first few failures.
    pub samples: Vec<String>,
    /// From the first tick to the last answer.
    pub elapsed: Duration,
}

/// Runs a paced load: ceil(rate/100) senders, each ticking every senders/rate seconds.
pub async fn run_paced(client: &reqwest::Client, paced: Paced) -> PacedResult {
    let senders = (paced.rate / PER_SENDER_RATE).ceil().max(1.0) as u64;
    let period = Duration::from_secs_f64(senders as f64 / paced.rate.max(0.001));
    let shared = Arc::new(Shared {
        client: client.clone(),
        paced,
        counter: AtomicU64::new(0),
        outstanding: Arc::new(Semaphore::new(MAX_OUTSTANDING)),
        out: Mutex::new(PacedResult::default()),
    });
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for s in 0..senders {
        let first = started + period.mul_f64(s as f64 / senders as f64);
        tasks.spawn(send(shared.clone(), first, period, started));
    }
    while tasks.join_next().await.is_some() {}
    let mut result = std::mem::take(&mut *shared.out.lock().expect("paced lock"));
    result.elapsed = started.elapsed();
    result
}

/// What the senders share.
struct Shared {
    client: reqwest::Client,
    paced: Paced,
    counter: AtomicU64,
    outstanding: Arc<Semaphore>,
    out: Mutex<PacedResult>,
}

/// One sender: a post per tick, each on its own task; returns when all its posts answered.
async fn send(shared: Arc<Shared>, first: Instant, period: Duration, started: Instant) {
    let mut ticks = tokio::time::interval_at(first.into(), period);
    let mut posts = JoinSet::new();
    loop {
        ticks.tick().await;
        if started.elapsed() >= shared.paced.duration {
            break;
        }
        let Ok(permit) = shared.outstanding.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        posts.spawn(async move {
            post_one(&shared).await;
            drop(permit);
        });
    }
    while posts.join_next().await.is_some() {}
}

/// Posts one CDR and records its answer.
async fn post_one(shared: &Shared) {
    let n = shared.counter.fetch_add(1, Relaxed);
    let body = cdr_json(&shared.paced.prefix, n).into_bytes();
    let sent = Instant::now();
    let answer = post(&shared.client, &shared.paced.url, body).await;
    let acked = Instant::now();
    let mut ids = Vec::with_capacity(1);
    let failure = match answer {
        Ok(a) if a.status.is_success() => parse_accepted(&a.body, &mut ids).err(),
        Ok(a) => Some(a.describe()),
        Err(e) => Some(e),
    };
    let mut out = shared.out.lock().expect("paced lock");
    out.acks.extend(ids.into_iter().map(|id| Ack { id, sent, acked }));
    if let Some(f) = failure {
        out.failures += 1;
        sample(&mut out.samples, f);
    }
}
