//! The one in-flight limit (`server.max_in_flight`) that HTTP and gRPC share: a request is
//! admitted, or refused at once (503 / UNAVAILABLE), never queued. Owns the
//! `gateway_in_flight_requests` gauge, so it counts both front ends.

use std::sync::Arc;

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
            telemetry::count_unrouted(None, Outcome::Rejected);
            ApiError::Overloaded(format!(
                "the gateway is at its limit of {} requests in progress; retry shortly",
                self.0.max()
            ))
        })
    }
}
