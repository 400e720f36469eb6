//! A switch's TCP connection (the event socket, the manager interface): opening it within a
//! deadline, with an error that says which interface could not be reached, and the loop of
//! sessions with back-off that keeps one open until shutdown.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{Feed, SourceState};

/// The wait after a first failed session; it doubles after each failure, up to
/// [`MAX_BACKOFF`], and a session that gets connected sets it back.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two sessions.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A client of a switch interface: one session is one connection, from the handshake until
/// it drops.
pub trait Session: Send + Sync {
    /// One connection: `Err` when it failed or dropped, `Ok` when the program stops. It sets
    /// `backoff` to [`FIRST_BACKOFF`] once connected.
    fn session(&self, backoff: &mut Duration) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Where the connection's state is shown (`/v1/sources`, `/readyz`).
    fn feed(&self) -> &Feed;
}

/// Sessions one after another, with back-off after each failed one (its error shown as the
/// source's state), until `shutdown`: a wrong password or a restarting switch never makes a
/// crash loop.
pub async fn sessions(client: impl Session, shutdown: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = client.session(&mut backoff) => ended,
        };
        match ended {
            Ok(()) => return,
            Err(e) => client.feed().handle().set_state(SourceState::Error(format!("{e:#}"))),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects to `address` within `deadline`, without Nagle's delay; `what` names the
/// interface in the error ("the event socket").
pub async fn connect(address: &str, what: &str, deadline: Duration) -> anyhow::Result<TcpStream> {
    let stream = tokio::time::timeout(deadline, TcpStream::connect(address))
        .await
        .map_err(|_| anyhow::anyhow!("connecting timed out"))
        .and_then(|c| c.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach {what} at {address}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
