//! What each subcommand does once its options are parsed: wiring of the library pieces to
//! the terminal (header lines, progress bar, signals, summary).

use std::io::Write;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::calls::{now_ms, CallsDriver, RunLimit};
use crate::cli::{BenchArgs, CallsArgs, GenerateArgs, ReceiveArgs, RecordKind};
use crate::generator::CallGenerator;
use crate::model::Payload;
use crate::progress::{should_show, Progress};
use crate::receive::Receiver;
use crate::report::{calls_report, receiver_report};

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `callsim calls`: runs the driver with a progress bar; the first Ctrl-C stops starting
/// calls and finishes the ones in flight at once, a second one exits immediately.
pub async fn calls(args: CallsArgs) -> anyhow::Result<()> {
    let seed = args.generator.seed.unwrap_or_else(rand::random);
    let start_ms = args.start.unwrap_or_else(now_ms);
    let opts = args.options(seed, start_ms);
    let total = match opts.limit {
        RunLimit::Count(n) => Some(n),
        _ => None,
    };
    let targets: Vec<String> = [("status", &opts.status_url), ("cdr", &opts.cdr_url)]
        .iter()
        .filter_map(|(k, u)| u.as_ref().map(|u| format!("{k} -> {u}")))
        .collect();
    let driver = CallsDriver::new(opts).context("invalid options")?;
    eprintln!("callsim calls: {} calls/s, speed x{}, seed {seed}, {}", args.rate, args.speed, targets.join(", "));
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_signals(stop.clone()));
    let progress = Progress::start(driver.stats(), total, should_show(args.quiet));
    let summary = driver.run(stop).await;
    progress.finish().await;
    watcher.abort();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", calls_report(&summary));
    }
    Ok(())
}

/// First signal cancels `stop`; a second one exits the process.
async fn watch_signals(stop: CancellationToken) {
    shutdown_signal().await;
    eprintln!("\ncallsim: stopping; finishing calls in flight (again to abort)");
    stop.cancel();
    shutdown_signal().await;
    std::process::exit(130);
}

/// `callsim receive`: serves until Ctrl-C/SIGTERM, then prints the summary.
pub async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let config = args.config();
    let handle = Receiver::start(config, listener).await?;
    eprintln!(
        "callsim receive: listening on {} (POST any path, e.g. {} and {}); signatures {}; fail rate {} with {}; Ctrl-C for the summary",
        handle.url(""),
        handle.url("/cdr"),
        handle.url("/status"),
        if args.secret.is_some() { "verified" } else { "not checked" },
        args.fail_rate,
        args.status,
    );
    shutdown_signal().await;
    let stats = handle.shutdown().await;
    print!("{}", receiver_report(&stats));
    Ok(())
}

/// `callsim generate`: prints generated records as JSON lines on stdout.
pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let seed = args.generator.seed.unwrap_or_else(rand::random);
    let start = args.start_ms.unwrap_or_else(now_ms);
    let config = args.generator.config(start);
    config.validate().map_err(anyhow::Error::msg)?;
    let mut generator = CallGenerator::new(config, seed);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 0..args.count {
        let begin = start + (i as f64 * args.interval * 1000.0) as i64;
        for post in generator.next_call(begin).posts {
            let wanted = matches!(
                (&post.payload, args.kind),
                (_, RecordKind::All) | (Payload::Status(_), RecordKind::Status) | (Payload::Cdr(_), RecordKind::Cdr)
            );
            if wanted {
                writeln!(out, "{}", post.payload.to_json())?;
            }
        }
    }
    Ok(())
}

/// `callsim bench`: runs the phases, prints the report (and writes `--json`); fails when a
/// correctness check (loss, duplicate, order...) counted anything, never because of speed.
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let (text, json, failures) = match &args.against {
        None => {
            let report = crate::bench::run(args.options()).await?;
            (report.render(), serde_json::to_string_pretty(&report)?, report.failures())
        }
        Some(against) => {
            let cmp = crate::bench::run_compared(args.options(), against.clone(), args.rounds).await?;
            (cmp.render(), serde_json::to_string_pretty(&cmp)?, cmp.failures())
        }
    };
    print!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if !failures.is_empty() {
        anyhow::bail!("correctness checks failed: {}", failures.join("; "));
    }
    Ok(())
}
