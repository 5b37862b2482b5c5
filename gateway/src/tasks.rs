//! Counting spawned work so shutdown can wait for it: connections, shadow requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Counts live tasks; `idle` resolves when none is left.
#[derive(Default)]
pub struct Tracker {
    open: AtomicUsize,
    changed: Notify,
}

/// Held by one task; dropping it marks the task done.
pub struct TrackerGuard(Arc<Tracker>);

impl Tracker {
    pub fn enter(self: &Arc<Self>) -> TrackerGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        TrackerGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub async fn idle(&self) {
        loop {
            // Registered before the check, so a notification in between is not lost.
            let notified = self.changed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}
