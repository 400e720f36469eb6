//! The storage seam: everything the intake, the delivery loop, the operations API and the
//! retention job ask of an outbox, as one interface a second backend (PostgreSQL, issue 15)
//! can implement. The SQLite backend (`outbox::sqlite`) is the first implementation; its
//! machinery (the single writer thread, group commit, the WAL syncer, hand-over, row ids,
//! `INDEXED BY` hints) stays behind it. Every answer is typed ([`StoreError`]): a caller maps
//! a failure to a 503 without reading its text.

use std::{future::Future, pin::Pin, sync::Arc};

use super::{
    ClaimBatch, Completion, DeliveryDetail, DeliveryFilter, IngestItem, IngestOutcome, Page, PurgeReport,
    RedeliverFilter, RejectRecord, RetentionPolicy, SourceNotes, StatsRow, StoreError,
};

/// A boxed future of a store's answer (the trait is used as `dyn Store`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Counters of a store's own work, for `/v1/stats` (what they count is the backend's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Transactions committed.
    pub transactions: u64,
    /// Ingest requests stored.
    pub ingests: u64,
    /// Claims made by the delivery loop.
    pub claims: u64,
    /// The longest one purge batch has held the store's writes, µs.
    pub longest_purge_micros: u64,
}

/// One program's outbox, whatever keeps it.
pub trait Store: Send + Sync + 'static {
    /// Stores a batch, all or nothing (SPEC §3: duplicates, sequences, 409 after HANGUP);
    /// answers only once it is durable.
    fn ingest(&self, items: Vec<IngestItem>, now: i64) -> StoreFuture<'_, IngestOutcome> {
        self.ingest_noted(items, SourceNotes::default(), now)
    }
    /// As [`Store::ingest`], keeping a source's notes (rejects, re-driven rejects, its
    /// position) in the same transaction.
    fn ingest_noted(&self, items: Vec<IngestItem>, notes: SourceNotes, now: i64) -> StoreFuture<'_, IngestOutcome>;
    /// A source's last kept position.
    fn source_mark<'a>(&'a self, source: &'a str) -> StoreFuture<'a, Option<String>>;
    /// Rejects set aside, newest first (of one source, if given).
    fn rejects(&self, source: Option<String>, limit: u32) -> StoreFuture<'_, Vec<RejectRecord>>;
    /// One reject.
    fn reject(&self, id: i64) -> StoreFuture<'_, Option<RejectRecord>>;
    /// One round trip of the delivery loop: records finished attempts, then claims up to the
    /// asked number of due, unblocked deliveries per subscriber (see [`ClaimBatch`]).
    fn cycle(&self, done: Arc<Vec<Completion>>, wants: Vec<(String, usize)>, now: i64) -> StoreFuture<'_, ClaimBatch>;
    /// Puts matching deliveries back to pending with a fresh schedule; answers how many.
    fn redeliver(&self, filter: RedeliverFilter, now: i64) -> StoreFuture<'_, u64>;
    /// Lets this program's claims go, so they are attempted again.
    fn release_claims(&self) -> StoreFuture<'_, ()>;
    /// One small batch of retention's purge (finished events past their window, dedup keys
    /// past the dedup window); says whether more is waiting. Never holds the store's writes
    /// for more than a few milliseconds.
    fn purge(&self, policy: RetentionPolicy, now: i64) -> StoreFuture<'_, PurgeReport>;
    /// A page of deliveries, newest first.
    fn list_deliveries<'a>(&'a self, filter: &'a DeliveryFilter) -> StoreFuture<'a, Page>;
    /// One delivery with its attempt log.
    fn delivery(&self, id: i64) -> StoreFuture<'_, Option<DeliveryDetail>>;
    /// Counts by subscriber and state.
    fn stats(&self) -> StoreFuture<'_, Vec<StatsRow>>;
    /// Per subscriber with due deliveries waiting for a claim, when the oldest fell due.
    fn oldest_due(&self, now: i64) -> StoreFuture<'_, Vec<(String, Option<i64>)>>;
    /// Pending deliveries per subscriber (the queue-depth gauges at start).
    fn pending_counts(&self) -> StoreFuture<'_, Vec<(String, i64)>>;
    /// Keeps (or forgets) that the operator paused `subscriber`, for every later start (and
    /// every replica); answers once it is durable.
    fn set_paused(&self, subscriber: String, paused: bool, now: i64) -> StoreFuture<'_, ()>;
    /// Subscribers the operator paused.
    fn paused(&self) -> StoreFuture<'_, Vec<String>>;
    /// Whether it answers now (`/readyz`).
    fn is_ready(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// Whether its last write that changed rows failed (a full disk, a read-only file):
    /// `/readyz` is 503 meanwhile.
    fn write_failing(&self) -> bool;
    /// Its counters.
    fn counters(&self) -> StoreCounters;
    /// Closes what it holds open besides its writer (which stops when the last handle goes).
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}
