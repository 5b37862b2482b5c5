//! Encoding infer responses: JSON written directly into one buffer, then the binary parts.
//!
//! **Non-finite floats.** JSON has no NaN or Infinity, and serde_json would silently write
//! `null`. We write them as the JSON strings `"NaN"`, `"Infinity"` and `"-Infinity"`: every
//! JSON parser reads the reply, numpy turns those strings back into the floats when given the
//! output's dtype (as `tritonclient`'s `as_numpy` does), a strictly typed client fails loudly
//! instead of reading a wrong value, and the request decoder accepts the same strings. Binary
//! outputs (`binary_data_output`) carry them bit-exact.

use super::binary;
use super::decode::OutputChoice;
use crate::tensor::{Tensor, TensorData};

/// A response body; `json_length` is set when binary parts follow the JSON (the value of the
/// `Inference-Header-Content-Length` header, and the content type becomes octet-stream).
#[derive(Debug)]
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub json_length: Option<usize>,
}

/// Encodes the chosen `outputs` (indices into `all`, the signature-ordered outputs).
pub fn encode_infer(
    model_name: &str,
    model_version: u64,
    id: Option<&str>,
    all: &[Tensor],
    choices: &[OutputChoice],
) -> EncodedResponse {
    let chosen: Vec<(&Tensor, bool)> =
        choices.iter().filter_map(|c| all.get(c.index).map(|t| (t, c.binary))).collect();
    let estimate: usize = chosen.iter().map(|(t, _)| 24 * t.data.len() + 96).sum::<usize>() + 128;
    let mut out = Vec::with_capacity(estimate);
    out.extend_from_slice(b"{\"model_name\":");
    write_json_str(&mut out, model_name);
    out.extend_from_slice(b",\"model_version\":\"");
    out.extend_from_slice(itoa::Buffer::new().format(model_version).as_bytes());
    out.push(b'"');
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        write_json_str(&mut out, id);
    }
    out.extend_from_slice(b",\"outputs\":[");
    for (i, (tensor, binary)) in chosen.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_output_header(&mut out, tensor);
        if *binary {
            out.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            out.extend_from_slice(itoa::Buffer::new().format(binary::encoded_len(&tensor.data)).as_bytes());
            out.push(b'}');
        } else {
            out.extend_from_slice(b",\"data\":");
            write_json_data(&mut out, &tensor.data);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    if !chosen.iter().any(|(_, binary)| *binary) {
        return EncodedResponse { body: out, json_length: None };
    }
    let json_length = out.len();
    for (tensor, _) in chosen.iter().filter(|(_, binary)| *binary) {
        binary::encode(&tensor.data, &mut out);
    }
    EncodedResponse { body: out, json_length: Some(json_length) }
}

fn write_output_header(out: &mut Vec<u8>, tensor: &Tensor) {
    out.extend_from_slice(b"{\"name\":");
    write_json_str(out, &tensor.name);
    out.extend_from_slice(b",\"datatype\":\"");
    out.extend_from_slice(tensor.datatype().as_str().as_bytes());
    out.extend_from_slice(b"\",\"shape\":[");
    let mut itoa = itoa::Buffer::new();
    for (i, d) in tensor.shape.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(itoa.format(*d).as_bytes());
    }
    out.push(b']');
}

/// An infer *request* in the binary extension (what the gateway sends a remote server): the
/// JSON header asking for `outputs` as binary, then every input's raw bytes. Returns the body
/// and the header's length (`Inference-Header-Content-Length`).
pub fn encode_binary_request(inputs: &[Tensor], outputs: &[String]) -> (Vec<u8>, usize) {
    let data_len: usize = inputs.iter().map(|t| binary::encoded_len(&t.data)).sum();
    let mut out = Vec::with_capacity(128 + 96 * (inputs.len() + outputs.len()) + data_len);
    out.extend_from_slice(b"{\"inputs\":[");
    for (i, t) in inputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_json_str(&mut out, &t.name);
        out.extend_from_slice(b",\"datatype\":\"");
        out.extend_from_slice(t.datatype().as_str().as_bytes());
        out.extend_from_slice(b"\",\"shape\":[");
        for (j, d) in t.shape.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(itoa::Buffer::new().format(*d).as_bytes());
        }
        out.push(b']');
        out.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
        out.extend_from_slice(itoa::Buffer::new().format(binary::encoded_len(&t.data)).as_bytes());
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"],\"outputs\":[");
    for (i, name) in outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_json_str(&mut out, name);
        out.extend_from_slice(b",\"parameters\":{\"binary_data\":true}}");
    }
    out.extend_from_slice(b"]}");
    let json_len = out.len();
    for t in inputs {
        binary::encode(&t.data, &mut out);
    }
    (out, json_len)
}

/// Writes a JSON string with escapes.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_json_data(out: &mut Vec<u8>, data: &TensorData) {
    out.push(b'[');
    macro_rules! list {
        ($v:expr, $write:expr) => {
            for (i, x) in $v.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                $write(&mut *out, x);
            }
        };
    }
    let int = |out: &mut Vec<u8>, x: &dyn ItoaFormat| x.write_to(out);
    match data {
        TensorData::Bool(v) => {
            list!(v, |o: &mut Vec<u8>, b: &bool| o.extend_from_slice(if *b { b"true" } else { b"false" }))
        }
        TensorData::U8(v) => list!(v, |o: &mut Vec<u8>, x: &u8| int(o, x)),
        TensorData::U16(v) => list!(v, |o: &mut Vec<u8>, x: &u16| int(o, x)),
        TensorData::U32(v) => list!(v, |o: &mut Vec<u8>, x: &u32| int(o, x)),
        TensorData::U64(v) => list!(v, |o: &mut Vec<u8>, x: &u64| int(o, x)),
        TensorData::I8(v) => list!(v, |o: &mut Vec<u8>, x: &i8| int(o, x)),
        TensorData::I16(v) => list!(v, |o: &mut Vec<u8>, x: &i16| int(o, x)),
        TensorData::I32(v) => list!(v, |o: &mut Vec<u8>, x: &i32| int(o, x)),
        TensorData::I64(v) => list!(v, |o: &mut Vec<u8>, x: &i64| int(o, x)),
        TensorData::F16(v) => list!(v, |o: &mut Vec<u8>, x: &half::f16| write_f32(o, x.to_f32())),
        TensorData::Bf16(v) => list!(v, |o: &mut Vec<u8>, x: &half::bf16| write_f32(o, x.to_f32())),
        TensorData::F32(v) => list!(v, |o: &mut Vec<u8>, x: &f32| write_f32(o, *x)),
        TensorData::F64(v) => list!(v, |o: &mut Vec<u8>, x: &f64| write_f64(o, *x)),
        TensorData::Bytes(v) => {
            list!(v, |o: &mut Vec<u8>, x: &Vec<u8>| write_json_str(o, &String::from_utf8_lossy(x)))
        }
    }
    out.push(b']');
}

trait ItoaFormat {
    fn write_to(&self, out: &mut Vec<u8>);
}

macro_rules! itoa_format {
    ($($t:ty),*) => {$(
        impl ItoaFormat for $t {
            fn write_to(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
itoa_format!(u8, u16, u32, u64, i8, i16, i32, i64);

fn write_non_finite(out: &mut Vec<u8>, nan: bool, negative: bool) {
    out.extend_from_slice(match (nan, negative) {
        (true, _) => b"\"NaN\"",
        (false, false) => b"\"Infinity\"",
        (false, true) => b"\"-Infinity\"",
    });
}

fn write_f32(out: &mut Vec<u8>, x: f32) {
    if x.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else {
        write_non_finite(out, x.is_nan(), x < 0.0);
    }
}

fn write_f64(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else {
        write_non_finite(out, x.is_nan(), x < 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, shape: &[usize], data: TensorData) -> Tensor {
        Tensor { name: name.into(), shape: shape.to_vec(), data }
    }

    #[test]
    fn json_reply_is_valid_json_with_every_field() {
        let outs = vec![
            tensor("a.b", &[2], TensorData::F32(vec![0.5, f32::NAN])),
            tensor("s", &[1], TensorData::Bytes(vec![b"q\"uote".to_vec()])),
            tensor("k", &[], TensorData::I64(vec![-3])),
        ];
        let choices: Vec<OutputChoice> = (0..3).map(|index| OutputChoice { index, binary: false }).collect();
        let r = encode_infer("m", 2, Some("req-1"), &outs, &choices);
        assert!(r.json_length.is_none());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["model_version"], "2");
        assert_eq!(v["id"], "req-1");
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([0.5, "NaN"]));
        assert_eq!(v["outputs"][1]["data"][0], "q\"uote");
        assert_eq!(v["outputs"][2]["shape"], serde_json::json!([]));
        assert_eq!(v["outputs"][2]["data"], serde_json::json!([-3]));
    }

    #[test]
    fn binary_outputs_follow_the_json_header() {
        let outs = vec![
            tensor("x", &[2], TensorData::I32(vec![1, 2])),
            tensor("y", &[1], TensorData::F32(vec![1.0])),
        ];
        let choices = [OutputChoice { index: 1, binary: false }, OutputChoice { index: 0, binary: true }];
        let r = encode_infer("m", 1, None, &outs, &choices);
        let n = r.json_length.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(v["outputs"][0]["name"], "y");
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert_eq!(&r.body[n..], &[1, 0, 0, 0, 2, 0, 0, 0]);
    }
}
