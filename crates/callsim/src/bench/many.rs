//! `many-subscribers`: cdr-pusher with `--subscribers` subscribers (`s0`, `s1`...) that all
//! point at one port, each at its own path; nothing listens there while the events are
//! posted (retry schedule `[1s]` x 50, as in `backlog`), so every event queues one delivery
//! per subscriber; then one receiver comes up on that port and the queue drains.
//!
//! Besides the drain's rate it measures how evenly the pusher serves its subscribers: when
//! each had all its events, from the receiver's start. A subscriber left unserved (or
//! hardly served) does not make the phase hang: the wait gives up after `stall` without
//! progress or after `Sizes::many_limit`, and the phase fails naming the incomplete
//! subscribers and what each received.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::backlog::{free_port, metric_sum, receiver_on};
use super::load::{self, LoadResult};
use super::phases::{arrays, load_checks, per_sec_ids, prefix, Counts, CpuMeter, ARRAY};
use super::pusher::{subscriber_id, Program, Pusher, Setup};
use super::receiver::{BenchReceiver, Tally};
use super::report::{Figure, SINK_DELIVERY};
use super::{Ctx, Phase};

/// Arrays in flight while queueing.
const CONCURRENCY: usize = 8;
/// Retries of the schedule, each after 1 s.
const RETRIES: usize = 50;
/// The phase.
const PHASE: Phase = Phase::ManySubscribers;

/// What the phase measured.
struct Measured {
    posted: LoadResult,
    /// Ingest and drain figures measured on the way (CPU, failed attempts, RSS).
    figures: Vec<Figure>,
    drain_started: Instant,
    /// How long the wait for the drain lasted.
    waited: Duration,
    tallies: HashMap<String, Tally>,
    malformed: u64,
    counts: Option<HashMap<String, Counts>>,
}

/// Runs the phase.
pub(super) async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let n = ctx.sizes.subscribers;
    let port = free_port().await?;
    let setup = Setup {
        subscriber: Some(format!("http://127.0.0.1:{port}")),
        retry: Some(vec!["1s".to_string(); RETRIES]),
        subscribers: n,
        ..Setup::default()
    };
    let (_dir, pusher) = ctx.pusher(PHASE, Program::Cdr, &setup)?;
    let m = measure(ctx, &pusher, port).await;
    pusher.stop()?;
    let m = m?;
    let names: Vec<String> = (0..n).map(subscriber_id).collect();
    let expected = m.posted.ids.len() as u64;
    let (subs, strays) = per_subscriber(&names, m.tallies, expected);
    let done: Vec<Option<Duration>> = subs.iter().map(|(_, t)| done_after(t, m.drain_started)).collect();
    let spread = Spread::of(&done, m.waited);
    figures(ctx, &m.posted, &subs, &spread, m.drain_started);
    for f in m.figures {
        ctx.figure(f);
    }
    checks(ctx, &m.posted, &subs, &strays, m.malformed, m.counts.as_ref());
    if spread.incomplete > 0 {
        let pending = m.counts.unwrap_or_default();
        let list = incomplete_list(&subs, expected, &pending);
        eprintln!("bench: many-subscribers: {} of {n} subscribers incomplete: {list}", spread.incomplete);
        ctx.note(format!(
            "many-subscribers: {} of {n} subscribers did not get all {expected} events when the wait gave up after \
             {:.1} s (pending and dead: the pusher's counts at the end): {list}",
            spread.incomplete,
            m.waited.as_secs_f64()
        ));
    }
    ctx.note(format!(
        "many-subscribers: cdr-pusher with {n} subscribers s0..s{} at one port (path /<id>/cdr), no listener while \
         queueing, retry schedule [1s] x {RETRIES}; then one receiver on that port; each subscriber's time is from \
         binding the receiver to the first 2xx answer of its last event",
        n - 1
    ));
    Ok(())
}

/// Queues the events while nothing listens on `port`, then drains them into a receiver
/// bound there that tells the subscribers apart.
async fn measure(ctx: &Ctx, pusher: &Pusher, port: u16) -> anyhow::Result<Measured> {
    let p = PHASE.name();
    let url = format!("{}{}", pusher.url, Program::Cdr.ingest_path());
    let client = load::client(CONCURRENCY)?;
    let cpu = CpuMeter::start(pusher.pid());
    let queue = arrays(url, prefix(PHASE), ctx.sizes.many_events, ARRAY, CONCURRENCY, ctx.sizes.load_limit);
    let posted = load::run(&client, queue).await;
    let mut figures = cpu.figures(PHASE, "ingest");
    if let Some(n) = metric_sum(&client, &pusher.url, "voice_push_attempts_failed_total").await {
        let what = "failed attempts during ingest (subscribers down)";
        figures.push(Figure::new(p, "many-subscribers.failed", what, n, "attempts"));
    }

    let expected = posted.ids.len();
    let receiver = receiver_on(|| BenchReceiver::start_per_subscriber(port, expected)).await?;
    let cpu = CpuMeter::start(pusher.pid());
    let drain_started = Instant::now();
    let deliveries = (expected * ctx.sizes.subscribers) as u64;
    let complete = receiver.wait_for(deliveries, ctx.sizes.stall, ctx.sizes.many_limit).await;
    let waited = drain_started.elapsed();
    figures.extend(cpu.figures(PHASE, "drain"));
    let rss = pusher.peak_rss_mib().unwrap_or(0.0);
    figures.push(Figure::new(p, "many-subscribers.rss", "pusher peak RSS (VmHWM) after the drain", rss, "MiB"));
    // Nothing more is coming when the wait gave up: one look at the pusher's counts.
    let settle_limit = if complete { Duration::from_secs(10) } else { Duration::ZERO };
    let counts = settle_all(&client, &pusher.url, settle_limit).await;
    let tallies = receiver.tallies(&posted.ids);
    let malformed = receiver.malformed();
    receiver.stop().await;
    Ok(Measured { posted, figures, drain_started, waited, tallies, malformed, counts })
}

/// The rates and the fastest and slowest subscriber.
fn figures(ctx: &mut Ctx, posted: &LoadResult, subs: &[(String, Tally)], spread: &Spread, drain_started: Instant) {
    let (p, n, events) = (PHASE.name(), subs.len(), posted.ids.len());
    let what = format!("ingest while the {n} subscribers are down ({events} events, arrays of {ARRAY})");
    ctx.figure(Figure::new(p, "many-subscribers.ingest", what, per_sec_ids(posted), "events/s"));
    let found: u64 = subs.iter().map(|(_, t)| t.found).sum();
    let last = subs.iter().filter_map(|(_, t)| t.last_first).max();
    let drain = last.map_or(0.0, |t| load::per_sec(found, t.saturating_duration_since(drain_started)));
    let what = format!("drain to {n} subscribers once the receiver is up ({found} deliveries)");
    ctx.figure(Figure::new(p, "many-subscribers.drain", what, drain, "deliveries/s").vs(SINK_DELIVERY));
    if let Some(fastest) = spread.fastest {
        let what = "first subscriber to have all its events, from the receiver's start";
        ctx.figure(Figure::new(p, "many-subscribers.fastest", what, fastest.as_secs_f64(), "s"));
    }
    let bound = match spread.incomplete {
        0 => String::new(),
        k => format!(" (lower bound: {k} never did)"),
    };
    let what = format!("last subscriber to have all its events{bound}");
    ctx.figure(Figure::new(p, "many-subscribers.slowest", what, spread.slowest.as_secs_f64(), "s"));
    if let Some(ratio) = spread.ratio() {
        ctx.figure(Figure::new(p, "many-subscribers.spread", format!("slowest / fastest{bound}"), ratio, "×"));
    }
}

/// Correctness checks: the posts, every subscriber's deliveries, the pusher's own counts.
fn checks(
    ctx: &mut Ctx,
    posted: &LoadResult,
    subs: &[(String, Tally)],
    strays: &[Tally],
    malformed: u64,
    counts: Option<&HashMap<String, Counts>>,
) {
    load_checks(ctx, PHASE, posted);
    let sum = |f: fn(&Tally) -> u64| subs.iter().map(|(_, t)| f(t)).sum::<u64>();
    ctx.check(PHASE, "lost", sum(|t| t.lost));
    ctx.check(PHASE, "duplicates", sum(|t| t.duplicates));
    // Every push at a path that is no subscriber's is unexpected.
    let stray: u64 = strays.iter().map(|t| t.found + t.unexpected).sum();
    ctx.check(PHASE, "unexpected ids", sum(|t| t.unexpected) + stray);
    ctx.check(PHASE, "malformed", malformed);
    ctx.check(PHASE, "incomplete subscribers", subs.iter().filter(|(_, t)| t.lost > 0).count() as u64);
    match counts {
        Some(c) => {
            ctx.check(PHASE, "dead", c.values().map(|c| c.dead).sum());
            ctx.check(PHASE, "pending at end", c.values().map(|c| c.pending).sum());
        }
        None => ctx.note("many-subscribers: GET /v1/stats gave no counts"),
    }
}

/// Each of `names`' tally in that order (one that received nothing has all `expected`
/// lost), and the tallies of paths that are no subscriber's.
fn per_subscriber(
    names: &[String],
    mut tallies: HashMap<String, Tally>,
    expected: u64,
) -> (Vec<(String, Tally)>, Vec<Tally>) {
    let subs = names
        .iter()
        .map(|name| (name.clone(), tallies.remove(name).unwrap_or(Tally { lost: expected, ..Tally::default() })))
        .collect();
    (subs, tallies.into_values().collect())
}

/// How long after `started` a subscriber had all its events; `None` if it never had.
fn done_after(tally: &Tally, started: Instant) -> Option<Duration> {
    if tally.lost > 0 {
        return None;
    }
    Some(tally.last_first.map_or(Duration::ZERO, |t| t.saturating_duration_since(started)))
}

/// When the fastest and the slowest subscriber had all their events.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    /// The first subscriber to have all its events; `None` if none had.
    fastest: Option<Duration>,
    /// The last one; when some never had all, how long the wait lasted (a lower bound).
    slowest: Duration,
    /// Subscribers that did not get all their events.
    incomplete: usize,
}

impl Spread {
    /// From each subscriber's completion (`None` = incomplete) and the wait's length.
    fn of(done: &[Option<Duration>], waited: Duration) -> Spread {
        let fastest = done.iter().flatten().min().copied();
        let last = done.iter().flatten().max().copied().unwrap_or_default();
        let incomplete = done.iter().filter(|d| d.is_none()).count();
        let slowest = if incomplete > 0 { last.max(waited) } else { last };
        Spread { fastest, slowest, incomplete }
    }

    /// Slowest / fastest: 1 when all subscribers finish together.
    fn ratio(&self) -> Option<f64> {
        let fastest = self.fastest?.as_secs_f64();
        (fastest > 0.0).then(|| self.slowest.as_secs_f64() / fastest)
    }
}

/// The incomplete subscribers, grouped by what they received and the pusher's counts for
/// them, fewest received first, runs of neighbours shortened:
/// `0/200 received (200 pending, 0 dead): s0, s2..s20; 13/200 received: s1`.
fn incomplete_list(subs: &[(String, Tally)], expected: u64, counts: &HashMap<String, Counts>) -> String {
    // (received, the pusher's (pending, dead)) -> positions in `subs`.
    type Groups = BTreeMap<(u64, Option<(u64, u64)>), Vec<usize>>;
    let mut groups = Groups::new();
    for (i, (name, tally)) in subs.iter().enumerate().filter(|(_, (_, t))| t.lost > 0) {
        let pusher = counts.get(name).map(|c| (c.pending, c.dead));
        groups.entry((tally.found, pusher)).or_default().push(i);
    }
    let described = groups.iter().map(|((found, pusher), members)| {
        let counts = pusher.map_or(String::new(), |(pending, dead)| format!(" ({pending} pending, {dead} dead)"));
        format!("{found}/{expected} received{counts}: {}", runs(subs, members))
    });
    described.collect::<Vec<_>>().join("; ")
}

/// The names of `subs` at positions `members` (ascending), with three or more neighbours
/// shortened to `first..last`.
fn runs(subs: &[(String, Tally)], members: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut start = 0;
    for end in 1..=members.len() {
        if end < members.len() && members[end] == members[end - 1] + 1 {
            continue;
        }
        let run = &members[start..end];
        match run {
            [first, _, .., last] => parts.push(format!("{}..{}", subs[*first].0, subs[*last].0)),
            _ => parts.extend(run.iter().map(|i| subs[*i].0.clone())),
        }
        start = end;
    }
    parts.join(", ")
}

/// Polls the pusher's stats until nothing is pending for any subscriber (at most `limit`);
/// the last counts, per subscriber.
async fn settle_all(client: &reqwest::Client, base: &str, limit: Duration) -> Option<HashMap<String, Counts>> {
    let started = Instant::now();
    loop {
        let counts = counts_by_subscriber(client, base).await;
        let settled = counts.as_ref().is_some_and(|c| c.values().all(|c| c.pending == 0));
        if settled || started.elapsed() >= limit {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every subscriber's pending and dead deliveries (GET /v1/stats).
async fn counts_by_subscriber(client: &reqwest::Client, base: &str) -> Option<HashMap<String, Counts>> {
    let body: Value = client.get(format!("{base}/v1/stats")).send().await.ok()?.json().await.ok()?;
    parse_counts(&body)
}

/// The `subscribers` object of a `/v1/stats` answer as counts per subscriber.
fn parse_counts(body: &Value) -> Option<HashMap<String, Counts>> {
    let subscribers = body.get("subscribers")?.as_object()?;
    subscribers
        .iter()
        .map(|(name, c)| {
            let counts = Counts { pending: c.get("pending")?.as_u64()?, dead: c.get("dead")?.as_u64()? };
            Some((name.clone(), counts))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn received(found: u64, lost: u64) -> Tally {
        Tally { found, lost, ..Tally::default() }
    }

    #[test]
    fn spread_of_complete_subscribers() {
        let spread = Spread::of(&[Some(secs(4)), Some(secs(2)), Some(secs(3))], secs(5));
        assert_eq!(spread, Spread { fastest: Some(secs(2)), slowest: secs(4), incomplete: 0 });
        assert_eq!(spread.ratio(), Some(2.0));
    }

    #[test]
    fn an_incomplete_subscriber_makes_the_slowest_a_lower_bound() {
        let spread = Spread::of(&[Some(secs(2)), None, None], secs(30));
        assert_eq!(spread, Spread { fastest: Some(secs(2)), slowest: secs(30), incomplete: 2 });
        assert_eq!(spread.ratio(), Some(15.0));
        let none = Spread::of(&[None, None], secs(30));
        assert_eq!((none.fastest, none.ratio(), none.incomplete), (None, None, 2));
    }

    #[test]
    fn completion_counts_from_the_drain_start() {
        let started = Instant::now();
        let done = Tally { found: 3, last_first: Some(started + secs(2)), ..Tally::default() };
        assert_eq!(done_after(&done, started), Some(secs(2)));
        assert_eq!(done_after(&received(2, 1), started), None);
    }

    #[test]
    fn silent_subscribers_lose_everything_and_strays_are_set_apart() {
        let names: Vec<String> = (0..3).map(subscriber_id).collect();
        let tallies = HashMap::from([
            ("s0".to_string(), received(10, 0)),
            ("s1".to_string(), received(4, 6)),
            ("other".to_string(), received(0, 10)),
        ]);
        let (subs, strays) = per_subscriber(&names, tallies, 10);
        let got: Vec<(&str, u64, u64)> = subs.iter().map(|(n, t)| (n.as_str(), t.found, t.lost)).collect();
        assert_eq!(got, [("s0", 10, 0), ("s1", 4, 6), ("s2", 0, 10)]);
        assert_eq!(strays.len(), 1);
    }

    #[test]
    fn incomplete_subscribers_are_named_by_what_they_received() {
        let subs: Vec<(String, Tally)> = [(10, 0), (4, 6), (0, 10), (0, 10), (0, 10), (10, 0), (0, 10), (0, 10)]
            .into_iter()
            .enumerate()
            .map(|(i, (found, lost))| (subscriber_id(i), received(found, lost)))
            .collect();
        let counts: HashMap<String, Counts> =
            (0..8).map(|i| (subscriber_id(i), Counts { pending: if i == 1 { 6 } else { 10 }, dead: 0 })).collect();
        assert_eq!(
            incomplete_list(&subs, 10, &counts),
            "0/10 received (10 pending, 0 dead): s2..s4, s6, s7; 4/10 received (6 pending, 0 dead): s1"
        );
        assert_eq!(incomplete_list(&subs[..3], 10, &HashMap::new()), "0/10 received: s2; 4/10 received: s1");
        assert_eq!(incomplete_list(&subs[..1], 10, &HashMap::new()), "");
    }

    #[test]
    fn stats_give_counts_per_subscriber() {
        let body = serde_json::json!({"subscribers": {
            "s0": {"pending": 0, "delivered": 5, "dead": 0},
            "s1": {"pending": 3, "delivered": 2, "dead": 1},
        }});
        let counts = parse_counts(&body).unwrap();
        assert_eq!((counts["s1"].pending, counts["s1"].dead), (3, 1));
        assert_eq!(counts.len(), 2);
    }
}
