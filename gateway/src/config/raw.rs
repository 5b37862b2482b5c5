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
    pub instances: Option<u64>,
    pub batching: Option<RawBatching>,
    pub routing: Option<RawRouting>,
    pub monitor: Option<RawMonitor>,
    pub rollout: Option<RawRollout>,
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
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawBatching {
    pub max_batch_size: Option<u64>,
    pub max_queue_delay_us: Option<u64>,
    pub max_queue: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRouting {
    pub primary: Option<u64>,
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
    pub version: Option<u64>,
    pub percent: Option<f64>,
}
