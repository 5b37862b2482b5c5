//! Config files: TOML text → `config::from_toml` → validated `GatewayConfig` or its problems.
//! Input: the file's text. Run from the repository root (committed models resolve there).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway_fuzz::config::fuzz(data));
