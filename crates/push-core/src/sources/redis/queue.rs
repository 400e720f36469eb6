//! The reliable queue on Redis (redis.io, LMOVE "Pattern: Reliable queue"). The producer
//! pushes on the left (LPUSH, the pattern's convention; mod_cti's documentation does not say
//! which end it uses, and the other would only reverse the order within a backlog, nothing is
//! lost), so the oldest item is at the right: `BLMOVE list processing RIGHT LEFT` takes the
//! oldest into the processing list, and `LREM processing 1 item` removes it
//! only once its CDR is durable. What a crash leaves in the processing list is read again at
//! the next start. Each `Queue` is a connection of its own: BLMOVE blocks it, and nothing
//! else uses it.

use std::time::Duration;

use ::redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Client, RedisResult};

/// How long connecting may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection to the list and its processing list.
pub struct Queue {
    conn: MultiplexedConnection,
    list: String,
    processing: String,
    block: Duration,
}

impl Queue {
    /// Connects; a BLMOVE waits up to `block` for an item.
    pub async fn connect(client: &Client, list: &str, processing: &str, block: Duration) -> RedisResult<Queue> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(block + Duration::from_secs(3)));
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        ::redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(Queue { conn, list: list.to_string(), processing: processing.to_string(), block })
    }

    /// Up to `n` items left in the processing list (taken before, never removed), oldest
    /// first.
    pub async fn left_over(&mut self, n: usize) -> RedisResult<Vec<Vec<u8>>> {
        let from = -(n as i64);
        let mut items: Vec<Vec<u8>> =
            ::redis::cmd("LRANGE").arg(&self.processing).arg(from).arg(-1).query_async(&mut self.conn).await?;
        items.reverse();
        Ok(items)
    }

    /// Waits up to `block` for an item and moves it into the processing list with those
    /// waiting behind it, up to `n` in all, oldest first; none if the wait ran out.
    pub async fn take(&mut self, n: usize) -> RedisResult<Vec<Vec<u8>>> {
        let first: Option<Vec<u8>> = ::redis::cmd("BLMOVE")
            .arg(&self.list)
            .arg(&self.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(self.block.as_secs_f64())
            .query_async(&mut self.conn)
            .await?;
        let Some(first) = first else { return Ok(Vec::new()) };
        let waiting: usize = ::redis::cmd("LLEN").arg(&self.list).query_async(&mut self.conn).await?;
        let mut items = vec![first];
        let more = waiting.min(n.saturating_sub(1));
        if more > 0 {
            let mut pipe = ::redis::pipe();
            for _ in 0..more {
                pipe.cmd("LMOVE").arg(&self.list).arg(&self.processing).arg("RIGHT").arg("LEFT");
            }
            let moved: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.conn).await?;
            items.extend(moved.into_iter().flatten());
        }
        Ok(items)
    }

    /// Removes items from the processing list, one occurrence each, in one round trip.
    pub async fn remove(&mut self, items: &[Vec<u8>]) -> RedisResult<()> {
        let mut pipe = ::redis::pipe();
        for item in items {
            pipe.cmd("LREM").arg(&self.processing).arg(1).arg(item).ignore();
        }
        pipe.query_async::<()>(&mut self.conn).await
    }
}
