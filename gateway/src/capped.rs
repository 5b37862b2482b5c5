//! A capped count of things in progress (requests admitted, connections open), each taker
//! holding a place until it drops it. The gauge that shows the count is moved by one per place,
//! never set: concurrent takers and leavers (or two gateways sharing the process-wide recorder)
//! cannot leave it at the value of whichever wrote last.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Capped {
    current: AtomicUsize,
    max: usize,
    gauge: metrics::Gauge,
}

/// One place; dropping it frees the place.
pub struct Held(Arc<Capped>);

impl Capped {
    pub fn new(max: usize, gauge: metrics::Gauge) -> Arc<Capped> {
        Arc::new(Capped { current: AtomicUsize::new(0), max, gauge })
    }

    /// A place, or `None` when all `max` are taken.
    pub fn take(self: &Arc<Self>) -> Option<Held> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()?;
        self.gauge.increment(1.0);
        Some(Held(self.clone()))
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.decrement(1.0);
    }
}
