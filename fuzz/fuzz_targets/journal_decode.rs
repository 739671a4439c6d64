//! Arbitrary bytes as a stored journal record.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_host::fuzzing::journal_decode(data));
