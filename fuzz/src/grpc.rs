//! The gRPC ModelInfer request: protobuf bytes → `ModelInferRequest` (prost) →
//! `grpc::decode_request`. A request that decodes must hold the decoded-request invariants
//! (and want a raw reply exactly when it was raw), and must survive a round trip: its tensors,
//! encoded by `grpc::encode_response` (typed or raw) and sent back as a request to a model that
//! returns its inputs, decode to the same tensors.

use gateway::grpc::proto::ModelInferRequest;
use gateway::grpc::proto::model_infer_request::InferInputTensor;
use gateway::grpc::{decode_request, encode_response};
use gateway::protocol::{InferRequest, OutputChoice};
use prost::Message;

use crate::{Selector, assert_same_tensors, check_request, identity};

/// One fuzz input: protobuf `bytes` decoded against the selected signature.
pub fn fuzz(selector: Selector, bytes: &[u8]) {
    let Ok(message) = ModelInferRequest::decode(bytes) else {
        return;
    };
    let Ok(request) = decode_request(&message, selector.signature, &selector.limits) else {
        return;
    };
    check_request(&request, selector.signature, &selector.limits);
    let raw = !message.raw_input_contents.is_empty();
    assert!(request.outputs.iter().all(|c| c.binary == raw), "a raw request gets a raw reply, only it");
    round_trip(selector, &request);
}

fn round_trip(selector: Selector, request: &InferRequest) {
    let choices: Vec<OutputChoice> = (0..request.inputs.len())
        .map(|index| OutputChoice { index, binary: selector.binary(index) })
        .collect();
    let reply = encode_response("m", 1, request.id.clone(), &request.inputs, &choices);
    assert_eq!(reply.outputs.len(), choices.len(), "one reply tensor per choice");
    let raw = &reply.raw_output_contents;
    assert!(raw.is_empty() || raw.len() == reply.outputs.len(), "raw contents for all outputs or none");
    assert!(raw.is_empty() || reply.outputs.iter().all(|o| o.contents.is_none()), "raw or typed, not both");
    let again = ModelInferRequest {
        id: reply.id,
        inputs: reply
            .outputs
            .into_iter()
            .map(|o| InferInputTensor {
                name: o.name,
                datatype: o.datatype,
                shape: o.shape,
                parameters: o.parameters,
                contents: o.contents,
            })
            .collect(),
        raw_input_contents: reply.raw_output_contents,
        ..Default::default()
    };
    let back = decode_request(&again, &identity(selector.signature), &selector.limits)
        .unwrap_or_else(|e| panic!("our own reply does not decode as a request: {e}\n{again:?}"));
    assert_eq!(back.id, request.id, "round trip id");
    assert_same_tensors(&request.inputs, &back.inputs, "gRPC reply round trip", |_| 0);
}
