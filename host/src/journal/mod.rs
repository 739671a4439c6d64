//! The journal: entry types, their versioned encoding, and the replay
//! cursor that decides, call by call, whether a run is replaying or live.
//!
//! This module never performs a side effect and never touches the store; it
//! only describes what happened and compares it with what happens now.

mod codec;
mod cursor;
mod entry;

pub use codec::{decode, encode, DecodeError, CURRENT_FORMAT};
pub use cursor::{Divergence, JournalCursor, Step};
pub use entry::{ActivityOptions, Completion, EngineSettings, Entry, Failure, HostCall, Record, Reply, RetryPolicy};
