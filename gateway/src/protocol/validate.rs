//! The checks every wire format (JSON, binary extension, gRPC typed or raw) applies to an infer
//! request, so each front end refuses the same mistakes with the same status and message.
//!
//! An input's header is checked whole (name, datatype, shape against the signature, element
//! count against the hard cap) before any of its data is decoded; its data then must hold
//! exactly that many elements, and BYTES must be UTF-8 without NUL (what an ONNX string holds).

use super::ApiError;
use super::decode::{DecodeLimits, OutputChoice};
use crate::tensor::{DataType, ModelSignature, Tensor, TensorData, TensorSpec, element_count};

/// An input whose header passed every check: where it goes and how many elements it holds.
#[derive(Debug)]
pub struct CheckedInput<'s> {
    pub index: usize,
    pub spec: &'s TensorSpec,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    pub count: usize,
}

/// Collects a request's inputs into the signature's order.
pub struct InputSlots<'s> {
    signature: &'s ModelSignature,
    slots: Vec<Option<Tensor>>,
}

impl<'s> InputSlots<'s> {
    pub fn new(signature: &'s ModelSignature) -> InputSlots<'s> {
        InputSlots { signature, slots: vec![None; signature.inputs.len()] }
    }

    /// Checks an input's header: known name, not given before, known and matching datatype,
    /// shape the model accepts, element count under the cap.
    pub fn check(
        &self,
        name: &str,
        datatype: &str,
        dims: &[i64],
        limits: &DecodeLimits,
    ) -> Result<CheckedInput<'s>, ApiError> {
        let (index, spec) = self.signature.input(name).ok_or_else(|| unknown_input(name, self.signature))?;
        if self.slots.get(index).is_some_and(Option::is_some) {
            return Err(ApiError::Malformed(format!("input '{name}' is given twice")));
        }
        let datatype = DataType::parse(datatype).ok_or_else(|| {
            ApiError::Malformed(format!("input '{name}' has unknown datatype '{datatype}'"))
        })?;
        if datatype != spec.datatype {
            return Err(ApiError::Mismatch(format!(
                "input '{name}' has datatype {datatype} but the model expects {}",
                spec.datatype
            )));
        }
        let shape = checked_shape(name, dims, limits)?;
        if let Some(problem) = spec.shape_mismatch(&shape) {
            return Err(ApiError::Mismatch(problem));
        }
        if let (Some(max), Some(&rows), true) =
            (limits.max_batch, shape.first(), spec.has_dynamic_batch_dim())
            && rows > max
        {
            return Err(ApiError::Mismatch(format!(
                "input '{name}' has {rows} rows (dim 0) but this model version takes at most {max} per request (its max_batch_size)"
            )));
        }
        let count = element_count(&shape).unwrap_or(usize::MAX);
        Ok(CheckedInput { index, spec, datatype, shape, count })
    }

    /// Places an input's decoded data, which must hold exactly the header's element count.
    pub fn fill(&mut self, input: CheckedInput<'s>, data: TensorData) -> Result<(), ApiError> {
        let name = &input.spec.name;
        if data.len() != input.count {
            return Err(count_mismatch(name, &input.shape, input.count, Some(data.len())));
        }
        if let TensorData::Bytes(elements) = &data {
            check_strings(name, elements)?;
        }
        if let Some(slot) = self.slots.get_mut(input.index) {
            *slot = Some(Tensor { name: name.clone(), shape: input.shape, data });
        }
        Ok(())
    }

    /// Every input, in the signature's order; a missing one is a mismatch.
    pub fn finish(self) -> Result<Vec<Tensor>, ApiError> {
        let inputs = self
            .slots
            .into_iter()
            .zip(&self.signature.inputs)
            .map(|(slot, spec)| {
                slot.ok_or_else(|| ApiError::Mismatch(format!("missing input '{}'", spec.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(conflict) = self.signature.symbol_conflict(&inputs) {
            return Err(ApiError::Mismatch(conflict));
        }
        Ok(inputs)
    }
}

fn unknown_input(name: &str, signature: &ModelSignature) -> ApiError {
    let known: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
    ApiError::Mismatch(format!("unknown input '{name}'; the model's inputs are {known:?}"))
}

fn checked_shape(name: &str, dims: &[i64], limits: &DecodeLimits) -> Result<Vec<usize>, ApiError> {
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = usize::try_from(d).map_err(|_| {
            ApiError::Malformed(format!("input '{name}' has a negative dimension in shape {dims:?}"))
        })?;
        shape.push(d);
    }
    // Zeros count as ones: a tensor with no elements may still not claim dimensions that no
    // tensor may have (ONNX Runtime would size its outputs, and allocate them, from the others).
    let extent = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)));
    match extent {
        Some(n) if n <= limits.max_elements => Ok(shape),
        _ => Err(ApiError::Malformed(format!(
            "input '{name}' has shape {dims:?}, whose dimensions (zeros counted as ones) span more than the {} elements a tensor may hold",
            limits.max_elements
        ))),
    }
}

/// The data does not hold the elements the shape promises (`got: None`: fewer, known before
/// decoding it).
pub fn count_mismatch(name: &str, shape: &[usize], expected: usize, got: Option<usize>) -> ApiError {
    let got = got.map_or_else(|| "fewer".to_string(), |g| g.to_string());
    ApiError::Malformed(format!(
        "input '{name}' has shape {shape:?} ({expected} elements) but its data has {got}"
    ))
}

/// BYTES inputs become ONNX string tensors, which hold UTF-8 text without NUL bytes: anything
/// else is the client's mistake (400), not an inference failure (500).
fn check_strings(name: &str, elements: &[Vec<u8>]) -> Result<(), ApiError> {
    for (i, e) in elements.iter().enumerate() {
        if std::str::from_utf8(e).is_err() {
            return Err(ApiError::Malformed(format!(
                "input '{name}': BYTES element {i} is not valid UTF-8, which an ONNX string tensor requires"
            )));
        }
        if e.contains(&0) {
            return Err(ApiError::Malformed(format!(
                "input '{name}': BYTES element {i} contains a NUL byte, which an ONNX string cannot hold"
            )));
        }
    }
    Ok(())
}

/// Refuses the shared-memory extension on an input (no wire format here supports it).
pub fn no_shared_memory_input(name: &str) -> ApiError {
    ApiError::Malformed(format!(
        "input '{name}': the shared-memory extension is not supported; send the data in the request"
    ))
}

/// Resolves one requested output: a name the model has, not requested before.
pub fn choose_output(
    signature: &ModelSignature,
    chosen: &[OutputChoice],
    name: &str,
) -> Result<usize, ApiError> {
    let (index, _) = signature.output(name).ok_or_else(|| {
        let known: Vec<&str> = signature.outputs.iter().map(|s| s.name.as_str()).collect();
        ApiError::Mismatch(format!("unknown requested output '{name}'; the model's outputs are {known:?}"))
    })?;
    if chosen.iter().any(|c| c.index == index) {
        return Err(ApiError::Malformed(format!("output '{name}' is requested twice")));
    }
    Ok(index)
}

/// Refuses the classification extension on an output.
pub fn no_classification(name: &str) -> ApiError {
    ApiError::Malformed(format!("output '{name}': the classification extension is not supported"))
}

/// Refuses the shared-memory extension on an output.
pub fn no_shared_memory_output(name: &str) -> ApiError {
    ApiError::Malformed(format!("output '{name}': the shared-memory extension is not supported"))
}

/// Every output in the signature's order, all sent one way.
pub fn all_outputs(signature: &ModelSignature, binary: bool) -> Vec<OutputChoice> {
    (0..signature.outputs.len()).map(|index| OutputChoice { index, binary }).collect()
}

/// A version number from a path segment or a protocol field: a positive integer.
pub fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| ApiError::Malformed(format!("invalid version {v:?}: versions are positive integers")))
}
