//! The load generator of the bench: request bodies (CDRs and status events with unique call
//! ids) and a closed-loop driver (N clients posting back to back); the paced driver is in
//! [`super::paced`].
//!
//! The same driver posts to the trivial sinks and to the pushers, so the sink figures are
//! the loopback limit of this generator on this machine.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

/// Builds the body of request number `i` (0-based).
pub type BodyFn = Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

/// Status names in the order a bench call goes through them.
pub const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];

/// Most error answers kept verbatim.
const MAX_SAMPLES: usize = 3;

/// One CDR in the seed shape of the SPEC, with call id `prefix` + `n`.
pub fn cdr_json(prefix: &str, n: u64) -> String {
    format!(
        r#"{{"callId":"{prefix}{n}","serviceType":100,"callerNumber":"1380000001","calleeNumber":"02188888888","startTime":1701388800000,"endTime":1701389100000,"duration":300,"userData":"test-data"}}"#
    )
}

/// A JSON array of `count` CDRs with call ids `prefix` + `first..first+count`.
pub fn cdr_array(prefix: &str, first: u64, count: u64) -> Vec<u8> {
    let items: Vec<String> = (first..first + count).map(|n| cdr_json(prefix, n)).collect();
    format!("[{}]", items.join(",")).into_bytes()
}

/// A JSON array of the 4 status events of each of `calls` calls (ids `prefix` +
/// `first..first+calls`), call after call, each call's events in order.
pub fn status_array(prefix: &str, first: u64, calls: u64, base_ms: i64) -> Vec<u8> {
    let mut items = Vec::with_capacity((calls * 4) as usize);
    for n in first..first + calls {
        for (i, status) in STATUSES.iter().enumerate() {
            let ts = base_ms + (n as i64) * 10 + i as i64;
            items.push(format!(r#"{{"callId":"{prefix}{n}","serviceType":100,"status":"{status}","timestamp":{ts}}}"#));
        }
    }
    format!("[{}]", items.join(",")).into_bytes()
}

/// The event id (a UUID) as a number; `None` if it is not 32 hex digits with dashes.
pub fn parse_id(id: &str) -> Option<u128> {
    let mut value: u128 = 0;
    let mut digits = 0;
    for c in id.bytes().filter(|c| *c != b'-') {
        value = (value << 4) | u128::from((c as char).to_digit(16)?);
        digits += 1;
    }
    (digits == 32).then_some(value)
}

#[derive(Deserialize)]
struct AcceptedBody<'a> {
    #[serde(borrow)]
    accepted: Vec<AcceptedItem<'a>>,
}

#[derive(Deserialize)]
struct AcceptedItem<'a> {
    #[serde(rename = "eventId")]
    event_id: &'a str,
    #[serde(default)]
    duplicate: bool,
}

/// Parses a 202 body; returns the new event ids (pushed into `ids`) and the duplicates.
pub(super) fn parse_accepted(body: &[u8], ids: &mut Vec<u128>) -> Result<u64, String> {
    let parsed: AcceptedBody<'_> = serde_json::from_slice(body).map_err(|e| format!("unparsable 2xx body: {e}"))?;
    let mut duplicates = 0;
    for item in parsed.accepted {
        if item.duplicate {
            duplicates += 1;
        } else {
            ids.push(parse_id(item.event_id).ok_or_else(|| format!("eventId {:?} is not a UUID", item.event_id))?);
        }
    }
    Ok(duplicates)
}

/// An HTTP client for load: pooled connections, no Nagle, a generous timeout.
pub fn client(pool: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the load client")
}

/// A closed-loop load: `concurrency` clients post `requests` bodies back to back.
#[derive(Clone)]
pub struct Load {
    /// Endpoint URL, or several separated by spaces (replicas of one pusher), taken in turn.
    pub url: String,
    /// Requests in total.
    pub requests: u64,
    /// Events in each request (1 for single posts).
    pub events_per_request: u64,
    /// Clients posting at once.
    pub concurrency: usize,
    /// Stop starting requests after this long.
    pub time_limit: Duration,
    /// Body of request `i`.
    pub body: BodyFn,
    /// Parse 2xx bodies as the ingest API's `{"accepted":[...]}` and keep the event ids.
    pub parse: bool,
}

/// What a load achieved.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests answered 2xx.
    pub ok_requests: u64,
    /// Events in requests answered 2xx.
    pub ok_events: u64,
    /// New event ids from the answers (when parsing).
    pub ids: Vec<u128>,
    /// Items answered `"duplicate":true`.
    pub duplicates: u64,
    /// Requests answered 4xx.
    pub rejected: u64,
    /// Requests answered 5xx, timed out or failed in transport.
    pub errors: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// The first few failures, verbatim.
    pub samples: Vec<String>,
}

impl LoadResult {
    /// Events answered 2xx per second.
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.ok_events, self.elapsed)
    }

    /// Requests answered 2xx per second.
    pub fn requests_per_sec(&self) -> f64 {
        per_sec(self.ok_requests, self.elapsed)
    }

    fn merge(&mut self, other: LoadResult) {
        self.ok_requests += other.ok_requests;
        self.ok_events += other.ok_events;
        self.ids.extend(other.ids);
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.errors += other.errors;
        for s in other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

/// `count` per second over `elapsed` (0 when nothing elapsed).
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Runs a closed-loop load with `client` and returns what it achieved.
pub async fn run(client: &reqwest::Client, load: Load) -> LoadResult {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let load = Arc::new(load);
    let workers: Vec<_> = (0..load.concurrency.max(1))
        .map(|_| tokio::spawn(worker(client.clone(), load.clone(), next.clone(), started)))
        .collect();
    let mut total = LoadResult::default();
    for w in workers {
        match w.await {
            Ok(r) => total.merge(r),
            Err(e) => total.samples.push(format!("load worker failed: {e}")),
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn worker(client: reqwest::Client, load: Arc<Load>, next: Arc<AtomicU64>, started: Instant) -> LoadResult {
    let mut result = LoadResult::default();
    loop {
        let i = next.fetch_add(1, Relaxed);
        if i >= load.requests || started.elapsed() >= load.time_limit {
            return result;
        }
        let body = (load.body)(i);
        let urls = load.url.split(' ').collect::<Vec<_>>();
        match post(&client, urls[i as usize % urls.len()], body).await {
            Ok(answer) if answer.status.is_success() => {
                result.ok_requests += 1;
                result.ok_events += load.events_per_request;
                if load.parse {
                    match parse_accepted(&answer.body, &mut result.ids) {
                        Ok(d) => result.duplicates += d,
                        Err(e) => note_error(&mut result, e),
                    }
                }
            }
            Ok(answer) if answer.status.is_client_error() => {
                result.rejected += 1;
                sample(&mut result.samples, answer.describe());
            }
            Ok(answer) => note_error(&mut result, answer.describe()),
            Err(e) => note_error(&mut result, e),
        }
    }
}

fn note_error(result: &mut LoadResult, text: String) {
    result.errors += 1;
    sample(&mut result.samples, text);
}

/// Keeps `text` if fewer than a few samples are kept.
pub(super) fn sample(samples: &mut Vec<String>, text: String) {
    if samples.len() < MAX_SAMPLES {
        samples.push(text.chars().take(300).collect());
    }
}

/// An answer: status and body.
pub(super) struct Answer {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Status and body, for error samples.
    pub fn describe(&self) -> String {
        format!("HTTP {} {}", self.status.as_u16(), String::from_utf8_lossy(&self.body))
    }
}

/// POSTs a JSON body and reads the whole answer.
pub(super) async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<Answer, String> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
    Ok(Answer { status, body: body.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_uuids() {
        assert_eq!(parse_id("00000000-0000-7000-8000-00000000000f"), Some(0x7000_8000_0000_0000_000f));
        assert_eq!(parse_id("not-a-uuid"), None);
        assert_eq!(parse_id("0000"), None);
    }

    #[test]
    fn bodies_are_json() {
        let cdrs: serde_json::Value = serde_json::from_slice(&cdr_array("p", 5, 3)).unwrap();
        assert_eq!(cdrs[2]["callId"], "p7");
        let statuses: serde_json::Value = serde_json::from_slice(&status_array("s", 0, 2, 1_700_000_000_000)).unwrap();
        assert_eq!(statuses.as_array().unwrap().len(), 8);
        assert_eq!(statuses[5]["status"], "RINGING");
        assert_eq!(statuses[5]["callId"], "s1");
    }

    #[test]
    fn accepted_answers_yield_ids_and_duplicates() {
        let mut ids = Vec::new();
        let body = br#"{"accepted":[{"callId":"a","eventId":"00000000-0000-7000-8000-000000000001","duplicate":false},{"callId":"b","eventId":"00000000-0000-7000-8000-000000000002","duplicate":true}]}"#;
        assert_eq!(parse_accepted(body, &mut ids), Ok(1));
        assert_eq!(ids.len(), 1);
    }
}
