//! Watching what models predict, and acting on it: prediction metrics and drift per version,
//! delayed labels joined to predictions, and the rollout controller that advances, promotes or
//! rolls back a candidate from what it measures.
//!
//! State here outlives snapshots (a reload keeps a version's drift window and its rollout), so it
//! is keyed by model name and version, not held in the registry. The request path only appends
//! to small bounded structures; PSI and verdicts are computed off to the side.

mod analysis;
mod controller;
mod drift;
mod feedback;
mod inputs;
mod means;
mod predictions;
mod segments;
mod shared;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::fleet::{Fleet, Write};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};

pub use analysis::{Analysis, Latencies, Verdict, WindowStats, judge};
pub use controller::{RolloutState, run_rollouts};
pub use drift::{BINS, Baseline, bin, load_baseline, psi};
pub use feedback::{Judgement, Lookup, Prediction};
pub use means::{Means, input_means};
pub use predictions::{Row, rows};
pub use segments::{Segment, segment_of};
pub use shared::run_fleet;

use crate::config::MonitorConfig;
use crate::protocol::ApiError;
use crate::registry::ServingSnapshot;
use crate::telemetry::{self, Outcome, Role};
use crate::tensor::Tensor;

/// Per (model, version): its prediction metrics, drift window and rollout window.
struct Watch {
    model: String,
    version: u64,
    value: Histogram,
    classes: Mutex<HashMap<u64, Counter>>,
    drift: Mutex<drift::Window>,
    /// Registered only once the window holds `MIN_WINDOW` predictions.
    psi: OnceLock<Gauge>,
    /// Rows recorded; PSI is recomputed every `PSI_EVERY` of them.
    seen: std::sync::atomic::AtomicU64,
    window: Mutex<WindowStats>,
    /// `gateway_feedback_total` per judgement, in `Judgement` order.
    feedback: [Counter; 6],
    /// `gateway_segment_predictions_total` handles (`segments`).
    segments: Mutex<segments::SegmentCounters>,
}

/// A version's PSI is recomputed every this many predictions (cheap, but not per request).
const PSI_EVERY: u64 = 64;

#[derive(Default)]
pub struct Monitor {
    watches: RwLock<HashMap<String, HashMap<u64, Arc<Watch>>>>,
    baselines: Mutex<HashMap<String, Baseline>>,
    stores: RwLock<HashMap<String, Arc<feedback::Store>>>,
    rollouts: Mutex<HashMap<String, controller::Rollout>>,
    /// Fleet mode (`[fleet]`): where shared state goes, and what was last read of it.
    fleet: OnceLock<Arc<Fleet>>,
    views: Mutex<HashMap<String, shared::View>>,
    /// Input drift: the sampler, and its worker's windows.
    inputs: inputs::Inputs,
}

impl Monitor {
    fn watch(&self, model: &str, version: u64) -> Arc<Watch> {
        let found =
            self.watches.read().ok().and_then(|m| m.get(model).and_then(|v| v.get(&version)).cloned());
        if let Some(w) = found {
            return w;
        }
        let Ok(mut map) = self.watches.write() else { return Arc::new(Watch::new(model, version)) };
        let versions = map.entry(model.to_string()).or_default();
        versions.entry(version).or_insert_with(|| Arc::new(Watch::new(model, version))).clone()
    }

    fn store(&self, model: &str, cfg: &MonitorConfig) -> Option<Arc<feedback::Store>> {
        if let Some(s) = self.stores.read().ok()?.get(model) {
            return Some(s.clone());
        }
        let mut map = self.stores.write().ok()?;
        let store = map
            .entry(model.to_string())
            .or_insert_with(|| Arc::new(feedback::Store::new(cfg.feedback_ttl, cfg.feedback_capacity)));
        Some(store.clone())
    }

    /// Records an answer (or a shadow's outputs): prediction metrics, drift, and, for answers
    /// with a request id, the prediction kept for a later label; with `segment` (the request's,
    /// see `segment_of`), its approval counts per segment.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        snapshot: &ServingSnapshot,
        model: &str,
        version: u64,
        role: Role,
        request_id: Option<&str>,
        outputs: &[Tensor],
        segment: Option<Segment>,
    ) {
        let Some(cfg) = snapshot.config.models.get(model).and_then(|m| m.monitor.as_ref()) else { return };
        let Some(output) = outputs.iter().find(|t| t.name == cfg.output) else { return };
        let rows = rows(output, cfg);
        // Pinned calls are someone choosing a version on purpose (a comparison, an oracle):
        // they would skew what the version's routed traffic predicts. Their labels still join.
        if role != Role::Pinned {
            let watch = self.watch(model, version);
            if watch.record(&rows, cfg) {
                self.update_psi(&watch, model, cfg);
            }
            if role == Role::Primary {
                self.capture_baseline(model, cfg, &rows);
            }
            if let Some(segment) = segment {
                self.observe_segment(snapshot, model, version, role, segment, &rows);
            }
        }
        if let (Some(id), true) = (request_id, role != Role::Shadow)
            && let Some(store) = self.store(model, cfg)
        {
            let classes = rows.iter().map(|r| r.class).collect();
            let limits = (cfg.feedback_ttl, cfg.feedback_capacity);
            let prediction = Prediction { version, role, classes };
            if let Some(fleet) = self.fleet() {
                fleet.enqueue(Write::Prediction {
                    model: model.to_string(),
                    id: id.to_string(),
                    payload: shared::encode_prediction(&prediction),
                    rows: prediction.classes.len(),
                    at_ms: crate::fleet::now_ms(),
                    ttl: cfg.feedback_ttl,
                    capacity: cfg.feedback_capacity,
                });
            }
            store.insert(id, prediction, Instant::now(), limits);
        }
    }

    fn capture_baseline(&self, model: &str, cfg: &MonitorConfig, rows: &[Row]) {
        let Ok(mut baselines) = self.baselines.lock() else { return };
        let Some(baseline) = baseline_of(&mut baselines, model, cfg) else { return };
        if baseline.ready().is_some() {
            return;
        }
        for r in rows {
            if let Some(b) = bin(r.score, cfg.range) {
                baseline.capture(b);
            }
        }
    }

    fn update_psi(&self, watch: &Watch, model: &str, cfg: &MonitorConfig) {
        let baseline = {
            let Ok(mut baselines) = self.baselines.lock() else { return };
            let Some(b) = baseline_of(&mut baselines, model, cfg) else { return };
            match b.ready() {
                Some(p) => *p,
                None => return,
            }
        };
        let Some(actual) =
            watch.drift.lock().ok().filter(|w| w.len() >= drift::MIN_WINDOW).map(|w| w.proportions())
        else {
            return;
        };
        let gauge = watch.psi.get_or_init(|| telemetry::drift_psi(model, watch.version));
        gauge.set(psi(&baseline, &actual));
    }

    /// Counts a finished request for the rollout window of a candidate. Requests that failed by
    /// the client's fault are left out altogether: a client must not be able to raise the error
    /// rate, nor dilute it, nor fill `min_requests` with requests the version never judged.
    pub fn record_request(&self, model: &str, version: u64, role: Role, outcome: Outcome, latency: Duration) {
        if role != Role::Candidate || outcome == Outcome::ClientError {
            return;
        }
        let watch = self.watch(model, version);
        if let Ok(mut w) = watch.window.lock() {
            w.requests += 1;
            if matches!(outcome, Outcome::ServerError | Outcome::Timeout) {
                w.errors += 1;
            }
            if outcome == Outcome::Ok {
                w.latencies.record(latency);
            }
        }
    }

    /// Records whether the candidate's answer agreed with the primary's on the same inputs.
    pub fn record_comparison(&self, model: &str, candidate: u64, agreed: bool) {
        let watch = self.watch(model, candidate);
        if let Ok(mut w) = watch.window.lock() {
            w.compared += 1;
            if !agreed {
                w.disagreed += 1;
            }
        }
    }

    /// Joins a delayed label to the prediction made for request `id`: in a fleet, wherever it
    /// was made; otherwise (or when Redis does not know it yet) in this replica's own store.
    pub async fn feedback(
        &self,
        snapshot: &ServingSnapshot,
        id: &str,
        label: &serde_json::Value,
    ) -> Result<FeedbackReply, ApiError> {
        let labels = parse_labels(label)?;
        if let Some(fleet) = self.fleet().filter(|f| f.connected())
            && let Some(reply) = self.feedback_shared(fleet, snapshot, id, &labels).await?
        {
            return Ok(reply);
        }
        self.feedback_here(snapshot, id, &labels)
    }

    fn feedback_here(
        &self,
        snapshot: &ServingSnapshot,
        id: &str,
        labels: &[u64],
    ) -> Result<FeedbackReply, ApiError> {
        let now = Instant::now();
        for (name, m) in &snapshot.config.models {
            let Some(cfg) = &m.monitor else { continue };
            let Some(store) = self.store(name, cfg) else { continue };
            match store.take(id, labels.len(), now) {
                Lookup::Unknown => continue,
                Lookup::Expired => {
                    telemetry::count_feedback(Some(name), "expired");
                    return Err(expired(id, cfg));
                }
                Lookup::Rows(rows) => return Err(wrong_rows(id, rows, labels.len())),
                Lookup::AlreadyLabelled => return Err(already_labelled(id)),
                Lookup::Found(p) => {
                    // Redis may get this prediction after the label: mark it there too.
                    if let Some(fleet) = self.fleet() {
                        fleet.enqueue(Write::Labelled { model: name.clone(), id: id.to_string() });
                    }
                    return self.join(name, cfg, id, &p, labels);
                }
            }
        }
        telemetry::count_feedback(None, "unknown");
        Err(ApiError::NotFound(format!(
            "no recent prediction with id {id:?} (ids are the request's \"id\", or its x-request-id when it had none)"
        )))
    }

    fn join(
        &self,
        model: &str,
        cfg: &MonitorConfig,
        id: &str,
        p: &Prediction,
        labels: &[u64],
    ) -> Result<FeedbackReply, ApiError> {
        let watch = self.watch(model, p.version);
        let mut results = Vec::with_capacity(labels.len());
        for (class, &label) in p.classes.iter().zip(labels) {
            let Some(class) = class else { continue };
            let j = feedback::judge(*class, label, cfg.positive_class);
            watch.feedback[j as usize].increment(1);
            if p.role == Role::Candidate
                && let Ok(mut w) = watch.window.lock()
            {
                match j {
                    Judgement::FalsePositive => w.fp += 1,
                    Judgement::TrueNegative => w.tn += 1,
                    _ => {}
                }
            }
            results.push(j.as_str());
        }
        Ok(FeedbackReply { id: id.to_string(), model: model.to_string(), version: p.version, results })
    }

    /// The candidate window of `model`'s `version`, emptied (a new window starts).
    fn take_window(&self, model: &str, version: u64) -> WindowStats {
        let watch = self.watch(model, version);
        watch.window.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default()
    }

    fn peek_window(&self, model: &str, version: u64) -> WindowStats {
        let watch = self.watch(model, version);
        watch.window.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

/// What `POST /v2/feedback` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedbackReply {
    pub id: String,
    pub model: String,
    pub version: u64,
    pub results: Vec<&'static str>,
}

fn expired(id: &str, cfg: &MonitorConfig) -> ApiError {
    ApiError::Gone(format!(
        "the prediction for id {id:?} is older than monitor.feedback_ttl_s ({} s)",
        cfg.feedback_ttl.as_secs()
    ))
}

fn wrong_rows(id: &str, rows: usize, labels: usize) -> ApiError {
    ApiError::Malformed(format!("request {id:?} had {rows} rows; give one label per row (got {labels})"))
}

fn already_labelled(id: &str) -> ApiError {
    ApiError::Conflict(format!("the prediction for id {id:?} already has a label"))
}

/// A label is a class number (or a bool), or an array of them (one per row).
fn parse_labels(label: &serde_json::Value) -> Result<Vec<u64>, ApiError> {
    let one = |v: &serde_json::Value| -> Option<u64> {
        v.as_u64()
            .or_else(|| v.as_bool().map(u64::from))
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
    };
    let bad = || {
        ApiError::Malformed(format!(
            "label must be a class number, a boolean, or an array of them; got {label}"
        ))
    };
    match label {
        serde_json::Value::Array(items) => items.iter().map(|v| one(v).ok_or_else(bad)).collect(),
        v => one(v).map(|l| vec![l]).ok_or_else(bad),
    }
}

/// `model`'s baseline, created on first use (looked up without allocating afterwards).
fn baseline_of<'a>(
    baselines: &'a mut HashMap<String, Baseline>,
    model: &str,
    cfg: &MonitorConfig,
) -> Option<&'a mut Baseline> {
    if !baselines.contains_key(model) {
        baselines.insert(model.to_string(), initial_baseline(model, cfg));
    }
    baselines.get_mut(model)
}

fn initial_baseline(model: &str, cfg: &MonitorConfig) -> Baseline {
    let Some(path) = &cfg.baseline else { return Baseline::Capturing { counts: [0; BINS] } };
    match load_baseline(path, cfg.range) {
        Ok(p) => Baseline::Ready(p),
        Err(e) => {
            tracing::error!(
                model,
                "drift baseline unusable ({e}); capturing the primary's first predictions instead"
            );
            Baseline::Capturing { counts: [0; BINS] }
        }
    }
}

impl Watch {
    fn new(model: &str, version: u64) -> Watch {
        Watch {
            model: model.to_string(),
            version,
            value: telemetry::prediction_value(model, version),
            feedback: telemetry::feedback_counters(model, version),
            classes: Mutex::new(HashMap::new()),
            drift: Mutex::new(drift::Window::default()),
            psi: OnceLock::new(),
            seen: std::sync::atomic::AtomicU64::new(0),
            window: Mutex::new(WindowStats::default()),
            segments: Mutex::new(segments::SegmentCounters::default()),
        }
    }

    /// Records the rows; true when the PSI is due for recomputation.
    fn record(&self, rows: &[Row], cfg: &MonitorConfig) -> bool {
        for r in rows {
            if r.score.is_finite() {
                self.value.record(r.score);
            }
        }
        if let Ok(mut classes) = self.classes.lock() {
            for c in rows.iter().filter_map(|r| r.class) {
                classes
                    .entry(c)
                    .or_insert_with(|| {
                        telemetry::prediction_class(
                            &self.model,
                            self.version,
                            &predictions::class_label(c, cfg),
                        )
                    })
                    .increment(1);
            }
        }
        if let Ok(mut window) = self.drift.lock() {
            for b in rows.iter().filter_map(|r| bin(r.score, cfg.range)) {
                window.push(b);
            }
        }
        let before = self.seen.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        before / PSI_EVERY != (before + rows.len() as u64) / PSI_EVERY || before < drift::MIN_WINDOW as u64
    }
}
