//! The journal: entry types, their versioned encoding, and the replay
//! cursor that decides, call by call, whether a run is replaying or live.
//!
//! This module never performs a side effect and never touches the store; it
//! only describes what happened and compares it with what happens now.

mod binary;
mod codec;
mod cursor;
mod entry;

pub use codec::{decode, encode, encode_v1, DecodeError, CURRENT_FORMAT};

/// Largest JSON payload one journal entry carries (an activity input or
/// result, a signal, a workflow input or result). Bigger data belongs in
/// an external store, passed by reference.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// Checks that `text` is one JSON value, without building it: a payload is
/// journaled as the text it came in, so only its validity matters here.
pub fn check_json(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).map(drop)
}
pub use cursor::{Divergence, JournalCursor, Step};
pub use entry::{
    ActivityOptions, Completion, EngineSettings, Entry, ExportedRecord, Failure, HostCall, Record, Reply, RetryPolicy,
};

#[cfg(test)]
mod tests {
    #[test]
    fn check_json_accepts_one_value_and_refuses_the_rest() {
        for good in ["null", " {\"a\": [1, 2.5e3, \"\\u00e9\"]} ", "\"x\""] {
            assert!(super::check_json(good).is_ok(), "{good}");
        }
        for bad in ["", "{", "[1,]", "1 2", "\"\\x\"", "\"a\u{1}b\"", "nan", "{\"a\" 1}"] {
            assert!(super::check_json(bad).is_err(), "{bad:?}");
        }
    }
}
