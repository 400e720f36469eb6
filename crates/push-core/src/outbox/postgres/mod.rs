//! The PostgreSQL backend of the outbox (issue 15): several replicas of one pusher share one
//! database, each taking ingest and delivering.
//!
//! Ingest goes through one writer task per replica ([`writer`]) that drains every queued
//! request into one transaction (group commit, `synchronous_commit = on`): a 202 is answered
//! only after PostgreSQL has the commit on disk. Races between replicas are settled by the
//! database: a transaction that touches a call first takes the call's transaction-scoped
//! advisory lock (in a fixed order, so two never deadlock), which serializes sequences, the
//! 409 after HANGUP, duplicates and the per-call chains across replicas. A claim is a lease
//! ([`deliveries`]): rows are taken with `FOR UPDATE SKIP LOCKED` and keep the replica's id
//! and an expiry; an expired lease is claimable by any replica.

mod deliveries;
mod ingest;
mod listen;
mod orphans;
mod purge;
mod read;
mod supersede;
mod writer;

use std::{
    future::Future,
    pin::Pin,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context as _;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions as _, PgPool,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    ClaimBatch, Completion, DeliveryDetail, DeliveryFilter, IngestItem, IngestOutcome, MoveReport, Page, PurgeReport,
    RedeliverFilter, RejectRecord, RetentionPolicy, SourceNotes, StatsRow, Store, StoreCounters, StoreError,
    StoreFuture,
};
use crate::{config::Service, slots::Slots};

/// The schema, embedded from `migrations/postgres/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long a replica's claim lasts when the program does not say (`delivery.lease`).
pub use crate::config::DEFAULT_LEASE;

/// Ingest requests the writer queue holds before callers wait for room.
const QUEUE: usize = 4096;

/// Connections per replica: the writer's, the delivery loop's, the operations API's, purge.
const POOL: u32 = 6;

/// Counters of this replica's work, for `/v1/stats`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    transactions: AtomicU64,
    ingests: AtomicU64,
    claims: AtomicU64,
    longest_purge_micros: AtomicU64,
    failing: AtomicBool,
}

/// What every part of the backend shares.
pub(super) struct Shared {
    pool: PgPool,
    /// This replica's lease owner id.
    owner: String,
    lease_ms: i64,
    ordered: bool,
    /// `status.supersede` (only with `ordered`): see [`supersede`].
    supersede: bool,
    slots: Arc<Slots>,
    counters: Counters,
    purge: Mutex<purge::Cursor>,
    /// This replica's claims and when their leases end (epoch ms): the claims its delivery
    /// loop holds, changed after each committed round, for the renewal.
    held: Mutex<std::collections::HashMap<i64, i64>>,
    /// When leases were last renewed (`deliveries::renew_leases`), epoch ms.
    last_renewal: std::sync::atomic::AtomicI64,
    /// The LISTEN task. It holds one of the pool's connections, and closing the pool waits for
    /// every connection: [`Store::close`] stops it first, or the close waits forever.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Handle to one replica's view of the shared outbox.
#[derive(Clone)]
pub struct PgOutbox {
    shared: Arc<Shared>,
    ingests: mpsc::Sender<writer::Request>,
}

/// How this replica takes part: who it is, and how long its claims last.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The lease owner id (unique per running replica).
    pub id: String,
    /// How long a claim lasts.
    pub lease: Duration,
    /// The delivery loop's wake-up, notified when another replica commits new work (LISTEN).
    pub wake: Option<Arc<tokio::sync::Notify>>,
}

impl Replica {
    /// `VOICE_PUSH_REPLICA_ID` if set, else a fresh uuid: a restarted replica's old claims are
    /// then taken over when their leases run out, never released by another replica.
    pub fn from_env(lease: Duration) -> Replica {
        let id = std::env::var("VOICE_PUSH_REPLICA_ID")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Replica { id, lease, wake: None }
    }
}

impl PgOutbox {
    /// Connects, runs the migrations (one replica at a time: sqlx takes an advisory lock),
    /// releases this replica id's claims of a previous run, and starts the writer.
    /// `supersede`: `status.supersede` (status-pusher only).
    pub async fn open(
        url: &str,
        service: Service,
        slots: Arc<Slots>,
        replica: Replica,
        supersede: bool,
    ) -> anyhow::Result<(PgOutbox, tokio::task::JoinHandle<()>)> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("database url {url}"))?
            .options([("synchronous_commit", "on")])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(POOL)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to {}", redacted(url)))?;
        MIGRATOR.run(&pool).await.context("migrating the outbox")?;
        let shared = Arc::new(Shared {
            pool,
            owner: replica.id.clone(),
            lease_ms: replica.lease.as_millis() as i64,
            ordered: service == Service::Status,
            supersede: supersede && service == Service::Status,
            slots,
            counters: Counters::default(),
            purge: Mutex::new(purge::Cursor::default()),
            held: Mutex::new(std::collections::HashMap::new()),
            last_renewal: std::sync::atomic::AtomicI64::new(i64::MIN),
            listener: Mutex::new(None),
        });
        deliveries::release_claims(&shared).await.context("releasing this replica's claims")?;
        let listener = listen::spawn(&shared, replica.wake).await.context("LISTEN for other replicas")?;
        *shared.listener.lock().expect("listener lock") = Some(listener);
        let (ingests, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(writer::run(shared.clone(), rx));
        let stopping = shared.clone();
        let task = tokio::spawn(async move {
            let _ = writer.await;
            stopping.stop_listening().await;
        });
        Ok((PgOutbox { shared, ingests }, task))
    }

    async fn ingest(&self, items: Vec<IngestItem>, notes: SourceNotes, now: i64) -> Result<IngestOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.ingests.send(writer::Request { items, notes, now, reply }).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

impl Shared {
    /// Ends the LISTEN task and waits until it has let go of its connection.
    async fn stop_listening(&self) {
        let listener = self.listener.lock().expect("listener lock").take();
        if let Some(listener) = listener {
            listener.abort();
            let _ = listener.await;
        }
    }
}

/// The first two columns of every row, for the many statements that return pairs.
fn two_columns<A, B, C>(rows: &[sqlx::postgres::PgRow]) -> sqlx::Result<C>
where
    A: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    B: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    C: FromIterator<(A, B)>,
{
    use sqlx::Row as _;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A statement's error, as the store's.
fn statement<T>(r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::statement(e.into()))
}

impl Store for PgOutbox {
    fn ingest_noted(&self, items: Vec<IngestItem>, notes: SourceNotes, now: i64) -> StoreFuture<'_, IngestOutcome> {
        Box::pin(PgOutbox::ingest(self, items, notes, now))
    }
    fn source_mark<'a>(&'a self, source: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move { statement(read::source_mark(&self.shared.pool, source).await) })
    }
    fn rejects(&self, source: Option<String>, limit: u32) -> StoreFuture<'_, Vec<RejectRecord>> {
        Box::pin(async move { statement(read::rejects(&self.shared.pool, source, limit).await) })
    }
    fn reject(&self, id: i64) -> StoreFuture<'_, Option<RejectRecord>> {
        Box::pin(async move { statement(read::reject(&self.shared.pool, id).await) })
    }
    fn cycle(&self, done: Arc<Vec<Completion>>, wants: Vec<(String, usize)>, now: i64) -> StoreFuture<'_, ClaimBatch> {
        Box::pin(deliveries::cycle(&self.shared, done, wants, now))
    }
    fn redeliver(&self, filter: RedeliverFilter, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(deliveries::redeliver(&self.shared, filter, now))
    }
    fn release_claims(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.shared.slots.mark_all_backlogged();
            statement(deliveries::release_claims(&self.shared).await)
        })
    }
    fn purge(&self, policy: RetentionPolicy, now: i64) -> StoreFuture<'_, PurgeReport> {
        Box::pin(purge::batch(&self.shared, policy, now))
    }
    fn list_deliveries<'a>(&'a self, filter: &'a DeliveryFilter) -> StoreFuture<'a, Page> {
        Box::pin(async move { statement(read::list_deliveries(&self.shared.pool, filter).await) })
    }
    fn delivery(&self, id: i64) -> StoreFuture<'_, Option<DeliveryDetail>> {
        Box::pin(async move { statement(read::delivery(&self.shared.pool, id).await) })
    }
    fn stats(&self) -> StoreFuture<'_, Vec<StatsRow>> {
        Box::pin(async move { statement(read::stats(&self.shared.pool).await) })
    }
    fn oldest_due(&self, now: i64) -> StoreFuture<'_, Vec<(String, Option<i64>)>> {
        Box::pin(async move { statement(read::oldest_due(&self.shared.pool, now).await) })
    }
    fn pending_counts(&self) -> StoreFuture<'_, Vec<(String, i64)>> {
        Box::pin(async move { statement(read::pending_counts(&self.shared.pool).await) })
    }
    fn set_paused(&self, subscriber: String, paused: bool, now: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move { statement(deliveries::set_paused(&self.shared, &subscriber, paused, now).await) })
    }
    fn paused(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            statement(
                sqlx::query_scalar("SELECT subscriber FROM subscriber_pauses ORDER BY subscriber")
                    .fetch_all(&self.shared.pool)
                    .await,
            )
        })
    }
    fn drop_deliveries(&self, subscriber: String, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move { orphans::drop_deliveries(&self.shared, &subscriber, now).await })
    }
    fn move_deliveries(&self, from: String, to: String, now: i64) -> StoreFuture<'_, MoveReport> {
        Box::pin(async move { orphans::move_deliveries(&self.shared, &from, &to, now).await })
    }
    fn is_ready(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            !self.ingests.is_closed()
                && !self.write_failing()
                && sqlx::query("SELECT 1").execute(&self.shared.pool).await.is_ok()
        })
    }
    fn write_failing(&self) -> bool {
        self.shared.counters.failing.load(Ordering::Relaxed)
    }
    fn counters(&self) -> StoreCounters {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreCounters {
            transactions: load(&c.transactions),
            ingests: load(&c.ingests),
            claims: load(&c.claims),
            longest_purge_micros: load(&c.longest_purge_micros),
        }
    }
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.shared.stop_listening().await;
            self.shared.pool.close().await
        })
    }
}
