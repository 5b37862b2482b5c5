//! The HTTP infer body: `protocol::decode_infer`, plain JSON (`json_length: None`) or with
//! Triton's binary tensor extension (`Some(json_length)`). A body that decodes must hold the
//! decoded-request invariants, and must survive a round trip: its tensors, encoded as a reply by
//! `protocol::encode_infer` (JSON data, binary data or a mix) and sent back as a request to a
//! model that returns its inputs, decode to the same tensors.

use gateway::protocol::{InferRequest, OutputChoice, decode_infer, encode_infer};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Selector, assert_same_tensors, check_request, identity};

/// One fuzz input: `body` decoded against the selected signature.
pub fn fuzz(selector: Selector, body: &[u8], json_length: Option<usize>) {
    let Ok(request) = decode_infer(body, json_length, selector.signature, &selector.limits) else {
        return;
    };
    check_request(&request, selector.signature, &selector.limits);
    round_trip(selector, &request);
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    outputs: &'a RawValue,
}

fn round_trip(selector: Selector, request: &InferRequest) {
    let choices: Vec<OutputChoice> = (0..request.inputs.len())
        .map(|index| OutputChoice { index, binary: selector.binary(index) })
        .collect();
    let reply = encode_infer("m", 1, request.id.as_deref(), &request.inputs, &choices);
    let (json, binary) = match reply.json_length {
        Some(n) => reply.body.split_at(n),
        None => (reply.body.as_slice(), &[][..]),
    };
    let parsed: Reply<'_> = serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!("the reply is not the JSON we expect: {e}\n{}", String::from_utf8_lossy(json))
    });
    assert_eq!(parsed.id, request.id, "the reply's id");
    // The reply's "outputs" are exactly a request's "inputs" (binary_data_size included).
    let mut body = b"{".to_vec();
    if let Some(id) = &parsed.id {
        body.extend_from_slice(b"\"id\":");
        body.extend_from_slice(&serde_json::to_vec(id).unwrap_or_default());
        body.push(b',');
    }
    body.extend_from_slice(b"\"inputs\":");
    body.extend_from_slice(parsed.outputs.get().as_bytes());
    body.push(b'}');
    let json_length = reply.json_length.map(|_| body.len());
    body.extend_from_slice(binary);
    let back = decode_infer(&body, json_length, &identity(selector.signature), &selector.limits)
        .unwrap_or_else(|e| {
            panic!("our own reply does not decode as a request: {e}\n{}", String::from_utf8_lossy(&body))
        });
    assert_eq!(back.id, request.id, "round trip id");
    // Exact, float data beside "NaN" strings included (fuzz/regressions/decode_*/json-f64-*:
    // serde_json parsed those a few ulps off until its `float_roundtrip` feature was turned on).
    assert_same_tensors(&request.inputs, &back.inputs, "HTTP reply round trip", |_| 0);
}
