//! Configuration: the TOML file (or a scanned model repository) → a validated `GatewayConfig`.
//!
//! Owns parsing, defaults and every check, each problem reported with its path
//! (`models.fraud.routing.candidates[0].percent: must be in 0..=100, got 150`). Nothing here
//! touches tokio or ONNX Runtime; `gateway check-config` and the server run the same code.
//! Relative `repository` paths are resolved against the working directory, as Triton does.
//! `REFERENCE.md` beside this file documents every key; the `reference` tests keep it complete.

mod keys;
mod raw;
#[cfg(test)]
mod reference;
mod repository;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use keys::hash_key;
pub use raw::{
    RawAdmin, RawAudit, RawAuth, RawBatching, RawCapture, RawConfig, RawFleet, RawKeysFile, RawMlflow,
    RawModel, RawMonitor, RawRemote, RawRollout, RawRouting, RawRuntime, RawServer, RawSource, RawTenant,
    RawTls, RawTracing, RawValidation, RawVersion, RawWeighted,
};
pub use repository::{model_file, valid_model_name, versions_on_disk};

/// One thing wrong with a config, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem{}):", self.problems.len(), plural(self.problems.len()))?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl From<Problem> for ConfigError {
    fn from(p: Problem) -> ConfigError {
        ConfigError { problems: vec![p] }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub runtime: RuntimeConfig,
    pub models: BTreeMap<String, ModelConfig>,
    /// Replicas sharing labels and rollouts through Redis; `None`: one replica, as before.
    pub fleet: Option<FleetConfig>,
    /// Where the history of routing changes is kept (`[audit]`).
    pub audit: AuditConfig,
    /// Tenants, their keys, permissions and quotas (`[auth]`); `None`: the data plane is open.
    pub auth: Option<AuthConfig>,
    /// OpenTelemetry span export (`[tracing]`); `None`: no spans.
    pub tracing: Option<TracingConfig>,
    /// The file's text this config was read from (`source::load_file`), which the audit
    /// history keeps so that a revert can write it back; `None` when built otherwise.
    pub text: Option<std::sync::Arc<str>>,
}

/// `[audit]`: the append-only history of every change to what serves.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditConfig {
    /// `history.jsonl` (and its rotated `history.1.jsonl`) live here; `None`: the history is
    /// kept in memory only (the last `MEMORY_RECORDS` records) and lost on restart.
    pub dir: Option<PathBuf>,
    /// The files together stay under this: the live file rotates at half of it.
    pub max_bytes: u64,
}

/// `[server.tls]`: TLS on the data-plane listeners (HTTP and gRPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CAs client certificates must chain to; set: mTLS, a client without one is refused.
    pub client_ca: Option<PathBuf>,
}

/// `[auth]`: who may call the data plane.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub keys_file: PathBuf,
    /// The keys file's tenants, validated whole.
    pub tenants: Vec<TenantConfig>,
}

/// One `[[tenant]]` of the keys file.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub name: String,
    /// SHA-256 of the tenant's API key (the key itself is never stored).
    pub key_sha256: [u8; 32],
    pub models: ModelAccess,
    /// Whether it may pick a version (the versions path, the pin header).
    pub may_pin: bool,
    /// Requests per second (token bucket refill); `None`: no rate limit.
    pub rps: Option<f64>,
    /// The bucket's size: requests it may send at once after a quiet spell.
    pub burst: u64,
    /// Its requests in flight at once; `None`: only the server's limit.
    pub max_in_flight: Option<usize>,
    pub priority: Priority,
}

/// The models a tenant may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelAccess {
    All,
    Only(std::collections::BTreeSet<String>),
}

impl ModelAccess {
    pub fn allows(&self, model: &str) -> bool {
        match self {
            ModelAccess::All => true,
            ModelAccess::Only(names) => names.contains(model),
        }
    }
}

/// Who yields under load: `batch` traffic waits or is refused before `online` is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Online,
    Batch,
}

/// `[tracing]`: spans exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's base URL (`/v1/traces` is appended).
    pub otlp_endpoint: String,
    /// Share of traces started here that are recorded (a caller's sampled flag is followed).
    pub sample_ratio: f64,
    pub service_name: String,
}

/// `[models.X.validation]`: the hold-out set a version must pass before it is routed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationConfig {
    /// JSON lines: `{"inputs": [V2 input tensors], "expected": [one value (or row) per row]}`.
    pub dataset: PathBuf,
    /// The output judged (default: the monitored output).
    pub output: String,
    pub rule: ValidationRule,
}

/// What a version must achieve on the hold-out set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValidationRule {
    /// The share of rows whose prediction (argmax for class scores) equals the expected label.
    MinAccuracy(f64),
    /// The largest absolute difference allowed between an output value and the expected one.
    MaxAbsDiff(f64),
}

/// `[models.X.capture]`: sampled request/answer records for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// Share of answered requests captured, 0..=100.
    pub percent: f64,
    /// Rotating `*.jsonl.gz` files are written here.
    pub dir: PathBuf,
    /// The files together stay under this; the oldest are deleted first.
    pub max_bytes: u64,
    /// Also send each captured exchange as CloudEvents (KServe's payload-logger format).
    pub cloudevents_url: Option<String>,
}

/// `[models.X.source]`: an MLflow model registry as the source of a model's versions.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub tracking_uri: String,
    /// The registered model's name in MLflow.
    pub registered_name: String,
    pub poll: Duration,
    pub cache_dir: PathBuf,
    /// The aliases the routing names, and the versions they pointed at when this config was made.
    pub aliases: BTreeMap<String, u64>,
    /// The alias the routing's primary was named by (moved to the candidate on promotion).
    pub primary_alias: Option<String>,
}

/// `[fleet]`: where the replicas of one fleet keep what they share.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// `redis://host:port/db`, `rediss://...` or `redis+unix:///path`.
    pub redis_url: String,
    /// Key prefix: replicas with the same name (and Redis) form one fleet.
    pub name: String,
    /// How long the judging replica's lease lasts without renewal.
    pub lease_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub grpc_listen: Option<SocketAddr>,
    pub max_request_bytes: usize,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    /// Open connections across the data-plane listeners (HTTP and gRPC); beyond it a new
    /// connection is closed at once and counted.
    pub max_connections: usize,
    /// A connection that has not sent a complete request head within this is closed.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/2 pings do not
    /// count as activity).
    pub idle_timeout: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub drain_timeout: Duration,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub token_env: Option<String>,
    /// The token itself, read from `token_env` when the config was loaded.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeConfig {
    pub execution_providers: Vec<ExecutionProvider>,
    /// Threads ONNX Runtime uses inside one run of one session.
    pub intra_op_threads: usize,
    /// Whether those threads spin while waiting for work (burns CPU the HTTP side needs).
    pub intra_op_spinning: bool,
    /// Async (HTTP, gRPC) threads; 0 (the default) means half the cores, at least one: the
    /// ONNX Runtime worker threads (one per instance per version) get the rest.
    pub io_threads: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub repository: PathBuf,
    /// The file in each version folder (`model.onnx`, or Triton's `default_model_filename`).
    pub model_filename: String,
    /// Versions from a model registry (`[models.X.source]`): `repository` is then its cache.
    pub source: Option<SourceConfig>,
    pub instances: usize,
    pub batching: BatchingConfig,
    pub routing: RoutingConfig,
    pub monitor: Option<MonitorConfig>,
    pub rollout: Option<RolloutConfig>,
    pub validation: Option<ValidationConfig>,
    pub capture: Option<CaptureConfig>,
    /// Versions served by remote Open Inference Protocol servers (`[models.X.remote]`), by
    /// local version number; routed like local ones.
    pub remote: BTreeMap<u64, RemoteConfig>,
}

/// The wire a remote version is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteProtocol {
    /// KServe V2 over HTTP, tensors in Triton's binary extension (`http://`).
    Http,
    /// `inference.GRPCInferenceService` with raw tensor contents (`grpc://`).
    Grpc,
}

/// `[models.X.remote] N = {...}`: one version served elsewhere. Everything here decides how the
/// client is built, so a reload that changes any of it reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteConfig {
    /// `scheme://host:port` with any trailing `/` removed (a path prefix is kept).
    pub url: String,
    pub protocol: RemoteProtocol,
    /// HTTP only: speak HTTP/2 (prior knowledge, h2c) instead of HTTP/1.1 keep-alive.
    pub http2: bool,
    /// The model's name on the remote server.
    pub model: String,
    /// The version there; `None`: the server's choice.
    pub version: Option<String>,
    /// Requests in flight to it at once; beyond it the gateway answers 503.
    pub max_in_flight: usize,
    pub connect_timeout: Duration,
    /// The most one call may take (within the request's own deadline, which always wins).
    pub timeout: Option<Duration>,
    /// Consecutive failures (connection errors, 5xx, timeouts) that take it out of the split.
    pub eject_after: u32,
    /// How long an ejected remote stays out before it is tried again.
    pub eject_for: Duration,
    /// Active health checks on its ready endpoint; `None`: off.
    pub health_interval: Option<Duration>,
}

/// What the gateway watches in a model's predictions (`[models.X.monitor]`).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// The output whose values are recorded, drift-checked and joined with feedback.
    pub output: String,
    /// A baseline distribution file for drift; without one, the first 1,000 primary predictions.
    pub baseline: Option<PathBuf>,
    /// Drift bins: 10 equal-width bins over this range; values outside go to the end bins.
    pub range: (f64, f64),
    /// A single score at or above this is class 1 (for one-score outputs).
    pub threshold: f64,
    /// For class-score outputs, which score a row contributes to the value histogram and drift.
    pub score: ScoreOf,
    /// The class that counts as "positive" for binary feedback (tp/fp/tn/fn).
    pub positive_class: u64,
    /// Integer class outputs: classes at or above this are counted as "other".
    pub max_classes: u64,
    pub feedback_ttl: Duration,
    pub feedback_capacity: usize,
    /// Per numeric input feature: bin edges and training proportions (JSON); `None`: the first
    /// primary requests are the input baseline.
    pub input_baseline: Option<PathBuf>,
    /// Input features watched for drift (the last dimension of each numeric input), and the
    /// most an explanation occludes.
    pub max_features: usize,
    /// The request header naming the applicant's segment (`segments`, else `other`).
    pub segment_header: Option<String>,
    pub segments: Vec<String>,
    /// A segment's requests a fairness verdict needs, per version and window.
    pub min_segment_requests: u64,
}

/// Which score a class-score row contributes (`monitor.score`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreOf {
    /// The top class's score (the default): how confident the model is.
    Top,
    /// The `positive_class` score: which way a binary classifier's decisions move.
    PositiveClass,
}

/// Progressive delivery of the model's single candidate (`[models.X.rollout]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// Candidate weights, ascending, ending at 100 (promotion).
    pub steps: Vec<f64>,
    pub step_interval: Duration,
    pub min_requests: u64,
    pub max_error_rate: Option<f64>,
    pub max_p99_latency_ms: Option<f64>,
    pub max_shadow_disagreement: Option<f64>,
    pub max_false_positive_rate: Option<f64>,
    /// The false-positive gate holds until this many labelled negatives arrived (SPEC: 20).
    pub min_labelled_negatives: u64,
    /// Above it (the largest feature PSI of the window's traffic) the rollout holds.
    pub max_input_drift_psi: Option<f64>,
    /// The candidate's positive-rate spread between segments minus the primary's.
    pub max_segment_disparity: Option<f64>,
}

impl ModelConfig {
    /// Every version a route names, each once, in ascending order.
    pub fn served_versions(&self) -> Vec<u64> {
        let r = &self.routing;
        let mut all: Vec<u64> = std::iter::once(r.primary)
            .chain(r.candidates.iter().map(|c| c.version))
            .chain(r.shadows.iter().map(|s| s.version))
            .chain(r.pin_only.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// True when `version` is served by a remote server rather than a local file.
    pub fn is_remote(&self, version: u64) -> bool {
        self.remote.contains_key(&version)
    }

    pub fn model_path(&self, version: u64) -> PathBuf {
        model_file(&self.repository, &self.name, version, &self.model_filename)
    }

    /// The config path of the first place that names `version` (for problem reports).
    pub fn version_path(&self, version: u64) -> String {
        let (m, r) = (&self.name, &self.routing);
        if r.primary == version {
            return format!("models.{m}.routing.primary");
        }
        if let Some(i) = r.candidates.iter().position(|w| w.version == version) {
            return format!("models.{m}.routing.candidates[{i}].version");
        }
        if let Some(i) = r.shadows.iter().position(|w| w.version == version) {
            return format!("models.{m}.routing.shadows[{i}].version");
        }
        let i = r.pin_only.iter().position(|&v| v == version).unwrap_or(0);
        format!("models.{m}.routing.versions[{i}]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchingConfig {
    /// Rows per run; 1 disables batching.
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    /// Requests waiting for a worker; beyond it, 503.
    pub max_queue: usize,
}

impl Default for BatchingConfig {
    fn default() -> BatchingConfig {
        BatchingConfig { max_batch_size: 1, max_queue_delay: Duration::ZERO, max_queue: 1024 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    pub primary: u64,
    pub candidates: Vec<Weighted>,
    pub shadows: Vec<Weighted>,
    /// Versions loaded only so callers can pin them.
    pub pin_only: Vec<u64>,
    pub sticky_header: Option<String>,
    pub pin_header: Option<String>,
    /// Mirrored requests of this model running at once; more are dropped (and counted).
    pub shadow_max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weighted {
    pub version: u64,
    pub percent: f64,
}

pub const DEFAULT_CONFIG_PATH: &str = "config/gateway.toml";

/// Command-line values that replace what the file says.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub grpc_listen: Option<String>,
    /// Models without their own `repository` look here.
    pub model_repository: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, raw: &mut RawConfig) {
        if let Some(v) = &self.listen {
            raw.server.listen = Some(v.clone());
        }
        if let Some(v) = &self.admin_listen {
            raw.server.admin_listen = Some(v.clone());
        }
        if let Some(v) = &self.grpc_listen {
            raw.server.grpc_listen = Some(v.clone());
        }
        if let Some(repo) = &self.model_repository {
            for model in raw.models.values_mut() {
                model.repository.get_or_insert_with(|| repo.display().to_string());
            }
        }
    }
}

/// Parses TOML text into the raw config, listing every unknown key (with its path) as a problem.
pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    let mut unknown = Vec::new();
    let deserializer = toml::Deserializer::parse(text).map_err(|e| Problem::new("", toml_message(&e)))?;
    let raw: RawConfig = serde_ignored::deserialize(deserializer, |path| unknown.push(config_path(&path)))
        .map_err(|e| Problem::new("", toml_message(&e)))?;
    if unknown.is_empty() {
        return Ok(raw);
    }
    unknown.sort();
    let problems = unknown.into_iter().map(|path| Problem::new(path, "unknown key")).collect();
    Err(ConfigError { problems })
}

/// `models.x.routing.candidates[0].weight`: keys joined by dots, list indices in brackets.
fn config_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", config_path(parent)),
        Path::Map { parent, key } => {
            let parent = config_path(parent);
            if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            config_path(parent)
        }
    }
}

fn toml_message(e: &toml::de::Error) -> String {
    e.to_string().trim_end().replace('\n', " ")
}

/// Reads, parses and validates a config file, with command-line overrides applied.
pub fn load_file(path: &Path, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    let text = read_text(path)?;
    let mut config = validate::validate(&parse_file(path, &text, overrides)?)?;
    config.text = Some(text.into());
    Ok(config)
}

/// A config file's text.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| Problem::new("", format!("cannot read {}: {e}", path.display())))?)
}

/// Parses a config file's `text` (read from `path`, which problems name), with overrides.
pub fn parse_file(path: &Path, text: &str, overrides: &Overrides) -> Result<RawConfig, ConfigError> {
    let mut raw = parse(text).map_err(|mut e| {
        for p in &mut e.problems {
            if p.path.is_empty() {
                p.message = format!("{}: {}", path.display(), p.message);
            }
        }
        e
    })?;
    overrides.apply(&mut raw);
    Ok(raw)
}

/// Parses and validates TOML text (tests and check-config use this too).
pub fn from_toml(text: &str, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    let mut raw = parse(text)?;
    overrides.apply(&mut raw);
    validate::validate(&raw)
}

/// Validates an already-built raw config.
pub fn from_raw(raw: &RawConfig) -> Result<GatewayConfig, ConfigError> {
    validate::validate(raw)
}

/// A config made from a scanned model repository (`source::triton::scan`), with the command
/// line's overrides; `allow_no_models` for a repository whose models are loaded on demand.
pub fn from_scanned(
    mut raw: RawConfig,
    overrides: &Overrides,
    allow_no_models: bool,
) -> Result<GatewayConfig, ConfigError> {
    overrides.apply(&mut raw);
    validate::validate_with(&raw, allow_no_models)
}

impl GatewayConfig {
    /// A human-readable summary of the effective routing (check-config prints it).
    pub fn describe_routing(&self) -> String {
        let mut out = String::new();
        for m in self.models.values() {
            let r = &m.routing;
            let candidate_total: f64 = r.candidates.iter().map(|c| c.percent).sum();
            out.push_str(&format!("{}: primary v{} {:.2}%", m.name, r.primary, 100.0 - candidate_total));
            for c in &r.candidates {
                out.push_str(&format!(", candidate v{} {:.2}%", c.version, c.percent));
            }
            for s in &r.shadows {
                out.push_str(&format!(", shadow v{} {:.2}% of traffic", s.version, s.percent));
            }
            for v in &r.pin_only {
                out.push_str(&format!(", pin-only v{v}"));
            }
            if let Some(h) = &r.sticky_header {
                out.push_str(&format!(", sticky on {h}"));
            }
            if let Some(h) = &r.pin_header {
                out.push_str(&format!(", pinned by {h}"));
            }
            out.push_str(&format!(" [{}]\n", m.repository.join(&m.name).display()));
        }
        out
    }
}
