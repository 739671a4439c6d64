//! Arbitrary bytes, and mutations of real components, uploaded to one host.
#![no_main]

use cairn_host::fuzzing::ApiTarget;
use std::sync::OnceLock;

static TARGET: OnceLock<ApiTarget> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    TARGET.get_or_init(|| ApiTarget::new().expect("a scratch host starts")).upload(data)
});
