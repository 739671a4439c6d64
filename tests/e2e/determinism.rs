//! Determinism: what a workflow reads through plain Rust std (clocks,
//! randomness, HashMap order) is identical on replay.

use crate::support::*;

fn run_clockwork(data: &std::path::Path, id: &str) -> serde_json::Value {
    let output = cairn().arg("run").arg(wasm("clockwork")).args(["--id", id, "--data"]).arg(data).output().unwrap();
    json(&expect_success(&output))
}

#[test]
fn std_clocks_and_randomness_are_identical_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let seen = run_clockwork(dir.path(), "clock-1");
    let journal = journal(dir.path(), "clock-1");

    // Wall clock = workflow time: the start entry's time before the sleep,
    // the timer's completion time after it.
    let started_at = journal[0]["at_ms"].as_u64().unwrap();
    assert_eq!(seen["wall_before_ms"], started_at);
    let fired_at = journal[2]["at_ms"].as_u64().unwrap();
    assert_eq!(seen["wall_after_ms"], fired_at);
    assert_eq!(seen["monotonic_elapsed_ms"], fired_at - started_at);
    assert!(fired_at - started_at >= 30);
    // Seeded, not zeros.
    let random: Vec<u64> = seen["random"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(random.iter().any(|b| *b != 0));

    // Replay re-executes the code and compares its result with the journal:
    // exit 0 means every value above came out the same.
    let output = cairn().args(["replay", "clock-1", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));

    // A second run gets its own seed.
    let other = run_clockwork(dir.path(), "clock-2");
    assert_ne!(other["random"], seen["random"]);
    assert_ne!(other["sdk_random"], seen["sdk_random"]);
}

#[test]
fn a_resumed_run_sees_the_values_it_saw_before() {
    // Kill the run right after its start and timer entries are durable;
    // the resumed run re-reads the clock and randomness from the journal's
    // time and the run's seed and must return what a straight run returns.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = cairn();
    cmd.arg("run").arg(wasm("clockwork")).args(["--id", "c", "--data"]).arg(dir.path());
    // 2 commits store the component and its compiled artifact, then start,
    // then the timer entry.
    let output = cmd.env("CAIRN_CRASH_AFTER_COMMITS", "4").output().unwrap();
    assert!(!output.status.success());
    let resumed = run_clockwork(dir.path(), "c");
    let journal = journal(dir.path(), "c");
    assert_eq!(resumed["wall_before_ms"], journal[0]["at_ms"]);
    assert_eq!(json(journal.last().unwrap()["result"].as_str().unwrap()), resumed);
    let output = cairn().args(["replay", "c", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}
