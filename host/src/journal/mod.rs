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
pub use cursor::{Divergence, JournalCursor, Step};
pub use entry::{ActivityOptions, Completion, EngineSettings, Entry, Failure, HostCall, Record, Reply, RetryPolicy};
