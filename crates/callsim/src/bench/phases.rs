//! The phases `sink`, `ingest`, `e2e-cdr` and `e2e-status`, and what all phases share (CPU
//! accounting, the pusher's delivery counts, correctness checks of a load).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::load::{self, cdr_array, cdr_json, status_array, Load, LoadResult};
use super::pusher::{cpu_secs, Program, Setup};
use super::receiver::{BenchReceiver, Tally};
use super::report::{Figure, SINK_ARRAYS, SINK_DELIVERY, SINK_SINGLE};
use super::sink::{delivery_sink, ingest_sink, Server};
use super::{backlog, latency, many, retention, sources, Ctx, Phase};
use crate::calls::now_ms;

/// Events per array in the ingest and end-to-end phases.
pub(super) const ARRAY: u64 = 100;
/// Arrays in flight in the end-to-end phases.
const E2E_CONCURRENCY: usize = 8;
/// Concurrent requests of the delivery-direction sink load (the pusher's default
/// `delivery.max_in_flight`).
const DELIVERY_CONCURRENCY: usize = 256;
/// Calls per status array (4 events each).
const CALLS_PER_ARRAY: u64 = ARRAY / 4;

/// Runs one phase.
pub(super) async fn run(ctx: &mut Ctx, phase: Phase) -> anyhow::Result<()> {
    match phase {
        Phase::Sink => sink(ctx).await,
        Phase::Ingest => ingest(ctx).await,
        Phase::E2eCdr => e2e(ctx, phase, Program::Cdr).await,
        Phase::E2eStatus => e2e(ctx, phase, Program::Status).await,
        Phase::Latency => latency::run(ctx).await,
        Phase::Backlog => backlog::run(ctx).await,
        Phase::ManySubscribers => many::run(ctx).await,
        Phase::Purge => retention::purge(ctx).await,
        Phase::Soak => retention::soak(ctx).await,
        Phase::SourceFreeswitch | Phase::SourceAsterisk | Phase::SourceUcm | Phase::SourceRedis => {
            sources::run(ctx, phase).await
        }
        Phase::SourceEsl => super::source_esl::run(ctx).await,
    }
}

/// A call-id prefix unique to this run and phase.
pub(super) fn prefix(phase: Phase) -> String {
    format!("bench{}-{}-", now_ms(), phase.name())
}

/// Most requests of one sink load (it is bounded by `Sizes::sink_window`).
const SINK_MAX_REQUESTS: u64 = 50_000_000;

/// A closed load of `requests` single CDRs, for at most `limit`.
fn singles(url: String, prefix: String, requests: u64, concurrency: usize, limit: Duration) -> Load {
    Load {
        url,
        requests,
        events_per_request: 1,
        concurrency,
        time_limit: limit,
        body: Arc::new(move |i| cdr_json(&prefix, i).into_bytes()),
        parse: true,
    }
}

/// A closed load of CDR arrays of `per` events, `total` events in all (rounded up up to a
/// whole array), for at most `limit`.
pub(super) fn arrays(url: String, prefix: String, total: u64, per: u64, concurrency: usize, limit: Duration) -> Load {
    Load {
        url,
        requests: total.div_ceil(per),
        events_per_request: per,
        concurrency,
        time_limit: limit,
        body: Arc::new(move |i| cdr_array(&prefix, i * per, per)),
        parse: true,
    }
}

/// `sink`: the same load generator against trivial in-process servers.
async fn sink(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (c, window, max) = (ctx.sizes.concurrency, ctx.sizes.sink_window, SINK_MAX_REQUESTS);
    let server = Server::bind(ingest_sink(), 0).await?;
    let url = server.url("/v1/cdrs");
    let client = load::client(c)?;
    let single = load::run(&client, singles(url.clone(), "sink-".into(), max, c, window)).await;
    let arrays = load::run(&client, arrays(url, "sink-".into(), max * ARRAY, ARRAY, c, window)).await;
    server.stop().await;
    let server = Server::bind(delivery_sink(), 0).await?;
    let client = load::client(DELIVERY_CONCURRENCY)?;
    let mut delivery_load = singles(server.url("/cdr"), "sink-".into(), max, DELIVERY_CONCURRENCY, window);
    delivery_load.parse = false;
    let delivery = load::run(&client, delivery_load).await;
    server.stop().await;
    let p = Phase::Sink.name();
    ctx.figure(Figure::new(
        p,
        SINK_SINGLE,
        format!("single-event POSTs, {c} clients"),
        single.requests_per_sec(),
        "requests/s",
    ));
    ctx.figure(Figure::new(
        p,
        SINK_ARRAYS,
        format!("arrays of {ARRAY}, {c} clients"),
        arrays.events_per_sec(),
        "events/s",
    ));
    ctx.figure(Figure::new(
        p,
        SINK_DELIVERY,
        format!("delivery direction: reqwest, {DELIVERY_CONCURRENCY} concurrent, answered 200"),
        delivery.requests_per_sec(),
        "requests/s",
    ));
    for r in [&single, &arrays, &delivery] {
        load_checks(ctx, Phase::Sink, r);
    }
    ctx.note(format!(
        "sink: in-process axum servers answering 202 with a fixed small JSON (ingest direction) or 200 with an \
         empty body (delivery direction), each load running for {:.0} s; they are the denominators of the ratios",
        window.as_secs_f64()
    ));
    Ok(())
}

/// `ingest`: cdr-pusher without subscribers, so only durable ingest runs.
async fn ingest(ctx: &mut Ctx) -> anyhow::Result<()> {
    let c = ctx.sizes.concurrency;
    let (_dir, pusher) = ctx.pusher(Phase::Ingest, Program::Cdr, &Setup::default())?;
    let url = format!("{}{}", pusher.url, Program::Cdr.ingest_path());
    let client = load::client(c)?;
    let cpu = CpuMeter::start(pusher.pid());
    let (events, limit) = (ctx.sizes.events, ctx.sizes.load_limit);
    let single = load::run(&client, singles(url.clone(), prefix(Phase::Ingest), events, c, limit)).await;
    let cpu_single = cpu.figures(Phase::Ingest, "single events");
    let cpu = CpuMeter::start(pusher.pid());
    let array_prefix = format!("{}a-", prefix(Phase::Ingest));
    let arrays = load::run(&client, arrays(url, array_prefix, events, ARRAY, c, limit)).await;
    let cpu_arrays = cpu.figures(Phase::Ingest, "arrays");
    pusher.stop()?;
    let p = Phase::Ingest.name();
    let n = single.ids.len();
    ctx.figure(
        Figure::new(
            p,
            "ingest.single",
            format!("single events, {c} clients ({n} events)"),
            per_sec_ids(&single),
            "events/s",
        )
        .vs(SINK_SINGLE),
    );
    let n = arrays.ids.len();
    ctx.figure(
        Figure::new(
            p,
            "ingest.arrays",
            format!("arrays of {ARRAY}, {c} clients ({n} events)"),
            per_sec_ids(&arrays),
            "events/s",
        )
        .vs(SINK_ARRAYS),
    );
    for f in cpu_single.into_iter().chain(cpu_arrays) {
        ctx.figure(f);
    }
    load_checks(ctx, Phase::Ingest, &single);
    load_checks(ctx, Phase::Ingest, &arrays);
    ctx.note("ingest: cdr-pusher with NO subscribers (only durable ingest runs; every 202 after an fsync of the WAL, as shipped); events/s counts events answered 202");
    Ok(())
}

/// New events answered 202 per second.
pub(super) fn per_sec_ids(r: &LoadResult) -> f64 {
    load::per_sec(r.ids.len() as u64, r.elapsed)
}

/// The load of an end-to-end phase: arrays of 100 CDRs, or of 25 whole calls of 4 statuses.
fn e2e_load(ctx: &Ctx, phase: Phase, program: Program, base: &str) -> Load {
    // `base` may name several replicas, separated by spaces (see `Load::url`).
    let url = base.split(' ').map(|b| format!("{b}{}", program.ingest_path())).collect::<Vec<_>>().join(" ");
    let prefix = prefix(phase);
    match program {
        Program::Cdr => arrays(url, prefix, ctx.sizes.events, ARRAY, E2E_CONCURRENCY, ctx.sizes.load_limit),
        Program::Status => {
            let calls = ctx.sizes.events / 4;
            let start = now_ms();
            Load {
                url,
                requests: calls.div_ceil(CALLS_PER_ARRAY),
                events_per_request: ARRAY,
                concurrency: E2E_CONCURRENCY,
                time_limit: ctx.sizes.load_limit,
                body: Arc::new(move |i| status_array(&prefix, i * CALLS_PER_ARRAY, CALLS_PER_ARRAY, start)),
                parse: true,
            }
        }
    }
}

/// `e2e-cdr` / `e2e-status`: post everything, wait until the receiver answered all of it.
async fn e2e(ctx: &mut Ctx, phase: Phase, program: Program) -> anyhow::Result<()> {
    let receiver = BenchReceiver::start(0, ctx.sizes.events as usize).await?;
    let database = match &ctx.options.database {
        Some(server) => Some(super::pusher::fresh_database(server).await?),
        None => None,
    };
    let setup = Setup { subscriber: Some(receiver.url()), database, ..Setup::default() };
    let (_dir, pusher) = ctx.pusher(phase, program, &setup)?;
    // More replicas on the same database, when asked (`--replicas`); the load takes them in turn.
    let mut others = Vec::new();
    for _ in 1..ctx.options.replicas {
        others.push(ctx.pusher(phase, program, &setup)?);
    }
    let urls: Vec<&str> =
        std::iter::once(pusher.url.as_str()).chain(others.iter().map(|(_, p)| p.url.as_str())).collect();
    let client = load::client(E2E_CONCURRENCY)?;
    let load = e2e_load(ctx, phase, program, &urls.join(" "));
    let cpu = CpuMeter::start(pusher.pid());
    let started = Instant::now();
    let posted = load::run(&client, load).await;
    let expected = posted.ids.len() as u64;
    receiver.wait_for(expected, ctx.sizes.stall, ctx.sizes.wait_limit).await;
    let cpu_figures = cpu.figures(phase, "the run");
    let cpu_secs = cpu.pusher_secs();
    let counts = settle(&client, &pusher.url, Duration::from_secs(10)).await;
    let tally = receiver.tally(&posted.ids);
    pusher.stop()?;
    for (_, other) in others {
        other.stop()?;
    }
    receiver.stop().await;
    let elapsed = tally.last_first.map_or(Duration::ZERO, |t| t - started);
    let p = phase.name();
    let what =
        format!("{} delivered ({expected} events, arrays of {ARRAY}, {E2E_CONCURRENCY} in flight)", program.binary());
    ctx.figure(
        Figure::new(p, &format!("{p}.delivered"), what, load::per_sec(tally.found, elapsed), "events/s")
            .vs(SINK_DELIVERY),
    );
    ctx.figure(Figure::new(p, &format!("{p}.ingest"), "ingest during the run", per_sec_ids(&posted), "events/s"));
    for f in cpu_figures {
        ctx.figure(f);
    }
    // Efficiency, steadier than the rate on a shared machine: the rate also depends on what
    // else the two cores are doing.
    if let Some(secs) = cpu_secs.filter(|_| tally.found > 0) {
        let per_event = secs * 1e6 / tally.found as f64;
        let label = "pusher CPU per delivered event (ingest + delivery)";
        ctx.figure(Figure::new(p, &format!("{p}.cpu.pusher.per-event"), label, per_event, "µs"));
    }
    load_checks(ctx, phase, &posted);
    delivery_checks(ctx, phase, &tally, counts);
    Ok(())
}

/// Correctness checks of what a receiver saw, and of the pusher's own counts.
pub(super) fn delivery_checks(ctx: &mut Ctx, phase: Phase, tally: &Tally, counts: Option<Counts>) {
    ctx.check(phase, "lost", tally.lost);
    ctx.check(phase, "duplicates", tally.duplicates);
    ctx.check(phase, "unexpected ids", tally.unexpected);
    ctx.check(phase, "malformed", tally.malformed);
    if phase == Phase::E2eStatus {
        ctx.check(phase, "order violations", tally.order_violations);
    }
    match counts {
        Some(c) => {
            ctx.check(phase, "dead", c.dead);
            ctx.check(phase, "pending at end", c.pending);
        }
        None => ctx.note(format!("{}: GET /v1/stats gave no counts for subscriber bench", phase.name())),
    }
}

/// Checks of a load: every post answered 2xx, no new callId answered as a duplicate.
pub(super) fn load_checks(ctx: &mut Ctx, phase: Phase, r: &LoadResult) {
    ctx.check(phase, "posts not 2xx", r.rejected + r.errors);
    if phase != Phase::Sink {
        ctx.check(phase, "duplicate answers", r.duplicates);
    }
    if !r.samples.is_empty() {
        ctx.note(format!("{}: failed posts, e.g. {}", phase.name(), r.samples.join(" | ")));
    }
}

/// The pusher's delivery counts for subscriber `bench` (GET /v1/stats).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts {
    /// Pending deliveries.
    pub pending: u64,
    /// Dead deliveries.
    pub dead: u64,
}

/// Polls the pusher's stats until nothing is pending (at most `limit`); the last counts.
pub(super) async fn settle(client: &reqwest::Client, base: &str, limit: Duration) -> Option<Counts> {
    let started = Instant::now();
    loop {
        let counts = stats(client, base).await;
        if counts.is_some_and(|c| c.pending == 0) || started.elapsed() >= limit {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stats(client: &reqwest::Client, base: &str) -> Option<Counts> {
    let body: Value = client.get(format!("{base}/v1/stats")).send().await.ok()?.json().await.ok()?;
    let bench = body.get("subscribers")?.get("bench")?;
    Some(Counts { pending: bench.get("pending")?.as_u64()?, dead: bench.get("dead")?.as_u64()? })
}

/// CPU time of the pusher and of the bench process over an interval.
pub(super) struct CpuMeter {
    pid: u32,
    pusher: Option<f64>,
    bench: Option<f64>,
    at: Instant,
}

impl CpuMeter {
    /// Starts measuring the pusher `pid` and this process.
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter { pid, pusher: cpu_secs(pid), bench: cpu_secs(std::process::id()), at: Instant::now() }
    }

    /// CPU seconds the pusher used since the start.
    pub fn pusher_secs(&self) -> Option<f64> {
        Some(cpu_secs(self.pid)? - self.pusher?)
    }

    /// "pusher CPU" and "bench CPU" over `what`, in % of one core.
    pub fn figures(&self, phase: Phase, what: &str) -> Vec<Figure> {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let share = |before: Option<f64>, pid: u32| Some((cpu_secs(pid)? - before?) / wall * 100.0);
        let p = phase.name();
        let key = what.replace(' ', "-");
        let mut out = Vec::new();
        if let Some(v) = share(self.pusher, self.pid) {
            out.push(Figure::new(
                p,
                &format!("{p}.cpu.pusher.{key}"),
                format!("pusher CPU during {what}"),
                v,
                "% of a core",
            ));
        }
        if let Some(v) = share(self.bench, std::process::id()) {
            let label = format!("bench CPU (load, receiver) during {what}");
            out.push(Figure::new(p, &format!("{p}.cpu.bench.{key}"), label, v, "% of a core"));
        }
        out
    }
}
