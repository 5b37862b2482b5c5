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

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::capped::{Capped, Held};
use crate::protocol::ApiError;
use crate::recently::Recently;
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

/// On while requests are being refused for want of capacity.
static REFUSALS: LazyLock<Recently> = LazyLock::new(|| Recently::new(Instant::now(), REFUSING_WINDOW));

/// Notes a request refused for want of capacity (the in-flight limit, a full version queue).
pub fn refused() {
    REFUSALS.raise(Instant::now());
}

/// Whether a request was refused for want of capacity within the last `REFUSING_WINDOW`.
pub fn refusing() -> bool {
    REFUSALS.is_on(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_counts_for_the_window_and_then_lapses() {
        let t0 = Instant::now();
        let r = Recently::new(t0, REFUSING_WINDOW);
        assert!(!r.is_on(t0), "nothing refused yet");
        r.raise(t0 + Duration::from_millis(5));
        assert!(r.is_on(t0 + Duration::from_millis(5)));
        assert!(r.is_on(t0 + Duration::from_millis(5) + REFUSING_WINDOW));
        assert!(!r.is_on(t0 + Duration::from_millis(6) + REFUSING_WINDOW));
        // A later refusal starts the window again.
        r.raise(t0 + Duration::from_secs(10));
        assert!(r.is_on(t0 + Duration::from_secs(10) + REFUSING_WINDOW));
    }

    #[test]
    fn the_limit_refusing_a_request_marks_the_gateway_refusing() {
        let admission = Admission::new(1);
        let _held = admission.admit().expect("the first request is admitted");
        assert!(admission.admit().is_err(), "the second is over the limit");
        assert!(refusing());
    }
}
