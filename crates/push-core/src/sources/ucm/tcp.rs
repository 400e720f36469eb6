//! The UCM's TCP way in: it connects to `sources.ucm.tcp_listen`, sends a record (or a few),
//! and closes. A TCP peer cannot be answered, so a record that cannot be mapped is set aside
//! as a reject; the connection is closed in order only after what it carried is durable
//! (reset if it ends otherwise), and one that sends nothing for `idle_timeout` is closed. Memory is bounded: at most
//! [`MAX_CONNECTIONS`] at once (more wait in the listen backlog), each holding at most
//! `ingest.max_body_bytes` of a record. `ingest.allowed_ips` applies as on HTTP: a peer
//! outside it is closed unread.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::AsyncReadExt as _,
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{frame, map::UcmMapping};
use crate::sources::{Feed, Mapped, SourceState};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// How a connection ends.
enum Close {
    /// Everything it carried is durable (stored or set aside): FIN.
    Orderly,
    /// Something it carried is not stored: RST.
    Reset,
}

/// How much of an oversized record is kept with its reject.
const OVERSIZE_KEPT: usize = 1024;

/// Binds `sources.ucm.tcp_listen`; the error names the key.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("sources.ucm.tcp_listen: cannot listen on {addr}"))
}

/// What every connection shares.
#[derive(Clone)]
pub struct Tcp {
    /// Where records go.
    pub feed: Feed,
    /// How they are read.
    pub mapping: Arc<UcmMapping>,
    /// `sources.ucm.idle_timeout`.
    pub idle: Duration,
    /// `ingest.max_body_bytes`: the largest record.
    pub max_bytes: usize,
    /// `ingest.allowed_ips`: a peer outside them is closed unread (empty: everyone).
    pub allowed: Vec<ipnet::IpNet>,
    /// The program stops: no more connections.
    pub shutdown: CancellationToken,
}

impl Tcp {
    /// Accepts connections until shutdown, then waits for those still open.
    pub async fn run(self, listener: TcpListener) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let connections = TaskTracker::new();
        loop {
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) if !self.allows(peer) => {
                    tracing::warn!(source = "ucm", %peer, "connection refused: address not in ingest.allowed_ips");
                    let _ = stream.set_zero_linger(); // reset: nothing of it was taken
                }
                Ok((stream, peer)) => {
                    self.feed.handle().set_state(SourceState::Listening);
                    let tcp = self.clone();
                    connections.spawn(async move {
                        let _permit = permit;
                        tcp.connection(stream, peer).await;
                    });
                }
                Err(e) => {
                    self.feed.handle().set_state(SourceState::Error(format!("accepting a TCP connection: {e}")));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        connections.close();
        connections.wait().await;
    }

    fn allows(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.allowed.is_empty() || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// One connection, closed in order (FIN) only when all it carried is durable. Until
    /// then its socket lingers 0 s: closing it (the program stopping, the process killed,
    /// the store failing) resets the connection, so a UCM that watches it sees a failure and
    /// re-sends rather than take it for delivered.
    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = stream.set_zero_linger() {
            tracing::debug!(source = "ucm", %peer, error = %e, "SO_LINGER not set");
        }
        if let Close::Orderly = self.serve(&mut stream, peer).await {
            // Lingering off again: the close that follows sends FIN and does not block.
            #[allow(deprecated)]
            let _ = stream.set_linger(None);
        }
    }

    /// Reads the connection: its records are stored as soon as they are whole; it ends at
    /// the peer's end, when idle, or when a record is over the limit, always after the store.
    async fn serve(&self, stream: &mut TcpStream, peer: SocketAddr) -> Close {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let read = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    let unstored = buf.iter().any(|&b| !b.is_ascii_whitespace() && b != 0);
                    return if unstored { Close::Reset } else { Close::Orderly };
                }
                read = tokio::time::timeout(self.idle, stream.read_buf(&mut buf)) => read,
            };
            let at_end = match read {
                Ok(Ok(0)) => true,
                Ok(Ok(_)) => false,
                Err(_) => {
                    tracing::debug!(source = "ucm", %peer, "idle connection closed");
                    true
                }
                Ok(Err(e)) => {
                    // Cut short: a record still unfinished is not guessed at; the UCM re-sends.
                    tracing::debug!(source = "ucm", %peer, error = %e, "connection failed");
                    return Close::Reset;
                }
            };
            let mut records: Vec<Mapped> = frame::take_records(&mut buf, at_end)
                .iter()
                .map(|r| if r.len() > self.max_bytes { self.oversize(r.as_bytes()) } else { self.mapping.parse(r) })
                .collect();
            let oversize = buf.len() > self.max_bytes;
            if oversize {
                records.push(self.oversize(&buf));
            }
            if !records.is_empty() && !self.store(records, peer).await {
                return Close::Reset;
            }
            if at_end || oversize {
                return Close::Orderly;
            }
        }
    }

    /// A record over the limit, set aside with its beginning.
    fn oversize(&self, record: &[u8]) -> Mapped {
        let kept = String::from_utf8_lossy(&record[..record.len().min(OVERSIZE_KEPT)]).into_owned();
        let reason = format!(
            "the record is larger than ingest.max_body_bytes ({} bytes): its first {OVERSIZE_KEPT} bytes are kept \
             and the connection was closed",
            self.max_bytes
        );
        Mapped::new(kept, Err(reason))
    }

    /// Stores records (rejects set aside); false when the outbox could not, and the
    /// connection is to be closed without more.
    async fn store(&self, records: Vec<Mapped>, peer: SocketAddr) -> bool {
        let n = records.len();
        match self.feed.take_or_set_aside(records, None).await {
            Ok(taken) => {
                tracing::debug!(source = "ucm", %peer, records = n, rejected = taken.rejected, "records taken");
                true
            }
            Err(e) => {
                tracing::error!(source = "ucm", %peer, error = %e, "records not stored; closing the connection");
                false
            }
        }
    }
}
