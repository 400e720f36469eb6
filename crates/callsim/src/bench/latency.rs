//! `latency`: cdr-pusher with the bench receiver; steady single-event posts at 500 events/s,
//! then at 5,000 events/s; for each event, the time from reading its 202 to the arrival of its
//! first attempt at the receiver (same process, same monotonic clock).

use std::time::{Duration, Instant};

use super::load;
use super::paced::{self, Ack, Paced, PacedResult};
use super::phases::{delivery_checks, prefix, settle, CpuMeter};
use super::pusher::{Program, Setup};
use super::receiver::BenchReceiver;
use super::report::Figure;
use super::{Ctx, Phase};

/// Target rates of the steps, events per second.
const RATES: [f64; 2] = [500.0, 5_000.0];

/// Percentiles of one step, milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Sorts `micros` and reads its percentiles.
pub(super) fn percentiles(micros: &mut [u64]) -> Percentiles {
    if micros.is_empty() {
        return Percentiles::default();
    }
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    Percentiles { p50: at(0.5), p99: at(0.99), max: at(1.0) }
}

/// Runs the phase.
pub(super) async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let phase = Phase::Latency;
    let capacity = RATES.iter().sum::<f64>() * ctx.sizes.step.as_secs_f64();
    let receiver = BenchReceiver::start(0, capacity as usize).await?;
    let setup = Setup { subscriber: Some(receiver.url()), ..Setup::default() };
    let (_dir, pusher) = ctx.pusher(phase, Program::Cdr, &setup)?;
    let url = format!("{}{}", pusher.url, Program::Cdr.ingest_path());
    let client = load::client(64)?;
    let mut all_ids = Vec::new();
    let mut failures = 0;
    for rate in RATES {
        let cpu = CpuMeter::start(pusher.pid());
        let paced =
            Paced { url: url.clone(), rate, duration: ctx.sizes.step, prefix: format!("{}{rate}-", prefix(phase)) };
        let result = paced::run_paced(&client, paced).await;
        let ids: Vec<u128> = result.acks.iter().map(|a| a.id).collect();
        all_ids.extend_from_slice(&ids);
        receiver.wait_for(all_ids.len() as u64, ctx.sizes.stall, ctx.sizes.wait_limit).await;
        let cpu_figures = cpu.figures(phase, &format!("{rate} per s"));
        let firsts = receiver.first_arrivals(&ids);
        step_figures(ctx, rate, &result, &firsts);
        for f in cpu_figures {
            ctx.figure(f);
        }
        failures += result.failures;
        if !result.samples.is_empty() {
            ctx.note(format!("latency: failed posts, e.g. {}", result.samples.join(" | ")));
        }
    }
    let counts = settle(&client, &pusher.url, Duration::from_secs(10)).await;
    let tally = receiver.tally(&all_ids);
    pusher.stop()?;
    receiver.stop().await;
    ctx.check(phase, "posts not 2xx", failures);
    delivery_checks(ctx, phase, &tally, counts);
    ctx.note(format!(
        "latency: single-event posts from ceil(rate/100) senders on tokio intervals, open loop (a post does not \
         wait for earlier answers), {:.0} s per step; \
         latency = first attempt's arrival at the receiver - its 202 read by the sender (same clock); \
         a first attempt that arrived before the 202 was read counts as 0",
        ctx.sizes.step.as_secs_f64()
    ));
    Ok(())
}

/// 202 -> first attempt of each acknowledged event that arrived (microseconds, 0 when the
/// attempt arrived before the 202 was read), and how many did so.
fn first_attempt_micros(acks: &[Ack], firsts: &[Option<Instant>]) -> (Vec<u64>, u64) {
    let mut micros = Vec::with_capacity(firsts.len());
    let mut early = 0;
    for (ack, first) in acks.iter().zip(firsts) {
        let Some(first) = first else { continue };
        match first.checked_duration_since(ack.acked) {
            Some(d) => micros.push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => {
                early += 1;
                micros.push(0);
            }
        }
    }
    (micros, early)
}

/// Figures of one step: achieved rate, latency percentiles, ingest latency.
fn step_figures(ctx: &mut Ctx, rate: f64, result: &PacedResult, firsts: &[Option<Instant>]) {
    let (mut micros, early) = first_attempt_micros(&result.acks, firsts);
    let p = percentiles(&mut micros);
    let mut ingest: Vec<u64> =
        result.acks.iter().map(|a| u64::try_from((a.acked - a.sent).as_micros()).unwrap_or(u64::MAX)).collect();
    let ingest = percentiles(&mut ingest);
    let ph = Phase::Latency.name();
    let r = rate as u64;
    let sent = load::per_sec(result.acks.len() as u64, result.elapsed);
    ctx.figure(Figure::new(
        ph,
        &format!("latency.{r}.rate"),
        format!("achieved send rate, target {r}/s"),
        sent,
        "events/s",
    ));
    for (name, v) in [("p50", p.p50), ("p99", p.p99), ("max", p.max)] {
        let label = format!("202 -> first attempt {name} at {r}/s");
        ctx.figure(Figure::new(ph, &format!("latency.{r}.{name}"), label, v, "ms"));
    }
    let end = result.acks.iter().map(|a| a.acked).max();
    let in_step = firsts.iter().filter(|f| f.is_some() && **f <= end).count() as u64;
    let delivered = load::per_sec(in_step, result.elapsed);
    let label = format!("delivered while sending at {r}/s (first attempts)");
    ctx.figure(Figure::new(ph, &format!("latency.{r}.delivered"), label, delivered, "events/s"));
    let label = format!("first attempt before the 202 was read, at {r}/s");
    ctx.figure(Figure::new(ph, &format!("latency.{r}.early"), label, early as f64, "events"));
    for (name, v) in [("p50", ingest.p50), ("p99", ingest.p99)] {
        let label = format!("post -> 202 (ingest) {name} at {r}/s");
        ctx.figure(Figure::new(ph, &format!("latency.{r}.ingest.{name}"), label, v, "ms"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_samples() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = percentiles(&mut v);
        assert_eq!(p.p50, 51.0);
        assert_eq!(p.p99, 99.0);
        assert_eq!(p.max, 100.0);
        assert_eq!(percentiles(&mut []).max, 0.0);
    }
}
