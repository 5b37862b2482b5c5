//! The open loop's schedule: ticket `k` is meant to go out at `start + k / rate`, whatever
//! happened to the earlier ones, and its latency counts from that intended time (which
//! corrects coordinated omission, as wrk2 does).
//!
//! A pacer thread releases tickets as they come due, with `std::thread::sleep` (tens of
//! microseconds of precision, where tokio's timer rounds to milliseconds), as permits of a
//! semaphore; a free connection takes one. Due tickets that no connection has taken yet wait
//! in the generator; beyond `max_backlog` of them the oldest are dropped and counted. After the
//! last ticket the pacer adds one extra permit per connection, which tells it to stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// The intended send offset of ticket `k` at `rate` requests per second.
pub fn offset(k: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(k as f64 / rate)
}

/// Tickets whose intended time is at or before `elapsed`.
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    // Float to int saturates; a run is far shorter than 2^64 tickets.
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// Tickets in a span of time at `rate` (those with `k / rate < span`).
pub fn tickets_in(span: Duration, rate: f64) -> u64 {
    (span.as_secs_f64() * rate).ceil() as u64
}

/// Waiting tickets to drop so that at most `max_backlog` remain.
pub fn excess(waiting: u64, max_backlog: u64) -> u64 {
    waiting.saturating_sub(max_backlog)
}

/// What a free connection should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// Send now; latency counts from `intended`.
    Send { intended: Instant },
    /// The schedule is over.
    Done,
}

/// A constant-rate schedule shared by all connections and the pacer thread.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    /// Tickets at or beyond it are never sent.
    limit: u64,
    max_backlog: u64,
    /// Extra permits added at the end, one per taker.
    takers: usize,
    next: AtomicU64,
    permits: Semaphore,
    pub dropped: AtomicU64,
    pub max_seen_backlog: AtomicU64,
}

impl Schedule {
    /// `rate` requests per second from `start`, `limit` tickets in all, `takers` connections.
    pub fn new(start: Instant, rate: f64, limit: u64, max_backlog: u64, takers: usize) -> Self {
        Self {
            start,
            rate,
            limit,
            max_backlog: max_backlog.max(1),
            takers,
            next: AtomicU64::new(0),
            permits: Semaphore::new(0),
            dropped: AtomicU64::new(0),
            max_seen_backlog: AtomicU64::new(0),
        }
    }

    /// The intended time of ticket `k`.
    pub fn intended(&self, k: u64) -> Instant {
        self.start + offset(k, self.rate)
    }

    /// Waits for a released ticket.
    pub async fn take(&self) -> Ticket {
        match self.permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Ticket::Done,
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if k < self.limit { Ticket::Send { intended: self.intended(k) } } else { Ticket::Done }
    }

    /// Due tickets no connection has taken yet.
    pub fn backlog(&self) -> u64 {
        self.permits.available_permits() as u64
    }

    /// The pacer: releases every ticket at its time, then the stop permits. Blocks the calling
    /// (dedicated) thread until the schedule is over.
    pub fn pace(&self) {
        let mut released = 0u64;
        while released < self.limit {
            let due = due(self.start.elapsed(), self.rate).min(self.limit);
            if due > released {
                self.release(due - released);
                released = due;
            }
            self.shed();
            let next_at = self.intended(released);
            std::thread::sleep(next_at.saturating_duration_since(Instant::now()));
        }
        self.permits.add_permits(self.takers);
    }

    fn release(&self, n: u64) {
        let mut n = n;
        while n > 0 {
            let step = n.min(1 << 20);
            self.permits.add_permits(usize::try_from(step).unwrap_or(1));
            n -= step;
        }
    }

    /// Drops the oldest waiting tickets beyond `max_backlog`.
    fn shed(&self) {
        let waiting = self.backlog();
        self.max_seen_backlog.fetch_max(waiting, Ordering::Relaxed);
        let drop = u32::try_from(excess(waiting, self.max_backlog)).unwrap_or(u32::MAX);
        if drop == 0 {
            return;
        }
        if let Ok(permits) = self.permits.try_acquire_many(drop) {
            permits.forget();
            self.next.fetch_add(u64::from(drop), Ordering::Relaxed);
            self.dropped.fetch_add(u64::from(drop), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn offsets_follow_the_rate() {
        assert_eq!(offset(0, 1000.0), Duration::ZERO);
        assert_eq!(offset(1500, 1000.0), Duration::from_millis(1500));
        assert_eq!(due(Duration::ZERO, 1000.0), 1);
        assert_eq!(due(Duration::from_micros(2500), 1000.0), 3);
        assert_eq!(tickets_in(Duration::from_micros(2500), 1000.0), 3);
        assert_eq!(tickets_in(Duration::from_secs(2), 1000.0), 2000);
    }

    #[test]
    fn backlog_bound() {
        assert_eq!(excess(3, 10), 0);
        assert_eq!(excess(25, 10), 15);
    }

    #[tokio::test]
    async fn tickets_are_spaced_then_done_for_every_taker() {
        let start = Instant::now();
        let s = Arc::new(Schedule::new(start, 1000.0, 4, 100, 2));
        let pacer = Arc::clone(&s);
        let thread = std::thread::spawn(move || pacer.pace());
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(s.take().await);
        }
        thread.join().unwrap();
        let want = |ms| Ticket::Send { intended: start + Duration::from_millis(ms) };
        assert_eq!(got[..4], [want(0), want(1), want(2), want(3)]);
        assert_eq!(got[4..], [Ticket::Done, Ticket::Done]);
        assert!(start.elapsed() >= Duration::from_millis(3));
    }

    #[test]
    fn a_slow_taker_loses_the_oldest_tickets() {
        let start = Instant::now() - Duration::from_secs(1);
        let s = Schedule::new(start, 1000.0, 1001, 10, 1);
        s.pace(); // everything is already due: releases 1001, keeps the newest 10
        assert_eq!(s.dropped.load(Ordering::Relaxed), 991);
        assert_eq!(s.max_seen_backlog.load(Ordering::Relaxed), 1001);
        assert_eq!(s.backlog(), 11, "10 tickets and the stop permit");
        let first = s.next.load(Ordering::Relaxed);
        assert_eq!(s.intended(first), start + Duration::from_millis(991));
    }
}
