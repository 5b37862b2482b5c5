//! Metadata documents: server and model metadata (V2), and Triton's model configuration
//! (`GET /v2/models/{m}/config`), which `perf_analyzer` reads before anything else.

use serde::Serialize;

use crate::tensor::{DataType, ModelSignature, TensorSpec};

pub const PLATFORM: &str = "onnx_onnxv1";

/// Protocol extensions this server implements, as Triton names them.
pub const EXTENSIONS: &[&str] =
    &["binary_tensor_data", "model_configuration", "model_repository", "statistics"];

#[derive(Debug, Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: &'static [&'static str],
}

pub fn server() -> ServerMetadata {
    ServerMetadata { name: "gateway", version: env!("CARGO_PKG_VERSION"), extensions: EXTENSIONS }
}

#[derive(Debug, Serialize)]
pub struct TensorMetadata<'a> {
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: &'a [i64],
}

#[derive(Debug, Serialize)]
pub struct ModelMetadata<'a> {
    pub name: &'a str,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata<'a>>,
    pub outputs: Vec<TensorMetadata<'a>>,
}

fn tensors(specs: &[TensorSpec]) -> Vec<TensorMetadata<'_>> {
    specs
        .iter()
        .map(|s| TensorMetadata { name: &s.name, datatype: s.datatype.as_str(), shape: &s.shape })
        .collect()
}

pub fn model<'a>(name: &'a str, versions: &[u64], signature: &'a ModelSignature) -> ModelMetadata<'a> {
    ModelMetadata {
        name,
        versions: versions.iter().map(u64::to_string).collect(),
        platform: PLATFORM,
        inputs: tensors(&signature.inputs),
        outputs: tensors(&signature.outputs),
    }
}

#[derive(Debug, Serialize)]
pub struct ConfigTensor<'a> {
    pub name: &'a str,
    pub data_type: &'static str,
    pub dims: &'a [i64],
}

#[derive(Debug, Serialize)]
pub struct DynamicBatching {
    pub max_queue_delay_microseconds: u64,
}

#[derive(Debug, Serialize)]
pub struct InstanceGroup {
    pub count: usize,
    pub kind: &'static str,
}

/// Triton's model configuration, derived from the signature and the batching settings.
#[derive(Debug, Serialize)]
pub struct ModelConfig<'a> {
    pub name: &'a str,
    pub platform: &'static str,
    pub backend: &'static str,
    pub max_batch_size: usize,
    pub input: Vec<ConfigTensor<'a>>,
    pub output: Vec<ConfigTensor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
    pub instance_group: Vec<InstanceGroup>,
}

/// With `max_batch_size > 0` Triton leaves the batch dimension out of `dims`.
pub fn triton_config<'a>(
    name: &'a str,
    signature: &'a ModelSignature,
    max_batch_size: usize,
    max_queue_delay_us: u64,
    instances: usize,
) -> ModelConfig<'a> {
    let skip = usize::from(max_batch_size > 0);
    let dims = |specs: &'a [TensorSpec]| -> Vec<ConfigTensor<'a>> {
        specs
            .iter()
            .map(|s| ConfigTensor {
                name: &s.name,
                data_type: triton_type(s.datatype),
                dims: s.shape.get(skip..).unwrap_or(&[]),
            })
            .collect()
    };
    ModelConfig {
        name,
        platform: "onnxruntime_onnx",
        backend: "onnxruntime",
        max_batch_size,
        input: dims(&signature.inputs),
        output: dims(&signature.outputs),
        dynamic_batching: (max_batch_size > 0)
            .then_some(DynamicBatching { max_queue_delay_microseconds: max_queue_delay_us }),
        instance_group: vec![InstanceGroup { count: instances, kind: "KIND_CPU" }],
    }
}

pub fn triton_type(d: DataType) -> &'static str {
    match d {
        DataType::Bool => "TYPE_BOOL",
        DataType::U8 => "TYPE_UINT8",
        DataType::U16 => "TYPE_UINT16",
        DataType::U32 => "TYPE_UINT32",
        DataType::U64 => "TYPE_UINT64",
        DataType::I8 => "TYPE_INT8",
        DataType::I16 => "TYPE_INT16",
        DataType::I32 => "TYPE_INT32",
        DataType::I64 => "TYPE_INT64",
        DataType::F16 => "TYPE_FP16",
        DataType::Bf16 => "TYPE_BF16",
        DataType::F32 => "TYPE_FP32",
        DataType::F64 => "TYPE_FP64",
        DataType::Bytes => "TYPE_STRING",
    }
}
