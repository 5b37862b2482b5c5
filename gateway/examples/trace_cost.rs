//! What a request's trace costs on the request path, in nanoseconds: the calls an inference
//! request makes on its `Trace` (begin at the front end, routed, the job handed to the queue,
//! the run linked, finished, ended with the answer), and for a sampled request the worker's
//! `queue` and `onnxruntime.run` spans, timed in a loop on this thread:
//!
//! - no `[tracing]`; `[tracing]` with every request unsampled (`sample_ratio = 0`); the same
//!   with a caller's unsampled `traceparent`; every request sampled (`sample_ratio = 1`, a
//!   buffer large enough that nothing is dropped: the cost of recording and queueing 3 spans).
//!
//! Export (JSON, the POST) runs on the runtime's thread, not here: its cost is in
//! `benches/compare/tracing.sh`'s CPU per request. Pin it for steadier figures:
//! `taskset -c 1 cargo run --release -p gateway --example trace_cost [ITERATIONS]`

use std::time::{Duration, Instant};

use gateway::config::TracingConfig;
use gateway::trace::{Front, Tracer, Tuning};

const UNSAMPLED_PARENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

fn config(ratio: f64) -> TracingConfig {
    // Nobody listens on port 9: exports fail at once (counted), which costs this thread nothing.
    TracingConfig {
        otlp_endpoint: "http://127.0.0.1:9".to_string(),
        sample_ratio: ratio,
        service_name: "trace-cost".to_string(),
    }
}

/// Nanoseconds per request over `n` requests.
fn per_request(tracer: &Tracer, n: u32, parent: Option<&'static [u8]>) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let header = |name: &str| match name {
            "traceparent" => parent,
            "x-request-id" => Some(b"0000abcd-1".as_slice()),
            _ => None,
        };
        let mut trace = tracer.begin(Front::Http, header);
        trace.routed("credit-scoring", 1, "primary", "primary", 1);
        let job = trace.job();
        let run = job.as_ref().map(|j| {
            let now = Instant::now();
            j.record_queue(now, now);
            j.record_run(now, Duration::from_micros(5), 1, 1, Vec::new(), None)
        });
        trace.ran(run);
        trace.finished("ok", None, false);
        std::hint::black_box(trace.end_http(http::Response::new(())));
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() -> Result<(), String> {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _entered = runtime.enter();
    let off = Tracer::start(None)?;
    let unsampled = Tracer::start(Some(&config(0.0)))?;
    let sampled = Tracer::start(Some(&config(1.0)))?;
    let sampled_n = (n / 20).max(1);
    let buffer = 3 * sampled_n as usize + 16;
    sampled.retune(Tuning {
        buffer,
        max_batch: buffer,
        interval: Duration::from_secs(3600),
        ..Tuning::default()
    })?;
    for round in 1..=3 {
        let a = per_request(&off, n, None);
        let b = per_request(&unsampled, n, None);
        let c = per_request(&unsampled, n, Some(UNSAMPLED_PARENT));
        let d = if round == 3 { per_request(&sampled, sampled_n, None) } else { f64::NAN };
        println!(
            "round {round}: no [tracing] {a:.1} ns; unsampled {b:.1} ns; unsampled caller {c:.1} ns; sampled {d:.0} ns (request path, 3 spans)"
        );
    }
    Ok(())
}
