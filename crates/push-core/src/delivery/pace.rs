//! A subscriber's outbound rate limit (`rate_limit_per_second`): a token bucket on the
//! monotonic clock. The burst is a tenth of a second's worth (at least one push), so over
//! any window of `t` seconds at most `rate * t + burst` attempts start.

use std::time::Duration;

use tokio::time::Instant;

/// Tokens for one subscriber's attempts.
#[derive(Debug, Clone)]
pub struct Pace {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    /// `per_second` pushes a second at most; `None` for 0 (no limit).
    pub fn new(per_second: u32, now: Instant) -> Option<Self> {
        (per_second > 0).then(|| {
            let burst = (f64::from(per_second) / 10.0).ceil().max(1.0);
            Pace { per_second: f64::from(per_second), burst, tokens: burst, at: now }
        })
    }

    fn refill(&mut self, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + gained).min(self.burst);
        self.at = now;
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }

    /// How long until a token is there.
    pub fn wait(&self, now: Instant) -> Duration {
        let tokens = self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.per_second;
        match tokens >= 1.0 {
            true => Duration::ZERO,
            false => Duration::from_secs_f64((1.0 - tokens) / self.per_second),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_at_zero() {
        assert!(Pace::new(0, Instant::now()).is_none());
    }

    #[test]
    fn holds_the_rate_over_a_window() {
        let start = Instant::now();
        let mut pace = Pace::new(100, start).unwrap();
        let mut taken = 0;
        // Ask every millisecond for two simulated seconds.
        for ms in 0..2000 {
            let now = start + Duration::from_millis(ms);
            while pace.take(now) {
                taken += 1;
            }
        }
        assert!((200..=211).contains(&taken), "{taken} in 2 s at 100/s with a burst of 10");
        let now = start + Duration::from_millis(2000);
        assert!(pace.wait(now) <= Duration::from_millis(10));
    }
}
