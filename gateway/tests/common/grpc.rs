//! gRPC test helpers: V2 JSON requests (as in `reference.json`) turned into `ModelInferRequest`s,
//! typed or raw, and `ModelInferResponse`s turned back into V2 JSON, so gRPC answers can be
//! checked with the same assertions as HTTP ones.

use bytes::Bytes;
use gateway::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use gateway::grpc::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use half::{bf16, f16};
use serde_json::{Value, json};

fn flat(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.clone()],
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

/// One V2 JSON input's data in the raw encoding.
pub fn raw_of(datatype: &str, data: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in data {
        match datatype {
            "BOOL" => out.push(u8::from(v.as_bool().unwrap())),
            "UINT8" => out.push(u(v) as u8),
            "INT8" => out.push(i(v) as i8 as u8),
            "UINT16" => out.extend((u(v) as u16).to_le_bytes()),
            "INT16" => out.extend((i(v) as i16).to_le_bytes()),
            "UINT32" => out.extend((u(v) as u32).to_le_bytes()),
            "INT32" => out.extend((i(v) as i32).to_le_bytes()),
            "UINT64" => out.extend(u(v).to_le_bytes()),
            "INT64" => out.extend(i(v).to_le_bytes()),
            "FP16" => out.extend(f16::from_f64(f(v)).to_le_bytes()),
            "BF16" => out.extend(bf16::from_f64(f(v)).to_le_bytes()),
            "FP32" => out.extend((f(v) as f32).to_le_bytes()),
            "FP64" => out.extend(f(v).to_le_bytes()),
            "BYTES" => {
                let s = v.as_str().unwrap().as_bytes();
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s);
            }
            other => panic!("datatype {other}"),
        }
    }
    out
}

/// One V2 JSON input's data as typed contents (FP16/BF16 have none: panics).
pub fn typed_of(datatype: &str, data: &[Value]) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match datatype {
        "BOOL" => c.bool_contents = data.iter().map(|v| v.as_bool().unwrap()).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents = data.iter().map(|v| u(v) as u32).collect(),
        "UINT64" => c.uint64_contents = data.iter().map(u).collect(),
        "INT8" | "INT16" | "INT32" => c.int_contents = data.iter().map(|v| i(v) as i32).collect(),
        "INT64" => c.int64_contents = data.iter().map(i).collect(),
        "FP32" => c.fp32_contents = data.iter().map(|v| f(v) as f32).collect(),
        "FP64" => c.fp64_contents = data.iter().map(f).collect(),
        "BYTES" => {
            c.bytes_contents = data.iter().map(|v| Bytes::from(v.as_str().unwrap().to_string())).collect()
        }
        other => panic!("{other} has no typed contents"),
    }
    c
}

/// A gRPC request carrying the inputs of a V2 JSON request, raw or typed.
pub fn request(model: &str, v2: &Value, raw: bool) -> ModelInferRequest {
    let mut r = ModelInferRequest { model_name: model.to_string(), ..Default::default() };
    for input in v2["inputs"].as_array().unwrap() {
        let datatype = input["datatype"].as_str().unwrap();
        let data = flat(&input["data"]);
        r.inputs.push(InferInputTensor {
            name: input["name"].as_str().unwrap().to_string(),
            datatype: datatype.to_string(),
            shape: input["shape"].as_array().unwrap().iter().map(i).collect(),
            contents: (!raw).then(|| typed_of(datatype, &data)),
            ..Default::default()
        });
        if raw {
            r.raw_input_contents.push(Bytes::from(raw_of(datatype, &data)));
        }
    }
    r
}

/// Asks for these outputs only, in this order.
pub fn want_outputs(mut r: ModelInferRequest, names: &[&str]) -> ModelInferRequest {
    r.outputs = names
        .iter()
        .map(|n| InferRequestedOutputTensor { name: n.to_string(), ..Default::default() })
        .collect();
    r
}

fn raw_values(datatype: &str, bytes: &[u8]) -> Vec<Value> {
    let chunks = |n: usize| bytes.chunks_exact(n).collect::<Vec<_>>();
    match datatype {
        "BOOL" => bytes.iter().map(|&b| json!(b != 0)).collect(),
        "UINT8" => bytes.iter().map(|&b| json!(b)).collect(),
        "INT8" => bytes.iter().map(|&b| json!(b as i8)).collect(),
        "UINT16" => chunks(2).iter().map(|c| json!(u16::from_le_bytes([c[0], c[1]]))).collect(),
        "INT16" => chunks(2).iter().map(|c| json!(i16::from_le_bytes([c[0], c[1]]))).collect(),
        "UINT32" => chunks(4).iter().map(|c| json!(u32::from_le_bytes((*c).try_into().unwrap()))).collect(),
        "INT32" => chunks(4).iter().map(|c| json!(i32::from_le_bytes((*c).try_into().unwrap()))).collect(),
        "UINT64" => chunks(8).iter().map(|c| json!(u64::from_le_bytes((*c).try_into().unwrap()))).collect(),
        "INT64" => chunks(8).iter().map(|c| json!(i64::from_le_bytes((*c).try_into().unwrap()))).collect(),
        "FP16" => chunks(2).iter().map(|c| json!(f16::from_le_bytes([c[0], c[1]]).to_f64())).collect(),
        "BF16" => chunks(2).iter().map(|c| json!(bf16::from_le_bytes([c[0], c[1]]).to_f64())).collect(),
        "FP32" => {
            chunks(4).iter().map(|c| json!(f32::from_le_bytes((*c).try_into().unwrap()) as f64)).collect()
        }
        "FP64" => chunks(8).iter().map(|c| json!(f64::from_le_bytes((*c).try_into().unwrap()))).collect(),
        "BYTES" => {
            let mut rest = bytes;
            let mut out = Vec::new();
            while !rest.is_empty() {
                let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                out.push(json!(String::from_utf8(rest[4..4 + n].to_vec()).unwrap()));
                rest = &rest[4 + n..];
            }
            out
        }
        other => panic!("datatype {other}"),
    }
}

fn typed_values(datatype: &str, c: &InferTensorContents) -> Vec<Value> {
    match datatype {
        "BOOL" => c.bool_contents.iter().map(|&b| json!(b)).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents.iter().map(|&x| json!(x)).collect(),
        "UINT64" => c.uint64_contents.iter().map(|&x| json!(x)).collect(),
        "INT8" | "INT16" | "INT32" => c.int_contents.iter().map(|&x| json!(x)).collect(),
        "INT64" => c.int64_contents.iter().map(|&x| json!(x)).collect(),
        "FP32" => c.fp32_contents.iter().map(|&x| json!(x as f64)).collect(),
        "FP64" => c.fp64_contents.iter().map(|&x| json!(x)).collect(),
        "BYTES" => c.bytes_contents.iter().map(|b| json!(String::from_utf8(b.to_vec()).unwrap())).collect(),
        other => panic!("{other} has no typed contents"),
    }
}

/// A gRPC reply as the V2 JSON reply HTTP would give (data flat), whichever its encoding;
/// also checks that it uses exactly one encoding.
pub fn to_json(r: &ModelInferResponse) -> Value {
    let raw = !r.raw_output_contents.is_empty();
    if raw {
        assert_eq!(r.raw_output_contents.len(), r.outputs.len(), "one raw entry per output");
    }
    let outputs: Vec<Value> = r
        .outputs
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let data = if raw {
                assert!(o.contents.is_none(), "output {} is both raw and typed", o.name);
                raw_values(&o.datatype, &r.raw_output_contents[k])
            } else {
                typed_values(&o.datatype, o.contents.as_ref().expect("typed contents"))
            };
            json!({"name": o.name, "datatype": o.datatype, "shape": o.shape, "data": data})
        })
        .collect();
    json!({"model_name": r.model_name, "model_version": r.model_version, "id": r.id, "outputs": outputs})
}

/// A unary gRPC call made by hand over h2c, so that the test, not a client library, decides
/// which headers go out (tonic's client enforces a `grpc-timeout` itself, racing the server).
/// Returns the call's `grpc-status` and `grpc-message`.
pub async fn raw_call(
    addr: std::net::SocketAddr,
    method: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> (i32, String) {
    use http_body_util::{BodyExt, Full};
    let payload = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend((payload.len() as u32).to_be_bytes());
    body.extend(payload);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut req = http::Request::post(format!("http://{addr}/inference.GRPCInferenceService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let trailers = body.collect().await.unwrap().trailers().cloned().unwrap_or_default();
    let get = |name: &str| {
        parts.headers.get(name).or_else(|| trailers.get(name)).map(|v| v.to_str().unwrap().to_string())
    };
    let status = get("grpc-status").expect("grpc-status").parse().unwrap();
    (status, percent_decoded(&get("grpc-message").unwrap_or_default()))
}

/// `grpc-message` is percent-encoded.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = s.get(i + 1..i + 3).filter(|_| bytes[i] == b'%');
        if let Some(b) = escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
