//! `--grpc`: the same load over the Open Inference Protocol's gRPC service
//! (`inference.GRPCInferenceService/ModelInfer`).
//!
//! The request is the gateway crate's generated `ModelInferRequest`, encoded and framed (the
//! 5-byte gRPC prefix) once, and sent as an HTTP/2 POST on the same hyper h2c connections as
//! `--http2`: a comparison with HTTP then measures the servers, not two client stacks. The
//! generated tonic client is used once, for the `ModelMetadata` call that shapes the payload.
//! Inputs go raw (`raw_input_contents`), or typed (`contents`) with `--grpc-typed`.

use bytes::{BufMut, Bytes, BytesMut};
use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use gateway::grpc::proto::model_infer_request::InferInputTensor;
use gateway::grpc::proto::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
};
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost::Message;
use serde_json::Value;

use crate::binary;
use crate::payload::{ModelMeta, Payload, Tensor, TensorMeta, rows_of};
use crate::stats::{Outcome, truncate};

/// The path every ModelInfer call is POSTed to.
pub const INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// The model's inputs, from the `ModelMetadata` RPC.
pub async fn metadata(url: &str, model: &str, version: Option<u64>) -> Result<ModelMeta, String> {
    let mut client = GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let request = ModelMetadataRequest {
        name: model.to_string(),
        version: version.map(|v| v.to_string()).unwrap_or_default(),
    };
    let m = client
        .model_metadata(request)
        .await
        .map_err(|s| format!("ModelMetadata {model}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let inputs = m
        .inputs
        .into_iter()
        .map(|t| TensorMeta { name: t.name, datatype: t.datatype, shape: t.shape })
        .collect();
    Ok(ModelMeta { name: m.name, inputs })
}

/// The framed `ModelInferRequest` every call sends.
pub fn encode(tensors: &[Tensor], model: &str, version: Option<u64>, typed: bool) -> Result<Payload, String> {
    let mut request = ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.map(|v| v.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    for t in tensors {
        let contents = if typed { Some(typed_contents(t)?) } else { None };
        request.inputs.push(InferInputTensor {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            contents,
            ..Default::default()
        });
        if !typed {
            let raw = binary::encode(&t.datatype, &t.data).map_err(|e| format!("input {}: {e}", t.name))?;
            request.raw_input_contents.push(Bytes::from(raw));
        }
    }
    let message = request.encode_to_vec();
    let length = u32::try_from(message.len()).map_err(|_| "the request is over 4 GiB".to_string())?;
    let mut body = BytesMut::with_capacity(5 + message.len());
    body.put_u8(0); // not compressed
    body.put_u32(length);
    body.put_slice(&message);
    Ok(Payload { body: body.freeze(), json_length: None, rows: rows_of(tensors), grpc: true })
}

/// An input's values in the typed field of its datatype.
fn typed_contents(t: &Tensor) -> Result<InferTensorContents, String> {
    let bad = |v: &Value| format!("input {}: {v} is not a valid {} element", t.name, t.datatype);
    let int = |v: &Value| v.as_i64().ok_or_else(|| bad(v));
    let uint = |v: &Value| v.as_u64().ok_or_else(|| bad(v));
    let float = |v: &Value| v.as_f64().ok_or_else(|| bad(v));
    let d = &t.data;
    let mut c = InferTensorContents::default();
    match t.datatype.as_str() {
        "BOOL" => {
            c.bool_contents = d.iter().map(|v| v.as_bool().ok_or_else(|| bad(v))).collect::<Result<_, _>>()?
        }
        "UINT8" | "UINT16" | "UINT32" => {
            c.uint_contents = d.iter().map(|v| uint(v).map(|x| x as u32)).collect::<Result<_, _>>()?
        }
        "UINT64" => c.uint64_contents = d.iter().map(uint).collect::<Result<_, _>>()?,
        "INT8" | "INT16" | "INT32" => {
            c.int_contents = d.iter().map(|v| int(v).map(|x| x as i32)).collect::<Result<_, _>>()?
        }
        "INT64" => c.int64_contents = d.iter().map(int).collect::<Result<_, _>>()?,
        "FP32" => c.fp32_contents = d.iter().map(|v| float(v).map(|x| x as f32)).collect::<Result<_, _>>()?,
        "FP64" => c.fp64_contents = d.iter().map(float).collect::<Result<_, _>>()?,
        "BYTES" => {
            c.bytes_contents = d
                .iter()
                .map(|v| v.as_str().map(|s| Bytes::from(s.to_string())).ok_or_else(|| bad(v)))
                .collect::<Result<_, _>>()?
        }
        other => return Err(format!("input {}: {other} has no typed contents; drop --grpc-typed", t.name)),
    }
    Ok(c)
}

/// Reads a call's answer: OK with the version that answered (the `x-model-version` metadata,
/// else the reply's `model_version`), or the gRPC code (as the status) and message.
pub async fn read_outcome(response: Response<Incoming>) -> Result<Outcome, hyper::Error> {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await?;
    if !parts.status.is_success() {
        let text = String::from_utf8_lossy(&collected.to_bytes()).trim().to_string();
        return Ok(Outcome::Failed { status: parts.status.as_u16(), error: truncate(&text) });
    }
    // A trailers-only answer carries its status in the headers.
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let code = grpc_status(&parts.headers).or_else(|| grpc_status(&trailers));
    match code {
        Some(0) => {
            let header = parts.headers.get("x-model-version").and_then(|v| v.to_str().ok());
            let version = header.map(str::to_owned).or_else(|| reply_version(&collected.to_bytes()));
            Ok(Outcome::Ok { version })
        }
        Some(code) => {
            let message = parts.headers.get("grpc-message").or_else(|| trailers.get("grpc-message"));
            let text = message.map(|m| percent_decoded(m.as_bytes())).unwrap_or_default();
            Ok(Outcome::Failed { status: code, error: truncate(&text) })
        }
        None => Ok(Outcome::Failed { status: 0, error: "an answer without grpc-status".into() }),
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// `model_version` of a framed `ModelInferResponse`.
fn reply_version(framed: &[u8]) -> Option<String> {
    let message = framed.get(5..)?;
    ModelInferResponse::decode(message).ok().map(|r| r.model_version)
}

/// `grpc-message` is percent-encoded (RFC 3986 style, per the gRPC HTTP/2 spec).
fn percent_decoded(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).filter(|_| bytes[i] == b'%');
        if let Some(b) = hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tensors() -> Vec<Tensor> {
        vec![
            Tensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![2, 2],
                data: vec![json!(1.5); 4],
            },
            Tensor {
                name: "s".into(),
                datatype: "BYTES".into(),
                shape: vec![2],
                data: vec![json!("a"), json!("")],
            },
        ]
    }

    #[test]
    fn raw_and_typed_requests_frame_the_same_inputs() {
        for typed in [false, true] {
            let p = encode(&tensors(), "m", Some(2), typed).unwrap();
            assert!(p.grpc && p.rows == 2);
            assert_eq!(p.body[0], 0);
            let len = u32::from_be_bytes(p.body[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, p.body.len() - 5);
            let r = ModelInferRequest::decode(&p.body[5..]).unwrap();
            assert_eq!((r.model_name.as_str(), r.model_version.as_str()), ("m", "2"));
            assert_eq!(r.inputs[0].shape, vec![2, 2]);
            if typed {
                assert!(r.raw_input_contents.is_empty());
                assert_eq!(r.inputs[0].contents.as_ref().unwrap().fp32_contents, vec![1.5; 4]);
            } else {
                assert_eq!(r.raw_input_contents[0].len(), 16);
                assert_eq!(r.raw_input_contents[1].as_ref(), b"\x01\0\0\0a\0\0\0\0");
            }
        }
        let fp16 =
            Tensor { name: "h".into(), datatype: "FP16".into(), shape: vec![1], data: vec![json!(1.0)] };
        assert!(encode(&[fp16], "m", None, true).unwrap_err().contains("--grpc-typed"));
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decoded(b"unknown%20model%20'x'"), "unknown model 'x'");
        assert_eq!(percent_decoded(b"100%"), "100%");
    }
}
