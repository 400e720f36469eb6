//! The `source-esl` phase (issue 16, point 5): status-pusher with `sources.esl` pointing at
//! callsim playing FreeSWITCH's event socket (`native::switch`), and the bench receiver as
//! its subscriber. `--events` statuses (calls of one leg: CHANNEL_CREATE, CHANNEL_PROGRESS,
//! CHANNEL_ANSWER, CHANNEL_HANGUP_COMPLETE, as `text/event-json`) are encoded before the
//! clock starts and written on the one connection as fast as status-pusher reads them (it
//! reads no further than it stores: the write is paced by its intake). The figure is the rate
//! at which they were delivered; the receiver checks each call's order (sequence 0-3 with
//! the statuses in order), and the source's and receiver's counts are checked.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

use super::load;
use super::phases::{settle, CpuMeter};
use super::pusher::{Program, Setup};
use super::receiver::BenchReceiver;
use super::report::Figure;
use super::sources::source_counts;
use super::{Ctx, Phase};
use crate::model::{CallCommon, Disposition, Party, Release, ReleaseDirection, Status, StatusEvent};
use crate::native::switch::{esl_event, handshake, Protocol};

const PASSWORD: &str = "ClueCon";

/// The events of `calls` one-leg calls, encoded.
fn transcript(calls: u64, prefix: &str) -> Vec<u8> {
    let start = crate::calls::now_ms() - 86_400_000;
    let mut bytes = Vec::with_capacity(calls as usize * 4 * 700);
    for i in 0..calls {
        let common =
            CallCommon { call_id: format!("{prefix}{i:07}"), service_type: 100, account_id: None, user_data: None };
        let begin = start + i as i64 * 10;
        for (k, status) in [Status::Dialing, Status::Ringing, Status::Answered, Status::Hangup].into_iter().enumerate()
        {
            let release = (status == Status::Hangup).then_some(Release {
                disposition: Disposition::Answered,
                release_direction: ReleaseDirection::Caller,
                hangup_cause: 16,
                sip_code: 200,
            });
            let event = StatusEvent {
                common: common.clone(),
                status,
                timestamp: begin + k as i64 * 1000,
                party: Some(Party::Caller),
                caller_number: "8613800000001".into(),
                callee_number: "8613900000002".into(),
                release,
                privacy: None,
            };
            bytes.extend(esl_event(&event));
        }
    }
    bytes
}

/// Runs the phase.
pub(super) async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let phase = Phase::SourceEsl;
    let calls = (ctx.sizes.events / 4).max(1);
    let n = calls * 4;
    let bytes = transcript(calls, &super::phases::prefix(phase));
    let receiver = BenchReceiver::start(0, n as usize).await?;
    let dir = ctx.temp_dir(phase)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let extra = format!("sources: {{esl: {{host: 127.0.0.1, port: {port}, password: {PASSWORD}}}}}\n");
    let setup = Setup { subscriber: Some(receiver.url()), extra, ..Setup::default() };
    let pusher = super::pusher::Pusher::start(&ctx.options.bin_dir, Program::Status, dir.path(), &setup)?;
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(15), listener.accept()).await??;
    stream.set_nodelay(true)?;
    anyhow::ensure!(
        handshake(&mut stream, &Protocol::Esl { password: PASSWORD.into() }).await?,
        "status-pusher did not log in"
    );
    let client = load::client(4)?;
    let cpu = CpuMeter::start(pusher.pid());
    let started = Instant::now();
    stream.write_all(&bytes).await?;
    let sending = started.elapsed();
    let all = receiver.wait_for(n, ctx.sizes.stall, ctx.sizes.wait_limit).await;
    let elapsed = started.elapsed();
    let cpu_figures = cpu.figures(phase, "the run");
    let cpu_secs = cpu.pusher_secs();
    let counts = settle(&client, &pusher.url, Duration::from_secs(10)).await;
    let after = source_counts(&client, &pusher.url).await.unwrap_or_default();
    let tally = receiver.tally(&[]);
    drop(stream);
    pusher.stop()?;
    receiver.stop().await;
    let p = phase.name();
    let delivered = tally.unexpected; // every webhook-id that arrived (none was announced)
    let what = format!("delivered ({n} statuses of {calls} calls, one event socket connection)");
    ctx.figure(Figure::new(p, &format!("{p}.delivered"), what, load::per_sec(delivered, elapsed), "events/s"));
    let label = "written by the switch side (until the last was read)";
    ctx.figure(Figure::new(p, &format!("{p}.sent"), label, load::per_sec(n, sending), "events/s"));
    if let Some(secs) = cpu_secs.filter(|_| delivered > 0) {
        let label = "pusher CPU per delivered status (source + outbox + delivery)";
        ctx.figure(Figure::new(p, &format!("{p}.cpu.pusher.per-event"), label, secs * 1e6 / delivered as f64, "µs"));
    }
    for f in cpu_figures {
        ctx.figure(f);
    }
    let count = |k: &str| after[k].as_u64().unwrap_or(0);
    ctx.check(phase, "lost", n.saturating_sub(delivered));
    ctx.check(phase, "unexpected ids", delivered.saturating_sub(n));
    ctx.check(phase, "duplicates", tally.duplicates);
    ctx.check(phase, "malformed", tally.malformed);
    ctx.check(phase, "order violations", tally.order_violations);
    ctx.check(phase, "source rejected", count("rejected"));
    ctx.check(phase, "source duplicates", count("duplicates"));
    ctx.check(phase, "source not accepted", n.saturating_sub(count("accepted")));
    if let Some(c) = counts {
        ctx.check(phase, "dead", c.dead);
        ctx.check(phase, "pending at end", c.pending);
    }
    if !all {
        ctx.note(format!("{p}: gave up waiting for deliveries after {:.0} s", elapsed.as_secs_f64()));
    }
    ctx.note(format!(
        "{p}: status-pusher connected to callsim's event socket; {n} statuses written on one connection as fast as \
         it read them; delivered = statuses whose first push was answered, per second from the first write to the last"
    ));
    Ok(())
}
