//! A pusher binary run as a child process with a config written by the bench: listens on
//! 127.0.0.1:0, keeps its database in the phase's temporary directory, logs warnings to
//! stdout only. Its output is drained by threads (and otherwise discarded) after the
//! "listening on http://ADDR" line gave its URL.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Lines of output kept for error messages.
const KEPT_LINES: usize = 40;
/// How long a pusher may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a pusher may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which pusher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// `cdr-pusher`, ingest at `/v1/cdrs`.
    Cdr,
    /// `status-pusher`, ingest at `/v1/status-events`.
    Status,
}

impl Program {
    /// Binary name.
    pub fn binary(self) -> &'static str {
        match self {
            Program::Cdr => "cdr-pusher",
            Program::Status => "status-pusher",
        }
    }

    /// Ingest path.
    pub fn ingest_path(self) -> &'static str {
        match self {
            Program::Cdr => crate::ingest::CDR_PATH,
            Program::Status => crate::ingest::STATUS_PATH,
        }
    }

    fn section(self) -> &'static str {
        match self {
            Program::Cdr => "cdr",
            Program::Status => "status",
        }
    }
}

/// What the bench configures.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Base URL of the `bench` subscriber (`/cdr` and `/status` are appended), or of all
    /// of them (see `subscribers`); none = no subscribers at all.
    pub subscriber: Option<String>,
    /// Retry schedule; none = the default one.
    pub retry: Option<Vec<String>>,
    /// How many subscribers point at `subscriber`: 1 is the one subscriber `bench`; more
    /// are [`subscriber_id`]s `s0`, `s1`... each at its own path under the base URL
    /// (`<base>/s17/cdr`), so that one receiver can tell their pushes apart.
    pub subscribers: usize,
    /// More YAML sections, appended as they are (e.g. `outbox: {retention: 1s}`).
    pub extra: String,
    /// The outbox's database URL (`postgres://…`, shared by replicas); none = a SQLite file
    /// in the phase's directory.
    pub database: Option<String>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup { subscriber: None, retry: None, subscribers: 1, extra: String::new(), database: None }
    }
}

/// A new, empty database on the PostgreSQL server at `server` (`--database`); its URL. Each
/// phase gets its own, so no phase sees another's outbox.
pub async fn fresh_database(server: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let name = format!("callsim_bench_{}_{}", std::process::id(), crate::calls::now_ms());
    let mut conn = sqlx::PgConnection::connect(server).await.context("connecting to --database")?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.context("CREATE DATABASE")?;
    conn.close().await?;
    let (base, _) = server.rsplit_once('/').context("--database needs a path: postgres://host/db")?;
    Ok(format!("{base}/{name}"))
}

/// The id of subscriber `i` of a setup with several, which is also the first segment of its
/// URLs' path: the bench receiver attributes pushes to subscribers by it.
pub fn subscriber_id(i: usize) -> String {
    format!("s{i}")
}

/// The `subscribers:` list entry of subscriber `id` posting to `base` + `/cdr` or `/status`.
fn subscriber_yaml(id: &str, base: &str) -> String {
    format!(
        "  - id: {id}\n    cdr_url: \"{base}/cdr\"\n    status_url: \"{base}/status\"\n    \
         service_types: [100, 200]\n    accounts: []\n    secret: null\n"
    )
}

/// The YAML config of a bench run of `program` with its database in `dir`.
pub fn config_yaml(program: Program, dir: &Path, setup: &Setup) -> String {
    let db = dir.join(format!("{}.db", program.section()));
    let database = setup.database.clone().unwrap_or_else(|| format!("sqlite://{}", db.display()));
    let mut yaml = format!(
        "log: {{level: warn, dir: \"\"}}\n\
         delivery: {{shutdown_grace: 1s}}\n\
         {}: {{listen: \"127.0.0.1:0\", database: \"{database}\"}}\n",
        program.section(),
    );
    yaml.push_str(&setup.extra);
    if let Some(schedule) = &setup.retry {
        yaml.push_str(&format!("retry: {{schedule: [{}]}}\n", schedule.join(", ")));
    }
    let Some(url) = &setup.subscriber else {
        yaml.push_str("subscribers: []\n");
        return yaml;
    };
    yaml.push_str("subscribers:\n");
    if setup.subscribers <= 1 {
        yaml.push_str(&subscriber_yaml("bench", url));
        return yaml;
    }
    for id in (0..setup.subscribers).map(subscriber_id) {
        yaml.push_str(&subscriber_yaml(&id, &format!("{url}/{id}")));
    }
    yaml
}

/// A running pusher.
pub struct Pusher {
    child: Child,
    /// Base URL, from its "listening on" line.
    pub url: String,
    /// Its database file.
    pub database: PathBuf,
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl Pusher {
    /// Writes `dir/config.yaml` and starts `bin_dir/<program>` with it; waits until it listens.
    pub fn start(bin_dir: &Path, program: Program, dir: &Path, setup: &Setup) -> anyhow::Result<Pusher> {
        // Absolute, because the pusher runs in its own working directory.
        let exe = std::path::absolute(bin_dir.join(program.binary()))?;
        if !exe.is_file() {
            bail!(
                "{} not found: build the pushers first (cargo build --release -p cdr-pusher -p status-pusher) \
                 or point --bin-dir at them",
                exe.display()
            );
        }
        let config = dir.join("config.yaml");
        std::fs::write(&config, config_yaml(program, dir, setup)).context("writing the bench config")?;
        let mut child = Command::new(&exe)
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            // log.level is warn; the one info line needed is the listening address.
            .env("RUST_LOG", "warn,push_core::app=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            drain(stream, lines.clone(), url_tx.clone());
        }
        let mut pusher =
            Pusher { child, url: String::new(), database: dir.join(format!("{}.db", program.section())), lines };
        pusher.url = pusher.wait_for_url(&url_rx, program)?;
        Ok(pusher)
    }

    fn wait_for_url(&mut self, urls: &mpsc::Receiver<String>, program: Program) -> anyhow::Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(url) = urls.recv_timeout(Duration::from_millis(50)) {
                return Ok(url);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status} before listening:\n{}", program.binary(), self.output());
            }
        }
        bail!("{} did not listen within {START_TIMEOUT:?}:\n{}", program.binary(), self.output())
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines it printed.
    pub fn output(&self) -> String {
        let lines = self.lines.lock().expect("lines lock");
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Peak resident set size so far (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Size of the database and its write-ahead log, MiB.
    pub fn database_mib(&self) -> f64 {
        let wal = PathBuf::from(format!("{}-wal", self.database.display()));
        let bytes: u64 = [&self.database, &wal].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
        bytes as f64 / (1024.0 * 1024.0)
    }

    /// Stops it: SIGTERM, then SIGKILL if it has not exited within 15 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.pid()).context("pid")?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: pusher did not stop within {STOP_TIMEOUT:?} after SIGTERM; killing it");
        self.child.kill().context("killing the pusher")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` line by line on a thread: sends the URL of a "listening on" line, keeps the
/// last lines, discards the rest.
fn drain(stream: Box<dyn Read + Send>, lines: Arc<Mutex<VecDeque<String>>>, urls: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(rest) = line.split(" listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = urls.send(url);
            }
            let mut kept = lines.lock().expect("lines lock");
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    });
}

/// CPU time (user + system) a process used so far, seconds; `None` if it is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux platform the pushers target.
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_without_and_with_a_subscriber() {
        let dir = Path::new("/tmp/b");
        let yaml = config_yaml(Program::Cdr, dir, &Setup::default());
        assert!(yaml.contains("subscribers: []"), "{yaml}");
        assert!(yaml.contains("cdr: {listen: \"127.0.0.1:0\", database: \"sqlite:///tmp/b/cdr.db\"}"));
        let setup = Setup {
            subscriber: Some("http://127.0.0.1:9".into()),
            retry: Some(vec!["1s".into(); 2]),
            ..Setup::default()
        };
        let yaml = config_yaml(Program::Status, dir, &setup);
        assert!(yaml.contains("status_url: \"http://127.0.0.1:9/status\""), "{yaml}");
        assert!(yaml.contains("retry: {schedule: [1s, 1s]}"), "{yaml}");
        assert_eq!(yaml.matches("- id: ").count(), 1, "{yaml}");
        assert!(yaml.contains("  - id: bench\n    cdr_url: \"http://127.0.0.1:9/cdr\"\n"), "{yaml}");
    }

    #[test]
    fn config_with_many_subscribers_gives_each_its_own_path() {
        let setup = Setup { subscriber: Some("http://127.0.0.1:9".into()), subscribers: 100, ..Setup::default() };
        let yaml = config_yaml(Program::Cdr, Path::new("/tmp/b"), &setup);
        assert_eq!(yaml.matches("- id: ").count(), 100, "{yaml}");
        assert!(!yaml.contains("id: bench"), "{yaml}");
        assert!(yaml.contains("  - id: s0\n    cdr_url: \"http://127.0.0.1:9/s0/cdr\"\n"), "{yaml}");
        assert!(yaml.contains("  - id: s99\n    cdr_url: \"http://127.0.0.1:9/s99/cdr\"\n"), "{yaml}");
        assert!(yaml.contains("status_url: \"http://127.0.0.1:9/s17/status\""), "{yaml}");
        assert!(!yaml.contains("s100"), "{yaml}");
    }

    #[test]
    fn one_subscriber_config_is_what_it_was() {
        let setup = Setup { subscriber: Some("http://127.0.0.1:9".into()), ..Setup::default() };
        let yaml = config_yaml(Program::Cdr, Path::new("/tmp/b"), &setup);
        let expected = "subscribers:\n  - id: bench\n    cdr_url: \"http://127.0.0.1:9/cdr\"\n    status_url: \
                        \"http://127.0.0.1:9/status\"\n    service_types: [100, 200]\n    accounts: []\n    secret: null\n";
        assert!(yaml.ends_with(expected), "{yaml}");
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_secs(std::process::id()).is_some());
    }
}
