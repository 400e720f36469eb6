//! mod_cti's optional PUBLISH channel (`cti.json`'s `cdr.redis.channel`), subscribed when
//! `sources.redis.channel` is set. It is lossy by design: PUBLISH reaches only who listens at
//! that moment, so a record published while cdr-pusher is down or reconnecting is gone, and
//! nothing is acknowledged. It only makes a record arrive sooner; the list stays the record
//! of truth, and a record that came both ways is a duplicate, pushed once. The subscription
//! uses RESP3 (Redis >= 6), its messages pushed on its own connection.

use std::{sync::Arc, time::Duration};

use ::redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{mapping::Mapping, FIRST_BACKOFF, MAX_BACKOFF};
use crate::sources::{Feed, SourceState};

/// Messages stored together when several are waiting.
const BATCH: usize = 256;

/// The channel's subscriber.
pub struct Channel {
    client: Client,
    name: String,
    mapping: Arc<Mapping>,
    feed: Feed,
    shutdown: CancellationToken,
}

impl Channel {
    /// A subscriber of `name` on the Redis at `url`.
    pub fn new(
        url: &str,
        name: &str,
        mapping: Arc<Mapping>,
        feed: Feed,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let info = url.into_connection_info().context("sources.redis.url")?;
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(resp3)).context("sources.redis.url")?;
        Ok(Channel { client, name: name.to_string(), mapping, feed, shutdown })
    }

    /// Subscribes again after each failure, with back-off, until shutdown.
    pub async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.session(&mut backoff).await {
                Ok(()) => return,
                Err(e) => self.feed.handle().set_state(SourceState::Error(format!("channel {}: {e:#}", self.name))),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn session(&self, backoff: &mut Duration) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_push_sender(tx);
        let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await.context("connect")?;
        conn.subscribe(&self.name).await.context("SUBSCRIBE")?;
        *backoff = FIRST_BACKOFF;
        self.feed.handle().set_state(SourceState::Connected);
        loop {
            let push = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                push = rx.recv() => push.context("the connection closed")?,
            };
            let mut payloads = Vec::new();
            let mut next = Some(push);
            while let Some(push) = next {
                match message(push) {
                    Message::Payload(p) => payloads.push(p),
                    Message::Disconnected => anyhow::bail!("disconnected"),
                    Message::Other => {}
                }
                next = if payloads.len() < BATCH { rx.try_recv().ok() } else { None };
            }
            self.store(payloads).await;
        }
    }

    /// Stores what came; a failure is logged, not retried: the list carries the same records.
    async fn store(&self, payloads: Vec<Vec<u8>>) {
        if payloads.is_empty() {
            return;
        }
        let records = payloads.iter().map(|p| self.mapping.map(&String::from_utf8_lossy(p))).collect();
        if let Err(e) = self.feed.take_or_set_aside(records, None).await {
            tracing::warn!(channel = %self.name, error = %e, "records from the channel not stored (the list has them)");
        }
    }
}

enum Message {
    Payload(Vec<u8>),
    Disconnected,
    Other,
}

/// A `message` push is `[channel, payload]`.
fn message(push: PushInfo) -> Message {
    match push.kind {
        PushKind::Message => match push.data.into_iter().nth(1) {
            Some(Value::BulkString(payload)) => Message::Payload(payload),
            Some(Value::SimpleString(payload)) => Message::Payload(payload.into_bytes()),
            _ => Message::Other,
        },
        PushKind::Disconnection => Message::Disconnected,
        _ => Message::Other,
    }
}
