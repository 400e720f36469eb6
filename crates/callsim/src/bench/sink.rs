//! In-process HTTP servers of the bench: the trivial sinks that measure the raw loopback
//! limit, and the serving plumbing the bench receiver shares with them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The fixed answer of the ingest-like sink: what a pusher answers to one accepted event.
pub const SINK_ANSWER: &str =
    r#"{"accepted":[{"callId":"x","eventId":"00000000-0000-7000-8000-000000000000","duplicate":false}]}"#;

/// An axum server running on the bench's runtime until [`Server::stop`].
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves `router` on `listener`.
    pub fn start(router: Router, listener: TcpListener) -> anyhow::Result<Server> {
        let addr = listener.local_addr().context("listener address")?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(async move { token.cancelled().await }).await
        });
        Ok(Server { addr, stop, task })
    }

    /// Binds 127.0.0.1 on `port` (0 = any free port) and serves `router`.
    pub async fn bind(router: Router, port: u16) -> anyhow::Result<Server> {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("binding 127.0.0.1:{port}"))?;
        Server::start(router, listener)
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting and waits (at most 5 s) for open connections to close.
    pub async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// A sink answering every POST like a pusher accepting one event: 202 and [`SINK_ANSWER`].
pub fn ingest_sink() -> Router {
    Router::new().fallback(|_body: Bytes| async {
        (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], SINK_ANSWER).into_response()
    })
}

/// A sink answering every POST like an instant subscriber: 200, empty body.
pub fn delivery_sink() -> Router {
    Router::new().fallback(|_body: Bytes| async { StatusCode::OK })
}
