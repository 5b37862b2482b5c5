//! A flag that stays on for a while after it was last raised, read and raised from any thread
//! through one atomic: the priority gate's "online traffic is being served" and admission's
//! "requests are being refused". Raising it moves its end forward only when that gains more
//! than a millisecond, so under steady traffic the cache line stays mostly read-only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Recently {
    origin: Instant,
    window_us: u64,
    /// Microseconds since `origin` until which the flag is on; 0: never raised.
    until_us: AtomicU64,
}

impl Recently {
    /// A flag, off, that stays on for `window` after each raise; times count from `origin`.
    pub fn new(origin: Instant, window: Duration) -> Recently {
        Recently { origin, window_us: window.as_micros() as u64, until_us: AtomicU64::new(0) }
    }

    fn us_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_micros() as u64
    }

    /// Turns the flag on until `window` after `now`.
    pub fn raise(&self, now: Instant) {
        let until = self.us_at(now) + self.window_us;
        if until > self.until_us.load(Ordering::Relaxed) + 1000 {
            self.until_us.store(until, Ordering::Relaxed);
        }
    }

    /// Whether `now` is within `window` of the last raise.
    pub fn is_on(&self, now: Instant) -> bool {
        let until = self.until_us.load(Ordering::Relaxed);
        until != 0 && self.us_at(now) <= until
    }
}
