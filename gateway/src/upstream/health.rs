//! Outlier ejection for one remote version: `eject_after` failures in a row (connection errors,
//! server errors, timeouts) or one failed active health check take it out of routing for
//! `eject_for`; routing then sends its share to the primary. When the time is up it is let back
//! in, and the count starts again. A passed health check never shortens an ejection: the
//! ready endpoint can say yes while inference keeps failing.

use std::sync::Weak;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge};

use super::Remote;

pub struct Health {
    model: String,
    version: u64,
    /// For the log lines (clients never see it).
    url: String,
    eject_after: u32,
    eject_for: Duration,
    /// Failures in a row since the last success (or ejection).
    failures: AtomicU32,
    /// Until when it is out, in ms since `epoch`; 0: in.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
    ejections: Counter,
    ejected: Gauge,
}

impl Health {
    pub fn new(model: &str, version: u64, url: &str, eject_after: u32, eject_for: Duration) -> Health {
        let labels = [("model", model.to_string()), ("version", version.to_string())];
        let ejected = metrics::gauge!("gateway_upstream_ejected", &labels);
        ejected.set(0.0);
        Health {
            model: model.to_string(),
            version,
            url: url.to_string(),
            eject_after: eject_after.max(1),
            eject_for,
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            ejections: metrics::counter!("gateway_upstream_ejections_total", &labels),
            ejected,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether it may take traffic now (its ejection, if any, is over).
    pub fn available(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || self.readmit_if_due(until)
    }

    /// How long it stays out; `None`: it is in.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    fn readmit_if_due(&self, until: u64) -> bool {
        if self.now_ms() < until {
            return false;
        }
        if self.ejected_until_ms.compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.ejected.set(0.0);
            tracing::info!(model = %self.model, version = self.version, "remote version back in the split after its ejection");
        }
        true
    }

    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    pub fn failed(&self, reason: &str) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.eject_after {
            self.eject(&format!("{n} failures in a row, the last: {reason}"));
        }
    }

    pub fn check_passed(&self) {
        // Readmits an ejection that is over even while no request looks at it.
        self.available();
    }

    pub fn check_failed(&self, reason: &str) {
        self.eject(reason);
    }

    /// Takes it out for `eject_for` from now; an ejection already running is extended, not
    /// counted again.
    fn eject(&self, reason: &str) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.eject_for.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        let before = self.ejected_until_ms.swap(until, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        if before == 0 || before <= self.now_ms() {
            self.ejections.increment(1);
            self.ejected.set(1.0);
            tracing::warn!(
                model = %self.model,
                version = self.version,
                url = %self.url,
                eject_for_ms = self.eject_for.as_millis() as u64,
                reason,
                "remote version ejected from the split"
            );
        }
    }
}

/// Runs the active health checks every `interval` until the remote is dropped.
pub(super) async fn check_every(remote: Weak<Remote>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(remote) = remote.upgrade() else { return };
        remote.check().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_eject_and_a_success_resets_the_count() {
        let h = Health::new("health-test", 1, "http://h:1", 3, Duration::from_secs(60));
        h.failed("x");
        h.failed("x");
        h.succeeded();
        h.failed("x");
        h.failed("x");
        assert!(h.available(), "two in a row after a success do not eject");
        h.failed("x");
        assert!(!h.available());
        assert!(h.ejected_for().is_some_and(|d| d > Duration::from_secs(50)));
    }

    #[test]
    fn an_ejection_ends_after_its_time() {
        let h = Health::new("health-test", 2, "http://h:1", 1, Duration::from_millis(1));
        h.check_failed("down");
        let until = Instant::now() + Duration::from_secs(5);
        while !h.available() {
            assert!(Instant::now() < until, "still ejected after 5 s");
            std::thread::yield_now();
        }
        assert!(h.ejected_for().is_none());
    }
}
