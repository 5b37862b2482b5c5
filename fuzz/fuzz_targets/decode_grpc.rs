//! gRPC ModelInfer requests: protobuf → `ModelInferRequest` → `grpc::decode_request`, and the
//! reply `grpc::encode_response` makes of what decoded.
//! Input: one selector byte (`gateway_fuzz::Selector`), then the protobuf message.
#![no_main]

use gateway_fuzz::{Selector, grpc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&selector, message)) = data.split_first() {
        grpc::fuzz(Selector::new(selector), message);
    }
});
