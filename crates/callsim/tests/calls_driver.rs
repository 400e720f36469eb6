//! The `calls` driver against an in-test ingest sink on 127.0.0.1:0: per-call order, CDR
//! after HANGUP, time compression, summary counts, rejections, errors and stopping.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use callsim::calls::{run_calls, CallsDriver, CallsOptions, RunLimit};
use callsim::generator::GenConfig;
use common::poll_until;
use common::sink::{Answer, Received, Sink};
use common::spec::{validate_cdr, validate_status};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SPEED: f64 = 5_000.0;

fn options(sink: &Sink, count: u64) -> CallsOptions {
    CallsOptions {
        rate: 100.0,
        limit: RunLimit::Count(count),
        speed: SPEED,
        seed: 7,
        generator: GenConfig {
            callback_share: 0.5,
            accounts: vec!["acc1".into()],
            call_id_prefix: "drv-".into(),
            ..GenConfig::default()
        },
        ..CallsOptions::new(Some(sink.url()), Some(sink.url()))
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Groups received posts by (callId, party), keeping arrival order.
fn by_leg(received: &[Received]) -> HashMap<(String, String), Vec<Received>> {
    let mut legs: HashMap<(String, String), Vec<Received>> = HashMap::new();
    for r in received {
        let key = (text(&r.body, "callId").to_string(), text(&r.body, "party").to_string());
        legs.entry(key).or_default().push(r.clone());
    }
    legs
}

/// Each leg: statuses in order, then its CDR, nothing after; its HANGUP is not posted
/// before its compressed moment, measured from the call's first post (`call_first`).
fn check_leg(posts: &[Received], call_first: &Received) {
    let names: Vec<&str> =
        posts.iter().map(|r| if r.path == "/v1/cdrs" { "CDR" } else { text(&r.body, "status") }).collect();
    let rank = |n: &str| ["DIALING", "RINGING", "ANSWERED", "HANGUP", "CDR"].iter().position(|x| *x == n);
    let ranks: Vec<usize> = names.iter().map(|n| rank(n).unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    assert_eq!(&names[names.len() - 2..], ["HANGUP", "CDR"], "{names:?}");
    let hangup = &posts[posts.len() - 2];
    let sim_ms = hangup.body["timestamp"].as_i64().unwrap() - call_first.body["timestamp"].as_i64().unwrap();
    let wall = hangup.at.duration_since(call_first.at);
    let min_wall = Duration::from_secs_f64(sim_ms as f64 / 1000.0 / SPEED);
    // Slack for the latency of the call's first post, which starts the clock.
    assert!(wall + Duration::from_millis(20) >= min_wall, "{wall:?} < {min_wall:?}");
}

#[tokio::test]
async fn posts_every_call_in_order_and_counts_match() {
    let sink = Sink::start(Answer::Accept, Answer::Accept).await;
    let opts = CallsOptions { token: Some("s3cret".into()), ..options(&sink, 40) };
    let summary = run_calls(opts).await.unwrap();
    let received = sink.received();
    assert_eq!(summary.calls, 40);
    assert_eq!(summary.calls_finished, 40);
    let statuses = received.iter().filter(|r| r.path == "/v1/status-events").count() as u64;
    let cdrs = received.iter().filter(|r| r.path == "/v1/cdrs").count() as u64;
    assert_eq!(summary.status.sent, statuses);
    assert_eq!(summary.status.accepted, statuses);
    assert_eq!(summary.cdr.sent, cdrs);
    assert_eq!(summary.cdr.accepted, cdrs);
    assert_eq!(summary.total().errors + summary.total().rejected + summary.total().duplicates, 0);
    assert_eq!(summary.scenarios.values().sum::<u64>(), 40);
    assert!(cdrs >= 40 && statuses >= 80);
    for r in &received {
        assert_eq!(r.authorization.as_deref(), Some("Bearer s3cret"));
        let errs = if r.path == "/v1/cdrs" { validate_cdr(&r.body) } else { validate_status(&r.body) };
        assert!(errs.is_empty(), "{}: {errs:?}", r.body);
    }
    let legs = by_leg(&received);
    assert!(legs.keys().any(|(_, party)| party == "CALLEE"), "two-leg calls present");
    for ((call, _), posts) in &legs {
        let first = received.iter().find(|r| text(&r.body, "callId") == call).unwrap();
        check_leg(posts, first);
    }
    assert!(summary.elapsed >= Duration::from_secs_f64(39.0 / 100.0));
}

#[tokio::test]
async fn two_runs_with_the_same_seed_and_start_send_identical_records() {
    let bodies = |received: Vec<Received>| {
        let mut bodies: Vec<String> = received.iter().map(|r| format!("{} {}", r.path, r.body)).collect();
        bodies.sort(); // posts of concurrent calls may interleave differently
        bodies
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sink = Sink::start(Answer::Accept, Answer::Accept).await;
        run_calls(CallsOptions { start_ms: Some(1_767_225_600_000), ..options(&sink, 20) }).await.unwrap();
        runs.push(bodies(sink.received()));
    }
    assert!(!runs[0].is_empty());
    assert_eq!(runs[0], runs[1], "the simulated clock starts at --start, not at the wall clock");
    let sink = Sink::start(Answer::Accept, Answer::Accept).await;
    run_calls(CallsOptions { start_ms: Some(1_767_225_700_000), ..options(&sink, 20) }).await.unwrap();
    assert_ne!(bodies(sink.received()), runs[0], "another start, other times");
}

#[tokio::test]
async fn speed_compresses_call_time() {
    let sink = Sink::start(Answer::Accept, Answer::Accept).await;
    let speed = 100.0;
    let opts = CallsOptions {
        speed,
        generator: GenConfig {
            scenario_mix: callsim::mix::parse_scenario_mix("no_answer=1").unwrap(),
            service_mix: callsim::mix::parse_service_mix("200=1").unwrap(),
            ..GenConfig::default()
        },
        ..options(&sink, 3)
    };
    run_calls(opts).await.unwrap();
    for ((call, _), posts) in by_leg(&sink.received()) {
        let (first, hangup) = (&posts[0], &posts[posts.len() - 2]);
        assert_eq!(text(&hangup.body, "status"), "HANGUP", "{call}");
        let sim_ms = hangup.body["timestamp"].as_i64().unwrap() - first.body["timestamp"].as_i64().unwrap();
        let expected = Duration::from_secs_f64(sim_ms as f64 / 1000.0 / speed);
        let wall = hangup.at.duration_since(first.at);
        assert!(wall + Duration::from_millis(20) >= expected, "{wall:?} vs {expected:?}");
        assert!(wall <= expected + Duration::from_millis(500), "{wall:?} vs {expected:?}");
    }
}

#[tokio::test]
async fn duplicates_and_rejections_are_counted() {
    let sink = Sink::start(Answer::Duplicate, Answer::Reject).await;
    let summary = run_calls(options(&sink, 10)).await.unwrap();
    assert!(summary.status.sent > 0 && summary.cdr.sent > 0);
    assert_eq!(summary.status.duplicates, summary.status.sent);
    assert_eq!(summary.status.accepted, 0);
    assert_eq!(summary.cdr.rejected, summary.cdr.sent);
    assert!(summary.samples.iter().any(|s| s.contains("HTTP 422")), "{:?}", summary.samples);
    let text = callsim::report::calls_report(&summary);
    assert!(text.contains("HTTP 422"), "{text}");
}

#[tokio::test]
async fn server_and_transport_errors_are_errors() {
    let sink = Sink::start(Answer::Fail, Answer::Accept).await;
    // A port that was just free: nothing listens there any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let opts = CallsOptions { cdr_url: Some(dead_url), timeout: Duration::from_secs(2), ..options(&sink, 5) };
    let summary = run_calls(opts).await.unwrap();
    assert_eq!(summary.status.errors, summary.status.sent);
    assert_eq!(summary.cdr.errors, summary.cdr.sent);
    assert!(summary.cdr.sent >= 5);
}

#[tokio::test]
async fn an_omitted_url_skips_that_pusher() {
    let sink = Sink::start(Answer::Accept, Answer::Accept).await;
    let opts = CallsOptions { cdr_url: None, ..options(&sink, 5) };
    let summary = run_calls(opts).await.unwrap();
    assert_eq!(summary.cdr.sent, 0);
    assert!(sink.received().iter().all(|r| r.path == "/v1/status-events"));
    assert_eq!(summary.status.accepted, summary.status.sent);
}

#[tokio::test]
async fn stopping_finishes_calls_in_flight_at_once() {
    let sink = Sink::start(Answer::Accept, Answer::Accept).await;
    // Real time: calls would last seconds to minutes.
    let opts = CallsOptions { speed: 1.0, rate: 50.0, limit: RunLimit::UntilStopped, ..options(&sink, 0) };
    let driver = CallsDriver::new(opts).unwrap();
    let stats = driver.stats();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { driver.run(stop).await }
    });
    let started =
        poll_until(Duration::from_secs(5), || stats.calls_started.load(std::sync::atomic::Ordering::Relaxed) >= 5)
            .await;
    assert!(started);
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), run).await.expect("stops promptly").unwrap();
    assert_eq!(summary.calls, summary.calls_finished);
    for posts in by_leg(&sink.received()).values() {
        let last = posts.last().unwrap();
        assert_eq!(last.path, "/v1/cdrs", "every leg ends with its CDR");
    }
}

#[tokio::test]
async fn duration_limit_stops_starting_calls() {
    let sink = Sink::start(Answer::Accept, Answer::Accept).await;
    let opts = CallsOptions { rate: 20.0, limit: RunLimit::Duration(Duration::from_millis(300)), ..options(&sink, 0) };
    let summary = run_calls(opts).await.unwrap();
    assert!((5..=7).contains(&summary.calls), "{}", summary.calls);
    assert_eq!(summary.calls, summary.calls_finished);
}

#[test]
fn invalid_options_are_refused() {
    let bad = [
        CallsOptions { rate: 0.0, ..CallsOptions::new(Some("http://x".into()), None) },
        CallsOptions { speed: -1.0, ..CallsOptions::new(Some("http://x".into()), None) },
        CallsOptions::new(None, None),
    ];
    for opts in bad {
        assert!(CallsDriver::new(opts).is_err());
    }
}
