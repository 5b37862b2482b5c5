//! A model's budget of mirrored requests in flight (`routing.shadow_max_in_flight`). It belongs
//! to the model, not to a snapshot: a reload keeps the same budget (changing only its limit),
//! so copies still running on the old snapshot keep counting and the cap holds across reloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct ShadowBudget {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
}

/// One mirrored request in flight; dropping it frees its place.
#[derive(Debug)]
pub struct ShadowPermit(Arc<ShadowBudget>);

impl ShadowBudget {
    pub fn new(limit: usize) -> Arc<ShadowBudget> {
        Arc::new(ShadowBudget { in_flight: AtomicUsize::new(0), limit: AtomicUsize::new(limit) })
    }

    /// A new limit; copies already in flight keep their places (a lower limit admits no new
    /// copy until enough have finished).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// A place for one more copy, or `None` when the budget is spent.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ShadowPermit> {
        let limit = self.limit.load(Ordering::Acquire);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|_| ShadowPermit(self.clone()))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for ShadowPermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_a_lower_limit_keeps_the_ones_in_flight() {
        let b = ShadowBudget::new(2);
        let (p1, p2) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        assert!(b.try_acquire().is_none());
        b.set_limit(1);
        drop(p1);
        assert!(b.try_acquire().is_none(), "one still in flight fills a limit of 1");
        drop(p2);
        let p3 = b.try_acquire().unwrap();
        assert_eq!(b.in_flight(), 1);
        drop(p3);
        assert_eq!(b.in_flight(), 0);
    }
}
