//! Triton's statistics extension: per served version, cumulative counts and times in the shape
//! `GET /v2/models[/{m}[/versions/{v}]]/stats` reports them. `perf_analyzer` reads them to split
//! a request's latency into queue, compute and the rest, and `tritonclient`'s
//! `get_inference_statistics` returns them.
//!
//! What each figure covers here:
//! - `success` / `fail`: requests answered to clients (any route), from routing to the answer.
//! - `queue`: a successful request's wait in the version's queue; `compute_infer`: the model run
//!   that answered it (the whole batch's run, as Triton counts it). Decoding, validation, batch
//!   assembly and encoding are not split out (`compute_input` / `compute_output` stay at zero
//!   time), so perf_analyzer shows them as "overhead".
//! - `execution_count`, `inference_count` (rows) and `batch_stats`: every model run, shadow
//!   copies included.
//!
//! Plain atomics, touched once per request and once per run; the per-batch-size table is behind
//! a mutex taken once per run on the worker thread.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A count and the total time of the events counted.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(nanos(d), Ordering::Relaxed);
    }

    fn read(&self) -> Duration64 {
        Duration64 { count: self.count.load(Ordering::Relaxed), ns: self.ns.load(Ordering::Relaxed) }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The live counters of one version.
#[derive(Debug, Default)]
pub struct InferStats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_infer: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    /// Rows per run → (runs, total run time in ns).
    batches: Mutex<BTreeMap<usize, (u64, u64)>>,
}

impl InferStats {
    /// One model run of `rows` rows that took `elapsed`.
    pub fn record_run(&self, rows: usize, elapsed: Duration) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count.fetch_add(rows as u64, Ordering::Relaxed);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
        if let Ok(mut batches) = self.batches.lock() {
            let entry = batches.entry(rows).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(nanos(elapsed));
        }
    }

    /// A request this version answered: how long it queued and the run that answered it.
    pub fn record_answered(&self, queue: Duration, compute: Duration) {
        self.queue.add(queue);
        self.compute_infer.add(compute);
    }

    /// A request routed to this version ended, well or not, `total` after it was routed.
    pub fn record_request(&self, ok: bool, total: Duration) {
        if ok { self.success.add(total) } else { self.fail.add(total) }
    }

    /// The figures now, in the extension's shape.
    pub fn snapshot(&self, name: &str, version: u64) -> ModelStats {
        let zero = Duration64::default();
        let answered = self.queue.read().count;
        let batch_stats = self
            .batches
            .lock()
            .map(|b| {
                b.iter()
                    .map(|(&rows, &(count, ns))| BatchStats {
                        batch_size: rows as u64,
                        compute_input: Duration64 { count, ns: 0 },
                        compute_infer: Duration64 { count, ns },
                        compute_output: Duration64 { count, ns: 0 },
                    })
                    .collect()
            })
            .unwrap_or_default();
        ModelStats {
            name: name.to_string(),
            version: version.to_string(),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            inference_stats: InferenceStats {
                success: self.success.read(),
                fail: self.fail.read(),
                queue: self.queue.read(),
                compute_input: Duration64 { count: answered, ns: 0 },
                compute_infer: self.compute_infer.read(),
                compute_output: Duration64 { count: answered, ns: 0 },
                cache_hit: zero,
                cache_miss: zero,
            },
            batch_stats,
            memory_usage: [],
        }
    }
}

/// `{"count": N, "ns": T}`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Duration64 {
    pub count: u64,
    pub ns: u64,
}

#[derive(Debug, Serialize)]
pub struct InferenceStats {
    pub success: Duration64,
    pub fail: Duration64,
    pub queue: Duration64,
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
    pub cache_hit: Duration64,
    pub cache_miss: Duration64,
}

#[derive(Debug, Serialize)]
pub struct BatchStats {
    pub batch_size: u64,
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
}

/// One entry of `model_stats`.
#[derive(Debug, Serialize)]
pub struct ModelStats {
    pub name: String,
    pub version: String,
    /// Milliseconds since the Unix epoch of the last run (0: none yet).
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub inference_stats: InferenceStats,
    pub batch_stats: Vec<BatchStats>,
    pub memory_usage: [u8; 0],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_requests_add_up() {
        let s = InferStats::default();
        s.record_run(4, Duration::from_micros(100));
        s.record_run(4, Duration::from_micros(50));
        s.record_run(1, Duration::from_micros(10));
        s.record_answered(Duration::from_micros(7), Duration::from_micros(100));
        s.record_request(true, Duration::from_micros(200));
        s.record_request(false, Duration::from_micros(30));
        let m = s.snapshot("m", 3);
        assert_eq!((m.name.as_str(), m.version.as_str()), ("m", "3"));
        assert_eq!((m.execution_count, m.inference_count), (3, 9));
        assert!(m.last_inference > 0);
        assert_eq!(m.inference_stats.success, Duration64 { count: 1, ns: 200_000 });
        assert_eq!(m.inference_stats.fail, Duration64 { count: 1, ns: 30_000 });
        assert_eq!(m.inference_stats.queue, Duration64 { count: 1, ns: 7_000 });
        assert_eq!(m.inference_stats.compute_infer, Duration64 { count: 1, ns: 100_000 });
        let sizes: Vec<(u64, u64, u64)> =
            m.batch_stats.iter().map(|b| (b.batch_size, b.compute_infer.count, b.compute_infer.ns)).collect();
        assert_eq!(sizes, vec![(1, 1, 10_000), (4, 2, 150_000)]);
    }

    #[test]
    fn the_json_has_tritons_field_names() {
        let v = serde_json::to_value(InferStats::default().snapshot("m", 1)).unwrap();
        for key in ["name", "version", "last_inference", "inference_count", "execution_count", "batch_stats"]
        {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        for key in ["success", "fail", "queue", "compute_input", "compute_infer", "compute_output"] {
            assert_eq!(v["inference_stats"][key], serde_json::json!({"count": 0, "ns": 0}), "{key}");
        }
        assert_eq!(v["memory_usage"], serde_json::json!([]));
    }
}
