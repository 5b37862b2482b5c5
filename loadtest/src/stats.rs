//! What the workers record (latency histogram, errors by status and text, answers per
//! `model_version`), in a few shards merged into one at the end; and the few shared counters
//! the progress line reads while the run goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks exactly (larger values are clamped): one hour, in µs.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Distinct error or version keys kept; beyond them counts go to an `(other)` key.
const MAX_KEYS: usize = 64;
/// Error texts are cut to this many characters.
pub const MAX_ERROR_TEXT: usize = 120;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx; the version that answered, when known.
    Ok { version: Option<String> },
    /// Any other status (0 for a transport failure or timeout), with its error text.
    Failed { status: u16, error: String },
}

/// One worker's results; [`Stats::merge`] folds workers together.
#[derive(Debug, Clone)]
pub struct Stats {
    pub latency_us: Histogram<u64>,
    /// The same latencies split by outcome: successful answers, and everything else (to tell
    /// how fast refusals come back from how fast admitted requests are served).
    pub ok_latency_us: Histogram<u64>,
    pub error_latency_us: Histogram<u64>,
    pub ok: u64,
    pub errors: HashMap<(u16, String), u64>,
    pub versions: HashMap<String, u64>,
}

impl Stats {
    pub fn new() -> Result<Self, String> {
        let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string());
        Ok(Self {
            latency_us: histogram()?,
            ok_latency_us: histogram()?,
            error_latency_us: histogram()?,
            ok: 0,
            errors: HashMap::new(),
            versions: HashMap::new(),
        })
    }

    /// Records one completed request.
    pub fn record(&mut self, latency: Duration, outcome: Outcome) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_us.saturating_record(us);
        match outcome {
            Outcome::Ok { version } => {
                self.ok_latency_us.saturating_record(us);
                self.ok += 1;
                let key = version.unwrap_or_else(|| "(unknown)".into());
                bump(&mut self.versions, key, 1);
            }
            Outcome::Failed { status, error } => {
                self.error_latency_us.saturating_record(us);
                bump(&mut self.errors, (status, error), 1)
            }
        }
    }

    /// Requests recorded, successful or not.
    pub fn requests(&self) -> u64 {
        self.latency_us.len()
    }

    /// Folds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) -> Result<(), String> {
        self.latency_us.add(&other.latency_us).map_err(|e| e.to_string())?;
        self.ok_latency_us.add(&other.ok_latency_us).map_err(|e| e.to_string())?;
        self.error_latency_us.add(&other.error_latency_us).map_err(|e| e.to_string())?;
        self.ok += other.ok;
        for (k, n) in &other.errors {
            bump(&mut self.errors, k.clone(), *n);
        }
        for (k, n) in &other.versions {
            bump(&mut self.versions, k.clone(), *n);
        }
        Ok(())
    }
}

/// Adds `n` to `key`, or to the `(other)` key once the map holds [`MAX_KEYS`] keys.
fn bump<K: OtherKey>(map: &mut HashMap<K, u64>, key: K, n: u64) {
    let key = if map.len() >= MAX_KEYS && !map.contains_key(&key) { key.other() } else { key };
    *map.entry(key).or_insert(0) += n;
}

/// The catch-all key a full map counts into.
trait OtherKey: std::hash::Hash + Eq {
    fn other(&self) -> Self;
}

impl OtherKey for String {
    fn other(&self) -> Self {
        "(other)".into()
    }
}

impl OtherKey for (u16, String) {
    fn other(&self) -> Self {
        (self.0, "(other)".into())
    }
}

/// Cuts an error text to [`MAX_ERROR_TEXT`] characters, on a character boundary.
pub fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// A few [`Stats`] that workers share (worker `i` records into shard `i % shards`): one
/// histogram per runtime thread keeps the generator's cache footprint small, where one per
/// connection would not.
#[derive(Debug)]
pub struct Shards(Vec<Mutex<Stats>>);

impl Shards {
    pub fn new(shards: usize) -> Result<Self, String> {
        (0..shards.max(1)).map(|_| Stats::new().map(Mutex::new)).collect::<Result<_, _>>().map(Self)
    }

    pub fn record(&self, worker: u64, latency: Duration, outcome: Outcome) {
        let i = usize::try_from(worker).unwrap_or(0) % self.0.len();
        if let Some(shard) = self.0.get(i) {
            shard.lock().unwrap_or_else(PoisonError::into_inner).record(latency, outcome);
        }
    }

    /// All shards folded into one.
    pub fn merged(&self) -> Result<Stats, String> {
        let mut all = Stats::new()?;
        for shard in &self.0 {
            all.merge(&shard.lock().unwrap_or_else(PoisonError::into_inner))?;
        }
        Ok(all)
    }
}

/// Counters shared by all workers, read once a second by the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn count(&self, ok: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str) -> Outcome {
        Outcome::Ok { version: Some(v.into()) }
    }

    #[test]
    fn merging_adds_everything() {
        let mut a = Stats::new().unwrap();
        a.record(Duration::from_micros(100), ok("1"));
        a.record(Duration::from_micros(300), Outcome::Failed { status: 503, error: "busy".into() });
        let mut b = Stats::new().unwrap();
        b.record(Duration::from_micros(200), ok("1"));
        b.record(Duration::from_micros(250), ok("2"));
        b.record(Duration::from_micros(900), Outcome::Failed { status: 503, error: "busy".into() });
        a.merge(&b).unwrap();
        assert_eq!(a.requests(), 5);
        assert_eq!(a.ok, 3);
        assert_eq!(a.versions["1"], 2);
        assert_eq!(a.versions["2"], 1);
        assert_eq!(a.errors[&(503, "busy".to_string())], 2);
        assert_eq!(a.latency_us.max(), a.latency_us.highest_equivalent(900));
    }

    #[test]
    fn shards_merge() {
        let shards = Shards::new(2).unwrap();
        for worker in 0..5 {
            shards.record(worker, Duration::from_micros(10 * (worker + 1)), ok("1"));
        }
        let all = shards.merged().unwrap();
        assert_eq!(all.requests(), 5);
        assert_eq!(all.versions["1"], 5);
        assert_eq!(all.latency_us.max(), 50);
    }

    #[test]
    fn keys_are_bounded() {
        let mut s = Stats::new().unwrap();
        for i in 0..100 {
            s.record(Duration::from_micros(5), Outcome::Failed { status: 500, error: format!("e{i}") });
        }
        assert_eq!(s.errors.len(), MAX_KEYS + 1);
        assert_eq!(s.errors[&(500, "(other)".to_string())], 100 - MAX_KEYS as u64);
    }

    #[test]
    fn truncation_respects_characters() {
        let long = "é".repeat(200);
        let cut = truncate(&long);
        assert!(cut.ends_with("..."));
        assert_eq!(cut.chars().count(), MAX_ERROR_TEXT + 3);
        assert_eq!(truncate("short"), "short");
    }
}
