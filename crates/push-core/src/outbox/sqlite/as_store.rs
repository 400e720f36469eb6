//! The SQLite outbox as the program's [`Store`].

use std::{future::Future, pin::Pin, sync::Arc};

use super::{
    ClaimBatch, Completion, DeliveryDetail, DeliveryFilter, IngestItem, IngestOutcome, Outbox, Page, PurgeReport,
    RedeliverFilter, RejectRecord, RetentionPolicy, SourceNotes, StatsRow, Store, StoreCounters, StoreError,
    StoreFuture,
};

/// A read's error, as the store's.
fn read<T>(r: anyhow::Result<T>) -> Result<T, StoreError> {
    r.map_err(StoreError::statement)
}

impl Store for Outbox {
    fn ingest_noted(&self, items: Vec<IngestItem>, notes: SourceNotes, now: i64) -> StoreFuture<'_, IngestOutcome> {
        Box::pin(Outbox::ingest(self, items, notes, now))
    }
    fn source_mark<'a>(&'a self, source: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move { read(Outbox::source_mark(self, source).await) })
    }
    fn rejects(&self, source: Option<String>, limit: u32) -> StoreFuture<'_, Vec<RejectRecord>> {
        Box::pin(async move { read(Outbox::rejects(self, source, limit).await) })
    }
    fn reject(&self, id: i64) -> StoreFuture<'_, Option<RejectRecord>> {
        Box::pin(async move { read(Outbox::reject(self, id).await) })
    }
    fn cycle(&self, done: Arc<Vec<Completion>>, wants: Vec<(String, usize)>, now: i64) -> StoreFuture<'_, ClaimBatch> {
        Box::pin(Outbox::cycle(self, done, wants, now))
    }
    fn redeliver(&self, filter: RedeliverFilter, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(Outbox::redeliver(self, filter, now))
    }
    fn release_claims(&self) -> StoreFuture<'_, ()> {
        Box::pin(Outbox::release_claims(self))
    }
    fn purge(&self, policy: RetentionPolicy, now: i64) -> StoreFuture<'_, PurgeReport> {
        Box::pin(Outbox::purge(self, policy, now))
    }
    fn list_deliveries<'a>(&'a self, filter: &'a DeliveryFilter) -> StoreFuture<'a, Page> {
        Box::pin(async move { read(Outbox::list_deliveries(self, filter).await) })
    }
    fn delivery(&self, id: i64) -> StoreFuture<'_, Option<DeliveryDetail>> {
        Box::pin(async move { read(Outbox::delivery(self, id).await) })
    }
    fn stats(&self) -> StoreFuture<'_, Vec<StatsRow>> {
        Box::pin(async move { read(Outbox::stats(self).await) })
    }
    fn oldest_due(&self, now: i64) -> StoreFuture<'_, Vec<(String, Option<i64>)>> {
        Box::pin(async move { read(Outbox::oldest_due(self, now).await) })
    }
    fn pending_counts(&self) -> StoreFuture<'_, Vec<(String, i64)>> {
        Box::pin(async move { read(Outbox::pending_counts(self).await) })
    }
    fn set_paused(&self, subscriber: String, paused: bool, now: i64) -> StoreFuture<'_, ()> {
        Box::pin(Outbox::set_paused(self, subscriber, paused, now))
    }
    fn paused(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move { read(Outbox::paused(self).await) })
    }
    fn is_ready(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(Outbox::is_ready(self))
    }
    fn write_failing(&self) -> bool {
        self.writer_stats().health.failing()
    }
    fn counters(&self) -> StoreCounters {
        let w = self.writer_stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        StoreCounters {
            transactions: load(&w.transactions),
            ingests: load(&w.ingests),
            claims: load(&w.claims),
            longest_purge_micros: load(&w.longest_purge_micros),
        }
    }
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(Outbox::close_readers(self))
    }
}
