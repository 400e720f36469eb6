//! `backlog`: cdr-pusher whose subscriber is down (nothing listens on its port), retrying
//! every second; --queued events posted as arrays of 1000 as fast as possible; then the
//! receiver comes up on that port and the queue drains.

use std::time::{Duration, Instant};

use super::load;
use super::phases::{arrays, delivery_checks, load_checks, per_sec_ids, prefix, settle, CpuMeter};
use super::pusher::{Program, Setup};
use super::receiver::BenchReceiver;
use super::report::{Figure, SINK_ARRAYS, SINK_DELIVERY};
use super::{Ctx, Phase};

/// Events per array while queueing.
const ARRAY: u64 = 1_000;
/// Arrays in flight while queueing.
const CONCURRENCY: usize = 8;
/// Retries of the schedule, each after 1 s.
const RETRIES: usize = 50;

/// A port on 127.0.0.1 that was free a moment ago; nothing listens on it afterwards.
async fn free_port() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

/// Binds the receiver on `port`, retrying for a while in case the port is briefly busy.
async fn receiver_on(port: u16, expected: usize) -> anyhow::Result<BenchReceiver> {
    let mut tries = 0;
    loop {
        match BenchReceiver::start(port, expected).await {
            Ok(r) => return Ok(r),
            Err(e) if tries >= 50 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs the phase.
pub(super) async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let phase = Phase::Backlog;
    let port = free_port().await?;
    let setup = Setup {
        subscriber: Some(format!("http://127.0.0.1:{port}")),
        retry: Some(vec!["1s".to_string(); RETRIES]),
    };
    let (_dir, pusher) = ctx.pusher(phase, Program::Cdr, &setup)?;
    let url = format!("{}{}", pusher.url, Program::Cdr.ingest_path());
    let client = load::client(CONCURRENCY)?;
    let queued = ctx.sizes.queued;
    let cpu = CpuMeter::start(pusher.pid());
    let posted = load::run(
        &client,
        arrays(url, prefix(phase), queued, ARRAY, CONCURRENCY, ctx.sizes.load_limit),
    )
    .await;
    let cpu_ingest = cpu.figures(phase, "ingest");
    let rss_ingest = pusher.peak_rss_mib();
    let db_mib = pusher.database_mib();
    let expected = posted.ids.len() as u64;

    let receiver = receiver_on(port, expected as usize).await?;
    let cpu = CpuMeter::start(pusher.pid());
    let started = Instant::now();
    receiver.wait_for(expected, ctx.sizes.stall, ctx.sizes.wait_limit).await;
    let cpu_drain = cpu.figures(phase, "drain");
    let counts = settle(&client, &pusher.url, Duration::from_secs(10)).await;
    let rss_drain = pusher.peak_rss_mib();
    let tally = receiver.tally(&posted.ids);
    pusher.stop()?;
    receiver.stop().await;

    let p = phase.name();
    let what =
        format!("ingest while the subscriber is down ({expected} events, arrays of {ARRAY}, {CONCURRENCY} in flight)");
    ctx.figure(Figure::new(p, "backlog.ingest", what, per_sec_ids(&posted), "events/s").vs(SINK_ARRAYS));
    let rss = rss_ingest.unwrap_or(0.0);
    ctx.figure(Figure::new(
        p,
        "backlog.rss",
        "pusher peak RSS (VmHWM) at end of ingest",
        rss,
        "MiB",
    ));
    ctx.figure(Figure::new(
        p,
        "backlog.db",
        "database + WAL size at end of ingest",
        db_mib,
        "MiB",
    ));
    let drain = tally
        .last_first
        .map_or(0.0, |t| load::per_sec(tally.found, t - started));
    ctx.figure(Figure::new(p, "backlog.drain", "drain once the receiver is up", drain, "events/s").vs(SINK_DELIVERY));
    let rss = rss_drain.unwrap_or(0.0);
    ctx.figure(Figure::new(
        p,
        "backlog.rss.drain",
        "pusher peak RSS (VmHWM) after the drain",
        rss,
        "MiB",
    ));
    for f in cpu_ingest.into_iter().chain(cpu_drain) {
        ctx.figure(f);
    }
    load_checks(ctx, phase, &posted);
    delivery_checks(ctx, phase, &tally, counts);
    ctx.note(format!(
        "backlog: the subscriber's port has no listener (connections refused) while queueing; retry schedule \
         [1s] x {RETRIES}, so failed attempts keep cycling (and logging warnings) during ingest; the drain is \
         timed from binding the receiver on that port to the first 2xx answer of the last event"
    ));
    Ok(())
}
