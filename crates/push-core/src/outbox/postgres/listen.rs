//! LISTEN/NOTIFY between replicas: a commit that leaves claimable work NOTIFYs the pusher's
//! channel with `<replica id>␟<subscriber>` (see `deliveries::notify`); each replica listens,
//! marks the subscriber's backlog and wakes its delivery loop, so work another replica stored
//! is claimed at once. A lost connection may have lost notifications: on reconnecting, every
//! subscriber is marked and the loop woken. As a bounded fallback (a notification lost
//! without the connection noticing, a lease of a dead replica running out), every
//! [`FALLBACK_POLL`] every subscriber is marked too, so the loop's next turn claims once.

use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::{sync::Notify, task::JoinHandle};

use super::{deliveries::channel, Shared};

/// How often the loop is sent to look for work whatever it heard.
const FALLBACK_POLL: std::time::Duration = std::time::Duration::from_secs(2);
use crate::slots::Slots;

/// Starts listening (the first LISTEN is done before this returns).
pub(super) async fn spawn(shared: &Shared, wake: Option<Arc<Notify>>) -> sqlx::Result<JoinHandle<()>> {
    let mut listener = PgListener::connect_with(&shared.pool).await?;
    listener.listen(channel(shared.ordered)).await?;
    let (slots, own) = (shared.slots.clone(), format!("{}\u{1f}", shared.owner));
    Ok(tokio::spawn(async move {
        let mut fallback = tokio::time::interval(FALLBACK_POLL);
        loop {
            let heard = tokio::select! {
                heard = listener.try_recv() => heard,
                _ = fallback.tick() => {
                    woken_all(&slots, &wake);
                    continue;
                }
            };
            match heard {
                Ok(Some(n)) => {
                    if let Some(subscriber) =
                        n.payload().strip_prefix(&own).map_or_else(|| other(n.payload()), |_| None)
                    {
                        slots.mark_backlog(subscriber);
                        wake_up(&wake);
                    }
                }
                // The connection was lost (the next call reconnects): anything may be waiting.
                Ok(None) => woken_all(&slots, &wake),
                // The outbox is closing: nothing more to hear.
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                    woken_all(&slots, &wake);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }))
}

/// The subscriber of another replica's notification.
fn other(payload: &str) -> Option<&str> {
    payload.split_once('\u{1f}').map(|(_, s)| s)
}

fn wake_up(wake: &Option<Arc<Notify>>) {
    if let Some(w) = wake {
        w.notify_one();
    }
}

fn woken_all(slots: &Slots, wake: &Option<Arc<Notify>>) {
    slots.mark_all_backlogged();
    wake_up(wake);
}
