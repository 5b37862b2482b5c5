//! HTTP infer bodies as plain JSON: `protocol::decode_infer(body, None, ..)`.
//! Input: one selector byte (signature, limits, round-trip mode: `gateway_fuzz::Selector`),
//! then the body.
#![no_main]

use gateway_fuzz::{Selector, http};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&selector, body)) = data.split_first() {
        http::fuzz(Selector::new(selector), body, None);
    }
});
