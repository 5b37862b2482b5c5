//! Decoding an infer request against a model's signature.
//!
//! The steps: split off the binary part (`Inference-Header-Content-Length`), parse the JSON
//! header borrowing from the body, then for each input check name, datatype and shape against
//! the signature (`validate`, shared with gRPC) and the element count against what the body
//! could possibly hold, and only then decode its data (JSON, nested or flat, or binary). Inputs
//! come out in the signature's order; requested outputs are resolved to signature indices.

use std::borrow::Cow;
use std::fmt;

use half::{bf16, f16};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::numbers::numbers;
use super::validate::{self, CheckedInput, InputSlots};
use super::{ApiError, binary};
use crate::tensor::{DataType, ModelSignature, Tensor, TensorData};

/// A decoded, validated infer request.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    /// In the signature's input order.
    pub inputs: Vec<Tensor>,
    /// What to send back, in the order to send it.
    pub outputs: Vec<OutputChoice>,
}

/// One output to return: its index in the signature, and whether as binary data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputChoice {
    pub index: usize,
    pub binary: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Cap on the extent of one tensor: the product of its dimensions, zeros counted as ones,
    /// so a zero-element tensor cannot claim dimensions no tensor may have.
    pub max_elements: usize,
    /// Rows (dim 0) one request may send to a batched version: its `max_batch_size`.
    pub max_batch: Option<usize>,
}

/// The hard cap on `max_elements`, whatever the body size.
const MAX_ELEMENTS: usize = 1 << 28;

impl Default for DecodeLimits {
    fn default() -> DecodeLimits {
        DecodeLimits { max_elements: MAX_ELEMENTS, max_batch: None }
    }
}

impl DecodeLimits {
    /// The limits for one request: every element takes at least one byte in every encoding
    /// (JSON, binary, gRPC typed or raw, after decompression), so no tensor may span more
    /// elements than `max_request_bytes`; `max_batch` is the version's `max_batch_size` when it
    /// batches (0 means it does not).
    pub fn for_request(max_request_bytes: usize, max_batch_size: usize) -> DecodeLimits {
        DecodeLimits {
            max_elements: max_request_bytes.clamp(1, MAX_ELEMENTS),
            max_batch: (max_batch_size > 0).then_some(max_batch_size),
        }
    }
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<RequestParameters>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<RawOutput<'a>>>,
}

#[derive(Deserialize, Default)]
struct RequestParameters {
    #[serde(default)]
    binary_data_output: Option<bool>,
}

#[derive(Deserialize)]
struct RawInput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<InputParameters>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct InputParameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
    #[serde(default)]
    shared_memory_region: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<OutputParameters>,
}

#[derive(Deserialize, Default)]
struct OutputParameters {
    #[serde(default)]
    binary_data: Option<bool>,
    #[serde(default)]
    classification: Option<IgnoredAny>,
    #[serde(default)]
    shared_memory_region: Option<IgnoredAny>,
}

/// Decodes `body` (with the binary extension's JSON length when the header was present).
pub fn decode_infer(
    body: &[u8],
    json_length: Option<usize>,
    signature: &ModelSignature,
    limits: &DecodeLimits,
) -> Result<InferRequest, ApiError> {
    let (json, binary_part) = split_body(body, json_length)?;
    // serde would also take a struct from a JSON array; the protocol says object.
    if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::Malformed("the infer request must be a JSON object".to_string()));
    }
    let raw: RawRequest<'_> = serde_json::from_slice(json).map_err(|e| malformed_json(&e))?;
    let inputs = decode_tensors(&raw.inputs, signature, binary_part, json.len(), limits)?;
    let default_binary = raw.parameters.and_then(|p| p.binary_data_output).unwrap_or(false);
    let outputs = choose_outputs(raw.outputs.as_deref(), signature, default_binary)?;
    Ok(InferRequest { id: raw.id.map(Cow::into_owned), inputs, outputs })
}

#[derive(Deserialize)]
struct RawResponse<'a> {
    #[serde(borrow)]
    outputs: Vec<RawInput<'a>>,
}

/// Decodes an infer *answer* (a remote server's, with the binary extension's JSON length when
/// its header was present): its outputs, as sent, each checked against the shape and datatype
/// it declares exactly as a request's inputs are.
pub fn decode_outputs(
    body: &[u8],
    json_length: Option<usize>,
    limits: &DecodeLimits,
) -> Result<Vec<Tensor>, ApiError> {
    let (json, binary_part) = split_body(body, json_length)?;
    let raw: RawResponse<'_> = serde_json::from_slice(json).map_err(|e| malformed_json(&e))?;
    let specs = raw
        .outputs
        .iter()
        .map(|o| declared_spec(&o.name, &o.datatype, &o.shape))
        .collect::<Result<_, _>>()?;
    let signature = ModelSignature { inputs: specs, outputs: Vec::new() };
    decode_tensors(&raw.outputs, &signature, binary_part, json.len(), limits)
}

/// Every tensor of a body (a request's inputs, an answer's outputs) checked against
/// `signature` and decoded, in the signature's order; all of the binary part must be claimed.
fn decode_tensors(
    tensors: &[RawInput<'_>],
    signature: &ModelSignature,
    mut binary_part: &[u8],
    json_len: usize,
    limits: &DecodeLimits,
) -> Result<Vec<Tensor>, ApiError> {
    let mut slots = InputSlots::new(signature);
    for tensor in tensors {
        let checked = slots.check(&tensor.name, &tensor.datatype, &tensor.shape, limits)?;
        let data = decode_input(tensor, &checked, &mut binary_part, json_len)?;
        slots.fill(checked, data)?;
    }
    if !binary_part.is_empty() {
        return Err(ApiError::Malformed(format!(
            "{} bytes of binary data follow the inputs but no input claims them",
            binary_part.len()
        )));
    }
    slots.finish()
}

/// The spec a tensor declares for itself (an answer's output): its datatype and fixed shape.
pub fn declared_spec(
    name: &str,
    datatype: &str,
    shape: &[i64],
) -> Result<crate::tensor::TensorSpec, ApiError> {
    let datatype = DataType::parse(datatype).ok_or_else(|| {
        ApiError::Malformed(format!("output '{name}' has an unknown datatype {datatype:?}"))
    })?;
    if shape.iter().any(|&d| d < 0) {
        return Err(ApiError::Malformed(format!("output '{name}' has a negative dimension in {shape:?}")));
    }
    Ok(crate::tensor::TensorSpec::new(name, datatype, shape.to_vec()))
}

fn split_body(body: &[u8], json_length: Option<usize>) -> Result<(&[u8], &[u8]), ApiError> {
    match json_length {
        None => Ok((body, &[])),
        Some(n) if n <= body.len() => Ok(body.split_at(n)),
        Some(n) => Err(ApiError::Malformed(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ))),
    }
}

fn malformed_json(e: &serde_json::Error) -> ApiError {
    let what = match e.classify() {
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "invalid infer request",
        serde_json::error::Category::Io => "unreadable body",
    };
    ApiError::Malformed(format!("{what}: {e}"))
}

/// The data of an input whose header passed the checks: binary (its share of the binary part)
/// or JSON.
fn decode_input(
    input: &RawInput<'_>,
    checked: &CheckedInput<'_>,
    binary_part: &mut &[u8],
    json_len: usize,
) -> Result<TensorData, ApiError> {
    let name = &input.name;
    let (datatype, count) = (checked.datatype, checked.count);
    let params = input.parameters.as_ref();
    if params.is_some_and(|p| p.shared_memory_region.is_some()) {
        return Err(validate::no_shared_memory_input(name));
    }
    if params.is_some_and(|p| p.binary_data_size.is_some()) && input.data.is_some() {
        return Err(ApiError::Malformed(format!(
            "input '{name}' has both data and binary_data_size; send one or the other"
        )));
    }
    match params.and_then(|p| p.binary_data_size) {
        Some(size) => {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > binary_part.len() {
                return Err(ApiError::Malformed(format!(
                    "input '{name}' has binary_data_size {size} but only {} bytes of binary data remain",
                    binary_part.len()
                )));
            }
            let (mine, rest) = binary_part.split_at(size);
            *binary_part = rest;
            binary::decode(name, datatype, count, mine)
        }
        None => {
            let raw = input.data.ok_or_else(|| {
                ApiError::Malformed(format!("input '{name}' has neither data nor binary_data_size"))
            })?;
            // Every JSON element takes at least one byte: a larger count cannot match this body.
            if count > json_len {
                return Err(validate::count_mismatch(name, &checked.shape, count, None));
            }
            decode_json_data(name, datatype, count, raw)
        }
    }
}

fn choose_outputs(
    requested: Option<&[RawOutput<'_>]>,
    signature: &ModelSignature,
    default_binary: bool,
) -> Result<Vec<OutputChoice>, ApiError> {
    let Some(requested) = requested.filter(|r| !r.is_empty()) else {
        return Ok(validate::all_outputs(signature, default_binary));
    };
    let mut chosen: Vec<OutputChoice> = Vec::with_capacity(requested.len());
    for out in requested {
        let index = validate::choose_output(signature, &chosen, &out.name)?;
        let params = out.parameters.as_ref();
        if params.is_some_and(|p| p.classification.is_some()) {
            return Err(validate::no_classification(&out.name));
        }
        if params.is_some_and(|p| p.shared_memory_region.is_some()) {
            return Err(validate::no_shared_memory_output(&out.name));
        }
        let binary = params.and_then(|p| p.binary_data).unwrap_or(default_binary);
        chosen.push(OutputChoice { index, binary });
    }
    Ok(chosen)
}

// ---- JSON data: nested or flat arrays, flattened into one typed vector ----

/// A type that JSON numbers, booleans or strings can become.
trait JsonElement: Sized {
    const WHAT: &'static str;
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

macro_rules! int_element {
    ($($t:ty),*) => {$(
        impl JsonElement for $t {
            const WHAT: &'static str = concat!("an integer in the range of ", stringify!($t));
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
        }
    )*};
}
int_element!(u8, u16, u32, u64, i8, i16, i32, i64);

/// Non-finite floats travel as the strings "NaN", "Infinity" and "-Infinity" (see encode).
fn non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

macro_rules! float_element {
    ($t:ty, $from:expr) => {
        impl JsonElement for $t {
            const WHAT: &'static str = "a number";
            fn from_i64(v: i64) -> Option<Self> {
                Some($from(v as f64))
            }
            fn from_u64(v: u64) -> Option<Self> {
                Some($from(v as f64))
            }
            fn from_f64(v: f64) -> Option<Self> {
                Some($from(v))
            }
            fn from_str(s: &str) -> Option<Self> {
                non_finite(s).map($from)
            }
        }
    };
}
float_element!(f32, |v: f64| v as f32);
float_element!(f64, |v: f64| v);
float_element!(f16, f16::from_f64);
float_element!(bf16, bf16::from_f64);

impl JsonElement for bool {
    const WHAT: &'static str = "true or false";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl JsonElement for Vec<u8> {
    const WHAT: &'static str = "a string";
    fn from_str(s: &str) -> Option<Self> {
        Some(s.as_bytes().to_vec())
    }
}

/// Flattens any nesting of arrays into `out`; refuses more than `max` elements.
struct Flatten<'v, T> {
    out: &'v mut Vec<T>,
    max: usize,
}

impl<'de, T: JsonElement> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or an array of them", T::WHAT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.out.reserve(n.min(self.max.saturating_sub(self.out.len())));
        }
        while seq.next_element_seed(Flatten { out: &mut *self.out, max: self.max })?.is_some() {}
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), || v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), || v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), || v.to_string())
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), || v.to_string())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), || format!("{v:?}"))
    }
}

impl<T: JsonElement> Flatten<'_, T> {
    fn push<E: serde::de::Error>(self, value: Option<T>, shown: impl FnOnce() -> String) -> Result<(), E> {
        if self.out.len() >= self.max {
            return Err(E::custom(format!("more than the {} elements its shape holds", self.max)));
        }
        match value {
            Some(v) => {
                self.out.push(v);
                Ok(())
            }
            None => {
                Err(E::custom(format!("element {} is {}, expected {}", self.out.len(), shown(), T::WHAT)))
            }
        }
    }
}

fn flatten<T: JsonElement>(
    name: &str,
    datatype: DataType,
    count: usize,
    raw: &RawValue,
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::with_capacity(count);
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Flatten { out: &mut out, max: count }
        .deserialize(&mut de)
        .map_err(|e| ApiError::Malformed(format!("input '{name}' ({datatype}) data: {e}")))?;
    Ok(out)
}

fn decode_json_data(
    name: &str,
    datatype: DataType,
    count: usize,
    raw: &RawValue,
) -> Result<TensorData, ApiError> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(name, datatype, count, raw)?),
        DataType::U8 => TensorData::U8(flatten(name, datatype, count, raw)?),
        DataType::U16 => TensorData::U16(flatten(name, datatype, count, raw)?),
        DataType::U32 => TensorData::U32(flatten(name, datatype, count, raw)?),
        DataType::U64 => TensorData::U64(flatten(name, datatype, count, raw)?),
        DataType::I8 => TensorData::I8(flatten(name, datatype, count, raw)?),
        DataType::I16 => TensorData::I16(flatten(name, datatype, count, raw)?),
        DataType::I32 => TensorData::I32(
            numbers(raw.get(), count).map_or_else(|| flatten(name, datatype, count, raw), Ok)?,
        ),
        DataType::I64 => TensorData::I64(
            numbers(raw.get(), count).map_or_else(|| flatten(name, datatype, count, raw), Ok)?,
        ),
        DataType::F16 => TensorData::F16(flatten(name, datatype, count, raw)?),
        DataType::Bf16 => TensorData::Bf16(flatten(name, datatype, count, raw)?),
        DataType::F32 => TensorData::F32(
            numbers(raw.get(), count).map_or_else(|| flatten(name, datatype, count, raw), Ok)?,
        ),
        DataType::F64 => TensorData::F64(
            numbers(raw.get(), count).map_or_else(|| flatten(name, datatype, count, raw), Ok)?,
        ),
        DataType::Bytes => TensorData::Bytes(flatten(name, datatype, count, raw)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorSpec;

    fn sig() -> ModelSignature {
        ModelSignature {
            inputs: vec![
                TensorSpec::new("x", DataType::F32, vec![-1, 2]),
                TensorSpec::new("n", DataType::I64, vec![-1]),
            ],
            outputs: vec![
                TensorSpec::new("y", DataType::F32, vec![-1, 2]),
                TensorSpec::new("z.out", DataType::I64, vec![-1]),
            ],
        }
    }

    fn decode(json: &str) -> Result<InferRequest, ApiError> {
        decode_infer(json.as_bytes(), None, &sig(), &DecodeLimits::default())
    }

    #[test]
    fn floats_beside_nan_strings_are_parsed_to_the_nearest_f64() {
        // The general path (data that is not only plain numbers) goes through serde_json, which
        // rounds correctly only with its `float_roundtrip` feature (the fuzzer found 2-ulp misses).
        let sig = ModelSignature {
            inputs: vec![TensorSpec::new("v", DataType::F64, vec![-1])],
            outputs: vec![TensorSpec::new("w", DataType::F64, vec![-1])],
        };
        let text = "-1.0000000000009103e300";
        let json =
            format!(r#"{{"inputs":[{{"name":"v","datatype":"FP64","shape":[2],"data":["NaN",{text}]}}]}}"#);
        let decoded = decode_infer(json.as_bytes(), None, &sig, &DecodeLimits::default()).unwrap();
        let TensorData::F64(v) = &decoded.inputs[0].data else { panic!("not FP64") };
        assert!(v[0].is_nan());
        assert_eq!(v[1].to_bits(), text.parse::<f64>().unwrap().to_bits());
    }

    #[test]
    fn a_number_beyond_the_range_gets_the_same_answer_whatever_else_the_data_holds() {
        let sig = ModelSignature {
            inputs: vec![TensorSpec::new("v", DataType::F64, vec![-1])],
            outputs: vec![TensorSpec::new("w", DataType::F64, vec![-1])],
        };
        let decode = |data: &str| {
            let json =
                format!(r#"{{"inputs":[{{"name":"v","datatype":"FP64","shape":[2],"data":{data}}}]}}"#);
            decode_infer(json.as_bytes(), None, &sig, &DecodeLimits::default()).map(|r| r.inputs)
        };
        let plain = decode("[1e999, 2]");
        let beside_a_string = decode(r#"[1e999, "NaN"]"#);
        assert!(plain.is_err() && beside_a_string.is_err(), "{plain:?} / {beside_a_string:?}");
    }

    #[test]
    fn nested_and_flat_data_decode_the_same() {
        let nested = decode(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4.5]]},{"name":"n","datatype":"INT64","shape":[1],"data":[7]}]}"#).unwrap();
        let flat = decode(r#"{"inputs":[{"name":"n","datatype":"INT64","shape":[1],"data":[7]},{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3,4.5]}]}"#).unwrap();
        assert_eq!(nested.inputs, flat.inputs);
        assert_eq!(nested.inputs[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(nested.outputs.len(), 2);
    }

    #[test]
    fn each_hostile_input_gets_its_own_message() {
        let cases = [
            (r#"{"inputs":[{"name":"x""#, "truncated JSON"),
            (r#"{"inputs":[}"#, "malformed JSON"),
            (r#"{"inputs":[{"name":"q","datatype":"FP32","shape":[1],"data":[1]}]}"#, "unknown input 'q'"),
            (r#"{"inputs":[{"name":"x","datatype":"INT32","shape":[1,2],"data":[1,2]}]}"#, "expects FP32"),
            (r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2]}]}"#, "rank 1"),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2,3]}]}"#,
                "more than the 2 elements",
            ),
            (r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]}"#, "its data has 3"),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,2],"data":[1,2]}]}"#,
                "negative dimension",
            ),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[4611686018427387904,4611686018427387904],"data":[]}]}"#,
                "more than the",
            ),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1000000,2],"data":[1]}]}"#,
                "its data has fewer",
            ),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,"a"]}]}"#,
                "expected a number",
            ),
            (
                r#"{"inputs":[{"name":"x","datatype":"FLOAT","shape":[1,2],"data":[1,2]}]}"#,
                "unknown datatype",
            ),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}"#,
                "missing input 'n'",
            ),
            (
                r#"{"inputs":[{"name":"n","datatype":"INT64","shape":[1],"data":[1.5]}]}"#,
                "expected an integer",
            ),
            (
                r#"{"inputs":[{"name":"n","datatype":"INT64","shape":[1],"data":[1]},{"name":"n","datatype":"INT64","shape":[1],"data":[1]}]}"#,
                "given twice",
            ),
        ];
        for (body, expected) in cases {
            let err = decode(body).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}\n  gave: {err}\n  wanted: {expected}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!(
            r#"{{"inputs":[{{"name":"n","datatype":"INT64","shape":[1],"data":{}1{}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = decode(&deep).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{err}");
    }

    #[test]
    fn requested_outputs_resolve_to_indices_with_binary_flags() {
        let r = decode(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]},{"name":"n","datatype":"INT64","shape":[1],"data":[1]}],"outputs":[{"name":"z.out","parameters":{"binary_data":true}}]}"#).unwrap();
        assert_eq!(r.outputs, vec![OutputChoice { index: 1, binary: true }]);
        let err = decode(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]},{"name":"n","datatype":"INT64","shape":[1],"data":[1]}],"outputs":[{"name":"nope"}]}"#).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn binary_inputs_are_read_in_order() {
        let json = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}},{"name":"n","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend(1.5f32.to_le_bytes());
        body.extend((-2.0f32).to_le_bytes());
        body.extend(42i64.to_le_bytes());
        let r = decode_infer(&body, Some(json.len()), &sig(), &DecodeLimits::default()).unwrap();
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![1.5, -2.0]));
        assert_eq!(r.inputs[1].data, TensorData::I64(vec![42]));
        body.push(0);
        let err = decode_infer(&body, Some(json.len()), &sig(), &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("no input claims"), "{err}");
    }

    #[test]
    fn bytes_that_are_not_utf8_or_hold_nul_are_refused_as_malformed() {
        let sig =
            ModelSignature { inputs: vec![TensorSpec::new("s", DataType::Bytes, vec![-1])], outputs: vec![] };
        let json = r#"{"inputs":[{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":11}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend(2u32.to_le_bytes());
        body.extend(b"ok");
        body.extend(1u32.to_le_bytes());
        body.push(0xff);
        let err = decode_infer(&body, Some(json.len()), &sig, &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("element 1 is not valid UTF-8"), "{err}");
        let nul = r#"{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"data":["a\u0000b"]}]}"#;
        let err = decode_infer(nul.as_bytes(), None, &sig, &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        let fine = r#"{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"data":["Grüße"]}]}"#;
        assert!(decode_infer(fine.as_bytes(), None, &sig, &DecodeLimits::default()).is_ok());
    }

    #[test]
    fn the_number_fast_path_agrees_with_the_general_one() {
        let cases = ["[1, 2.5, -3e2, 0.1]", "[[1,2],[ 3 ,\n4]]", "[1.5e-40, 3.4028235e38, -0.0, 7]"];
        for text in cases {
            let raw = RawValue::from_string(text.to_string()).unwrap();
            let fast: Vec<f32> = numbers(raw.get(), 4).unwrap();
            let slow: Vec<f32> = flatten("x", DataType::F32, 4, &raw).unwrap();
            assert_eq!(fast, slow, "{text}");
        }
        // Anything but plain numbers goes the general way.
        for text in [r#"["NaN", 1]"#, "[true, 1]", "[1, 2, 3, 4, 5]"] {
            let raw = RawValue::from_string(text.to_string()).unwrap();
            assert!(numbers::<f32>(raw.get(), 4).is_none(), "{text}");
        }
        let raw = RawValue::from_string("[1.5]".to_string()).unwrap();
        assert!(numbers::<i64>(raw.get(), 1).is_none());
    }

    #[test]
    fn non_finite_strings_decode_for_floats() {
        let r = decode(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":["NaN","-Infinity"]},{"name":"n","datatype":"INT64","shape":[1],"data":[1]}]}"#).unwrap();
        let TensorData::F32(v) = &r.inputs[0].data else { panic!() };
        assert!(v[0].is_nan() && v[1] == f32::NEG_INFINITY);
    }
}
