//! The one in-flight limit (`server.max_in_flight`) that HTTP and gRPC share: a request is
//! admitted, or refused at once (503 / UNAVAILABLE), never queued. Owns the
//! `gateway_in_flight_requests` gauge, so it counts both front ends.
//!
//! It also owns the process's "refusing" signal (`refused`, `refusing`): whether requests were
//! turned away for want of capacity (this limit, or a version's full queue) within the last
//! `REFUSING_WINDOW`. Model workers read it after a long run (`batching::serve`): while the
//! gateway is refusing, they give up the core between runs. Why: a refusal is written by an
//! async thread, and when a worker's own answer wakes that thread just after it ran, Linux's
//! scheduler (EEVDF) leaves it runnable but waiting until the worker's run ends or the next
//! scheduler tick (4 ms at HZ=250), and every refusal that arrives meanwhile waits with it
//! (benches/README.md, "Refusals under overload"). Process-wide on purpose: the core it
//! arbitrates is the process's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::capped::{Capped, Held};
use crate::protocol::ApiError;
use crate::telemetry::{self, Outcome};

pub struct Admission(Arc<Capped>);

/// Held while a request is in progress; dropping it frees the slot.
pub struct Admitted {
    _held: Held,
}

impl Admission {
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission(Capped::new(max, telemetry::in_flight())))
    }

    /// A slot, or `Overloaded` (counted as rejected) when all `max` are taken.
    pub fn admit(&self) -> Result<Admitted, ApiError> {
        self.0.take().map(|held| Admitted { _held: held }).ok_or_else(|| {
            refused();
            telemetry::count_unrouted(None, Outcome::Rejected);
            ApiError::Overloaded(format!(
                "the gateway is at its limit of {} requests in progress; retry shortly",
                self.0.max()
            ))
        })
    }
}

/// How long one refusal keeps the gateway counted as refusing.
pub const REFUSING_WINDOW: Duration = Duration::from_millis(100);

/// When a request was last refused for want of capacity, in whole milliseconds.
struct Refusals {
    origin: Instant,
    /// Milliseconds since `origin`, plus one, of the latest refusal; 0: none yet.
    last_ms: AtomicU64,
}

impl Refusals {
    fn new(origin: Instant) -> Refusals {
        Refusals { origin, last_ms: AtomicU64::new(0) }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64 + 1
    }

    fn refused(&self, now: Instant) {
        let ms = self.ms(now);
        // Written at most once a millisecond: under overload the line stays mostly read-only.
        if self.last_ms.load(Ordering::Relaxed) != ms {
            self.last_ms.store(ms, Ordering::Relaxed);
        }
    }

    fn refusing(&self, now: Instant) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last != 0 && self.ms(now).saturating_sub(last) <= REFUSING_WINDOW.as_millis() as u64
    }
}

static REFUSALS: LazyLock<Refusals> = LazyLock::new(|| Refusals::new(Instant::now()));

/// Notes a request refused for want of capacity (the in-flight limit, a full version queue).
pub fn refused() {
    REFUSALS.refused(Instant::now());
}

/// Whether a request was refused for want of capacity within the last `REFUSING_WINDOW`.
pub fn refusing() -> bool {
    REFUSALS.refusing(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_counts_for_the_window_and_then_lapses() {
        let t0 = Instant::now();
        let r = Refusals::new(t0);
        assert!(!r.refusing(t0), "nothing refused yet");
        r.refused(t0 + Duration::from_millis(5));
        assert!(r.refusing(t0 + Duration::from_millis(5)));
        assert!(r.refusing(t0 + Duration::from_millis(5) + REFUSING_WINDOW));
        assert!(!r.refusing(t0 + Duration::from_millis(6) + REFUSING_WINDOW));
        // A later refusal starts the window again.
        r.refused(t0 + Duration::from_secs(10));
        assert!(r.refusing(t0 + Duration::from_secs(10) + REFUSING_WINDOW));
    }

    #[test]
    fn the_limit_refusing_a_request_marks_the_gateway_refusing() {
        let admission = Admission::new(1);
        let _held = admission.admit().expect("the first request is admitted");
        assert!(admission.admit().is_err(), "the second is over the limit");
        assert!(refusing());
    }
}
