//! Serving the router over plain HTTP or HTTPS (rustls), with graceful shutdown.
//!
//! Plain HTTP runs its own accept loop on hyper so that slow or idle clients cannot exhaust
//! the server (`server:` section):
//! - at most `max_connections` are served at once. A connection accepted at the cap makes the
//!   connection idle longest close (so idle clients cannot keep a new client out); if none
//!   is idle, the new one waits for a slot, and the loop accepts nothing more meanwhile, so
//!   further connections wait in the kernel's listen backlog, costing this process no file
//!   descriptor (at most `max_connections + 1` sockets are open);
//! - an idle connection is closed after `idle_timeout`, a request head that does not arrive
//!   whole within `header_read_timeout` of its first byte closes its connection (see
//!   [`guarded`]).
//!
//! [`raise_open_files_limit`] lifts the soft limit on open files to the hard limit at start.

mod guarded;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use axum::{body::Body, extract::ConnectInfo, Router};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::guarded::{ConnState, Guarded, Timeouts};
use crate::config::{ServerSettings, TlsSettings};

/// How long open connections may take to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown`; HTTPS when `tls` is set.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsSettings>,
    limits: ServerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match tls {
        None => serve_plain(listener, router, limits, shutdown).await,
        Some(tls) => serve_tls(listener, router, tls, shutdown).await,
    }
}

/// The plain HTTP accept loop (see the module docs).
async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: ServerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let timeouts = Timeouts { header_read: limits.header_read_timeout, idle: limits.idle_timeout };
    let (open, epoch, connections) = (Arc::new(Open::default()), Instant::now(), TaskTracker::new());
    for id in 0u64.. {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up: wait a little, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                open.evict_oldest_idle();
                tokio::select! {
                    permit = slots.clone().acquire_owned() => permit.context("the connection slots closed")?,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let conn = ConnState::new(epoch);
        open.add(id, conn.clone());
        let (router, shutdown, open) = (router.clone(), shutdown.clone(), open.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, router, (conn, timeouts), shutdown).await;
            open.remove(id);
            drop(permit);
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait()).await.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after shutdown; closing them");
    }
    Ok(())
}

/// The open connections of the plain listener, so that at the cap the one idle longest can
/// be closed to make room: idle clients then cannot keep a new client out.
#[derive(Debug, Default)]
struct Open(Mutex<HashMap<u64, Arc<ConnState>>>);

impl Open {
    fn add(&self, id: u64, conn: Arc<ConnState>) {
        self.0.lock().expect("not poisoned").insert(id, conn);
    }

    fn remove(&self, id: u64) {
        self.0.lock().expect("not poisoned").remove(&id);
    }

    /// Asks the connection idle longest (not already asked) to close; none if all are busy.
    fn evict_oldest_idle(&self) {
        let open = self.0.lock().expect("not poisoned");
        let idle = open.values().filter(|c| !c.evict.is_cancelled());
        if let Some(oldest) =
            idle.filter_map(|c| c.idle_since().map(|since| (since, c))).min_by_key(|(since, _)| *since)
        {
            tracing::debug!("at server.max_connections: closing the connection idle longest");
            oldest.1.evict.cancel();
        }
    }
}

/// One HTTP/1.1 connection, until the client, a timeout or an eviction ends it, or
/// shutdown (which lets a request in flight finish).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    (conn, timeouts): (Arc<ConnState>, Timeouts),
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let evict = conn.evict.clone();
    let io = TokioIo::new(Guarded::new(stream, conn.clone(), timeouts));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let (router, busy) = (router.clone(), conn.enter());
        request.extensions_mut().insert(ConnectInfo(peer));
        async move {
            let response = tower::ServiceExt::oneshot(router, request.map(Body::new)).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = either(&shutdown, &evict) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Until one of the two is cancelled.
async fn either(a: &CancellationToken, b: &CancellationToken) {
    tokio::select! {
        () = a.cancelled() => {}
        () = b.cancelled() => {}
    }
}

/// HTTPS through axum-server (its own connection handling; the `server:` limits apply to
/// the plain HTTP listener only).
async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: TlsSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .with_context(|| format!("loading TLS cert {} and key {}", tls.cert.display(), tls.key.display()))?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(DRAIN));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)
        .handle(handle)
        .serve(app)
        .await
        .context("HTTPS server failed")
}

/// Open files kept for everything but the listener's connections, besides the outbound
/// attempts: the outbox's files, the logs, the runtime.
const RESERVED_FILES: u64 = 64;

/// The connection cap when `server.max_connections` is 0 (the default): the soft limit on
/// open files less the outbound attempts (`delivery.max_in_flight`) and [`RESERVED_FILES`],
/// at least 64. A cap far below what the process may open would close kept-alive
/// connections that clients are about to reuse (their request is then lost to them); this
/// one only acts when file descriptors would run out.
pub fn auto_connection_cap(max_in_flight: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(s, _)| s);
    let left = soft.saturating_sub(max_in_flight as u64 + RESERVED_FILES).max(64);
    usize::try_from(left).unwrap_or(usize::MAX).min(1 << 20)
}

/// Raises the soft limit on open files to the hard limit, so that the connection cap, the
/// outbox and the outbound attempts are bounded by configuration rather than by a low default
/// soft limit (often 1024). Answers the soft limit now in force.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE to its hard limit")?;
    }
    Ok(hard.max(soft))
}
