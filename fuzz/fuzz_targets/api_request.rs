//! Arbitrary requests (method, path, body) to the HTTP API of one host.
#![no_main]

use cairn_host::fuzzing::ApiTarget;
use std::sync::OnceLock;

static TARGET: OnceLock<ApiTarget> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    TARGET.get_or_init(|| ApiTarget::new().expect("a scratch host starts")).request(data)
});
