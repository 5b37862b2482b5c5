//! Shared helpers for the criterion benches in `benches/benches/` and the helper binaries in
//! `src/bin/`: where the example models are, loading them, and building tensors and V2 request
//! bodies of a given size from deterministic pseudo-random values (the same bytes every run).
//!
//! Depends only on the gateway library's public API; nothing here is on the gateway's own path.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gateway::onnx::{OnnxSession, SessionOptions};
use gateway::tensor::{DataType, ModelSignature, Tensor, TensorData};

/// The workspace root (the folder holding `models/`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// `models/<model>/<version>/model.onnx` of the example repository.
pub fn model_file(model: &str, version: u64) -> PathBuf {
    repo_root().join("models").join(model).join(version.to_string()).join("model.onnx")
}

/// Loads and warms one session with `intra_op_threads` threads (CPU provider, no spinning:
/// the gateway's defaults).
pub fn load_session(path: &Path, intra_op_threads: usize) -> Result<OnnxSession, String> {
    let options = SessionOptions { intra_op_threads, ..SessionOptions::default() };
    let mut session = OnnxSession::load(path, &options).map_err(|e| e.to_string())?;
    session.warm_up().map_err(|e| e.to_string())?;
    Ok(session)
}

/// `count` values in `[-1, 1)`, four decimals each, from a fixed xorshift sequence.
pub fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state % 20_000) as f32 - 10_000.0) / 10_000.0
        })
        .collect()
}

/// One tensor per input of `signature`, dynamic dim 0 set to `rows` and any other dynamic dim
/// to 1; FP32 inputs get `values`, other datatypes zeros.
pub fn inputs_for(signature: &ModelSignature, rows: usize, seed: u64) -> Vec<Tensor> {
    signature
        .inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .enumerate()
                .map(|(d, &n)| match (d, n) {
                    (0, n) if n < 0 => rows,
                    (_, n) if n < 0 => 1,
                    (_, n) => n as usize,
                })
                .collect();
            let len = shape.iter().product();
            let data = match spec.datatype {
                DataType::F32 => TensorData::F32(values(len, seed + i as u64)),
                other => TensorData::zeros(other, len),
            };
            Tensor { name: spec.name.clone(), shape, data }
        })
        .collect()
}

/// A V2 JSON infer request (flat `data`, an `id`) carrying `inputs`; numbers as Rust prints
/// them (the shortest text that reads back to the same value).
pub fn json_request(inputs: &[Tensor]) -> Result<Vec<u8>, String> {
    let mut out = String::from("{\"id\":\"bench\",\"inputs\":[");
    for (i, t) in inputs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_header(&mut out, t);
        out.push_str(",\"data\":[");
        write_values(&mut out, &t.data)?;
        out.push_str("]}");
    }
    out.push_str("]}");
    Ok(out.into_bytes())
}

/// A binary-extension infer request: the JSON header (returned length: the
/// `Inference-Header-Content-Length` value) followed by each input's raw little-endian bytes.
/// Only FP32 inputs are supported.
pub fn binary_request(inputs: &[Tensor]) -> Result<(Vec<u8>, usize), String> {
    let mut header = String::from("{\"id\":\"bench\",\"inputs\":[");
    let mut raw = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let TensorData::F32(v) = &t.data else {
            return Err(format!("input '{}': binary_request supports FP32 only", t.name));
        };
        if i > 0 {
            header.push(',');
        }
        write_header(&mut header, t);
        let _ = write!(header, ",\"parameters\":{{\"binary_data_size\":{}}}}}", v.len() * 4);
        raw.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    header.push_str("],\"parameters\":{\"binary_data_output\":true}}");
    let json_length = header.len();
    let mut body = header.into_bytes();
    body.extend_from_slice(&raw);
    Ok((body, json_length))
}

fn write_header(out: &mut String, t: &Tensor) {
    let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
    let _ = write!(
        out,
        "{{\"name\":\"{}\",\"datatype\":\"{}\",\"shape\":[{}]",
        t.name,
        t.datatype().as_str(),
        shape.join(",")
    );
}

fn write_values(out: &mut String, data: &TensorData) -> Result<(), String> {
    match data {
        TensorData::F32(v) => join(out, v),
        TensorData::F64(v) => join(out, v),
        TensorData::I64(v) => join(out, v),
        TensorData::I32(v) => join(out, v),
        other => return Err(format!("json_request does not write {} data", other.datatype().as_str())),
    }
    Ok(())
}

fn join<T: std::fmt::Display>(out: &mut String, v: &[T]) {
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::protocol::{DecodeLimits, decode_infer};
    use gateway::tensor::TensorSpec;

    fn dense_like() -> ModelSignature {
        let spec = |name: &str, width| TensorSpec::new(name, DataType::F32, vec![-1, width]);
        ModelSignature { inputs: vec![spec("input", 4)], outputs: vec![spec("output", 2)] }
    }

    #[test]
    fn values_are_deterministic_and_in_range() {
        let a = values(1000, 7);
        assert_eq!(a, values(1000, 7));
        assert_ne!(a, values(1000, 8));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn inputs_resolve_the_batch_dim() {
        let inputs = inputs_for(&dense_like(), 3, 1);
        assert_eq!(inputs[0].shape, vec![3, 4]);
        assert_eq!(inputs[0].data.len(), 12);
    }

    #[test]
    fn json_and_binary_requests_decode_to_the_same_tensors() {
        let sig = dense_like();
        let inputs = inputs_for(&sig, 2, 5);
        let json = json_request(&inputs).unwrap();
        let from_json = decode_infer(&json, None, &sig, &DecodeLimits::default()).unwrap();
        assert_eq!(from_json.inputs, inputs);
        assert_eq!(from_json.id.as_deref(), Some("bench"));
        let (body, json_length) = binary_request(&inputs).unwrap();
        let from_binary = decode_infer(&body, Some(json_length), &sig, &DecodeLimits::default()).unwrap();
        assert_eq!(from_binary.inputs, inputs);
        assert!(from_binary.outputs.iter().all(|o| o.binary));
    }

    #[test]
    fn example_models_are_where_the_benches_look() {
        assert!(model_file("credit-scoring", 1).is_file());
        assert!(model_file("dense", 1).is_file());
    }
}
