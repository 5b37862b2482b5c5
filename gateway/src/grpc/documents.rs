//! The metadata documents as messages: server and model metadata, and Triton's model
//! configuration, built from the very documents the HTTP front end serves as JSON
//! (`protocol::metadata`), so the two cannot drift.
//!
//! Depends on `protocol` only.

use super::proto;
use crate::protocol::metadata;
use crate::telemetry::stats::{Duration64, ModelStats};

pub fn server_metadata() -> proto::ServerMetadataResponse {
    let m = metadata::server();
    proto::ServerMetadataResponse {
        name: m.name.to_string(),
        version: m.version.to_string(),
        extensions: m.extensions.iter().map(|e| e.to_string()).collect(),
    }
}

pub fn model_metadata(m: &metadata::ModelMetadata<'_>) -> proto::ModelMetadataResponse {
    let tensors = |ts: &[metadata::TensorMetadata<'_>]| {
        ts.iter()
            .map(|t| proto::model_metadata_response::TensorMetadata {
                name: t.name.to_string(),
                datatype: t.datatype.to_string(),
                shape: t.shape.to_vec(),
            })
            .collect()
    };
    proto::ModelMetadataResponse {
        name: m.name.to_string(),
        versions: m.versions.clone(),
        platform: m.platform.to_string(),
        inputs: tensors(&m.inputs),
        outputs: tensors(&m.outputs),
    }
}

/// Triton's configuration as a message, from the same document HTTP `/config` serves (the
/// enum values are looked up by the names that document uses, so the two cannot drift).
pub fn model_config(c: &metadata::ModelConfig<'_>) -> proto::ModelConfig {
    let data_type =
        |name: &str| proto::DataType::from_str_name(name).unwrap_or(proto::DataType::TypeInvalid) as i32;
    let dims = |d: &[i64]| d.to_vec();
    proto::ModelConfig {
        name: c.name.to_string(),
        platform: c.platform.to_string(),
        backend: c.backend.to_string(),
        max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
        input: c
            .input
            .iter()
            .map(|t| proto::ModelInput {
                name: t.name.to_string(),
                data_type: data_type(t.data_type),
                dims: dims(t.dims),
            })
            .collect(),
        output: c
            .output
            .iter()
            .map(|t| proto::ModelOutput {
                name: t.name.to_string(),
                data_type: data_type(t.data_type),
                dims: dims(t.dims),
            })
            .collect(),
        instance_group: c
            .instance_group
            .iter()
            .map(|g| proto::ModelInstanceGroup {
                name: String::new(),
                count: i32::try_from(g.count).unwrap_or(i32::MAX),
                kind: proto::model_instance_group::Kind::from_str_name(g.kind)
                    .unwrap_or(proto::model_instance_group::Kind::Auto) as i32,
            })
            .collect(),
        scheduling_choice: c.dynamic_batching.as_ref().map(|b| {
            proto::model_config::SchedulingChoice::DynamicBatching(proto::ModelDynamicBatching {
                max_queue_delay_microseconds: b.max_queue_delay_microseconds,
            })
        }),
    }
}

/// Triton's statistics of one version, from the same figures HTTP `/stats` serves.
pub fn model_statistics(s: &ModelStats) -> proto::ModelStatistics {
    let d = |d: &Duration64| Some(proto::StatisticDuration { count: d.count, ns: d.ns });
    let i = &s.inference_stats;
    proto::ModelStatistics {
        name: s.name.clone(),
        version: s.version.clone(),
        last_inference: s.last_inference,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(proto::InferStatistics {
            success: d(&i.success),
            fail: d(&i.fail),
            queue: d(&i.queue),
            compute_input: d(&i.compute_input),
            compute_infer: d(&i.compute_infer),
            compute_output: d(&i.compute_output),
            cache_hit: d(&i.cache_hit),
            cache_miss: d(&i.cache_miss),
        }),
        batch_stats: s
            .batch_stats
            .iter()
            .map(|b| proto::InferBatchStatistics {
                batch_size: b.batch_size,
                compute_input: d(&b.compute_input),
                compute_infer: d(&b.compute_infer),
                compute_output: d(&b.compute_output),
            })
            .collect(),
    }
}
