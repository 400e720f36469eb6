//! Wall-clock time, injected so tests and tools can drive it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Source of "now" in epoch milliseconds, the unit of every stored time.
pub trait Clock: Send + Sync + 'static {
    /// Current time, epoch ms.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}
