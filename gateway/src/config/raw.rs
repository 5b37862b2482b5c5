//! The config file exactly as written: serde types, every field optional so that defaults and
//! checks live in one place (`validate`). Unknown keys are collected by `serde_ignored` in
//! `super::parse` rather than rejected by `deny_unknown_fields`, so that every unknown key is
//! reported with its path at once instead of only the first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    pub fleet: Option<RawFleet>,
    pub audit: Option<RawAudit>,
    pub auth: Option<RawAuth>,
    pub tracing: Option<RawTracing>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawAuth {
    pub keys_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
}

/// The keys file (`[auth] keys_file`): one `[[tenant]]` table per tenant.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawKeysFile {
    #[serde(default)]
    pub tenant: Vec<RawTenant>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawTenant {
    pub name: Option<String>,
    pub key_sha256: Option<String>,
    pub models: Option<Vec<String>>,
    pub may_pin: Option<bool>,
    pub rps: Option<f64>,
    pub burst: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub priority: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawAudit {
    pub dir: Option<String>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawValidation {
    pub dataset: Option<String>,
    pub output: Option<String>,
    pub min_accuracy: Option<f64>,
    pub max_abs_diff: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawCapture {
    pub percent: Option<f64>,
    pub dir: Option<String>,
    pub max_bytes: Option<u64>,
    pub cloudevents_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawFleet {
    pub redis_url: Option<String>,
    pub name: Option<String>,
    pub lease_ttl_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub grpc_listen: Option<String>,
    pub max_request_bytes: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub max_connections: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawAdmin {
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRuntime {
    pub execution_providers: Option<Vec<String>>,
    pub intra_op_threads: Option<u64>,
    pub intra_op_spinning: Option<bool>,
    pub io_threads: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawModel {
    pub repository: Option<String>,
    pub model_filename: Option<String>,
    pub source: Option<RawSource>,
    pub instances: Option<u64>,
    pub batching: Option<RawBatching>,
    pub routing: Option<RawRouting>,
    pub monitor: Option<RawMonitor>,
    pub rollout: Option<RawRollout>,
    pub validation: Option<RawValidation>,
    pub capture: Option<RawCapture>,
    /// Versions served by another Open Inference Protocol server, by local version number.
    pub remote: Option<BTreeMap<String, RawRemote>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRemote {
    pub url: Option<String>,
    pub model: Option<String>,
    pub version: Option<String>,
    pub http2: Option<bool>,
    pub max_in_flight: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub eject_after: Option<u64>,
    pub eject_for_ms: Option<u64>,
    pub health_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawMonitor {
    pub output: Option<String>,
    pub baseline: Option<String>,
    pub range: Option<Vec<f64>>,
    pub threshold: Option<f64>,
    pub score: Option<String>,
    pub positive_class: Option<u64>,
    pub max_classes: Option<u64>,
    pub feedback_ttl_s: Option<u64>,
    pub feedback_capacity: Option<u64>,
    pub input_baseline: Option<String>,
    pub max_features: Option<u64>,
    pub segment_header: Option<String>,
    pub segments: Option<Vec<String>>,
    pub min_segment_requests: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRollout {
    pub steps: Option<Vec<f64>>,
    pub step_interval_s: Option<f64>,
    pub min_requests: Option<u64>,
    pub max_error_rate: Option<f64>,
    pub max_p99_latency_ms: Option<f64>,
    pub max_shadow_disagreement: Option<f64>,
    pub max_false_positive_rate: Option<f64>,
    pub min_labelled_negatives: Option<u64>,
    pub on_failure: Option<String>,
    pub max_input_drift_psi: Option<f64>,
    pub max_segment_disparity: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawBatching {
    pub max_batch_size: Option<u64>,
    pub max_queue_delay_us: Option<u64>,
    pub max_queue: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRouting {
    pub primary: Option<RawVersion>,
    #[serde(default)]
    pub candidates: Vec<RawWeighted>,
    #[serde(default)]
    pub shadows: Vec<RawWeighted>,
    #[serde(default)]
    pub versions: Vec<u64>,
    pub sticky_header: Option<String>,
    pub pin_header: Option<String>,
    pub shadow_max_in_flight: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawWeighted {
    pub version: Option<RawVersion>,
    pub percent: Option<f64>,
}

/// `[models.X.source]`: versions from a model registry instead of folders.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawSource {
    pub mlflow: Option<RawMlflow>,
    pub cache_dir: Option<String>,
    /// Filled by `source::registry::resolve` (never written in a file): the aliases the routing
    /// named, and the versions they pointed at.
    #[serde(skip)]
    pub resolved: std::collections::BTreeMap<String, u64>,
    /// Filled with `resolved`: the alias the routing's primary was named by.
    #[serde(skip)]
    pub primary_alias: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawMlflow {
    pub tracking_uri: Option<String>,
    pub name: Option<String>,
    pub poll_s: Option<u64>,
}

/// A version as written: a number, or `"@alias"` of the model's registry source, which is
/// resolved to a number before the config is validated (`source::registry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RawVersion {
    Number(u64),
    Alias(String),
}

/// The name `RawVersion` deserializes as (a newtype), so that the reference probe can tell it
/// apart: it takes an integer or a string.
pub const VERSION_OR_ALIAS: &str = "VersionOrAlias";

impl<'de> Deserialize<'de> for RawVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawVersion, D::Error> {
        d.deserialize_newtype_struct(VERSION_OR_ALIAS, VersionVisitor)
    }
}

struct VersionVisitor;

impl<'de> serde::de::Visitor<'de> for VersionVisitor {
    type Value = RawVersion;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a version number or a registry alias (\"@champion\")")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawVersion, E> {
        Ok(RawVersion::Number(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawVersion, E> {
        u64::try_from(v)
            .map(RawVersion::Number)
            .map_err(|_| E::custom(format!("versions are positive integers, got {v}")))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawVersion, E> {
        Ok(RawVersion::Alias(v.to_string()))
    }

    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<RawVersion, D::Error> {
        d.deserialize_any(self)
    }
}
