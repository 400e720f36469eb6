//! `backlog`: cdr-pusher whose subscriber is down (nothing listens on its port), retrying
//! every second; --queued events posted as arrays of 1000 as fast as possible; then the
//! receiver comes up on that port and the queue drains.

use std::future::Future;
use std::time::{Duration, Instant};

use super::load::{self, LoadResult};
use super::phases::{arrays, delivery_checks, load_checks, per_sec_ids, prefix, settle, Counts, CpuMeter};
use super::pusher::{Program, Pusher, Setup};
use super::receiver::{BenchReceiver, Tally};
use super::report::{Figure, SINK_ARRAYS, SINK_DELIVERY};
use super::{Ctx, Phase};

/// Events per array while queueing.
const ARRAY: u64 = 1_000;
/// Arrays in flight while queueing.
const CONCURRENCY: usize = 8;
/// Retries of the schedule, each after 1 s.
const RETRIES: usize = 50;
/// The breaker's probes: the defaults (10 failures, probes from 5 s doubling to 5 min),
/// except that probes are at most 2 s apart, so the drain starts within 2 s of the receiver
/// coming up instead of at the next probe of a five-minute interval.
const BREAKER: &str = "breaker: {failures: 10, probe: 1s, probe_max: 2s}\n";

/// A port on 127.0.0.1 that was free a moment ago; nothing listens on it afterwards.
pub(super) async fn free_port() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

/// Starts a receiver with `start` (which binds the port a subscriber pointed at), retrying
/// for a while in case the port is briefly busy.
pub(super) async fn receiver_on<F, Fut>(start: F) -> anyhow::Result<BenchReceiver>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<BenchReceiver>>,
{
    let mut tries = 0;
    loop {
        match start().await {
            Ok(r) => return Ok(r),
            Err(e) if tries >= 50 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The sum of a Prometheus metric's samples (all label sets) from the pusher's `/metrics`.
pub(super) async fn metric_sum(client: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = client.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// What the phase measured.
struct Measured {
    posted: LoadResult,
    ingest_figures: Vec<Figure>,
    drain_figures: Vec<Figure>,
    drain_started: Instant,
    tally: Tally,
    counts: Option<Counts>,
}

/// Runs the phase.
pub(super) async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let phase = Phase::Backlog;
    let port = free_port().await?;
    let setup = Setup {
        subscriber: Some(format!("http://127.0.0.1:{port}")),
        retry: Some(vec!["1s".to_string(); RETRIES]),
        extra: BREAKER.to_string(),
        ..Setup::default()
    };
    let (_dir, pusher) = ctx.pusher(phase, Program::Cdr, &setup)?;
    let m = measure(ctx, &pusher, port).await;
    pusher.stop()?;
    let m = m?;
    let p = phase.name();
    let (expected, posted) = (m.posted.ids.len(), &m.posted);
    let what =
        format!("ingest while the subscriber is down ({expected} events, arrays of {ARRAY}, {CONCURRENCY} in flight)");
    ctx.figure(Figure::new(p, "backlog.ingest", what, per_sec_ids(posted), "events/s").vs(SINK_ARRAYS));
    for f in m.ingest_figures {
        ctx.figure(f);
    }
    let drain = m.tally.last_first.map_or(0.0, |t| load::per_sec(m.tally.found, t - m.drain_started));
    ctx.figure(Figure::new(p, "backlog.drain", "drain once the receiver is up", drain, "events/s").vs(SINK_DELIVERY));
    for f in m.drain_figures {
        ctx.figure(f);
    }
    load_checks(ctx, phase, posted);
    delivery_checks(ctx, phase, &m.tally, m.counts);
    ctx.note(format!(
        "backlog: the subscriber's port has no listener (connections refused) while queueing; retry schedule \
         [1s] x {RETRIES}; its breaker opens after 10 failed attempts and probes every 1-2 s, so failed attempts \
         stay a few dozen however many are queued; the drain is timed from binding the receiver on that port \
         to the first 2xx answer of the last event (it includes waiting for the next probe)"
    ));
    Ok(())
}

/// Queues --queued events while nothing listens on `port`, then drains them into a receiver
/// bound there.
async fn measure(ctx: &Ctx, pusher: &Pusher, port: u16) -> anyhow::Result<Measured> {
    let phase = Phase::Backlog;
    let p = phase.name();
    let url = format!("{}{}", pusher.url, Program::Cdr.ingest_path());
    let client = load::client(CONCURRENCY)?;
    let cpu = CpuMeter::start(pusher.pid());
    let queue = arrays(url, prefix(phase), ctx.sizes.queued, ARRAY, CONCURRENCY, ctx.sizes.load_limit);
    let posted = load::run(&client, queue).await;
    let mut figures = cpu.figures(phase, "ingest");
    let rss = pusher.peak_rss_mib().unwrap_or(0.0);
    figures.push(Figure::new(p, "backlog.rss", "pusher peak RSS (VmHWM) at end of ingest", rss, "MiB"));
    let db = pusher.database_mib();
    figures.push(Figure::new(p, "backlog.db", "database + WAL size at end of ingest", db, "MiB"));
    if let Some(n) = metric_sum(&client, &pusher.url, "voice_push_attempts_failed_total").await {
        let what = "failed attempts during the outage (receiver down, breaker open)";
        figures.push(Figure::new(p, "backlog.failed", what, n, "attempts"));
    }

    let receiver = receiver_on(|| BenchReceiver::start(port, posted.ids.len())).await?;
    let cpu = CpuMeter::start(pusher.pid());
    let drain_started = Instant::now();
    receiver.wait_for(posted.ids.len() as u64, ctx.sizes.stall, ctx.sizes.wait_limit).await;
    let mut drain_figures = cpu.figures(phase, "drain");
    let counts = settle(&client, &pusher.url, Duration::from_secs(10)).await;
    let rss = pusher.peak_rss_mib().unwrap_or(0.0);
    drain_figures.push(Figure::new(p, "backlog.rss.drain", "pusher peak RSS (VmHWM) after the drain", rss, "MiB"));
    let tally = receiver.tally(&posted.ids);
    receiver.stop().await;
    Ok(Measured { posted, ingest_figures: figures, drain_figures, drain_started, tally, counts })
}
