//! The fuzz targets (`fuzz/`, run with cargo-fuzz on nightly) driven on
//! stable: every input the fuzzer ever found (tests/fixtures/fuzz/TARGET/)
//! is replayed, then a bounded, seeded batch of mutated inputs runs. A
//! target panics only on a bug.

use crate::support::*;
use cairn_host::fuzzing::{journal_decode, ApiTarget};

/// Inputs the fuzzer found for `target`, kept as regression tests.
fn found(target: &str) -> Vec<Vec<u8>> {
    let dir = repo().join("tests/fixtures/fuzz").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut inputs: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    inputs.sort();
    inputs.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// A mutation as libFuzzer makes them: flipped bits, overwritten, inserted
/// and removed bytes, truncation, and splices of awkward text.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    const SPLICES: [&[u8]; 10] = [
        b"../",
        b"%2e%2e%2f",
        b"\0",
        b"\xff\xfe",
        b"{\"",
        b"\"}",
        b"\xf0\x9f\x98\x80",
        b"99999999999999999999999",
        b"?wait=0&limit=18446744073709551615",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if out.is_empty() { 0 } else { rng.below(out.len() as u64) as usize };
        match rng.below(6) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at] = rng.next() as u8,
            2 => out.insert(at, rng.next() as u8),
            3 if !out.is_empty() => {
                out.remove(at);
            }
            4 => out.truncate(at),
            _ => {
                let splice = SPLICES[rng.below(SPLICES.len() as u64) as usize];
                out.splice(at..at, splice.iter().copied());
            }
        }
    }
    out
}

fn journal_records() -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for fixture in ["journal-v1.bin", "journal-v2.bin"] {
        let fixture = std::fs::read(repo().join("tests/fixtures").join(fixture)).unwrap();
        let mut rest = &fixture[..];
        while rest.len() >= 4 {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
            records.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
    }
    records
}

#[test]
fn the_journal_decoder_survives_its_fuzz_corpus_and_mutations() {
    for input in found("journal_decode") {
        journal_decode(&input);
    }
    let records = journal_records();
    assert!(!records.is_empty());
    let mut rng = Rng(0x000f_a22d_ec0d);
    for _ in 0..20_000 {
        let seed = &records[rng.below(records.len() as u64) as usize];
        journal_decode(&mutate(&mut rng, seed));
    }
}

/// Valid requests (method selector, path, body), as fuzz/seed.py writes them.
const REQUESTS: [(u8, &str, &str); 12] = [
    (0, "health", ""),
    (0, "runs?workflow=order&status=running&limit=5", ""),
    (1, "runs", r#"{"workflow":"order","id":"r1","input":{"order_id":"A-1"}}"#),
    (0, "runs/r1", ""),
    (0, "runs/r1/journal?from=0&limit=10", ""),
    (1, "runs/r1/signals/approve", r#"{"approved":true,"by":"alice"}"#),
    (1, "runs/r1/cancel", ""),
    (1, "runs/r1/terminate", r#"{"reason":"fuzz"}"#),
    (1, "runs/r1/upgrade", r#"{"to":2,"dry_run":true}"#),
    (1, "workflows/order/rollback", r#"{"to":1}"#),
    (1, "workflows/order/upgrade", r#"{"from":1,"to":2,"dry_run":true}"#),
    (2, "workflows/order/versions/1", ""),
];

#[test]
fn the_api_survives_its_fuzz_corpus_and_mutated_requests() {
    let target = ApiTarget::new().unwrap();
    // A deployed workflow, so mutated requests reach runs and versions.
    let hello = std::fs::read(wasm("hello")).unwrap();
    target.upload(&hello);
    for input in found("api_request") {
        target.request(&input);
    }
    let seeds: Vec<Vec<u8>> = REQUESTS
        .iter()
        .map(|(method, path, body)| [&[*method][..], path.as_bytes(), b"\n", body.as_bytes()].concat())
        .collect();
    let mut rng = Rng(0x0a91_f022);
    for _ in 0..3_000 {
        let seed = &seeds[rng.below(seeds.len() as u64) as usize];
        target.request(&mutate(&mut rng, seed));
    }
}

#[test]
fn uploads_survive_the_fuzz_corpus_and_mutated_components() {
    let target = ApiTarget::new().unwrap();
    for input in found("upload") {
        target.upload(&input);
    }
    let components: Vec<Vec<u8>> = ["hello", "noop"].iter().map(|name| std::fs::read(wasm(name)).unwrap()).collect();
    target.upload(&[]);
    target.upload(b"\0asm");
    let mut rng = Rng(0x0bad_c0de);
    for _ in 0..80 {
        let seed = &components[rng.below(components.len() as u64) as usize];
        target.upload(&mutate(&mut rng, seed));
    }
}
