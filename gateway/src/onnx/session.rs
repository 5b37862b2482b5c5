//! One ONNX Runtime session: loading it from a file, reading its signature, warming it up and
//! running it on our `Tensor`s (inputs are passed as zero-copy views).

use std::borrow::Cow;
use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use super::{OnnxError, SessionOptions, providers};
use crate::tensor::{DataType, ModelSignature, Tensor, TensorData, TensorSpec};

/// A loaded session, owned by exactly one worker thread (`Session::run` takes `&mut self`).
pub struct OnnxSession {
    session: Session,
    signature: ModelSignature,
    /// Set when the model has non-tensor outputs (sequences, maps): only its tensor outputs run.
    selected: Option<RunOptions<HasSelectedOutputs>>,
}

impl OnnxSession {
    pub fn load(path: &Path, options: &SessionOptions) -> Result<OnnxSession, OnnxError> {
        let env = super::environment()?;
        let fail =
            |e: &dyn std::fmt::Display| OnnxError::Load { path: path.to_path_buf(), reason: e.to_string() };
        if !path.is_file() {
            return Err(fail(&"no such file"));
        }
        let builder = Session::builder(env)
            .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
            .and_then(|b| Ok(b.with_intra_threads(options.intra_op_threads)?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            .and_then(|b| Ok(b.with_intra_op_spinning(options.intra_op_spinning)?))
            .map_err(|e| fail(&e))?;
        let mut builder = providers::register(builder, &options.execution_providers).map_err(|e| fail(&e))?;
        let session = builder.commit_from_file(path).map_err(|e| fail(&e))?;
        let (mut signature, skipped) =
            signature(&session).map_err(|reason| OnnxError::Load { path: path.to_path_buf(), reason })?;
        if signature.inputs.iter().any(|s| s.shape.is_empty()) {
            // 0-d or no shape at all? ONNX Runtime reports both as rank 0: ask the file.
            let shapeless =
                std::fs::read(path).map(|b| super::proto::shapeless_inputs(&b)).unwrap_or_default();
            for spec in signature.inputs.iter_mut().filter(|s| s.shape.is_empty()) {
                spec.any_rank = shapeless.contains(&spec.name);
            }
        }
        for name in &skipped {
            tracing::warn!(path = %path.display(), output = %name, "output is not a tensor; it is not served");
        }
        let selected = if skipped.is_empty() {
            None
        } else {
            let selector =
                signature.outputs.iter().fold(OutputSelector::no_default(), |s, o| s.with(&o.name));
            Some(RunOptions::new().map_err(|e| fail(&e))?.with_outputs(selector))
        };
        Ok(OnnxSession { session, signature, selected })
    }

    pub fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    /// Runs the model. `inputs` are in the signature's order; the outputs come back in the
    /// signature's order too.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, OnnxError> {
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            values.push((Cow::Borrowed(t.name.as_str()), input_value(t)?));
        }
        let run_error = |e: ort::Error| {
            if super::refused_by_inputs(e.code(), e.message()) {
                OnnxError::Refused { reason: e.message().to_string() }
            } else {
                OnnxError::Run { reason: e.to_string() }
            }
        };
        let outputs = match &self.selected {
            None => self.session.run(values).map_err(run_error)?,
            Some(options) => self.session.run_with_options(values, options).map_err(run_error)?,
        };
        self.signature
            .outputs
            .iter()
            .map(|spec| {
                let value = outputs.get(&spec.name).ok_or_else(|| OnnxError::Run {
                    reason: format!("ONNX Runtime returned no output '{}'", spec.name),
                })?;
                output_tensor(&spec.name, value)
            })
            .collect()
    }

    /// One run on zeros shaped by the signature (dynamic dims as 1), so the first real request
    /// does not pay for ONNX Runtime's lazy initialisation.
    pub fn warm_up(&mut self) -> Result<(), OnnxError> {
        let inputs: Vec<Tensor> = self
            .signature
            .inputs
            .iter()
            .map(|spec| {
                let shape: Vec<usize> =
                    spec.shape.iter().map(|&d| if d < 0 { 1 } else { d as usize }).collect();
                let len = crate::tensor::element_count(&shape).unwrap_or(0);
                Tensor { name: spec.name.clone(), shape, data: TensorData::zeros(spec.datatype, len) }
            })
            .collect();
        self.run(&inputs).map(|_| ())
    }
}

/// Reads the signature; returns it and the names of outputs skipped because they are not tensors.
fn signature(session: &Session) -> Result<(ModelSignature, Vec<String>), String> {
    let mut inputs = Vec::new();
    for outlet in session.inputs() {
        match tensor_spec(outlet.name(), outlet.dtype()) {
            Some(spec) => inputs.push(spec?),
            None => {
                return Err(format!(
                    "input '{}' is not a tensor ({:?}); only tensors are served",
                    outlet.name(),
                    outlet.dtype()
                ));
            }
        }
    }
    let mut outputs = Vec::new();
    let mut skipped = Vec::new();
    for outlet in session.outputs() {
        match tensor_spec(outlet.name(), outlet.dtype()) {
            Some(spec) => outputs.push(spec?),
            None => skipped.push(outlet.name().to_string()),
        }
    }
    if outputs.is_empty() {
        return Err("the model has no tensor output".to_string());
    }
    Ok((ModelSignature { inputs, outputs }, skipped))
}

/// `None` when the value is not a tensor; an error when it is one of a datatype we cannot serve.
fn tensor_spec(name: &str, ty: &ValueType) -> Option<Result<TensorSpec, String>> {
    let ValueType::Tensor { ty, shape, dimension_symbols } = ty else {
        return None;
    };
    let symbol = |i: usize, d: i64| {
        if d < 0 { dimension_symbols.get(i).cloned().unwrap_or_default() } else { String::new() }
    };
    Some(match datatype(*ty) {
        Some(datatype) => Ok(TensorSpec {
            name: name.to_string(),
            datatype,
            shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            symbols: shape.iter().enumerate().map(|(i, &d)| symbol(i, d)).collect(),
            any_rank: false,
        }),
        None => Err(format!("'{name}' has element type {ty:?}, which the V2 protocol cannot carry")),
    })
}

pub fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// A borrowed view of the tensor's memory (strings are copied: ONNX Runtime wants C strings).
fn input_value(t: &Tensor) -> Result<SessionInputValue<'_>, OnnxError> {
    let shape = t.shape.as_slice();
    let bad = |e: ort::Error| OnnxError::Input { reason: format!("input '{}': {e}", t.name) };
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, $v.as_slice())).map(SessionInputValue::from).map_err(bad)
        };
    }
    match &t.data {
        TensorData::Bool(v) => view!(v),
        TensorData::U8(v) => view!(v),
        TensorData::U16(v) => view!(v),
        TensorData::U32(v) => view!(v),
        TensorData::U64(v) => view!(v),
        TensorData::I8(v) => view!(v),
        TensorData::I16(v) => view!(v),
        TensorData::I32(v) => view!(v),
        TensorData::I64(v) => view!(v),
        TensorData::F16(v) => view!(v),
        TensorData::Bf16(v) => view!(v),
        TensorData::F32(v) => view!(v),
        TensorData::F64(v) => view!(v),
        TensorData::Bytes(v) => {
            let strings =
                v.iter().map(|b| String::from_utf8(b.clone())).collect::<Result<Vec<String>, _>>().map_err(
                    |_| OnnxError::Input {
                        reason: format!(
                            "input '{}': BYTES elements must be UTF-8 for an ONNX string tensor",
                            t.name
                        ),
                    },
                )?;
            if strings.iter().any(|s| s.contains('\0')) {
                return Err(OnnxError::Input {
                    reason: format!("input '{}': BYTES elements cannot contain NUL bytes", t.name),
                });
            }
            ort::value::Tensor::from_string_array((shape, strings.as_slice()))
                .map(|v| SessionInputValue::from(v.into_dyn()))
                .map_err(bad)
        }
    }
}

fn output_tensor(name: &str, value: &DynValue) -> Result<Tensor, OnnxError> {
    let bad = |e: ort::Error| OnnxError::Run { reason: format!("reading output '{name}': {e}") };
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(OnnxError::Run { reason: format!("output '{name}' is not a tensor: {other:?}") });
        }
    };
    macro_rules! take {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(bad)?;
            (shape.iter().map(|&d| d.max(0) as usize).collect(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data): (Vec<usize>, TensorData) = match datatype(ty) {
        Some(DataType::Bool) => take!(bool, Bool),
        Some(DataType::U8) => take!(u8, U8),
        Some(DataType::U16) => take!(u16, U16),
        Some(DataType::U32) => take!(u32, U32),
        Some(DataType::U64) => take!(u64, U64),
        Some(DataType::I8) => take!(i8, I8),
        Some(DataType::I16) => take!(i16, I16),
        Some(DataType::I32) => take!(i32, I32),
        Some(DataType::I64) => take!(i64, I64),
        Some(DataType::F16) => take!(half::f16, F16),
        Some(DataType::Bf16) => take!(half::bf16, Bf16),
        Some(DataType::F32) => take!(f32, F32),
        Some(DataType::F64) => take!(f64, F64),
        Some(DataType::Bytes) => {
            let (shape, strings) = value.try_extract_strings().map_err(bad)?;
            let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
            (shape, TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()))
        }
        None => {
            return Err(OnnxError::Run { reason: format!("output '{name}' has unsupported type {ty:?}") });
        }
    };
    Ok(Tensor { name: name.to_string(), shape, data })
}
