//! Priority between tenants: while `online` requests are being served (one seen within
//! `ONLINE_WINDOW`), `batch` requests go through a lane of `BATCH_LANE` (one) at a time and
//! the rest wait for a place, within their deadline (then 429). With no online traffic, batch
//! requests are only bounded by their own quotas and the server's limit, so a batch tenant
//! alone gets the whole gateway.
//!
//! Why a lane and not a queue order: the cost an online request pays is the work queued ahead
//! of it on the model's worker and on the one core the server has. Keeping batch requests to a
//! couple at a time bounds that work, and a waiting request costs no CPU (it is parked).

use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::deadline::Deadline;
use crate::protocol::ApiError;
use crate::recently::Recently;

/// Batch requests served at once while online traffic is present. One: measured
/// (`benches/compare/tenants.sh`), a lane of two let a saturating batch tenant move the online
/// tenant's p99 by 1.4-1.9x, a lane of one by 0.8-1.0x (benches/README.md).
pub const BATCH_LANE: usize = 1;
/// How long one online request keeps the lane narrow.
const ONLINE_WINDOW: Duration = Duration::from_millis(200);

pub(super) type Permit = OwnedSemaphorePermit;

pub struct PriorityGate {
    /// On while online traffic counts as present.
    online: Recently,
    lane: std::sync::Arc<Semaphore>,
}

impl Default for PriorityGate {
    fn default() -> PriorityGate {
        PriorityGate {
            online: Recently::new(Instant::now(), ONLINE_WINDOW),
            lane: std::sync::Arc::new(Semaphore::new(BATCH_LANE)),
        }
    }
}

impl PriorityGate {
    /// An online request arrived (`now`): the lane narrows for `ONLINE_WINDOW`.
    pub fn online_seen(&self, now: Instant) {
        self.online.raise(now);
    }

    pub fn online_present(&self) -> bool {
        self.online.is_on(Instant::now())
    }

    /// A batch request's way in: nothing to hold without online traffic; otherwise a place in
    /// the lane, waited for within `deadline` (429 when it runs out).
    pub(super) async fn enter_batch(&self, deadline: &Deadline) -> Result<Option<Permit>, ApiError> {
        if !self.online_present() {
            return Ok(None);
        }
        let acquire = self.lane.clone().acquire_owned();
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline.at()), acquire).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(ApiError::TooManyRequests {
                message: "batch traffic waits while online traffic is served, and this request waited \
                          its whole deadline; retry later"
                    .into(),
                retry_after: 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batch_is_free_alone_and_narrowed_while_online_is_served() {
        let gate = PriorityGate::default();
        let far = Deadline::after(Duration::from_secs(60));
        // Alone: nothing to hold, however many.
        for _ in 0..10 {
            assert!(gate.enter_batch(&far).await.unwrap().is_none());
        }
        gate.online_seen(Instant::now());
        assert!(gate.online_present());
        let mut held = Vec::new();
        for _ in 0..BATCH_LANE {
            held.push(gate.enter_batch(&far).await.unwrap().expect("a lane place"));
        }
        // The lane is full: the next waits, and is refused when its deadline passes first.
        let short = Deadline::after(Duration::from_millis(20));
        let refused = gate.enter_batch(&short).await.unwrap_err();
        assert!(matches!(refused, ApiError::TooManyRequests { .. }), "{refused}");
        // A place freed: the next one gets it.
        let waiting = gate.enter_batch(&far);
        drop(held.pop());
        assert!(waiting.await.unwrap().is_some());
    }
}
