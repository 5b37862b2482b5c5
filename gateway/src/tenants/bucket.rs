//! A token bucket: `rps` tokens a second up to `burst`; a request takes one or is told how long
//! until one is there. Time is passed in, so the tests need no clock.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Bucket {
    rps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Starts full: a tenant's first burst is allowed.
    pub(super) fn new(rps: f64, burst: u64, now: Instant) -> Bucket {
        Bucket { rps, burst: burst as f64, tokens: burst as f64, at: now }
    }

    /// A new rate and size (the fleet's split changed); tokens above the new size are dropped.
    pub(super) fn set_rate(&mut self, rps: f64, burst: u64) {
        self.rps = rps;
        self.burst = burst as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes a token, or returns how long until one is there.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rps).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rps))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // 0.25 s later: 2.5 tokens came back; two requests pass, the third waits 0.05 s.
        let t1 = t0 + Duration::from_millis(250);
        assert!(b.take(t1).is_ok());
        assert!(b.take(t1).is_ok());
        let wait = b.take(t1).unwrap_err();
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100.0, 5, t0);
        let later = t0 + Duration::from_secs(3600);
        let passed = (0..20).filter(|_| b.take(later).is_ok()).count();
        assert_eq!(passed, 5);
    }
}
