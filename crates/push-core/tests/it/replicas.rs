//! Several replicas on one PostgreSQL database (issue 15, point 2 and 3): real programs
//! (`TestApp`) or stores sharing a database of `testing::PostgresServer`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use push_core::{
    outbox::{self, Completion, IngestItem, NextState, Replica, Store},
    schema,
    slots::Slots,
    testing::{eventually, seed_cdr, status_event, test_settings, PostgresServer, TestApp, TestReceiver},
    Service,
};
use serde_json::Value;

const T0: i64 = 1_900_000_000_000;
const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];

/// Two status-pusher replicas on `url`, delivering to `receiver`.
async fn two_replicas(url: &str, receiver: &TestReceiver) -> (TestApp, TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.status.database = url.to_string();
    let a = TestApp::spawn(Service::Status, settings.clone()).await;
    let b = TestApp::spawn(Service::Status, settings).await;
    (a, b, dir)
}

#[tokio::test]
async fn two_replicas_take_one_calls_statuses_in_turn_with_one_sequence_and_deliver_each_once_in_order() {
    let postgres = PostgresServer::start().await;
    let url = postgres.database().await;
    let receiver = TestReceiver::start().await;
    let (a, b, _dir) = two_replicas(&url, &receiver).await;
    let calls: Vec<String> = (0..20).map(|i| format!("turns-{i}")).collect();
    for (i, status) in STATUSES.iter().enumerate() {
        // Every call's statuses alternate between the replicas, all calls at once.
        let posts = calls.iter().map(|call| {
            let app = if i % 2 == 0 { &a } else { &b };
            let body = status_event(call, status, T0 + i as i64 * 1000);
            async move { app.ingest(&body).await }
        });
        for r in futures_join(posts).await {
            assert_eq!(r, 202);
        }
    }
    assert_eq!(a.ingest(&status_event("late", "DIALING", T0)).await.status(), 202);
    assert_eq!(b.ingest(&status_event("late", "HANGUP", T0 + 1_000)).await.status(), 202);
    let late = a.ingest(&status_event("late", "ANSWERED", T0 + 500)).await;
    assert_eq!(late.status(), 409, "a status after the HANGUP another replica took is refused");
    let total = calls.len() * 4 + 2;

    let pushes = receiver.wait_for_successes(total, Duration::from_secs(20)).await;
    let mut per_call: HashMap<String, Vec<i64>> = HashMap::new();
    for p in pushes.iter().filter(|p| p.answered == 200) {
        let body = p.json();
        per_call
            .entry(body["callId"].as_str().unwrap().to_string())
            .or_default()
            .push(body["sequence"].as_i64().unwrap());
    }
    for call in &calls {
        assert_eq!(per_call[call], [0, 1, 2, 3], "{call}: one sequence across replicas, delivered once, in order");
    }
    // The operations API of either replica answers with the database's truth.
    for app in [&a, &b] {
        eventually(Duration::from_secs(10), "stats of every delivery from each replica", || async {
            let (_, stats) = app.get_json("/v1/stats").await;
            (stats["subscribers"]["demo"]["delivered"] == total).then_some(())
        })
        .await;
        let (_, page) = app.get_json(&format!("/v1/deliveries?callId={}", calls[3])).await;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(4));
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Awaits every response, in order; their statuses.
async fn futures_join<F>(posts: impl Iterator<Item = F>) -> Vec<u16>
where
    F: std::future::Future<Output = reqwest::Response>,
{
    let handles: Vec<F> = posts.collect();
    let mut statuses = Vec::with_capacity(handles.len());
    for r in join_all(handles).await {
        statuses.push(r.status().as_u16());
    }
    statuses
}

async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(pinned.len());
    // Polled concurrently: each is driven while the others wait on the network.
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().map(|r| r.expect("ready")));
    out
}

/// A store of replica `id` on `url` whose claims last `lease`.
async fn replica(url: &str, id: &str, lease: Duration) -> (Arc<dyn Store>, outbox::Opened) {
    let slots = Arc::new(Slots::new(0, 0, ["a"]));
    let opened = outbox::open_replica(url, Service::Cdr, slots, Replica { id: id.into(), lease, wake: None }, false)
        .await
        .expect("open replica");
    (opened.store.clone(), opened)
}

#[tokio::test]
async fn a_lease_keeps_other_replicas_off_until_it_runs_out_and_only_its_owner_releases_it() {
    let postgres = PostgresServer::start().await;
    let url = postgres.database().await;
    let (r1, _o1) = replica(&url, "r1", Duration::from_secs(30)).await;
    let (r2, _o2) = replica(&url, "r2", Duration::from_secs(30)).await;
    let events = schema::validate_body(Service::Cdr, &seed_cdr("leased")).unwrap();
    let item = IngestItem {
        event: events.into_iter().next().unwrap().into_stored(),
        event_id: "e1".into(),
        subscribers: vec!["a".into()],
    };
    r1.ingest(vec![item], T0).await.unwrap();
    let want = || vec![("a".to_string(), 10)];
    let first = r1.cycle(Arc::new(vec![]), want(), T0).await.unwrap();
    assert_eq!(first.items.len(), 1);
    let other = r2.cycle(Arc::new(vec![]), want(), T0 + 29_999).await.unwrap();
    assert!(other.items.is_empty(), "leased by r1");
    assert_eq!(other.unfilled, [("a".to_string(), Some(T0 + 30_000))], "claimable when the lease runs out");
    r2.release_claims().await.unwrap();
    assert!(r2.cycle(Arc::new(vec![]), want(), T0 + 1).await.unwrap().items.is_empty(), "r2 cannot release r1's claim");

    let taken = r2.cycle(Arc::new(vec![]), want(), T0 + 30_000).await.unwrap();
    assert_eq!(taken.items.len(), 1, "after the lease, another replica attempts it (r1 died, say)");
    let late = Completion {
        id: first.items[0].id,
        subscriber: "a".into(),
        call_id: "leased".into(),
        attempt: 1,
        at: T0 + 31_000,
        status: Some(200),
        error: None,
        latency_ms: 1,
        next: NextState::Delivered,
    };
    r1.cycle(Arc::new(vec![late]), vec![], T0 + 31_000).await.unwrap();
    let stats = r2.stats().await.unwrap();
    assert!(stats.iter().all(|s| s.state == "pending"), "r1's late result leaves r2's claim alone: {stats:?}");
    r1.release_claims().await.unwrap();
    assert!(
        r1.cycle(Arc::new(vec![]), want(), T0 + 31_000).await.unwrap().items.is_empty(),
        "r1 released only its own claims; r2's stands"
    );
}

#[tokio::test]
async fn a_replica_wakes_on_another_replicas_commit_without_polling() {
    let postgres = PostgresServer::start().await;
    let url = postgres.database().await;
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.cdr.database = url.clone();
    // Replica B runs a delivery loop; the other one only stores (a store without a loop), so
    // B delivers only if the other's commit wakes it.
    let b = TestApp::spawn(Service::Cdr, settings).await;
    let (store, _opened) = replica(&url, "ingest-only", Duration::from_secs(30)).await;
    let events = schema::validate_body(Service::Cdr, &seed_cdr("woken")).unwrap();
    let item = IngestItem {
        event: events.into_iter().next().unwrap().into_stored(),
        event_id: "w1".into(),
        subscribers: vec!["demo".into()],
    };
    let started = std::time::Instant::now();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    store.ingest(vec![item], now).await.unwrap();
    let pushes = receiver.wait_for_successes(1, Duration::from_secs(10)).await;
    assert_eq!(pushes[0].json()["callId"], Value::from("woken"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "woken by NOTIFY, not by the idle poll: {:?}",
        started.elapsed()
    );
    b.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_and_stats_of_either_replica_show_the_databases_queue() {
    let postgres = PostgresServer::start().await;
    let url = postgres.database().await;
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.cdr.database = url.clone();
    // A subscriber id of this test's own: the metrics recorder is shared by every test of
    // the binary, and others move `demo`'s gauges.
    settings.subscribers = vec![push_core::testing::subscriber("pgq", &receiver.url())];
    let a = TestApp::spawn(Service::Cdr, settings.clone()).await;
    let b = TestApp::spawn(Service::Cdr, settings).await;
    // Another replica stores three CDRs that fall due far in the future: pending, unclaimed.
    let (store, _opened) = replica(&url, "elsewhere", Duration::from_secs(30)).await;
    let items = (0..3)
        .map(|i| {
            let event = schema::validate_body(Service::Cdr, &seed_cdr(&format!("q{i}"))).unwrap().remove(0);
            IngestItem { event: event.into_stored(), event_id: format!("q{i}"), subscribers: vec!["pgq".into()] }
        })
        .collect();
    store.ingest(items, T0 + 1_000_000_000).await.unwrap();
    for app in [&a, &b] {
        let (_, stats) = app.get_json("/v1/stats").await;
        assert_eq!(stats["subscribers"]["pgq"]["pending"], 3, "{stats}");
        let metrics = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
        let depth = metrics.lines().find(|l| l.starts_with("voice_push_queue_depth{") && l.contains("\"pgq\""));
        assert_eq!(depth.and_then(|l| l.split_whitespace().last()), Some("3"), "{metrics}");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A CI run once hung here: closing the pool waits for every connection, and the LISTEN task
/// held one. Closing must end promptly whatever the listener is doing: idle, or just woken by
/// a notification of its own replica's commit.
#[tokio::test]
async fn closing_a_replica_ends_promptly_while_its_listener_waits_or_has_just_heard() {
    let postgres = PostgresServer::start().await;
    let url = postgres.database().await;
    for round in 0..10 {
        let (store, opened) = replica(&url, &format!("closing-{round}"), Duration::from_secs(30)).await;
        if round % 2 == 1 {
            let events = schema::validate_body(Service::Cdr, &seed_cdr(&format!("close-{round}"))).unwrap();
            let item = IngestItem {
                event: events.into_iter().next().unwrap().into_stored(),
                event_id: format!("close-{round}"),
                subscribers: vec!["a".into()],
            };
            store.ingest(vec![item], T0).await.unwrap();
        }
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            store.close().await;
            drop(store);
            drop(opened.store);
            opened.task.await.unwrap();
        })
        .await;
        assert!(closed.is_ok(), "round {round}: close did not end within 10 s");
    }
}

/// A live replica's claim outlasts its lease: the loop's round trips renew it (at most once
/// per quarter lease), so another replica takes it only after its holder stopped turning.
#[tokio::test]
async fn a_live_replicas_round_trips_renew_its_claims_past_the_lease() {
    let postgres = PostgresServer::start().await;
    let url = postgres.database().await;
    let lease = Duration::from_secs(30);
    let (r1, _o1) = replica(&url, "holder", lease).await;
    let (r2, _o2) = replica(&url, "other", lease).await;
    let items: Vec<IngestItem> = ["held", "later"]
        .iter()
        .map(|call| IngestItem {
            event: schema::validate_body(Service::Cdr, &seed_cdr(call))
                .unwrap()
                .into_iter()
                .next()
                .unwrap()
                .into_stored(),
            event_id: format!("renew-{call}"),
            subscribers: vec!["a".into()],
        })
        .collect();
    r1.ingest(items, T0).await.unwrap();
    let one = || vec![("a".to_string(), 1)];
    assert_eq!(r1.cycle(Arc::new(vec![]), one(), T0).await.unwrap().items.len(), 1, "r1 holds the first");
    // r1's loop turns again 20 s later (it claims the second): past half the lease, the
    // first claim is renewed to 20 + 30 s.
    assert_eq!(r1.cycle(Arc::new(vec![]), one(), T0 + 20_000).await.unwrap().items.len(), 1);
    let want = || vec![("a".to_string(), 10)];
    let early = r2.cycle(Arc::new(vec![]), want(), T0 + 31_000).await.unwrap();
    assert!(early.items.is_empty(), "the first claim was renewed: {:?}", early.items);
    // r1 stops turning: its renewed leases run out (the second's at 50 s as well).
    let taken = r2.cycle(Arc::new(vec![]), want(), T0 + 50_000).await.unwrap();
    assert_eq!(taken.items.len(), 2, "after the renewed lease, another replica takes them");
}
