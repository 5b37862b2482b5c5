//! HTTP infer bodies with Triton's binary tensor extension:
//! `protocol::decode_infer(body, Some(json_length), ..)`.
//! Input: one selector byte (`gateway_fuzz::Selector`), two bytes of little-endian
//! `Inference-Header-Content-Length` (it may exceed the body: that is refused, and fuzzed too),
//! then the body: JSON header and binary tensor data.
#![no_main]

use gateway_fuzz::{Selector, http};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let [selector, lo, hi, body @ ..] = data {
        let json_length = usize::from(u16::from_le_bytes([*lo, *hi]));
        http::fuzz(Selector::new(*selector), body, Some(json_length));
    }
});
