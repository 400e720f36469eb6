//! The Redis list FreeSWITCH's mod_cti pushes its CDRs onto (`cti.json`'s
//! `cdr.redis.list`; INTEGRATIONS.md §1.3), read as a reliable queue ([`queue`]): an item
//! leaves the processing list only after the feed stored its CDR (or set it aside as a
//! reject), so a crash or a Redis outage loses nothing and at worst re-reads an item, which
//! the outbox recognizes as a duplicate. While Redis cannot be reached the source is in error
//! (so `/readyz` is 503) and reconnects with back-off, 100 ms doubling to 5 s.
//!
//! mod_cti's optional PUBLISH `channel` is subscribed too when configured ([`channel`]): it
//! is lossy (PUBLISH reaches only who listens at that moment), records from it go through the
//! same feed, and one that also came through the list is a duplicate, pushed once.

mod channel;
pub mod mapping;
#[cfg(test)]
mod mapping_tests;
mod queue;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use self::{channel::Channel, mapping::Mapping, queue::Queue};
use super::{localtime::Zone, Context, Feed, Mapped, Parser, SourceHandle, SourceState};
use crate::{config::RedisSettings, intake::IntakeError};

/// The kind and the name this source registers under.
pub const KIND: &str = "redis";
/// Items taken and stored together: one BLMOVE, the rest by pipelined LMOVEs.
const BATCH: usize = 256;
/// How long one BLMOVE waits before it is made again (and shutdown is looked at).
const BLOCK: Duration = Duration::from_secs(1);
/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Registers the source and starts its consumer (and the channel's subscriber when one is
/// configured); the tasks end on shutdown.
pub fn start(ctx: &Context, settings: &RedisSettings) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let zone = Zone::named(&settings.timezone).map_err(anyhow::Error::msg).context("sources.redis.timezone")?;
    let mapping =
        Arc::new(Mapping { service_type: settings.service_type, account_id: settings.account_id.clone(), zone });
    let client = ::redis::Client::open(settings.url.as_str()).context("sources.redis.url")?;
    let parse = mapping.clone();
    let parser: Parser = Arc::new(move |raw: &str| parse.map(raw));
    let handle = ctx.sources.register(KIND, KIND, SourceState::Error("not connected yet".into()), Some(parser));
    let feed = Feed::new(ctx.intake.clone(), handle);
    let mut tasks = Vec::new();
    if let Some(name) = &settings.channel {
        let channel = Channel::new(&settings.url, name, mapping.clone(), feed.clone(), ctx.shutdown.clone())?;
        tasks.push(tokio::spawn(channel.run()));
    }
    let consumer = Consumer {
        client,
        list: settings.list.clone(),
        processing: settings.processing_list.clone(),
        mapping,
        feed,
        shutdown: ctx.shutdown.clone(),
    };
    tasks.push(tokio::spawn(consumer.run()));
    Ok(tasks)
}

struct Consumer {
    client: ::redis::Client,
    list: String,
    processing: String,
    mapping: Arc<Mapping>,
    feed: Feed,
    shutdown: CancellationToken,
}

impl Consumer {
    fn handle(&self) -> &SourceHandle {
        self.feed.handle()
    }

    /// Sessions one after another, with back-off between failed ones, until shutdown.
    async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.session(&mut backoff).await {
                Ok(()) => return,
                Err(e) => self.handle().set_state(SourceState::Error(format!("{e:#}"))),
            }
            if !self.pause(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sleeps unless the program stops first; false if it does.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// One session on two connections: re-drives the processing list, then takes batches
    /// on one and stores and removes them on the other, so the next batch is taken and
    /// mapped while the previous one is being made durable. Ends on shutdown (`Ok`) or a
    /// Redis error; what was taken and not removed stays in the processing list.
    async fn session(&self, backoff: &mut Duration) -> anyhow::Result<()> {
        let mut taker = self.connect().await?;
        let mut committer = self.connect().await?;
        self.handle().set_state(SourceState::Connected);
        *backoff = FIRST_BACKOFF;
        loop {
            let left = committer.left_over(BATCH).await.context("LRANGE of the processing list")?;
            if left.is_empty() {
                break;
            }
            tracing::info!(items = left.len(), "re-driving the processing list");
            if !self.commit(&mut committer, self.map(left)).await? {
                return Ok(());
            }
        }
        let (batches, mut taken) = mpsc::channel::<Batch>(1);
        let take = async move {
            loop {
                let items = tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    items = taker.take(BATCH) => items.context("BLMOVE")?,
                };
                if !items.is_empty() && batches.send(self.map(items)).await.is_err() {
                    return Ok(());
                }
            }
        };
        let commit = async move {
            while let Some(batch) = taken.recv().await {
                if !self.commit(&mut committer, batch).await? {
                    break;
                }
            }
            anyhow::Ok(())
        };
        tokio::try_join!(take, commit)?;
        Ok(())
    }

    async fn connect(&self) -> anyhow::Result<Queue> {
        let queue = Queue::connect(&self.client, &self.list, &self.processing, BLOCK).await;
        queue.with_context(|| format!("cannot reach Redis at {}", self.client.get_connection_info().addr()))
    }

    /// Items as taken, with their records.
    fn map(&self, items: Vec<Vec<u8>>) -> Batch {
        let records = items.iter().map(|item| self.mapping.map(&String::from_utf8_lossy(item))).collect();
        Batch { items, records }
    }

    /// Stores the batch's CDRs (rejects set aside), retrying while the outbox fails, then
    /// removes its items from the processing list. False if the program stopped first: the
    /// items stay in the processing list for the next start.
    async fn commit(&self, queue: &mut Queue, batch: Batch) -> anyhow::Result<bool> {
        let mut wait = FIRST_BACKOFF;
        loop {
            match self.feed.take_or_set_aside(batch.records.clone(), None).await {
                Ok(_) => break,
                Err(IntakeError::ShuttingDown) => return Ok(false),
                Err(e) => {
                    self.handle().set_state(SourceState::Error(format!("cannot store CDRs: {e}")));
                    if !self.pause(wait).await {
                        return Ok(false);
                    }
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.handle().set_state(SourceState::Connected);
        queue.remove(&batch.items).await.context("LREM from the processing list")?;
        Ok(true)
    }
}

/// Items taken together and what they map to.
struct Batch {
    items: Vec<Vec<u8>>,
    records: Vec<Mapped>,
}
