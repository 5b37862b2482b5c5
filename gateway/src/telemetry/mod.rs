//! Every metric name once, their buckets, the label enums, and pre-registered handles so the
//! request path records without looking names up.
//!
//! Label values come only from the config (model names, versions) and from the enums here,
//! never from a raw request string, so their number stays bounded.
//!
//! `stats` keeps the cumulative per-version figures of Triton's statistics extension.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod stats;

pub const REQUESTS_TOTAL: &str = "gateway_requests_total";
pub const REQUEST_DURATION: &str = "gateway_request_duration_seconds";
pub const QUEUE_DURATION: &str = "gateway_queue_duration_seconds";
pub const INFERENCE_DURATION: &str = "gateway_inference_duration_seconds";
pub const BATCH_SIZE: &str = "gateway_batch_size";
pub const IN_FLIGHT: &str = "gateway_in_flight_requests";
pub const MODEL_LOADED: &str = "gateway_model_loaded";
pub const SHADOW_REQUESTS: &str = "gateway_shadow_requests_total";
pub const SHADOW_COMPARISONS: &str = "gateway_shadow_comparisons_total";
pub const SHADOW_ABS_DIFF: &str = "gateway_shadow_abs_diff";
pub const ROUTE_WEIGHT: &str = "gateway_route_weight_percent";
pub const CONFIG_RELOADS: &str = "gateway_config_reloads_total";
pub const PREDICTION_VALUE: &str = "gateway_prediction_value";
pub const PREDICTION_CLASS: &str = "gateway_prediction_class_total";
pub const DRIFT_PSI: &str = "gateway_drift_psi";
pub const FEEDBACK: &str = "gateway_feedback_total";
pub const ROLLOUT_EVENTS: &str = "gateway_rollout_events_total";
pub const ROLLOUT_STATE: &str = "gateway_rollout_state";
pub const ROLLOUT_STEP: &str = "gateway_rollout_step";
pub const ROLLOUT_COMPARISONS: &str = "gateway_rollout_comparisons_total";
pub const MODEL_READY: &str = "gateway_model_ready";
pub const IN_FLIGHT_LIMIT: &str = "gateway_in_flight_limit";
pub const CONNECTIONS_REFUSED: &str = "gateway_connections_refused_total";
pub const OPEN_CONNECTIONS: &str = "gateway_open_connections";
pub const FLEET_WRITES: &str = "gateway_fleet_writes_total";
pub const FLEET_LEADER: &str = "gateway_fleet_leader";
pub const FLEET_CONNECTED: &str = "gateway_fleet_connected";
pub const VALIDATION_RUNS: &str = "gateway_validation_runs_total";
pub const ROUTING_GENERATION: &str = "gateway_routing_generation";
pub const REGISTRY_POLLS: &str = "gateway_registry_polls_total";
pub const TRACE_SPANS: &str = "gateway_trace_spans_total";
pub const CAPTURE_RECORDS: &str = "gateway_capture_records_total";
pub const CAPTURE_CLOUDEVENTS: &str = "gateway_capture_cloudevents_total";
pub const AUDIT_RECORDS: &str = "gateway_audit_records_total";
pub const TENANT_REQUESTS: &str = "gateway_tenant_requests_total";
pub const TLS_RELOADS: &str = "gateway_tls_reloads_total";
pub const TLS_HANDSHAKE_FAILURES: &str = "gateway_tls_handshake_failures_total";

const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const ABS_DIFF_BUCKETS: &[f64] = &[0.0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];
const SCORE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95,
    1.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns the handle that renders it.
/// A thread drains histogram samples every few seconds so memory stays flat between scrapes.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = bucketed().unwrap_or_else(|e| {
                tracing::warn!("histogram buckets rejected ({e}); histograms become summaries");
                PrometheusBuilder::new()
            });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            describe();
            handle
        })
        .clone()
}

fn bucketed() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in [REQUEST_DURATION, QUEUE_DURATION, INFERENCE_DURATION] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), SECONDS_BUCKETS)?;
    }
    builder
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.to_string()), BATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(SHADOW_ABS_DIFF.to_string()), ABS_DIFF_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(PREDICTION_VALUE.to_string()), SCORE_BUCKETS)
}

fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "Inference requests, by outcome");
    metrics::describe_histogram!(REQUEST_DURATION, metrics::Unit::Seconds, "Whole request, in the gateway");
    metrics::describe_histogram!(QUEUE_DURATION, metrics::Unit::Seconds, "Waiting for a batch slot");
    metrics::describe_histogram!(INFERENCE_DURATION, metrics::Unit::Seconds, "ONNX Runtime run, per batch");
    metrics::describe_histogram!(BATCH_SIZE, "Rows per ONNX Runtime run");
    metrics::describe_gauge!(IN_FLIGHT, "Requests being served now");
    metrics::describe_gauge!(MODEL_LOADED, "1 per served model version");
    metrics::describe_counter!(SHADOW_REQUESTS, "Mirrored requests run on shadow versions, by outcome");
    metrics::describe_counter!(SHADOW_COMPARISONS, "Shadow outputs compared with the answer, by result");
    metrics::describe_histogram!(SHADOW_ABS_DIFF, "Per element |shadow - answer|");
    metrics::describe_gauge!(ROUTE_WEIGHT, "Current traffic split, percent per version");
    metrics::describe_counter!(CONFIG_RELOADS, "Config reloads, by outcome");
    metrics::describe_histogram!(
        PREDICTION_VALUE,
        "Monitored output: the top-class score, or the score, per row"
    );
    metrics::describe_counter!(PREDICTION_CLASS, "Predicted classes (argmax) of the monitored output");
    metrics::describe_counter!(
        SEGMENT_PREDICTIONS,
        "Predicted classes of the monitored output per request segment (monitor.segments, else other)"
    );
    metrics::describe_gauge!(DRIFT_PSI, "Population stability index of recent scores against the baseline");
    metrics::describe_counter!(FEEDBACK, "Delayed labels joined to predictions, by result");
    metrics::describe_counter!(ROLLOUT_EVENTS, "Rollout state changes, by event");
    metrics::describe_gauge!(ROLLOUT_STATE, "1 for a rollout's current state, 0 for the others");
    metrics::describe_gauge!(ROLLOUT_STEP, "Index of a rollout's current step");
    metrics::describe_counter!(
        ROLLOUT_COMPARISONS,
        "Candidate answers compared with the primary's during a rollout"
    );
    metrics::describe_gauge!(MODEL_READY, "1 when a configured model serves, 0 when it failed to load");
    metrics::describe_gauge!(IN_FLIGHT_LIMIT, "server.max_in_flight");
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed at accept: server.max_connections reached"
    );
    metrics::describe_gauge!(OPEN_CONNECTIONS, "Open connections, per listener");
    metrics::describe_counter!(FLEET_WRITES, "Writes to the fleet's shared state (Redis), by outcome");
    metrics::describe_gauge!(FLEET_LEADER, "1 on the replica that judges the fleet's rollouts");
    metrics::describe_gauge!(FLEET_CONNECTED, "1 while the fleet's Redis answers");
    metrics::describe_counter!(
        VALIDATION_RUNS,
        "Validation gate runs of a version on its hold-out set, by outcome"
    );
    metrics::describe_counter!(REGISTRY_POLLS, "Model registry polls and reports, by outcome");
    metrics::describe_counter!(
        TRACE_SPANS,
        "Trace spans ([tracing]), by outcome (exported; dropped: buffer full; failed: the collector did not take them)"
    );
    metrics::describe_counter!(
        CAPTURE_RECORDS,
        "Captured request records, by outcome (written; dropped: buffer full; failed: not written)"
    );
    metrics::describe_counter!(
        CAPTURE_CLOUDEVENTS,
        "Captured exchanges sent as CloudEvents, by outcome (sent; dropped: queue full; failed)"
    );
    metrics::describe_counter!(
        TENANT_REQUESTS,
        "Data-plane requests per tenant ([auth]), by front-door outcome and, once admitted, by result"
    );
    metrics::describe_counter!(
        AUDIT_RECORDS,
        "Audit history records, by outcome (written; failed: kept in memory only)"
    );
    metrics::describe_gauge!(
        ROUTING_GENERATION,
        "The routing generation serving now (answers carry it in x-gateway-generation)"
    );
    metrics::describe_counter!(
        TLS_RELOADS,
        "Changed TLS files re-read, by outcome (applied; failed: the certificate serving kept)"
    );
    metrics::describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "Data-plane TLS handshakes not completed, by reason (refused, timeout)"
    );
    describe_input_drift();
}

fn describe_input_drift() {
    metrics::describe_gauge!(INPUT_DRIFT_PSI, "PSI of an input feature's recent values against its baseline");
    metrics::describe_gauge!(INPUT_DRIFT_PSI_MAX, "The largest input feature PSI of a version");
    metrics::describe_counter!(
        INPUT_DRIFT_SAMPLES,
        "Requests sampled for input drift, by outcome (used; skipped: the worker's queue was full)"
    );
}

/// Why a version answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Candidate,
    Shadow,
    Pinned,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Primary, Role::Candidate, Role::Shadow, Role::Pinned];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Candidate => "candidate",
            Role::Shadow => "shadow",
            Role::Pinned => "pinned",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a request ended, as `gateway_requests_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    ClientError,
    ServerError,
    Rejected,
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Ok, Outcome::ClientError, Outcome::ServerError, Outcome::Rejected, Outcome::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::Rejected => "rejected",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Per (model, version, role): the request counters and latency histograms.
#[derive(Clone)]
pub struct RequestMetrics {
    outcomes: [Counter; 5],
    pub duration: Histogram,
    pub queue: Histogram,
}

impl RequestMetrics {
    fn new(model: &str, version: &str, role: &str) -> RequestMetrics {
        let labels =
            [("model", model.to_string()), ("version", version.to_string()), ("role", role.to_string())];
        let outcomes = Outcome::ALL.map(|o| {
            let mut l = labels.to_vec();
            l.push(("outcome", o.as_str().to_string()));
            metrics::counter!(REQUESTS_TOTAL, &l)
        });
        RequestMetrics {
            outcomes,
            duration: metrics::histogram!(REQUEST_DURATION, &labels),
            queue: metrics::histogram!(QUEUE_DURATION, &labels),
        }
    }

    pub fn finish(&self, outcome: Outcome, elapsed: Duration) {
        self.outcomes[outcome as usize].increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// Everything recorded about one served version, as handles resolved once per version (the
/// request path never builds a label string). Series are registered on first use, so a version
/// that never serves as a shadow has no shadow series.
#[derive(Clone)]
pub struct VersionMetrics {
    model: String,
    version: String,
    roles: Arc<[OnceLock<RequestMetrics>; 4]>,
    pub batch_size: Histogram,
    pub inference: Histogram,
    pub loaded: Gauge,
    /// Triton's statistics extension for this version.
    pub stats: Arc<stats::InferStats>,
    /// Mirrored copies run on this version, by `ShadowOutcome`.
    shadow: Arc<OnceLock<[Counter; 3]>>,
    /// This version's outputs (as a shadow) compared with the answer, per output in signature
    /// order, then per role of the version that answered.
    comparisons: Arc<[OutputComparisons]>,
    /// This version's answers (as a rollout's candidate) compared with the primary's.
    rollout: Arc<OnceLock<[Counter; 3]>>,
}

/// One output's comparison series: verdicts per answering role, and the element differences.
#[derive(Default)]
struct OutputComparisons {
    name: String,
    by_answer: [OnceLock<[Counter; 2]>; 4],
    abs_diff: OnceLock<Histogram>,
}

impl VersionMetrics {
    pub fn new(model: &str, version: u64) -> VersionMetrics {
        VersionMetrics::with_outputs(model, version, &[])
    }

    /// With the names of the version's outputs, in signature order (for shadow comparisons).
    pub fn with_outputs(model: &str, version: u64, outputs: &[String]) -> VersionMetrics {
        let v = version.to_string();
        let labels = [("model", model.to_string()), ("version", v.clone())];
        VersionMetrics {
            model: model.to_string(),
            version: v,
            roles: Arc::new(Default::default()),
            batch_size: metrics::histogram!(BATCH_SIZE, &labels),
            inference: metrics::histogram!(INFERENCE_DURATION, &labels),
            loaded: metrics::gauge!(MODEL_LOADED, &labels),
            stats: Arc::default(),
            shadow: Arc::default(),
            comparisons: outputs
                .iter()
                .map(|name| OutputComparisons { name: name.clone(), ..Default::default() })
                .collect(),
            rollout: Arc::default(),
        }
    }

    pub fn role(&self, role: Role) -> &RequestMetrics {
        self.roles[role.index()]
            .get_or_init(|| RequestMetrics::new(&self.model, &self.version, role.as_str()))
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [("model", self.model.clone()), ("version", self.version.clone())]
    }

    /// The version's labels followed by `extra`.
    fn labels_and<const N: usize>(&self, extra: [(&'static str, String); N]) -> Vec<(&'static str, String)> {
        let mut l = self.labels().to_vec();
        l.extend(extra);
        l
    }

    /// Counts a mirrored copy run on this version (`gateway_shadow_requests_total`).
    pub fn count_shadow(&self, outcome: ShadowOutcome) {
        let counters = self.shadow.get_or_init(|| {
            ShadowOutcome::ALL.map(|o| {
                metrics::counter!(SHADOW_REQUESTS, &self.labels_and([("outcome", o.as_str().to_string())]))
            })
        });
        counters[outcome as usize].increment(1);
    }

    /// Records one output's comparison with the answer: its verdict and every element's
    /// absolute difference. `answer` is the role of the version whose answer this one was
    /// compared with. An output this version does not have (a mismatch by definition) is
    /// counted on a slower path that builds its labels.
    pub fn record_comparison(&self, output: &str, answer: Role, matched: bool, abs_diffs: &[f64]) {
        let Some(series) = self.comparisons.iter().find(|c| c.name == output) else {
            let l = self.labels_and([
                ("output", output.to_string()),
                ("answer", answer.as_str().to_string()),
                ("result", if matched { "match" } else { "mismatch" }.to_string()),
            ]);
            metrics::counter!(SHADOW_COMPARISONS, &l).increment(1);
            return;
        };
        let labels = || self.labels_and([("output", series.name.clone())]);
        let verdicts = series.by_answer[answer.index()].get_or_init(|| {
            ["match", "mismatch"].map(|result| {
                let mut l = labels();
                l.push(("answer", answer.as_str().to_string()));
                l.push(("result", result.to_string()));
                metrics::counter!(SHADOW_COMPARISONS, &l)
            })
        });
        verdicts[usize::from(!matched)].increment(1);
        let histogram = series.abs_diff.get_or_init(|| metrics::histogram!(SHADOW_ABS_DIFF, &labels()));
        for d in abs_diffs {
            histogram.record(*d);
        }
    }

    /// A rollout comparison of this candidate with the primary
    /// (`gateway_rollout_comparisons_total`).
    pub fn count_rollout_comparison(&self, result: RolloutComparison) {
        let counters = self.rollout.get_or_init(|| {
            RolloutComparison::ALL.map(|r| {
                metrics::counter!(ROLLOUT_COMPARISONS, &self.labels_and([("result", r.as_str().to_string())]))
            })
        });
        counters[result as usize].increment(1);
    }
}

/// How a candidate's answer compared with the primary's during a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutComparison {
    Agree,
    Disagree,
    /// Not compared: the model's shadow budget was spent.
    Dropped,
}

impl RolloutComparison {
    pub const ALL: [RolloutComparison; 3] =
        [RolloutComparison::Agree, RolloutComparison::Disagree, RolloutComparison::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutComparison::Agree => "agree",
            RolloutComparison::Disagree => "disagree",
            RolloutComparison::Dropped => "dropped",
        }
    }
}

/// Requests that never reached a version (unknown model, rejected at the door): counted per
/// model when the model is known, without labels otherwise.
pub fn count_unrouted(model: Option<&str>, outcome: Outcome) {
    match model {
        Some(m) => metrics::counter!(REQUESTS_TOTAL, "model" => m.to_string(), "outcome" => outcome.as_str())
            .increment(1),
        None => metrics::counter!(REQUESTS_TOTAL, "outcome" => outcome.as_str()).increment(1),
    }
}

pub fn in_flight() -> Gauge {
    metrics::gauge!(IN_FLIGHT)
}

/// How a mirrored request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOutcome {
    Ok,
    Error,
    Dropped,
}

impl ShadowOutcome {
    pub const ALL: [ShadowOutcome; 3] = [ShadowOutcome::Ok, ShadowOutcome::Error, ShadowOutcome::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOutcome::Ok => "ok",
            ShadowOutcome::Error => "error",
            ShadowOutcome::Dropped => "dropped",
        }
    }
}

/// Publishes a model's split: one gauge per version and role.
pub fn route_weight(model: &str, version: u64, role: Role, percent: f64) {
    metrics::gauge!(ROUTE_WEIGHT, "model" => model.to_string(), "version" => version.to_string(), "role" => role.as_str())
        .set(percent);
}

/// Registers both reload outcomes at 0, so the first reload is an increase Prometheus sees.
pub fn register_reloads() {
    for outcome in ["applied", "rejected"] {
        metrics::counter!(CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
    for outcome in ["written", "failed"] {
        metrics::counter!(AUDIT_RECORDS, "outcome" => outcome).increment(0);
    }
}

/// A tenant's counter for one outcome (`tenant` comes from the keys file, or is `none` /
/// `unknown` for requests without a known key: bounded).
pub fn tenant_requests(tenant: &str, outcome: &'static str) -> Counter {
    metrics::counter!(TENANT_REQUESTS, "tenant" => tenant.to_string(), "outcome" => outcome)
}

/// An audit record written (`written`), or kept only in memory because the disk refused it.
pub fn count_audit_record(written: bool) {
    metrics::counter!(AUDIT_RECORDS, "outcome" => if written { "written" } else { "failed" }).increment(1);
}

pub fn count_reload(applied: bool) {
    metrics::counter!(CONFIG_RELOADS, "outcome" => if applied { "applied" } else { "rejected" }).increment(1);
}

pub fn prediction_value(model: &str, version: u64) -> Histogram {
    metrics::histogram!(PREDICTION_VALUE, "model" => model.to_string(), "version" => version.to_string())
}

pub fn prediction_class(model: &str, version: u64, class: &str) -> Counter {
    metrics::counter!(PREDICTION_CLASS, "model" => model.to_string(), "version" => version.to_string(), "class" => class.to_string())
}

pub fn drift_psi(model: &str, version: u64) -> Gauge {
    metrics::gauge!(DRIFT_PSI, "model" => model.to_string(), "version" => version.to_string())
}

/// A feedback label that joined nothing: `expired` (counted per model) or `unknown` (counted
/// without labels: the id matched no model).
pub fn count_feedback(model: Option<&str>, result: &'static str) {
    match model {
        Some(m) => metrics::counter!(FEEDBACK, "result" => result, "model" => m.to_string()).increment(1),
        None => metrics::counter!(FEEDBACK, "result" => result).increment(1),
    }
}

pub const ROLLOUT_EVENT_NAMES: [&str; 6] =
    ["start", "step", "promote", "rollback", "insufficient_data", "abort"];

/// Registers a model's rollout event counters at 0 (so `increase()` sees the first event).
pub fn register_rollout_events(model: &str) {
    for event in ROLLOUT_EVENT_NAMES {
        metrics::counter!(ROLLOUT_EVENTS, "model" => model.to_string(), "event" => event).increment(0);
    }
}

/// The judgements `gateway_feedback_total{result}` counts per monitored version.
pub const FEEDBACK_RESULTS: [&str; 6] = ["tp", "fp", "tn", "fn", "correct", "incorrect"];

/// A monitored version's feedback counters, in `FEEDBACK_RESULTS` order, registered at 0.
pub fn feedback_counters(model: &str, version: u64) -> [Counter; 6] {
    FEEDBACK_RESULTS.map(|result| {
        let c = metrics::counter!(FEEDBACK, "result" => result, "model" => model.to_string(), "version" => version.to_string());
        c.increment(0);
        c
    })
}

/// `gateway_rollout_state{model, candidate, state}`: 1 for the current state, 0 for the others;
/// `gateway_rollout_step{model}`: the index of the current step.
pub fn rollout_state(model: &str, candidate: u64, state: &str, step: usize) {
    for s in ["progressing", "insufficient_data", "rolled_back", "promoted", "aborted"] {
        metrics::gauge!(ROLLOUT_STATE, "model" => model.to_string(), "candidate" => candidate.to_string(), "state" => s)
            .set(if s == state { 1.0 } else { 0.0 });
    }
    metrics::gauge!(ROLLOUT_STEP, "model" => model.to_string()).set(step as f64);
}

/// `gateway_model_ready{model}`: 1 when the model serves, 0 when it failed to load.
pub fn model_ready(model: &str, ready: bool) {
    metrics::gauge!(MODEL_READY, "model" => model.to_string()).set(if ready { 1.0 } else { 0.0 });
}

/// A listener's `gateway_connections_refused_total` (registered at 0) and
/// `gateway_open_connections`.
pub fn connection_metrics(listener: &'static str) -> (Counter, Gauge) {
    let refused = metrics::counter!(CONNECTIONS_REFUSED, "listener" => listener);
    refused.increment(0);
    (refused, metrics::gauge!(OPEN_CONNECTIONS, "listener" => listener))
}

pub fn in_flight_limit(limit: usize) {
    metrics::gauge!(IN_FLIGHT_LIMIT).set(limit as f64);
}

pub fn count_rollout_event(model: &str, event: &str) {
    metrics::counter!(ROLLOUT_EVENTS, "model" => model.to_string(), "event" => event.to_string())
        .increment(1);
}

/// `gateway_fleet_writes_total{outcome}`: written, dropped, failed (registered at 0).
pub fn fleet_writes() -> [Counter; 3] {
    ["written", "dropped", "failed"].map(|outcome| {
        let c = metrics::counter!(FLEET_WRITES, "outcome" => outcome);
        c.increment(0);
        c
    })
}

/// `gateway_fleet_leader`, registered at 0.
pub fn fleet_leader() -> Gauge {
    let g = metrics::gauge!(FLEET_LEADER);
    g.set(0.0);
    g
}

/// `gateway_fleet_connected`.
pub fn fleet_connected() -> Gauge {
    metrics::gauge!(FLEET_CONNECTED)
}

/// `gateway_routing_generation`: the generation now serving.
pub fn routing_generation(generation: u64) {
    metrics::gauge!(ROUTING_GENERATION).set(generation as f64);
}

/// `gateway_registry_polls_total{outcome}`: unchanged, changed, failed, report_failed.
pub fn count_registry_poll(outcome: &'static str) {
    metrics::counter!(REGISTRY_POLLS, "outcome" => outcome).increment(1);
}

/// `gateway_validation_runs_total{model, outcome}`: a version run on the model's hold-out set
/// (`passed`, `failed`, or `error` when it could not be judged); kept verdicts are not counted.
pub fn count_validation_run(model: &str, outcome: &'static str) {
    metrics::counter!(VALIDATION_RUNS, "model" => model.to_string(), "outcome" => outcome).increment(1);
}

/// Registers a gated model's `gateway_validation_runs_total` series at 0.
pub fn register_validation_runs(model: &str) {
    for outcome in ["passed", "failed", "error"] {
        metrics::counter!(VALIDATION_RUNS, "model" => model.to_string(), "outcome" => outcome).increment(0);
    }
}

/// A model's `gateway_capture_records_total{model, outcome}` counters, registered at 0:
/// `[written, dropped, failed]`.
pub fn capture_records(model: &str) -> [Counter; 3] {
    ["written", "dropped", "failed"].map(|outcome| {
        let c = metrics::counter!(CAPTURE_RECORDS, "model" => model.to_string(), "outcome" => outcome);
        c.increment(0);
        c
    })
}

/// A model's `gateway_capture_cloudevents_total{model, outcome}` counters, registered at 0:
/// `[sent, dropped, failed]`.
pub fn capture_cloudevents(model: &str) -> [Counter; 3] {
    ["sent", "dropped", "failed"].map(|outcome| {
        let c = metrics::counter!(CAPTURE_CLOUDEVENTS, "model" => model.to_string(), "outcome" => outcome);
        c.increment(0);
        c
    })
}

/// Registers the TLS series at 0 (when `[server.tls]` is set).
pub fn register_tls() {
    for outcome in ["applied", "failed"] {
        metrics::counter!(TLS_RELOADS, "outcome" => outcome).increment(0);
    }
    for reason in ["refused", "timeout"] {
        metrics::counter!(TLS_HANDSHAKE_FAILURES, "reason" => reason).increment(0);
    }
}

/// Changed TLS files re-read: applied, or not loadable (the serving certificate kept).
pub fn count_tls_reload(applied: bool) {
    metrics::counter!(TLS_RELOADS, "outcome" => if applied { "applied" } else { "failed" }).increment(1);
}

pub fn count_tls_handshake_failure(reason: &'static str) {
    metrics::counter!(TLS_HANDSHAKE_FAILURES, "reason" => reason).increment(1);
}

/// `gateway_trace_spans_total{outcome}` counters, registered at 0: `[exported, dropped, failed]`.
pub fn trace_spans() -> [Counter; 3] {
    ["exported", "dropped", "failed"].map(|outcome| {
        let c = metrics::counter!(TRACE_SPANS, "outcome" => outcome);
        c.increment(0);
        c
    })
}

/// `gateway_segment_predictions_total{model, version, segment, class}`: approval rates per
/// segment (`monitor.segments`, else `other`: never a raw header value).
pub const SEGMENT_PREDICTIONS: &str = "gateway_segment_predictions_total";

pub fn segment_predictions(model: &str, version: u64, segment: &str, class: &str) -> Counter {
    metrics::counter!(
        SEGMENT_PREDICTIONS,
        "model" => model.to_string(),
        "version" => version.to_string(),
        "segment" => segment.to_string(),
        "class" => class.to_string()
    )
}

// --- input drift (monitor/inputs.rs) ---

/// `gateway_input_drift_psi{model, version, input, feature}`: PSI of one input feature's recent
/// values against its baseline; `feature` is an index below `monitor.max_features`.
pub const INPUT_DRIFT_PSI: &str = "gateway_input_drift_psi";
/// `gateway_input_drift_psi_max{model, version}`: the largest feature PSI of the version.
pub const INPUT_DRIFT_PSI_MAX: &str = "gateway_input_drift_psi_max";
/// `gateway_input_drift_samples_total{model, outcome}`: sampled requests binned (`used`) or not
/// (`skipped`: the worker's queue was full).
pub const INPUT_DRIFT_SAMPLES: &str = "gateway_input_drift_samples_total";

pub fn input_drift_psi(model: &str, version: u64, input: &str, feature: usize) -> Gauge {
    metrics::gauge!(
        INPUT_DRIFT_PSI,
        "model" => model.to_string(),
        "version" => version.to_string(),
        "input" => input.to_string(),
        "feature" => feature.to_string()
    )
}

pub fn input_drift_psi_max(model: &str, version: u64) -> Gauge {
    metrics::gauge!(INPUT_DRIFT_PSI_MAX, "model" => model.to_string(), "version" => version.to_string())
}

pub fn register_input_drift_samples(model: &str) {
    for outcome in ["used", "skipped"] {
        metrics::counter!(INPUT_DRIFT_SAMPLES, "model" => model.to_string(), "outcome" => outcome)
            .increment(0);
    }
}

pub fn count_input_drift_sample(model: &str, used: bool) {
    let outcome = if used { "used" } else { "skipped" };
    metrics::counter!(INPUT_DRIFT_SAMPLES, "model" => model.to_string(), "outcome" => outcome).increment(1);
}
