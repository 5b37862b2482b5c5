//! Protobuf ↔ our tensors. A `ModelInferRequest` becomes a validated `InferRequest` through
//! the same checks as an HTTP body (`protocol::validate`: names, datatypes, shapes, element
//! counts before any data is touched, BYTES as UTF-8 without NUL); the answer's tensors become
//! a `ModelInferResponse`.
//!
//! Encodings: typed `contents`, or `raw_input_contents` (little-endian, BOOL one byte, BYTES
//! length-prefixed: `protocol::binary`, the binary extension's encoding). Never both in one
//! request. The reply is raw when the request was, or when an output is FP16/BF16 (no typed
//! field holds them); typed otherwise.
//!
//! Depends on `protocol` and `tensor` only.

use bytes::Bytes;

use super::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use crate::protocol::validate::{self, CheckedInput, InputSlots};
use crate::protocol::{ApiError, DecodeLimits, InferRequest, OutputChoice, binary};
use crate::tensor::{DataType, ModelSignature, Tensor, TensorData};

/// Decodes and validates `request` against the model's signature. `OutputChoice::binary`
/// says whether the request was raw (and so wants a raw reply).
pub fn decode_request(
    request: &ModelInferRequest,
    signature: &ModelSignature,
    limits: &DecodeLimits,
) -> Result<InferRequest, ApiError> {
    let raw = !request.raw_input_contents.is_empty();
    if raw {
        check_raw_layout(request)?;
    }
    let mut slots = InputSlots::new(signature);
    for (i, input) in request.inputs.iter().enumerate() {
        let checked = slots.check(&input.name, &input.datatype, &input.shape, limits)?;
        if input.parameters.contains_key("shared_memory_region") {
            return Err(validate::no_shared_memory_input(&input.name));
        }
        let data = match request.raw_input_contents.get(i) {
            Some(bytes) if raw => binary::decode(&input.name, checked.datatype, checked.count, bytes)?,
            _ => typed(input, &checked)?,
        };
        slots.fill(checked, data)?;
    }
    let inputs = slots.finish()?;
    let outputs = choose_outputs(&request.outputs, signature, raw)?;
    let id = (!request.id.is_empty()).then(|| request.id.clone());
    Ok(InferRequest { id, inputs, outputs })
}

/// Raw contents: one entry per input, and no typed contents beside them.
fn check_raw_layout(request: &ModelInferRequest) -> Result<(), ApiError> {
    if let Some(input) = request.inputs.iter().find(|i| i.contents.as_ref().is_some_and(has_data)) {
        return Err(ApiError::Malformed(format!(
            "input '{}' has typed contents but the request also has raw_input_contents; use one encoding for every input",
            input.name
        )));
    }
    let (raw, inputs) = (request.raw_input_contents.len(), request.inputs.len());
    if raw != inputs {
        return Err(ApiError::Malformed(format!(
            "the request has {inputs} inputs but {raw} raw_input_contents; give one per input, in the same order"
        )));
    }
    Ok(())
}

fn has_data(c: &InferTensorContents) -> bool {
    filled_fields(c).next().is_some()
}

/// The names of the typed fields that hold elements.
fn filled_fields(c: &InferTensorContents) -> impl Iterator<Item = &'static str> {
    [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, empty)| (!empty).then_some(name))
}

/// The typed field that carries `datatype`; none for the 16-bit floats.
fn field_for(datatype: DataType) -> Option<&'static str> {
    Some(match datatype {
        DataType::Bool => "bool_contents",
        DataType::I8 | DataType::I16 | DataType::I32 => "int_contents",
        DataType::I64 => "int64_contents",
        DataType::U8 | DataType::U16 | DataType::U32 => "uint_contents",
        DataType::U64 => "uint64_contents",
        DataType::F32 => "fp32_contents",
        DataType::F64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::F16 | DataType::Bf16 => return None,
    })
}

/// An input's typed contents: only its datatype's field may hold data, exactly `count`
/// elements of it, each in range for the datatype.
fn typed(input: &InferInputTensor, checked: &CheckedInput<'_>) -> Result<TensorData, ApiError> {
    let (name, datatype) = (&input.name, checked.datatype);
    let Some(field) = field_for(datatype) else {
        return Err(ApiError::Malformed(format!(
            "input '{name}' is {datatype}, which has no typed contents field; send it in raw_input_contents"
        )));
    };
    let empty = InferTensorContents::default();
    let contents = match &input.contents {
        Some(c) => c,
        None if checked.count == 0 => &empty,
        None => {
            return Err(ApiError::Malformed(format!(
                "input '{name}' has neither contents nor raw_input_contents"
            )));
        }
    };
    if let Some(other) = filled_fields(contents).find(|f| *f != field) {
        return Err(ApiError::Malformed(format!(
            "input '{name}' is {datatype} but has data in {other}; {datatype} data goes in {field}"
        )));
    }
    let c = contents;
    let len = match datatype {
        DataType::Bool => c.bool_contents.len(),
        DataType::I8 | DataType::I16 | DataType::I32 => c.int_contents.len(),
        DataType::I64 => c.int64_contents.len(),
        DataType::U8 | DataType::U16 | DataType::U32 => c.uint_contents.len(),
        DataType::U64 => c.uint64_contents.len(),
        DataType::F32 => c.fp32_contents.len(),
        DataType::F64 => c.fp64_contents.len(),
        DataType::Bytes => c.bytes_contents.len(),
        DataType::F16 | DataType::Bf16 => 0,
    };
    if len != checked.count {
        return Err(validate::count_mismatch(name, &checked.shape, checked.count, Some(len)));
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(c.bool_contents.clone()),
        DataType::I8 => TensorData::I8(narrow(name, datatype, &c.int_contents)?),
        DataType::I16 => TensorData::I16(narrow(name, datatype, &c.int_contents)?),
        DataType::I32 => TensorData::I32(c.int_contents.clone()),
        DataType::I64 => TensorData::I64(c.int64_contents.clone()),
        DataType::U8 => TensorData::U8(narrow(name, datatype, &c.uint_contents)?),
        DataType::U16 => TensorData::U16(narrow(name, datatype, &c.uint_contents)?),
        DataType::U32 => TensorData::U32(c.uint_contents.clone()),
        DataType::U64 => TensorData::U64(c.uint64_contents.clone()),
        DataType::F32 => TensorData::F32(c.fp32_contents.clone()),
        DataType::F64 => TensorData::F64(c.fp64_contents.clone()),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents.iter().map(|b| b.to_vec()).collect()),
        DataType::F16 => TensorData::F16(Vec::new()),
        DataType::Bf16 => TensorData::Bf16(Vec::new()),
    })
}

/// 32-bit wire integers into a narrower datatype; an element out of its range is refused.
fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>>(
    name: &str,
    datatype: DataType,
    wide: &[W],
) -> Result<Vec<T>, ApiError> {
    wide.iter()
        .enumerate()
        .map(|(i, &v)| {
            T::try_from(v).map_err(|_| {
                ApiError::Malformed(format!(
                    "input '{name}' ({datatype}) data: element {i} is {v}, expected an integer in the range of {datatype}"
                ))
            })
        })
        .collect()
}

fn choose_outputs(
    requested: &[InferRequestedOutputTensor],
    signature: &ModelSignature,
    raw: bool,
) -> Result<Vec<OutputChoice>, ApiError> {
    if requested.is_empty() {
        return Ok(validate::all_outputs(signature, raw));
    }
    let mut chosen: Vec<OutputChoice> = Vec::with_capacity(requested.len());
    for out in requested {
        let index = validate::choose_output(signature, &chosen, &out.name)?;
        if out.parameters.contains_key("classification") {
            return Err(validate::no_classification(&out.name));
        }
        if out.parameters.contains_key("shared_memory_region") {
            return Err(validate::no_shared_memory_output(&out.name));
        }
        chosen.push(OutputChoice { index, binary: raw });
    }
    Ok(chosen)
}

/// Decodes an infer *answer* (a remote server's): its outputs as sent, raw or typed, each
/// checked against the shape and datatype it declares exactly as a request's inputs are.
pub fn decode_response(response: &ModelInferResponse) -> Result<Vec<Tensor>, ApiError> {
    let specs = response
        .outputs
        .iter()
        .map(|o| crate::protocol::declared_spec(&o.name, &o.datatype, &o.shape))
        .collect::<Result<Vec<_>, _>>()?;
    let signature = ModelSignature { inputs: specs, outputs: Vec::new() };
    let as_request = ModelInferRequest {
        inputs: response
            .outputs
            .iter()
            .map(|o| InferInputTensor {
                name: o.name.clone(),
                datatype: o.datatype.clone(),
                shape: o.shape.clone(),
                parameters: Default::default(),
                contents: o.contents.clone(),
            })
            .collect(),
        raw_input_contents: response.raw_output_contents.clone(),
        ..Default::default()
    };
    let limits = DecodeLimits::for_request(1 << 29, 0);
    Ok(decode_request(&as_request, &signature, &limits)?.inputs)
}

/// The reply: the chosen outputs (indices into `all`, the signature-ordered outputs), typed
/// or raw as the module doc says.
pub fn encode_response(
    model_name: &str,
    model_version: u64,
    id: Option<String>,
    all: &[Tensor],
    choices: &[OutputChoice],
) -> ModelInferResponse {
    let chosen: Vec<&Tensor> = choices.iter().filter_map(|c| all.get(c.index)).collect();
    let wants_raw = choices.iter().any(|c| c.binary);
    // `None` when some output has no typed field: then the whole reply goes raw.
    let typed: Option<Vec<InferTensorContents>> =
        if wants_raw { None } else { chosen.iter().map(|t| typed_contents(&t.data)).collect() };
    let raw_output_contents = match typed {
        Some(_) => Vec::new(),
        None => chosen.iter().map(|t| raw_bytes(&t.data)).collect(),
    };
    let mut typed = typed.map(Vec::into_iter);
    let outputs = chosen
        .iter()
        .map(|t| InferOutputTensor {
            name: t.name.clone(),
            datatype: t.datatype().as_str().to_string(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            parameters: Default::default(),
            contents: typed.as_mut().and_then(Iterator::next),
        })
        .collect();
    ModelInferResponse {
        model_name: model_name.to_string(),
        model_version: model_version.to_string(),
        id: id.unwrap_or_default(),
        parameters: Default::default(),
        outputs,
        raw_output_contents,
    }
}

fn raw_bytes(data: &TensorData) -> Bytes {
    let mut out = Vec::with_capacity(binary::encoded_len(data));
    binary::encode(data, &mut out);
    Bytes::from(out)
}

/// A tensor's elements in its datatype's typed field; `None` for FP16 and BF16.
fn typed_contents(data: &TensorData) -> Option<InferTensorContents> {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::U8(v) => c.uint_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::U16(v) => c.uint_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::U32(v) => c.uint_contents = v.clone(),
        TensorData::U64(v) => c.uint64_contents = v.clone(),
        TensorData::I8(v) => c.int_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::I16(v) => c.int_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::I32(v) => c.int_contents = v.clone(),
        TensorData::I64(v) => c.int64_contents = v.clone(),
        TensorData::F32(v) => c.fp32_contents = v.clone(),
        TensorData::F64(v) => c.fp64_contents = v.clone(),
        TensorData::Bytes(v) => c.bytes_contents = v.iter().map(|b| Bytes::copy_from_slice(b)).collect(),
        TensorData::F16(_) | TensorData::Bf16(_) => return None,
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    use super::*;
    use crate::tensor::TensorSpec;

    /// One input of every datatype, shape [2], and the same outputs.
    fn signature() -> ModelSignature {
        let spec = |d: DataType| TensorSpec::new(d.as_str().to_lowercase(), d, vec![2]);
        ModelSignature {
            inputs: DataType::ALL.iter().map(|&d| spec(d)).collect(),
            outputs: DataType::ALL.iter().map(|&d| spec(d)).collect(),
        }
    }

    fn sample(d: DataType) -> TensorData {
        match d {
            DataType::Bool => TensorData::Bool(vec![true, false]),
            DataType::U8 => TensorData::U8(vec![0, 255]),
            DataType::U16 => TensorData::U16(vec![1, 65535]),
            DataType::U32 => TensorData::U32(vec![2, u32::MAX]),
            DataType::U64 => TensorData::U64(vec![3, u64::MAX]),
            DataType::I8 => TensorData::I8(vec![-128, 127]),
            DataType::I16 => TensorData::I16(vec![-300, 300]),
            DataType::I32 => TensorData::I32(vec![i32::MIN, 7]),
            DataType::I64 => TensorData::I64(vec![i64::MIN, 8]),
            DataType::F16 => TensorData::F16(vec![f16::from_f32(1.5), f16::from_f32(-2.0)]),
            DataType::Bf16 => TensorData::Bf16(vec![bf16::from_f32(0.5), bf16::from_f32(4.0)]),
            DataType::F32 => TensorData::F32(vec![0.25, -1e30]),
            DataType::F64 => TensorData::F64(vec![1e300, -0.5]),
            DataType::Bytes => TensorData::Bytes(vec![b"Gr\xc3\xbc\xc3\x9fe".to_vec(), Vec::new()]),
        }
    }

    fn tensors() -> Vec<Tensor> {
        signature()
            .inputs
            .iter()
            .map(|s| Tensor { name: s.name.clone(), shape: vec![2], data: sample(s.datatype) })
            .collect()
    }

    /// The request a client would send for `tensors`: raw, or typed (16-bit floats have to be
    /// raw, so a typed request leaves them out).
    fn request(raw: bool) -> ModelInferRequest {
        let mut r = ModelInferRequest { model_name: "m".into(), id: "r-1".into(), ..Default::default() };
        for t in tensors() {
            let contents = typed_contents(&t.data);
            if !raw && contents.is_none() {
                continue;
            }
            r.inputs.push(InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype().as_str().into(),
                shape: vec![2],
                contents: if raw { None } else { contents },
                ..Default::default()
            });
            if raw {
                r.raw_input_contents.push(raw_bytes(&t.data));
            }
        }
        r
    }

    #[test]
    fn raw_inputs_of_every_datatype_decode_to_the_same_tensors() {
        let decoded = decode_request(&request(true), &signature(), &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.inputs, tensors());
        assert_eq!(decoded.id.as_deref(), Some("r-1"));
        assert!(decoded.outputs.iter().all(|c| c.binary) && decoded.outputs.len() == 14);
    }

    #[test]
    fn typed_inputs_decode_like_raw_ones_and_16_bit_floats_must_be_raw() {
        let sig = signature();
        let err = decode_request(&request(false), &sig, &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.to_string(), "missing input 'fp16'");
        let mut sig = sig;
        sig.inputs.retain(|s| !matches!(s.datatype, DataType::F16 | DataType::Bf16));
        let decoded = decode_request(&request(false), &sig, &DecodeLimits::default()).unwrap();
        let want: Vec<Tensor> = tensors()
            .into_iter()
            .filter(|t| !matches!(t.datatype(), DataType::F16 | DataType::Bf16))
            .collect();
        assert_eq!(decoded.inputs, want);
        assert!(decoded.outputs.iter().all(|c| !c.binary));

        let mut fp16 = request(true);
        fp16.raw_input_contents.clear();
        fp16.inputs.retain(|i| i.name == "fp16");
        let err = decode_request(&fp16, &signature(), &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("no typed contents field"), "{err}");
    }

    #[test]
    fn each_encoding_mistake_has_its_own_message() {
        let sig = signature();
        let limits = DecodeLimits::default();
        let mut mixed = request(true);
        mixed.inputs[0].contents =
            Some(InferTensorContents { bool_contents: vec![true, true], ..Default::default() });
        let err = decode_request(&mixed, &sig, &limits).unwrap_err();
        assert!(err.to_string().contains("also has raw_input_contents"), "{err}");

        let mut short = request(true);
        short.raw_input_contents.pop();
        assert!(decode_request(&short, &sig, &limits).unwrap_err().to_string().contains("14 inputs but 13"));

        let mut wrong_field = request(false);
        wrong_field.inputs[1].contents =
            Some(InferTensorContents { int_contents: vec![1, 2], ..Default::default() });
        let err = decode_request(&wrong_field, &sig, &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'uint8' is UINT8 but has data in int_contents; UINT8 data goes in uint_contents"
        );

        let mut overflow = request(false);
        overflow.inputs[1].contents =
            Some(InferTensorContents { uint_contents: vec![1, 256], ..Default::default() });
        let err = decode_request(&overflow, &sig, &limits).unwrap_err();
        assert!(err.to_string().contains("element 1 is 256"), "{err}");

        let mut count = request(false);
        count.inputs[0].contents =
            Some(InferTensorContents { bool_contents: vec![true], ..Default::default() });
        let err = decode_request(&count, &sig, &limits).unwrap_err();
        assert_eq!(err.to_string(), "input 'bool' has shape [2] (2 elements) but its data has 1");
    }

    #[test]
    fn replies_are_raw_when_asked_or_when_an_output_is_a_16_bit_float() {
        let all = tensors();
        let typed_only: Vec<OutputChoice> =
            [0, 5, 11, 13].map(|index| OutputChoice { index, binary: false }).into();
        let r = encode_response("m", 2, Some("x".into()), &all, &typed_only);
        assert!(r.raw_output_contents.is_empty());
        assert_eq!(r.outputs[3].contents.as_ref().unwrap().bytes_contents.len(), 2);
        assert_eq!((r.model_version.as_str(), r.id.as_str()), ("2", "x"));

        let with_f16: Vec<OutputChoice> = [0, 9].map(|index| OutputChoice { index, binary: false }).into();
        let r = encode_response("m", 2, None, &all, &with_f16);
        assert!(r.outputs.iter().all(|o| o.contents.is_none()));
        assert_eq!(r.raw_output_contents[1].as_ref(), &raw_bytes(&all[9].data)[..]);

        let raw = validate::all_outputs(&signature(), true);
        let r = encode_response("m", 2, None, &all, &raw);
        assert_eq!(r.raw_output_contents.len(), 14);
        assert_eq!(r.outputs[13].shape, vec![2]);
    }
}
