//! The on-disk encoding of journal records.
//!
//! Every stored record starts with a one-byte format tag; the rest is that
//! format's body. Format 1 is self-describing JSON (entry and call kinds are
//! named, fields are named), so new kinds of entry and new optional fields
//! are added without a new format. A new format gets a new tag and the old
//! decoders stay: a journal written by an older host must always be
//! readable by a newer one (`tests/fixtures/journal-v1.bin` proves it).

use super::entry::Record;
use thiserror::Error;

/// The format this host writes.
pub const CURRENT_FORMAT: u8 = 1;

/// A stored record could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The record is empty: the store is damaged.
    #[error("journal record is empty; the store may be damaged (run `cairn check`)")]
    Empty,
    /// The record was written by a newer host.
    #[error("journal record has format {0}, which this host does not know; upgrade Cairn to read it")]
    UnknownFormat(u8),
    /// The body does not parse.
    #[error("journal record (format {format}) does not parse: {source}")]
    Malformed {
        /// The format tag.
        format: u8,
        /// What the parser said.
        source: serde_json::Error,
    },
}

/// Encodes a record in the current format.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = vec![CURRENT_FORMAT];
    // Serialising these plain types into a Vec cannot fail.
    serde_json::to_writer(&mut out, record).expect("journal records always serialise");
    out
}

/// Decodes a record of any format this host knows.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let (&format, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match format {
        1 => serde_json::from_slice(body).map_err(|source| DecodeError::Malformed { format, source }),
        other => Err(DecodeError::UnknownFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::entry::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                seq: 0,
                at_ms: 1_700_000_000_000,
                entry: Entry::Started {
                    workflow: "order".into(),
                    component_sha256: "ab".repeat(32),
                    input: r#"{"order_id":"A-1"}"#.into(),
                    seed: "00112233445566778899aabbccddeeff".into(),
                    engine: EngineSettings {
                        nan_canonicalization: true,
                        relaxed_simd_deterministic: true,
                        max_memory_bytes: 256 << 20,
                        step_budget_ms: 10_000,
                        max_wasm_stack: 512 << 10,
                    },
                },
            },
            Record {
                seq: 1,
                at_ms: 1_700_000_000_001,
                entry: Entry::Call {
                    call: HostCall::ScheduleActivity {
                        name: "inventory.reserve".into(),
                        input: r#"{"sku":"mug"}"#.into(),
                        options: ActivityOptions {
                            timeout_ms: 60_000,
                            retry: RetryPolicy {
                                max_attempts: 5,
                                initial_interval_ms: 1000,
                                backoff_coefficient: 2.0,
                                max_interval_ms: 60_000,
                                non_retryable_kinds: vec!["invalid-input".into()],
                            },
                        },
                    },
                    reply: Reply::Handle { handle: 1 },
                },
            },
            Record {
                seq: 2,
                at_ms: 1_700_000_000_005,
                entry: Entry::Call {
                    call: HostCall::Await { handle: 1 },
                    reply: Reply::Completed {
                        handle: 1,
                        completion: Completion::Ok(r#"{"reservation_id":"r1"}"#.into()),
                    },
                },
            },
            Record {
                seq: 3,
                at_ms: 1_700_000_000_006,
                entry: Entry::Call {
                    call: HostCall::AwaitAny { handles: vec![4, 5] },
                    reply: Reply::Completed { handle: 5, completion: Completion::Err(Failure::cancelled()) },
                },
            },
            Record {
                seq: 4,
                at_ms: 1_700_000_000_007,
                entry: Entry::Call {
                    call: HostCall::Patched { change_id: "v2-fees".into() },
                    reply: Reply::Bool { value: true },
                },
            },
            Record { seq: 5, at_ms: 1_700_000_000_009, entry: Entry::Completed { result: r#"{"ok":true}"#.into() } },
        ]
    }

    #[test]
    fn records_round_trip() {
        for record in sample() {
            assert_eq!(decode(&encode(&record)).unwrap(), record);
        }
    }

    /// The fixture was written by the first release of the format. If this
    /// test fails, a change broke existing users' journals: add a new format
    /// or a serde default instead.
    #[test]
    fn format_1_fixture_stays_readable() {
        let fixture = include_bytes!("../../../tests/fixtures/journal-v1.bin");
        let mut records = Vec::new();
        let mut rest = &fixture[..];
        while !rest.is_empty() {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
            records.push(decode(&tail[..len]).unwrap());
            rest = &tail[len..];
        }
        assert_eq!(records, sample());
    }

    #[test]
    fn unknown_and_damaged_records_are_reported() {
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(decode(&[9, b'{']), Err(DecodeError::UnknownFormat(9))));
        assert!(matches!(decode(&[1, b'{']), Err(DecodeError::Malformed { .. })));
    }

    /// Arbitrary and mutated bytes never panic the decoder: they decode or
    /// give an error (a seeded generator, so a failure replays).
    #[test]
    fn the_decoder_survives_arbitrary_and_mutated_input() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid: Vec<Vec<u8>> = sample().iter().map(encode).collect();
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                valid[(next() % valid.len() as u64) as usize].clone()
            } else {
                (0..next() % 64).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !bytes.is_empty() {
                    let i = (next() % bytes.len() as u64) as usize;
                    match next() % 3 {
                        0 => bytes[i] = next() as u8,
                        1 => bytes.truncate(i),
                        _ => bytes.insert(i, next() as u8),
                    }
                }
            }
            let _ = decode(&bytes);
        }
    }

    /// Writes the fixture; run once with `--ignored` when creating a format.
    #[test]
    #[ignore]
    fn write_fixture() {
        let mut out = Vec::new();
        for record in sample() {
            let bytes = encode(&record);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/journal-v1.bin"), out).unwrap();
    }
}
