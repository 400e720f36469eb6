//! Helpers shared by callsim's integration tests.
#![allow(dead_code)]

pub mod sink;
pub mod spec;

use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it is true or `limit` passes; returns whether it held.
pub async fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
