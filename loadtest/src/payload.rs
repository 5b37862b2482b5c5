//! The request body every request carries, built once: generated from the model's metadata
//! (random values of each input's datatype) or read from a JSON file, then encoded as plain
//! JSON or with the binary tensor data extension.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::binary;

/// One input (or output) as `GET /v2/models/{m}` describes it; `-1` marks a dynamic dimension.
#[derive(Debug, Clone, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    #[serde(default)]
    pub shape: Vec<i64>,
}

/// The part of the model metadata the generator needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelMeta {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<TensorMeta>,
}

/// A concrete input tensor: shape resolved, data flat in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    pub data: Vec<Value>,
}

/// A ready-to-send body.
#[derive(Debug, Clone)]
pub struct Payload {
    pub body: Bytes,
    /// Length of the JSON header when binary data follows (`Inference-Header-Content-Length`).
    pub json_length: Option<usize>,
    /// Rows per request (dimension 0 of the first input), for rows/s.
    pub rows: usize,
    /// A framed gRPC `ModelInferRequest` rather than an HTTP body.
    pub grpc: bool,
}

impl Payload {
    pub fn content_type(&self) -> &'static str {
        match (self.grpc, self.json_length) {
            (true, _) => "application/grpc",
            (false, Some(_)) => "application/octet-stream",
            (false, None) => "application/json",
        }
    }
}

/// Resolves a metadata shape: a dynamic dimension 0 becomes `batch`, any other dynamic one 1.
pub fn resolve_shape(shape: &[i64], batch: usize) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| match (i, usize::try_from(d)) {
            (_, Ok(d)) => d,
            (0, Err(_)) => batch,
            (_, Err(_)) => 1,
        })
        .collect()
}

/// Random input tensors for every input of `meta`.
pub fn generate(meta: &ModelMeta, batch: usize, seed: u64) -> Result<Vec<Tensor>, String> {
    if meta.inputs.is_empty() {
        return Err(format!("model {} lists no inputs", meta.name));
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    meta.inputs
        .iter()
        .map(|input| {
            let shape = resolve_shape(&input.shape, batch);
            let count: usize = shape.iter().product();
            let data =
                (0..count).map(|_| random_value(&input.datatype, &mut rng)).collect::<Result<_, _>>()?;
            Ok(Tensor { name: input.name.clone(), datatype: input.datatype.clone(), shape, data })
        })
        .collect()
}

fn random_value(datatype: &str, rng: &mut fastrand::Rng) -> Result<Value, String> {
    Ok(match datatype {
        "BOOL" => json!(rng.bool()),
        "UINT8" | "UINT16" | "UINT32" | "UINT64" | "INT8" | "INT16" | "INT32" | "INT64" => {
            json!(rng.u8(0..100))
        }
        // Two decimals keep the JSON short and exact in every float width.
        "FP16" | "BF16" | "FP32" | "FP64" => json!(f64::from(rng.i16(-200..200)) / 100.0),
        "BYTES" => json!(format!("s{}", rng.u32(0..1_000_000))),
        other => return Err(format!("cannot generate values of datatype {other}")),
    })
}

/// Reads the tensors of a JSON infer request (data flat or nested).
pub fn tensors_from_request(request: &Value) -> Result<Vec<Tensor>, String> {
    let inputs =
        request.get("inputs").and_then(Value::as_array).ok_or("the payload has no \"inputs\" array")?;
    inputs.iter().map(tensor_from_input).collect()
}

fn tensor_from_input(input: &Value) -> Result<Tensor, String> {
    let field = |key: &str| input.get(key).ok_or(format!("an input lacks \"{key}\""));
    let name = field("name")?.as_str().ok_or("an input's name is not a string")?;
    let datatype = field("datatype")?.as_str().ok_or("an input's datatype is not a string")?;
    let shape = field("shape")?
        .as_array()
        .ok_or("an input's shape is not an array")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<_>>>()
        .ok_or(format!("input {name}: shape must hold non-negative integers"))?;
    let mut data = Vec::new();
    flatten(field("data")?, &mut data);
    Ok(Tensor { name: name.into(), datatype: datatype.into(), shape, data })
}

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other.clone()),
    }
}

/// Rows in a request: dimension 0 of the first input (1 for a 0-d tensor).
pub fn rows_of(tensors: &[Tensor]) -> usize {
    tensors.first().and_then(|t| t.shape.first().copied()).unwrap_or(1)
}

/// A plain JSON infer request.
pub fn encode_json(tensors: &[Tensor]) -> Payload {
    let inputs: Vec<Value> = tensors
        .iter()
        .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape, "data": t.data}))
        .collect();
    let body = json!({ "inputs": inputs }).to_string();
    Payload { body: Bytes::from(body), json_length: None, rows: rows_of(tensors), grpc: false }
}

/// A binary-extension request: the JSON header (inputs with `binary_data_size`, binary outputs
/// asked for), then each input's raw little-endian bytes in order.
pub fn encode_binary(tensors: &[Tensor]) -> Result<Payload, String> {
    let mut parts = Vec::with_capacity(tensors.len());
    let mut inputs = Vec::with_capacity(tensors.len());
    for t in tensors {
        let raw = binary::encode(&t.datatype, &t.data).map_err(|e| format!("input {}: {e}", t.name))?;
        inputs.push(json!({
            "name": t.name, "datatype": t.datatype, "shape": t.shape,
            "parameters": {"binary_data_size": raw.len()},
        }));
        parts.push(raw);
    }
    let header = json!({ "inputs": inputs, "parameters": {"binary_data_output": true} }).to_string();
    let mut body = header.clone().into_bytes();
    parts.iter().for_each(|p| body.extend_from_slice(p));
    Ok(Payload {
        body: Bytes::from(body),
        json_length: Some(header.len()),
        rows: rows_of(tensors),
        grpc: false,
    })
}

/// Encodes the tensors as asked.
pub fn encode(tensors: &[Tensor], binary: bool) -> Result<Payload, String> {
    if binary { encode_binary(tensors) } else { Ok(encode_json(tensors)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ModelMeta {
        serde_json::from_str(
            r#"{"name":"m","versions":["1"],"platform":"onnx_onnxv1",
                "inputs":[{"name":"features","datatype":"FP32","shape":[-1,8]},
                          {"name":"flag","datatype":"BOOL","shape":[-1,-1]}],
                "outputs":[{"name":"p","datatype":"FP32","shape":[-1,2]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn shapes_resolve_dynamic_dims() {
        assert_eq!(resolve_shape(&[-1, 8], 4), vec![4, 8]);
        assert_eq!(resolve_shape(&[-1, -1, 3], 2), vec![2, 1, 3]);
        assert_eq!(resolve_shape(&[5, -1], 2), vec![5, 1]);
        assert_eq!(resolve_shape(&[], 2), Vec::<usize>::new());
    }

    #[test]
    fn generated_tensors_fill_every_element() {
        let t = generate(&meta(), 3, 7).unwrap();
        assert_eq!(t[0].shape, vec![3, 8]);
        assert_eq!(t[0].data.len(), 24);
        assert!(t[0].data.iter().all(Value::is_f64));
        assert_eq!(t[1].shape, vec![3, 1]);
        assert!(t[1].data.iter().all(Value::is_boolean));
        assert_eq!(rows_of(&t), 3);
        assert_eq!(generate(&meta(), 3, 7).unwrap(), t, "same seed, same values");
    }

    #[test]
    fn json_payload_round_trips() {
        let t = generate(&meta(), 2, 1).unwrap();
        let p = encode_json(&t);
        assert_eq!(p.json_length, None);
        assert_eq!(p.rows, 2);
        let back: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(tensors_from_request(&back).unwrap(), t);
    }

    #[test]
    fn nested_file_data_is_flattened() {
        let req = json!({"inputs":[{"name":"x","datatype":"INT64","shape":[2,2],"data":[[1,2],[3,4]]}]});
        let t = tensors_from_request(&req).unwrap();
        assert_eq!(t[0].data, vec![json!(1), json!(2), json!(3), json!(4)]);
        assert!(tensors_from_request(&json!({"inputs":[{"name":"x"}]})).is_err());
    }

    #[test]
    fn binary_payload_layout() {
        let t = vec![Tensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            data: vec![json!(1.0), json!(-2.5)],
        }];
        let p = encode_binary(&t).unwrap();
        let n = p.json_length.unwrap();
        let header: Value = serde_json::from_slice(&p.body[..n]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(header["parameters"]["binary_data_output"], true);
        assert!(header["inputs"][0].get("data").is_none());
        assert_eq!(&p.body[n..n + 4], &1.0f32.to_le_bytes());
        assert_eq!(&p.body[n + 4..], &(-2.5f32).to_le_bytes());
        assert_eq!(p.content_type(), "application/octet-stream");
    }
}
