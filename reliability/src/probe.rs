//! The well-behaved client whose latency an attack must not ruin: `loadtest`'s closed loop (a
//! few HTTP/1.1 connections, one routed JSON request each at a time, batch 1), run on an OS
//! thread of its own with its own single-threaded runtime, so that the attack's tasks never
//! delay its timers or its reads (they still share the tools' core).
//!
//! The connections are opened when the probe starts: a probe started before an attack is a
//! client that was already connected; `warmup` then covers the attack's ramp (requests sent,
//! not recorded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http::StatusCode;
use loadtest::client;
use loadtest::payload::{self, ModelMeta};
use loadtest::request::Template;
use loadtest::run::{self, Plan};
use serde_json::{Value, json};

/// The model every probe request goes to.
pub const MODEL: &str = "credit-scoring";

/// What one probe run does.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    /// Sent but not recorded (an attack ramping up).
    pub warmup: Duration,
    pub measure: Duration,
    /// Per request; a request past it is an error and its connection is reopened.
    pub timeout: Duration,
}

/// What the well-behaved client saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeResult {
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// `(status, text, count)`; status 0 is a transport failure (connect, reset, timeout).
    pub error_kinds: Vec<(u16, String, u64)>,
}

impl ProbeResult {
    pub fn to_json(&self) -> Value {
        let kinds: Vec<Value> = self
            .error_kinds
            .iter()
            .map(|(status, text, count)| json!({ "status": status, "error": text, "count": count }))
            .collect();
        json!({
            "requests": self.requests, "ok": self.ok, "errors": self.errors,
            "throughput_rps": self.throughput_rps.round(),
            "p50_us": self.p50_us, "p99_us": self.p99_us, "max_us": self.max_us,
            "error_kinds": kinds,
        })
    }

    /// `p50 126 us, p99 205 us, 12000 req (0 errors)`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "p50 {} us, p99 {} us, {} req at {:.0}/s ({} errors",
            self.p50_us, self.p99_us, self.requests, self.throughput_rps, self.errors
        );
        if let Some((status, text, count)) = self.error_kinds.first() {
            s.push_str(&format!("; first kind: {count} x {status} {text}"));
        }
        s.push(')');
        s
    }
}

/// The request the probe sends, built from the model's metadata: one row of random inputs.
pub async fn template(addr: SocketAddr) -> Result<Template, String> {
    let authority = addr.to_string();
    let path = format!("/v2/models/{MODEL}");
    let (status, body) = client::get(addr, &authority, &path).await?;
    if status != 200 {
        let text = client::error_text(StatusCode::from_u16(status).unwrap_or_default(), &body);
        return Err(format!("GET {path}: {status} {text}"));
    }
    let meta: ModelMeta =
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: not model metadata: {e}"))?;
    let tensors = payload::generate(&meta, 1, 7)?;
    let payload = payload::encode_json(&tensors);
    let uri = format!("/v2/models/{MODEL}/infer").parse().map_err(|e| format!("infer path: {e}"))?;
    Template::new(uri, &authority, false, &payload, &[], None)
}

/// A probe running on its own thread.
#[derive(Debug)]
pub struct Running(JoinHandle<Result<ProbeResult, String>>);

/// Starts the probe (it connects at once) and returns without waiting for it.
pub fn start(spec: &ProbeSpec, template: Template) -> Result<Running, String> {
    let plan = Plan {
        addr: spec.addr,
        http2: false,
        grpc: false,
        h2_connections: 1,
        connections: spec.connections,
        template,
        timeout: spec.timeout,
        seed: 11,
        rate: None,
        warmup: spec.warmup,
        measure_for: Some(spec.measure),
        requests: None,
        max_backlog: 0,
        progress: false,
        threads: 1,
    };
    let thread = std::thread::Builder::new().name("probe".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("probe runtime: {e}"))?;
        let finished = runtime.block_on(run::run(Arc::new(plan)))?;
        Ok(result_of(&finished))
    });
    thread.map(Running).map_err(|e| format!("starting the probe thread: {e}"))
}

impl Running {
    /// Waits for the probe to finish (off the async threads).
    pub async fn finish(self) -> Result<ProbeResult, String> {
        tokio::task::spawn_blocking(move || self.0.join())
            .await
            .map_err(|e| format!("probe join: {e}"))?
            .map_err(|_| "the probe thread panicked".to_string())?
    }
}

/// Starts a probe and waits for it.
pub async fn measure(spec: &ProbeSpec, template: Template) -> Result<ProbeResult, String> {
    start(spec, template)?.finish().await
}

fn result_of(finished: &run::Finished) -> ProbeResult {
    let s = &finished.stats;
    let ok_latency = &s.ok_latency_us;
    let mut error_kinds: Vec<(u16, String, u64)> =
        s.errors.iter().map(|((status, text), n)| (*status, text.clone(), *n)).collect();
    error_kinds.sort_by_key(|k| std::cmp::Reverse(k.2));
    let requests = s.requests();
    let secs = finished.elapsed.as_secs_f64();
    ProbeResult {
        requests,
        ok: s.ok,
        errors: requests.saturating_sub(s.ok),
        throughput_rps: if secs > 0.0 { requests as f64 / secs } else { 0.0 },
        // Latency of what was served: a refusal's speed is not the service's.
        p50_us: ok_latency.value_at_quantile(0.5),
        p99_us: ok_latency.value_at_quantile(0.99),
        max_us: ok_latency.max(),
        error_kinds,
    }
}
