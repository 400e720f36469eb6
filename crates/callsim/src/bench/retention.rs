//! The retention phases (issue 12, point 4).
//!
//! - `purge`: cdr-pusher builds a history of --queued delivered events (arrays of 1000,
//!   retention 1h so nothing goes), is restarted on the same database with the same long
//!   retention for a baseline, then with `retention: 1s`, so the whole history is purged at
//!   start. Single CDRs at 500/s run through both, and post -> 202 is compared.
//! - `soak`: cdr-pusher with a 2 s retention under a steady 2,000 CDRs/s; the database and
//!   WAL size is sampled, so its plateau (space reused, the file stops growing) shows.

use std::path::Path;
use std::time::{Duration, Instant};

use super::backlog::metric_sum;
use super::latency::percentiles;
use super::load;
use super::paced::{self, Paced, PacedResult};
use super::phases::{arrays, load_checks, per_sec_ids, prefix};
use super::pusher::{Program, Pusher, Setup};
use super::receiver::BenchReceiver;
use super::report::Figure;
use super::{Ctx, Phase};

/// The steady ingest rate during the purge, events per second.
const PURGE_RATE: f64 = 500.0;
/// The soak's ingest rate, events per second.
const SOAK_RATE: f64 = 2_000.0;
/// Events per array while building the history.
const HISTORY_ARRAY: u64 = 1_000;

/// `outbox:` keeping everything for the length of the phase, or purging at once.
fn outbox(retention: &str) -> String {
    format!("outbox: {{retention: {retention}, dead_retention: {retention}, dedup_window: {retention}}}\n")
}

/// Post -> 202 percentiles of a paced load, ms.
fn ingest_p(result: &PacedResult) -> (f64, f64) {
    let mut micros: Vec<u64> = result.acks.iter().map(|a| (a.acked - a.sent).as_micros() as u64).collect();
    let p = percentiles(&mut micros);
    (p.p50, p.p99)
}

/// Runs `purge`.
pub(super) async fn purge(ctx: &mut Ctx) -> anyhow::Result<()> {
    let phase = Phase::Purge;
    let p = phase.name();
    let history = ctx.sizes.queued;
    let receiver = BenchReceiver::start(0, history as usize * 2).await?;
    let keep = Setup { subscriber: Some(receiver.url()), extra: outbox("1h"), ..Setup::default() };
    let dir = ctx.temp_dir(phase)?;
    let pusher = Pusher::start(&ctx.options.bin_dir, Program::Cdr, dir.path(), &keep)?;
    let url = |pusher: &Pusher| format!("{}{}", pusher.url, Program::Cdr.ingest_path());
    let client = load::client(8)?;
    let built =
        load::run(&client, arrays(url(&pusher), prefix(phase), history, HISTORY_ARRAY, 8, ctx.sizes.load_limit)).await;
    let all = receiver.wait_for(built.ids.len() as u64, ctx.sizes.stall, ctx.sizes.wait_limit).await;
    pusher.stop()?;
    load_checks(ctx, phase, &built);
    ctx.check(phase, "history not delivered", u64::from(!all));
    ctx.figure(Figure::new(
        p,
        "purge.history",
        "history built (events, each delivered once)",
        built.ids.len() as f64,
        "events",
    ));
    ctx.figure(Figure::new(
        p,
        "purge.history.ingest",
        "history ingest (arrays of 1000)",
        per_sec_ids(&built),
        "events/s",
    ));
    let db_full = database_mib(dir.path());

    let paced = |pusher: &Pusher, tag: &str| Paced {
        url: url(pusher),
        rate: PURGE_RATE,
        duration: ctx.sizes.step,
        prefix: format!("{}{tag}-", prefix(phase)),
    };
    let pusher = Pusher::start(&ctx.options.bin_dir, Program::Cdr, dir.path(), &keep)?;
    let baseline = paced::run_paced(&client, paced(&pusher, "baseline")).await;
    pusher.stop()?;

    let purging = Setup { extra: outbox("1s"), ..keep.clone() };
    let pusher = Pusher::start(&ctx.options.bin_dir, Program::Cdr, dir.path(), &purging)?;
    let watch = watch_purge(&client, &pusher.url, history, ctx.sizes.wait_limit);
    let (during, purged) = tokio::join!(paced::run_paced(&client, paced(&pusher, "during")), watch);
    let longest = longest_batch_ms(&client, &pusher.url).await;
    let db_after = pusher.database_mib();
    pusher.stop()?;
    receiver.stop().await;

    let (b50, b99) = ingest_p(&baseline);
    let (d50, d99) = ingest_p(&during);
    for (key, label, v) in [
        ("purge.ingest.baseline.p50", "post -> 202 p50 at 500/s, history kept", b50),
        ("purge.ingest.baseline.p99", "post -> 202 p99 at 500/s, history kept", b99),
        ("purge.ingest.purging.p50", "post -> 202 p50 at 500/s while the history is purged", d50),
        ("purge.ingest.purging.p99", "post -> 202 p99 at 500/s while the history is purged", d99),
    ] {
        ctx.figure(Figure::new(p, key, label, v, "ms"));
    }
    if let Some(took) = purged {
        ctx.figure(Figure::new(p, "purge.time", "time to purge the history", took.as_secs_f64(), "s"));
        ctx.figure(Figure::new(
            p,
            "purge.rate",
            "purge rate",
            history as f64 / took.as_secs_f64().max(1e-9),
            "events/s",
        ));
    }
    ctx.check(phase, "history not purged", u64::from(purged.is_none()));
    ctx.check(phase, "posts not 2xx", baseline.failures + during.failures);
    if let Some(ms) = longest {
        ctx.figure(Figure::new(p, "purge.batch.max", "longest purge batch (writer held)", ms, "ms"));
    }
    ctx.figure(Figure::new(p, "purge.db.full", "database + WAL with the history", db_full, "MiB"));
    ctx.figure(Figure::new(
        p,
        "purge.db.after",
        "database + WAL after the purge (space kept for reuse)",
        db_after,
        "MiB",
    ));
    ctx.note(format!(
        "purge: a history of {history} delivered CDRs is purged at start (retention 1s) while single CDRs are posted \
         at 500/s for {:.0} s; the baseline is the same load on the same database with the history kept",
        ctx.sizes.step.as_secs_f64()
    ));
    Ok(())
}

/// Polls `voice_push_purged_total` until `want` events were purged; how long it took.
async fn watch_purge(client: &reqwest::Client, base: &str, want: u64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if metric_sum(client, base, "voice_push_purged_total").await.is_some_and(|n| n >= want as f64) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `/v1/stats`' longest purge batch, ms.
async fn longest_batch_ms(client: &reqwest::Client, base: &str) -> Option<f64> {
    let stats: serde_json::Value = client.get(format!("{base}/v1/stats")).send().await.ok()?.json().await.ok()?;
    stats["outbox"]["longestPurgeBatchMs"].as_f64()
}

/// The database and WAL in `dir`, MiB.
fn database_mib(dir: &Path) -> f64 {
    ["cdr.db", "cdr.db-wal"].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum::<u64>()
        as f64
        / (1024.0 * 1024.0)
}

/// Runs `soak`.
pub(super) async fn soak(ctx: &mut Ctx) -> anyhow::Result<()> {
    let phase = Phase::Soak;
    let p = phase.name();
    let length = ctx.sizes.step * 6;
    let receiver = BenchReceiver::start(0, (SOAK_RATE * length.as_secs_f64()) as usize).await?;
    let setup = Setup { subscriber: Some(receiver.url()), extra: outbox("2s"), ..Setup::default() };
    let (_dir, pusher) = ctx.pusher(phase, Program::Cdr, &setup)?;
    let client = load::client(64)?;
    let load = Paced {
        url: format!("{}{}", pusher.url, Program::Cdr.ingest_path()),
        rate: SOAK_RATE,
        duration: length,
        prefix: prefix(phase),
    };
    let sampling = async {
        let mut sizes = Vec::new();
        for _ in 0..6 {
            tokio::time::sleep(ctx.sizes.step).await;
            sizes.push(pusher.database_mib());
        }
        sizes
    };
    let (result, sizes) = tokio::join!(paced::run_paced(&client, load), sampling);
    let purged = metric_sum(&client, &pusher.url, "voice_push_purged_total").await.unwrap_or(0.0);
    pusher.stop()?;
    receiver.stop().await;
    let step = ctx.sizes.step.as_secs_f64();
    for (i, mib) in sizes.iter().enumerate() {
        let at = step * (i + 1) as f64;
        ctx.figure(Figure::new(
            p,
            &format!("soak.db.{}s", at as u64),
            format!("database + WAL after {at:.0} s"),
            *mib,
            "MiB",
        ));
    }
    let growth = match (sizes.get(2), sizes.last()) {
        (Some(third), Some(last)) => last - third,
        _ => 0.0,
    };
    ctx.figure(Figure::new(p, "soak.db.growth", "growth over the second half", growth, "MiB"));
    ctx.figure(Figure::new(p, "soak.purged", "events purged during the soak", purged, "events"));
    ctx.figure(Figure::new(
        p,
        "soak.rate",
        "achieved ingest rate",
        load::per_sec(result.acks.len() as u64, result.elapsed),
        "events/s",
    ));
    ctx.check(phase, "posts not 2xx", result.failures);
    ctx.note(format!(
        "soak: cdr-pusher with retention 2s (dead_retention and dedup_window too) under single CDRs at \
         {SOAK_RATE}/s for {:.0} s, every one delivered; the file sizes are sampled every {step:.0} s",
        length.as_secs_f64()
    ));
    Ok(())
}
