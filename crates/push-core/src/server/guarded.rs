//! A connection's socket with the two timeouts of `server:`, enforced where hyper cannot
//! tell them apart (its own header timer also runs while a kept-alive connection waits):
//!
//! - while no request is in flight and nothing of the next one has arrived, the connection is
//!   idle and is closed after `idle_timeout`;
//! - once the first byte of a request head has arrived, the whole head must arrive within
//!   `header_read_timeout` (a client that sends half a head is disconnected).
//!
//! While a request is in flight (from its parsed head until its handler answers) neither
//! applies: the handler's own waits (the commit) bound it. A timeout is reported to hyper as
//! a read error, which ends the connection.

use std::{
    future::Future as _,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From a request head's first byte to its end.
    pub(crate) header_read: Duration,
    /// With no request in flight and nothing received.
    pub(crate) idle: Duration,
}

/// One open connection as the accept loop sees it: requests in flight (counted by the
/// service that handles them), since when it has been idle, and how to make it close.
#[derive(Debug)]
pub(crate) struct ConnState {
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` (plus one) since which the connection is idle; 0 when not.
    idle_since: AtomicU64,
    epoch: Instant,
    /// Cancelled to close the connection (once its request in flight, if any, is answered).
    pub(crate) evict: CancellationToken,
}

impl ConnState {
    /// A new connection, `epoch` being the accept loop's start (idle times are told from it).
    pub(crate) fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch,
            evict: CancellationToken::new(),
        })
    }

    /// Counts a request until the returned guard is dropped (when its handler has answered).
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.idle_since.store(0, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn set_idle(&self, since: Option<Instant>) {
        let ms = since.map_or(0, |t| t.saturating_duration_since(self.epoch).as_millis() as u64 + 1);
        self.idle_since.store(ms, Ordering::Relaxed);
    }

    /// Since when (milliseconds after the epoch, plus one) the connection is idle, if it is.
    pub(crate) fn idle_since(&self) -> Option<u64> {
        Some(self.idle_since.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }
}

/// One request in flight; see [`ConnState::enter`].
pub(crate) struct InFlightGuard(Arc<ConnState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose reads fail with `TimedOut` once a [`Timeouts`] deadline passes.
pub(crate) struct Guarded<T> {
    io: T,
    conn: Arc<ConnState>,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is set to: it is reset only when the deadline moves, not on
    /// every read that finds nothing (a timer-wheel update per poll otherwise).
    armed: Option<Instant>,
    /// Since when no request has been in flight (`None` while one is).
    waiting_since: Option<Instant>,
    /// When the first byte of the next request head arrived.
    head_since: Option<Instant>,
}

impl<T> Guarded<T> {
    pub(crate) fn new(io: T, conn: Arc<ConnState>, timeouts: Timeouts) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeouts.idle));
        Guarded { io, conn, timeouts, sleep, armed: None, waiting_since: None, head_since: None }
    }

    /// The deadline now, or `None` while a request is in flight.
    fn deadline(&mut self, now: Instant) -> Option<Instant> {
        if self.conn.busy() {
            self.waiting_since = None;
            self.head_since = None;
            return None;
        }
        let since = *self.waiting_since.get_or_insert(now);
        self.conn.set_idle(self.head_since.is_none().then_some(since));
        Some(match self.head_since {
            Some(head) => head + self.timeouts.header_read,
            None => since + self.timeouts.idle,
        })
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("connection closed: {what}"))
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let now = Instant::now();
        let deadline = self.deadline(now);
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if deadline.is_some() && buf.filled().len() > before && this.head_since.is_none() {
                    this.head_since = Some(now);
                    this.conn.set_idle(None);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        let what = if this.head_since.is_some() { "request head too slow" } else { "idle" };
        if now >= deadline {
            return Poll::Ready(Err(timed_out(what)));
        }
        if this.armed != Some(deadline) {
            this.sleep.as_mut().reset(deadline);
            this.armed = Some(deadline);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out(what))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
