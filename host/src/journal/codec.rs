//! The on-disk encoding of journal records.
//!
//! Every stored record starts with a one-byte format tag; the rest is that
//! format's body. Format 1 is self-describing JSON (entry and call kinds are
//! named, fields are named). Format 2, which this host writes, is a compact
//! binary layout (`binary.rs`) that decodes several times faster. A new
//! format gets a new tag and the old decoders stay: a journal written by an
//! older host must always be readable by a newer one
//! (`tests/fixtures/journal-v1.bin` and `journal-v2.bin` prove it).

use super::binary;
use super::entry::Record;
use thiserror::Error;

/// The format this host writes.
pub const CURRENT_FORMAT: u8 = 2;

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
    #[error("journal record (format {format}) does not parse: {reason}; the store may be damaged (run `cairn check`)")]
    Malformed {
        /// The format tag.
        format: u8,
        /// What the parser said.
        reason: String,
    },
}

/// Encodes a record in the current format.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(CURRENT_FORMAT);
    binary::encode(record, &mut out);
    out
}

/// Encodes a record in format 1 (JSON), as hosts before format 2 wrote it.
pub fn encode_v1(record: &Record) -> Vec<u8> {
    let mut out = vec![1];
    // Serialising these plain types into a Vec cannot fail.
    serde_json::to_writer(&mut out, record).expect("journal records always serialise");
    out
}

/// Decodes a record of any format this host knows.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let (&format, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match format {
        1 => serde_json::from_slice(body).map_err(|e| DecodeError::Malformed { format, reason: e.to_string() }),
        2 => binary::decode(body).map_err(|reason| DecodeError::Malformed { format, reason: reason.to_owned() }),
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

    /// Every kind of entry, call and reply the sample leaves out.
    fn more() -> Vec<Record> {
        let call =
            |seq, call, reply| Record { seq, at_ms: 1_700_000_000_100 + seq, entry: Entry::Call { call, reply } };
        vec![
            call(6, HostCall::StartTimer { ms: u64::MAX }, Reply::Handle { handle: u32::MAX }),
            call(
                7,
                HostCall::StartChild { workflow: "child".into(), input: "[1,2]".into() },
                Reply::Handle { handle: 7 },
            ),
            call(8, HostCall::WaitSignal { name: "approve ✓".into() }, Reply::Handle { handle: 8 }),
            call(9, HostCall::Cancel { handle: 7 }, Reply::Unit),
            call(10, HostCall::Patched { change_id: "old".into() }, Reply::Bool { value: false }),
            call(11, HostCall::SetCustomStatus { status: "\"half\"".into() }, Reply::Unit),
            call(
                12,
                HostCall::Await { handle: 8 },
                Reply::Completed {
                    handle: 8,
                    completion: Completion::Err(Failure {
                        kind: "k".into(),
                        message: String::new(),
                        details: Some("{}".into()),
                    }),
                },
            ),
            Record {
                seq: 13,
                at_ms: 0,
                entry: Entry::VersionSwitch {
                    from_version: None,
                    to_version: 2,
                    from_sha256: "a".into(),
                    to_sha256: "b".into(),
                },
            },
            Record {
                seq: 14,
                at_ms: 1,
                entry: Entry::VersionSwitch {
                    from_version: Some(2),
                    to_version: 3,
                    from_sha256: "b".into(),
                    to_sha256: "c".into(),
                },
            },
            Record { seq: 15, at_ms: 2, entry: Entry::Failed { failure: Failure::cancelled() } },
            Record { seq: 16, at_ms: 3, entry: Entry::Terminated { reason: "operator".into() } },
        ]
    }

    /// Kinds of entry added after the v2 fixture was written.
    fn newer() -> Vec<Record> {
        let call = |seq, call| Record { seq, at_ms: 5, entry: Entry::Call { call, reply: Reply::Unit } };
        vec![
            Record { seq: 17, at_ms: 4, entry: Entry::ContinuedAsNew { input: "{\"month\":2}".into() } },
            call(
                18,
                HostCall::CompleteUpdate {
                    id: "u-1".into(),
                    outcome: Completion::Err(Failure::new("no-stock", "sold out")),
                },
            ),
            call(19, HostCall::CompleteUpdate { id: "u-2".into(), outcome: Completion::Ok("7".into()) }),
        ]
    }

    #[test]
    fn records_round_trip_in_both_formats() {
        for record in sample().into_iter().chain(more()).chain(newer()) {
            let current = encode(&record);
            assert_eq!(current[0], CURRENT_FORMAT);
            assert_eq!(decode(&current).unwrap(), record);
            assert_eq!(decode(&encode_v1(&record)).unwrap(), record);
        }
    }

    #[test]
    fn format_2_is_smaller_than_json() {
        for record in sample().into_iter().chain(more()).chain(newer()) {
            assert!(encode(&record).len() < encode_v1(&record).len(), "{record:?}");
        }
    }

    fn read_fixture(fixture: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        let mut rest = fixture;
        while !rest.is_empty() {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
            records.push(decode(&tail[..len]).unwrap());
            rest = &tail[len..];
        }
        records
    }

    /// The fixtures were written by the first release of each format. If
    /// this test fails, a change broke existing users' journals: add a new
    /// format instead.
    #[test]
    fn format_1_and_2_fixtures_stay_readable() {
        assert_eq!(read_fixture(include_bytes!("../../../tests/fixtures/journal-v1.bin")), sample());
        let v2 = include_bytes!("../../../tests/fixtures/journal-v2.bin");
        assert_eq!(v2[4], 2, "the v2 fixture holds format-2 records");
        assert_eq!(read_fixture(v2), sample().into_iter().chain(more()).collect::<Vec<_>>());
    }

    #[test]
    fn unknown_and_damaged_records_are_reported() {
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(decode(&[9, b'{']), Err(DecodeError::UnknownFormat(9))));
        assert!(matches!(decode(&[1, b'{']), Err(DecodeError::Malformed { format: 1, .. })));
        let mut good = encode(&sample()[1]);
        let truncated = &good[..good.len() - 1];
        assert!(matches!(decode(truncated), Err(DecodeError::Malformed { format: 2, .. })));
        good.push(0);
        assert!(matches!(decode(&good), Err(DecodeError::Malformed { format: 2, .. })));
        // A length that claims more bytes than the record has.
        assert!(matches!(decode(&[2, 1, 1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]), Err(DecodeError::Malformed { .. })));
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
        let records: Vec<Record> = sample().into_iter().chain(more()).collect();
        let valid: Vec<Vec<u8>> = records.iter().map(encode).chain(records.iter().map(encode_v1)).collect();
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
            if let Ok(record) = decode(&bytes) {
                assert_eq!(decode(&encode(&record)).unwrap(), record);
            }
        }
    }

    /// Writes the current format's fixture; run once with `--ignored` when
    /// creating a format (and rename the file after the format).
    #[test]
    #[ignore]
    fn write_fixture() {
        let mut out = Vec::new();
        for record in sample().into_iter().chain(more()) {
            let bytes = encode(&record);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        let path = format!("{}/../tests/fixtures/journal-v{CURRENT_FORMAT}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(path, out).unwrap();
    }
}
