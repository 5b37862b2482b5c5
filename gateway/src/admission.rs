//! The one in-flight limit (`server.max_in_flight`) that HTTP and gRPC share: a request is
//! admitted, or refused at once (503 / UNAVAILABLE), never queued. Owns the
//! `gateway_in_flight_requests` gauge, so it counts both front ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::protocol::ApiError;
use crate::telemetry::{self, Outcome};

pub struct Admission {
    current: AtomicUsize,
    max: usize,
    gauge: metrics::Gauge,
}

/// Held while a request is in progress; dropping it frees the slot.
pub struct Admitted(Arc<Admission>);

impl Admission {
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission { current: AtomicUsize::new(0), max, gauge: telemetry::in_flight() })
    }

    /// A slot, or `Overloaded` (counted as rejected) when all `max` are taken.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, ApiError> {
        let taken = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        if taken.is_err() {
            telemetry::count_unrouted(None, Outcome::Rejected);
            return Err(ApiError::Overloaded(format!(
                "the gateway is at its limit of {} requests in progress; retry shortly",
                self.max
            )));
        }
        // Moved by one, never set: two requests admitted and finished at once cannot leave
        // the gauge at the value of whichever wrote last.
        self.gauge.increment(1.0);
        Ok(Admitted(self.clone()))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.decrement(1.0);
    }
}
