//! Opening a switch's TCP connection (the event socket, the manager interface) within a
//! deadline, with an error that says which interface could not be reached.

use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpStream;

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
