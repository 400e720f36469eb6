//! The SQLite backend of the outbox, the embedded default: the only module with SQLite's SQL.
//!
//! One SQLite file per program, in WAL mode. All writes go through a single writer task
//! ([`writer`]) that takes every command waiting for it and commits them together: concurrent
//! ingest requests share one transaction (group commit). Commits do not wait for the disk;
//! the [`syncer`] fsyncs the WAL off the writer thread and only then answers ingest, so an
//! `Ok` from [`Outbox::ingest`] means the events are on disk, and one fsync covers every
//! commit before it. Reads for the operations API go to a small pool of reader connections
//! ([`read`]) that never block the writer.

mod apply;
mod as_store;
mod bulk;
mod deliveries;
mod health;
mod ingest;
mod lock;
mod purge;
mod read;
mod sources;
mod syncer;
mod writer;

#[cfg(test)]
mod plans;
#[cfg(test)]
mod sql_tests;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context as _;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    ConnectOptions as _, SqlitePool,
};
use tokio::sync::{mpsc, oneshot};

pub use self::lock::DatabaseInUse;
use self::writer::WriterStats;
use self::writer::{Command, Queued};
// The seam's types, for this backend's modules (`super::…`).
use super::{
    Accepted, AttemptRecord, ClaimBatch, Claimed, Completion, DeliveryDetail, DeliveryFilter, DeliveryRecord,
    IngestItem, IngestOutcome, NextState, Page, PurgeReport, RedeliverFilter, RejectRecord, RetentionPolicy,
    SourceNotes, StatsRow, Store, StoreCounters, StoreError, StoreFuture,
};
use crate::{config::Service, slots::Slots};

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long a connection waits for a lock another one holds (the writer's and the readers').
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands the writer queue holds before callers wait for room.
const QUEUE: usize = 4096;

/// Where the writer hands deliveries it stored as already claimed: straight to the delivery
/// loop, when the loop has a free slot for the subscriber, saving a claim query per event and
/// the wait for the loop's next turn.
pub struct Handoff {
    /// The delivery loop's free slots; the writer takes one per delivery it hands over.
    pub slots: Arc<Slots>,
    /// The delivery loop's inbox.
    pub deliveries: mpsc::UnboundedSender<Vec<Claimed>>,
}

/// Handle to one program's outbox: cheap to clone, shared by the API and the delivery loop.
#[derive(Clone)]
pub struct Outbox {
    commands: mpsc::Sender<Queued>,
    readers: SqlitePool,
    stats: Arc<WriterStats>,
}

impl Outbox {
    /// Opens (creating and migrating if needed) the database at `url`, resets claims left by
    /// a previous run, and starts the writer task. Refuses with [`DatabaseInUse`] while
    /// another process has the file open (one process per database file, see `lock`); the
    /// lock is held until the returned task ends, after the writer and the syncer.
    pub async fn open(
        url: &str,
        service: Service,
        handoff: Handoff,
    ) -> anyhow::Result<(Outbox, tokio::task::JoinHandle<()>)> {
        let options = connect_options(url)?;
        let path = db_path(url);
        let lock = lock::lock(&path)?;
        // Migrations run through sqlx (they are embedded with it); the writer then talks to
        // SQLite directly on a thread of its own (see `writer`).
        let mut conn = options.connect().await.with_context(|| format!("opening {url}"))?;
        MIGRATOR.run(&mut conn).await.context("migrating the outbox")?;
        sqlx::Connection::close(conn).await?;
        // Releasing the claims walks the deliveries table: off the async workers.
        let writer_path = path.clone();
        let (writer, ids) = tokio::task::spawn_blocking(move || {
            let writer = open_writer(&writer_path)?;
            deliveries::release_claims(&writer)?;
            let ids = ingest::RowIds::load(&writer)?;
            anyhow::Ok((writer, ids))
        })
        .await??;
        // Readers (the operations API) keep SQLite's small default page cache and temporary
        // files (a sort of `/v1/stats` over a million deliveries spills to a temporary file
        // instead of growing the process by tens of MB).
        let readers = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.pragma("cache_size", "-1000"))
            .await
            .context("opening reader connections")?;
        let (commands, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let handoff = Arc::new(handoff);
        let (durable_tx, syncer) = syncer::spawn(path, handoff.clone(), stats.clone());
        let setup =
            writer::WriterSetup { ordered: service == Service::Status, stats: stats.clone(), ids, handoff, durable_tx };
        let writer = tokio::task::spawn_blocking(move || writer::run(writer, rx, setup));
        let task = tokio::spawn(async move {
            let _ = writer.await;
            let _ = syncer.await;
            drop(lock);
        });
        Ok((Outbox { commands, readers, stats }, task))
    }

    /// Stores events; returns only after the commit.
    pub async fn ingest(
        &self,
        items: Vec<IngestItem>,
        notes: SourceNotes,
        now: i64,
    ) -> Result<IngestOutcome, StoreError> {
        self.call(|reply| Command::Ingest { items, notes, now, reply }).await
    }

    /// One turn of the delivery loop in one transaction: records finished attempts (`done`),
    /// then claims up to `limit` due deliveries for each listed subscriber. Neither needs to
    /// survive a power loss (a lost result means one more attempt), so such transactions are
    /// committed without waiting for the disk; a process crash loses nothing committed.
    pub async fn cycle(
        &self,
        done: Arc<Vec<Completion>>,
        wants: Vec<(String, usize)>,
        now: i64,
    ) -> Result<ClaimBatch, StoreError> {
        self.call(|reply| Command::Cycle { done, wants, now, reply }).await
    }

    /// Puts matching deliveries back to pending with a fresh schedule; returns how many.
    pub async fn redeliver(&self, filter: RedeliverFilter, now: i64) -> Result<u64, StoreError> {
        self.call(|reply| Command::Redeliver { filter, now, reply }).await
    }

    /// One batch of retention's purge (see [`purge`]): a few milliseconds of the writer.
    pub async fn purge(&self, policy: RetentionPolicy, now: i64) -> Result<PurgeReport, StoreError> {
        self.send(|reply| Queued::Purge { policy, now, reply }).await
    }

    /// Keeps (or forgets) that the operator paused `subscriber`; answers once on disk.
    pub async fn set_paused(&self, subscriber: String, paused: bool, now: i64) -> Result<(), StoreError> {
        self.call(|reply| Command::Pause { subscriber, paused, now, reply }).await
    }

    /// Lets unfinished claims go, so the next start attempts them again at once.
    pub async fn release_claims(&self) -> Result<(), StoreError> {
        self.call(|reply| Command::ReleaseClaims { reply }).await
    }

    async fn call<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Command) -> Result<T, StoreError> {
        self.send(|reply| Queued::Unit(make(reply))).await
    }

    async fn send<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Queued) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// The writer's counters (transactions, ingests, claims).
    pub fn writer_stats(&self) -> &WriterStats {
        &self.stats
    }

    /// True while the writer runs, its last write that changed rows succeeded (see
    /// [`health`]), and a reader can query the file.
    pub async fn is_ready(&self) -> bool {
        !self.commands.is_closed()
            && !self.stats.health.failing()
            && sqlx::query("SELECT 1").execute(&self.readers).await.is_ok()
    }

    /// Closes the reader pool (the writer stops when every handle is dropped).
    pub async fn close_readers(&self) {
        self.readers.close().await;
    }
}

/// Fails with [`DatabaseInUse`] if another process has the database at `url` open; takes
/// nothing (the lock is taken and let go). Lets a program refuse to start before it binds
/// its port, so the message names the database rather than the address both would use.
pub fn ensure_not_in_use(url: &str) -> anyhow::Result<()> {
    let path = db_path(url);
    if path.parent().is_some_and(|dir| !dir.as_os_str().is_empty() && !dir.exists()) {
        return Ok(()); // no directory, no database yet: nobody has it open
    }
    lock::lock(&path).map(drop)
}

/// The database file of a `sqlite://path` URL.
fn db_path(url: &str) -> std::path::PathBuf {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    std::path::PathBuf::from(path.split('?').next().unwrap_or(path))
}

/// The writer's own connection. The writer gets the big page cache, and the temporary
/// b-trees of its bulk statements stay in memory. Commits do not wait for the disk
/// (`synchronous=NORMAL`): durability of a 202 comes from the syncer's fsync of the WAL.
/// Prepared statements are cached: the bulk statements come in a few sizes each.
fn open_writer(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -4000; PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(100);
    Ok(conn)
}

fn connect_options(url: &str) -> anyhow::Result<SqliteConnectOptions> {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(SqliteConnectOptions::from_str(url)
        .with_context(|| format!("database url {url}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Durability of a 202 comes from the syncer's fsync of the WAL (see `syncer`).
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .disable_statement_logging())
}
