//! The source phases (issue 13, point 7): cdr-pusher with one switch source configured
//! (`sources:` in its config) and the bench receiver as its subscriber; `--events` generated
//! CDRs are sent in that switch's native form as fast as the source takes them, and the
//! figure is the rate at which they were delivered.
//!
//! - `source-freeswitch`: mod_json_cdr documents POSTed to `/v1/sources/freeswitch?uuid=`,
//!   `--concurrency` requests in flight.
//! - `source-asterisk`: cdr_csv lines appended to the followed `Master.csv` by one writer,
//!   100 lines a write, as fast as it can.
//! - `source-ucm`: one TCP connection per record to `sources.ucm.tcp_listen`, `--concurrency`
//!   connections at once, each waiting for the server's close.
//! - `source-redis`: mod_cti items LPUSHed onto the list of a `redis-server` the phase starts
//!   (Debian's package; on a free port, in the phase's directory), 100 a pipeline, 8 pipelines
//!   at once.
//!
//! Bodies are built before the clock starts. The source's own counts (`GET /v1/sources`)
//! and the receiver's are checked: every CDR accepted once, none rejected, none lost or
//! delivered twice.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::load;
use super::phases::{settle, CpuMeter};
use super::pusher::{Program, Setup};
use super::receiver::BenchReceiver;
use super::report::Figure;
use super::{Ctx, Phase};
use crate::generator::{CallGenerator, GenConfig};
use crate::model::{Cdr, Payload};
use crate::native::{asterisk, freeswitch, redis as cti, sender::send_tcp, ucm, LegNumber};

/// Lines per write of the Asterisk writer.
const LINES_PER_WRITE: usize = 100;

/// `n` generated CDRs (default mixes, 10 % callbacks), with the leg numbers of their calls.
fn cdrs(n: usize, prefix: &str) -> Vec<(Cdr, LegNumber)> {
    let config = GenConfig { call_id_prefix: prefix.to_string(), ..GenConfig::default() };
    let mut generator = CallGenerator::new(config, 13);
    let start = crate::calls::now_ms() - 86_400_000;
    let mut out = Vec::with_capacity(n + 1);
    for call in 1u64.. {
        if out.len() >= n {
            break;
        }
        for post in generator.next_call(start + call as i64 * 10).posts {
            if let Payload::Cdr(cdr) = post.payload {
                let number = LegNumber::of(call, &cdr);
                out.push((cdr, number));
            }
        }
    }
    out.truncate(n);
    out
}

/// The `sources:` section of a phase, with the Asterisk file in `dir`.
fn sources_yaml(phase: Phase, dir: &Path) -> String {
    match phase {
        Phase::SourceFreeswitch => {
            "sources: {freeswitch: {service_type: 100, account_variable: accountcode, encoded_values: false}}\n".into()
        }
        Phase::SourceAsterisk => format!(
            "sources: {{asterisk_csv: [{{path: \"{}\", columns: cdr_csv, timezone: UTC}}]}}\n",
            dir.join("Master.csv").display()
        ),
        Phase::SourceRedis => format!("sources: {{redis: {{url: \"redis://127.0.0.1:{}\"}}}}\n", redis_port(dir)),
        _ => "sources: {ucm: {tcp_listen: \"127.0.0.1:0\", timezone: UTC}}\n".into(),
    }
}

/// The port of the phase's redis-server, kept in its directory.
fn redis_port(dir: &Path) -> u16 {
    std::fs::read_to_string(dir.join("redis.port")).ok().and_then(|p| p.trim().parse().ok()).unwrap_or(6379)
}

/// A `redis-server` for the phase, on a free port, persisting nothing; killed when dropped.
struct RedisChild(std::process::Child);

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the phase's redis-server in `dir` and waits until it answers PING.
async fn start_redis(dir: &Path) -> anyhow::Result<RedisChild> {
    use anyhow::Context as _;
    let port = super::backlog::free_port().await?;
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting redis-server (Debian's redis-server package) for source-redis")?;
    let child = RedisChild(child);
    std::fs::write(dir.join("redis.port"), port.to_string())?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    for _ in 0..200 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                return Ok(child);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("redis-server on port {port} did not answer PING")
}

/// mod_cti's LPUSHes, 100 items a pipeline, 8 pipelines at once.
async fn send_redis(dir: &Path, cdrs: &[(Cdr, LegNumber)]) -> anyhow::Result<Sent> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis_port(dir)))?;
    let conn = client.get_multiplexed_async_connection().await?;
    let items: Vec<String> = cdrs.iter().map(|(c, _)| cti::item(c).to_string()).collect();
    let chunks: Vec<Vec<String>> = items.chunks(100).map(<[String]>::to_vec).collect();
    Ok(closed_loop(Arc::new(chunks), 8, move |chunks, i| {
        let mut conn = conn.clone();
        async move {
            let mut pipe = redis::pipe();
            for item in &chunks[i] {
                pipe.cmd("LPUSH").arg("cdr").arg(item).ignore();
            }
            pipe.query_async::<()>(&mut conn).await.map_err(|e| e.to_string())
        }
    })
    .await)
}

/// What was sent: sends that failed, with a few samples.
#[derive(Default)]
struct Sent {
    failures: u64,
    samples: Vec<String>,
}

/// Runs `workers` tasks taking bodies off `bodies` in turn, each sent by `send`.
async fn closed_loop<T, F, Fut>(bodies: Arc<Vec<T>>, workers: usize, send: F) -> Sent
where
    T: Send + Sync + 'static,
    F: Fn(Arc<Vec<T>>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (bodies, next, send) = (bodies.clone(), next.clone(), send.clone());
        tasks.spawn(async move {
            let mut sent = Sent::default();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= bodies.len() {
                    return sent;
                }
                if let Err(e) = send(bodies.clone(), i).await {
                    sent.failures += 1;
                    if sent.samples.len() < 3 {
                        sent.samples.push(e);
                    }
                }
            }
        });
    }
    let mut all = Sent::default();
    while let Some(Ok(sent)) = tasks.join_next().await {
        all.failures += sent.failures;
        all.samples.extend(sent.samples.into_iter().take(3 - all.samples.len().min(3)));
    }
    all
}

/// mod_json_cdr's POSTs, `workers` at once.
async fn send_freeswitch(base: &str, cdrs: &[(Cdr, LegNumber)], workers: usize) -> anyhow::Result<Sent> {
    let client = load::client(workers)?;
    let url = format!("{base}{}", crate::native::sender::FREESWITCH_PATH);
    let bodies: Vec<(String, String)> =
        cdrs.iter().map(|(c, _)| (freeswitch::leg_uuid(c), freeswitch::document(c).to_string())).collect();
    Ok(closed_loop(Arc::new(bodies), workers, move |bodies, i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (uuid, body) = &bodies[i];
            let response = client
                .post(&url)
                .query(&[("uuid", uuid)])
                .header("content-type", "application/json")
                .header("user-agent", "freeswitch-json/1.0")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.as_u16() != 202 || text.contains("\"duplicate\":true") {
                return Err(format!("HTTP {status}: {text}"));
            }
            Ok(())
        }
    })
    .await)
}

/// One writer appending the lines to `path`, `LINES_PER_WRITE` a write.
async fn send_asterisk(path: &Path, cdrs: &[(Cdr, LegNumber)]) -> anyhow::Result<Sent> {
    let lines: Vec<String> = cdrs.iter().map(|(c, n)| asterisk::line(c, n.serial())).collect();
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Sent> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        for chunk in lines.chunks(LINES_PER_WRITE) {
            file.write_all(chunk.concat().as_bytes())?;
        }
        Ok(Sent::default())
    })
    .await?
}

/// One TCP connection per record, `workers` at once.
async fn send_ucm(addr: &str, cdrs: &[(Cdr, LegNumber)], workers: usize) -> Sent {
    let bodies: Vec<Vec<u8>> = cdrs.iter().map(|(c, n)| ucm::record(c, *n).to_string().into_bytes()).collect();
    let addr = addr.to_string();
    closed_loop(Arc::new(bodies), workers, move |bodies, i| {
        let addr = addr.clone();
        async move { send_tcp(&addr, &bodies[i]).await.map_err(|e| format!("{addr}: {e}")) }
    })
    .await
}

/// The source's entry in `GET /v1/sources`.
pub(super) async fn source_counts(client: &reqwest::Client, base: &str) -> Option<Value> {
    let body: Value = client.get(format!("{base}/v1/sources")).send().await.ok()?.json().await.ok()?;
    body["sources"].as_array()?.first().cloned()
}

/// Runs one source phase.
pub(super) async fn run(ctx: &mut Ctx, phase: Phase) -> anyhow::Result<()> {
    let n = ctx.sizes.events as usize;
    let cdrs = cdrs(n, &super::phases::prefix(phase));
    let receiver = BenchReceiver::start(0, n).await?;
    let dir = ctx.temp_dir(phase)?;
    let _redis = match phase {
        Phase::SourceRedis => Some(start_redis(dir.path()).await?),
        _ => None,
    };
    let setup = Setup { subscriber: Some(receiver.url()), extra: sources_yaml(phase, dir.path()), ..Setup::default() };
    let pusher = super::pusher::Pusher::start(&ctx.options.bin_dir, Program::Cdr, dir.path(), &setup)?;
    let client = load::client(4)?;
    let before = source_counts(&client, &pusher.url).await.unwrap_or_default();
    let workers = ctx.sizes.concurrency;
    let cpu = CpuMeter::start(pusher.pid());
    let started = Instant::now();
    let sent = match phase {
        Phase::SourceFreeswitch => send_freeswitch(&pusher.url, &cdrs, workers).await?,
        Phase::SourceAsterisk => send_asterisk(&dir.path().join("Master.csv"), &cdrs).await?,
        Phase::SourceRedis => send_redis(dir.path(), &cdrs).await?,
        _ => {
            let address = before["address"].as_str().unwrap_or_default().trim_start_matches("tcp://").to_string();
            send_ucm(&address, &cdrs, workers).await
        }
    };
    let sending = started.elapsed();
    let all = receiver.wait_for(n as u64, ctx.sizes.stall, ctx.sizes.wait_limit).await;
    let elapsed = started.elapsed();
    let cpu_figures = cpu.figures(phase, "the run");
    let cpu_secs = cpu.pusher_secs();
    let counts = settle(&client, &pusher.url, Duration::from_secs(10)).await;
    let after = source_counts(&client, &pusher.url).await.unwrap_or_default();
    let tally = receiver.tally(&[]);
    pusher.stop()?;
    receiver.stop().await;
    let delivered = tally.unexpected; // every webhook-id that arrived (none was announced)
    report(ctx, phase, Run { n: n as u64, sent, sending, elapsed, delivered, all, cpu_secs, after });
    for f in cpu_figures {
        ctx.figure(f);
    }
    ctx.check(phase, "duplicates", tally.duplicates);
    ctx.check(phase, "malformed", tally.malformed);
    if let Some(c) = counts {
        ctx.check(phase, "dead", c.dead);
        ctx.check(phase, "pending at end", c.pending);
    }
    Ok(())
}

/// What one source phase measured.
struct Run {
    n: u64,
    sent: Sent,
    sending: Duration,
    elapsed: Duration,
    delivered: u64,
    all: bool,
    cpu_secs: Option<f64>,
    after: Value,
}

/// The figures, checks and note of a source phase.
fn report(ctx: &mut Ctx, phase: Phase, r: Run) {
    let p = phase.name();
    let how = match phase {
        Phase::SourceFreeswitch => format!("mod_json_cdr POSTs, {} in flight", ctx.sizes.concurrency),
        Phase::SourceAsterisk => format!("Master.csv lines, {LINES_PER_WRITE} a write"),
        Phase::SourceRedis => "mod_cti items LPUSHed, 100 a pipeline, 8 pipelines at once".to_string(),
        _ => format!("UCM TCP connections, {} at once", ctx.sizes.concurrency),
    };
    let what = format!("delivered ({} CDRs, {how})", r.n);
    ctx.figure(Figure::new(p, &format!("{p}.delivered"), what, load::per_sec(r.delivered, r.elapsed), "events/s"));
    let label = "sent by the switch side (until the last was taken)";
    ctx.figure(Figure::new(p, &format!("{p}.sent"), label, load::per_sec(r.n, r.sending), "events/s"));
    if let Some(secs) = r.cpu_secs.filter(|_| r.delivered > 0) {
        let label = "pusher CPU per delivered event (source + outbox + delivery)";
        ctx.figure(Figure::new(p, &format!("{p}.cpu.pusher.per-event"), label, secs * 1e6 / r.delivered as f64, "µs"));
    }
    let count = |k: &str| r.after[k].as_u64().unwrap_or(0);
    ctx.check(phase, "sends failed", r.sent.failures);
    ctx.check(phase, "lost", r.n.saturating_sub(r.delivered));
    ctx.check(phase, "unexpected ids", r.delivered.saturating_sub(r.n));
    ctx.check(phase, "source rejected", count("rejected"));
    ctx.check(phase, "source duplicates", count("duplicates"));
    ctx.check(phase, "source not accepted", r.n.saturating_sub(count("accepted")));
    if !r.all {
        ctx.note(format!("{p}: gave up waiting for deliveries after {:.0} s", r.elapsed.as_secs_f64()));
    }
    if !r.sent.samples.is_empty() {
        ctx.note(format!("{p}: failed sends, e.g. {}", r.sent.samples.join(" | ")));
    }
    ctx.note(format!(
        "{p}: cdr-pusher with only this source and the bench subscriber; {} generated CDRs sent as {how}; \
         delivered = CDRs whose first push was answered, per second from the first send to the last first push",
        r.n
    ));
}
