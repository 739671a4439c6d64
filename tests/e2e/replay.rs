//! Replay reproduces completed runs and reports divergent code at the
//! right seq.

use crate::support::*;
use std::path::Path;

fn run_baseline(data: &Path) {
    let output = cairn()
        .arg("run")
        .arg(example_wasm("steps_baseline"))
        .args(activity_args(&["flaky"]))
        .args(["--id", "steps", "--input", r#"{"sku":"mug","amount":42}"#, "--data"])
        .arg(data)
        .output()
        .unwrap();
    expect_success(&output);
}

fn replay(data: &Path, id: &str, with: Option<&Path>) -> std::process::Output {
    let mut cmd = cairn();
    cmd.args(["replay", id, "--data"]).arg(data);
    if let Some(with) = with {
        cmd.arg("--with").arg(with);
    }
    cmd.output().unwrap()
}

#[test]
fn replay_of_completed_example_runs_reproduces_them() {
    let dir = tempfile::tempdir().unwrap();
    expect_success(&order_command(dir.path(), "order").output().unwrap());
    run_baseline(dir.path());
    let output = cairn()
        .arg("run")
        .arg(wasm("hello"))
        .args(["--id", "hello", "--input", r#"{"name":"Ada"}"#, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    expect_success(&output);
    let before = journal(dir.path(), "order");
    for id in ["order", "steps", "hello"] {
        let output = replay(dir.path(), id, None);
        assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
        assert!(stdout(&output).contains("reproduced all"), "{}", stdout(&output));
    }
    // Replay writes nothing.
    assert_eq!(journal(dir.path(), "order"), before);
}

#[test]
fn replay_with_changed_code_reports_the_first_diverging_seq() {
    let dir = tempfile::tempdir().unwrap();
    run_baseline(dir.path());
    assert_eq!(
        kinds(&journal(dir.path(), "steps")),
        ["started", "schedule-activity", "await", "start-timer", "await", "schedule-activity", "await", "completed"]
    );
    let cases = [
        ("steps_renamed", 5, "flaky.echo", "flaky.fail-twice"),
        ("steps_changed_arg", 5, "\"amount\":42", "\"amount\":43"),
        ("steps_extra_call", 5, "schedule-activity(flaky.echo", "start-timer(5 ms)"),
        ("steps_missing_call", 3, "start-timer(20 ms)", "schedule-activity(flaky.echo"),
        ("steps_early_return", 3, "start-timer(20 ms)", "an early return"),
    ];
    for (variant, seq, expected, actual) in cases {
        let output = replay(dir.path(), "steps", Some(&example_wasm(variant)));
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(3), "{variant}: {text}{}", stderr(&output));
        assert!(text.contains(&format!("diverged at seq {seq}")), "{variant}: {text}");
        let expected_line = text.lines().find(|l| l.trim_start().starts_with("expected:")).unwrap();
        let actual_line = text.lines().find(|l| l.trim_start().starts_with("actual:")).unwrap();
        assert!(expected_line.contains(expected), "{variant}: {text}");
        assert!(actual_line.contains(actual), "{variant}: {text}");
    }
    // The baseline itself still replays cleanly.
    assert_eq!(replay(dir.path(), "steps", Some(&example_wasm("steps_baseline"))).status.code(), Some(0));
}

#[test]
fn a_different_result_than_the_recorded_one_is_a_divergence() {
    // `hostile` in "ok" mode makes no journaled call and returns {"ok":true}.
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("hostile"))
        .args(["--id", "h", "--input", r#"{"mode":"ok"}"#, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    expect_success(&output);
    // `hello` makes no call either, but fails on this input: same calls,
    // different result.
    let output = replay(dir.path(), "h", Some(&wasm("hello")));
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("diverged at seq 1"), "{text}");
    assert!(text.contains(r#"expected: return {"ok":true}"#), "{text}");
    assert!(text.contains("actual:   return failure invalid-input"), "{text}");
}

#[test]
fn replay_all_checks_every_unfinished_run_on_this_binary() {
    let dir = tempfile::tempdir().unwrap();
    expect_success(&order_command(dir.path(), "done").output().unwrap());
    // Killed after its start and first steps: unfinished.
    let output = order_command(dir.path(), "halfway").env("CAIRN_CRASH_AFTER_COMMITS", "3").output().unwrap();
    assert!(!output.status.success());
    let output = cairn().args(["replay", "--all", "--data"]).arg(dir.path()).output().unwrap();
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains("run halfway: replay reproduced"), "{text}");
    assert!(text.contains("1 unfinished runs replayed, 0 diverged"), "{text}");
}

/// The CI gate README recommends: export a journal, replay it offline
/// against the same code. A workflow that reads its run id must pass too,
/// so the replay runs under the exported run's own id.
#[test]
fn offline_replay_of_an_unmodified_export_passes_for_a_workflow_that_reads_its_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("mirror"))
        .args(["--id", "order-77", "--input", r#"{"n":1}"#, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(expect_success(&output), r#"{"run_id":"order-77","input":{"n":1}}"#);
    let export = cairn().args(["journal", "order-77", "--json", "--data"]).arg(dir.path()).output().unwrap();
    let export = expect_success(&export);
    let lines: Vec<&str> = export.lines().collect();
    assert!(lines.iter().all(|l| json(l)["run_id"] == "order-77" && json(l)["generation"] == 0), "{export}");
    let file = dir.path().join("order-77.jsonl");
    std::fs::write(&file, &export).unwrap();
    let replay = |file: &Path| {
        cairn().args(["replay", "--journal"]).arg(file).arg("--with").arg(wasm("mirror")).output().unwrap()
    };
    let output = replay(&file);
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("reproduced all") && stdout(&output).contains("finished"), "{}", stdout(&output));

    // A line taken out is named as missing, not reported as a divergence.
    assert!(lines.len() >= 4, "{export}");
    let gapped: Vec<&str> = lines.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| *l).collect();
    std::fs::write(&file, gapped.join("\n")).unwrap();
    let output = replay(&file);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("seq 2 is missing"), "{}", stderr(&output));
}
