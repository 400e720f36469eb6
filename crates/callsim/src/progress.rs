//! A live progress bar for long `calls` runs, fed from the driver's counters. Hidden when
//! stdout is not a terminal or with `--quiet`, so logs and pipes stay clean.

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stats::LiveStats;

/// How often the bar is refreshed from the counters.
const TICK: Duration = Duration::from_millis(200);

/// A running progress display; call [`Progress::finish`] when the run ends.
pub struct Progress {
    bar: ProgressBar,
    done: CancellationToken,
    task: JoinHandle<()>,
}

/// Whether a bar should be drawn: stdout is a terminal and the user did not ask for quiet.
pub fn should_show(quiet: bool) -> bool {
    !quiet && std::io::stdout().is_terminal()
}

impl Progress {
    /// Starts refreshing a bar of `total` calls (a spinner when unbounded).
    pub fn start(stats: Arc<LiveStats>, total: Option<u64>, visible: bool) -> Self {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} calls ({per_sec}) {msg}"
        } else {
            "{spinner} {elapsed_precise} {pos} calls ({per_sec}) {msg}"
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        if !visible {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let done = CancellationToken::new();
        let task = tokio::spawn(refresh(bar.clone(), stats, done.clone()));
        Self { bar, done, task }
    }

    /// Stops refreshing and clears the bar.
    pub async fn finish(self) {
        self.done.cancel();
        let _ = self.task.await;
        self.bar.finish_and_clear();
    }
}

/// Copies the counters into the bar until `done`.
async fn refresh(bar: ProgressBar, stats: Arc<LiveStats>, done: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    while !done.is_cancelled() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => {}
        }
        let started = stats.calls_started.load(Relaxed);
        let finished = stats.calls_finished.load(Relaxed);
        let t = stats.status.snapshot() + stats.cdr.snapshot();
        bar.set_position(started);
        bar.set_message(format!(
            "| in flight {} | sent {} | accepted {} | rejected {} | dup {} | errors {}",
            started.saturating_sub(finished),
            t.sent,
            t.accepted,
            t.rejected,
            t.duplicates,
            t.errors
        ));
    }
}
