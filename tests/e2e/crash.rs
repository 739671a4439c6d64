//! Crash safety: a run killed with SIGKILL at any point resumes from its
//! journal and ends exactly as an uninterrupted run does.

use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs the order example with the test-only crash point: the process kills
/// itself with SIGKILL right after its `n`th durable commit.
fn run_killed_after(data: &Path, id: &str, n: u32) -> std::process::Output {
    order_command(data, id).env("CAIRN_CRASH_AFTER_COMMITS", n.to_string()).output().unwrap()
}

fn killed(output: &std::process::Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal() == Some(libc_sigkill())
}

fn libc_sigkill() -> i32 {
    9
}

/// `cairn check` finds nothing wrong.
pub fn assert_store_is_consistent(data: &Path) {
    let output = cairn().args(["check", "--json", "--data"]).arg(data).output().unwrap();
    let report = json(&stdout(&output));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn the_integrity_check_reports_a_damaged_journal() {
    use cairn_host::journal::{Entry, Record};
    use cairn_host::store::{Store, Write};
    let dir = tempfile::tempdir().unwrap();
    expect_success(&order_command(dir.path(), "order").output().unwrap());
    assert_store_is_consistent(dir.path());
    // Damage it the way a buggy writer would: an entry past a gap, and a
    // timer for a run that does not exist.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let record = Record { seq: 42, at_ms: 0, entry: Entry::Completed { result: "null".into() } };
        let timer = Write::PutTimer { due_ms: 1, run_id: "ghost".into(), handle: 1 };
        store.commit(vec![Write::Append { run_id: "order".into(), record }, timer]).await.unwrap();
    });

    let text = check_reports_problems(dir.path());
    assert!(text.contains("run order: journal has seq 42 where 10 was expected (a gap)"), "{text}");
    assert!(text.contains("timer #1 belongs to run ghost, which does not exist"), "{text}");
}

/// Every activity completion is consumed exactly once.
fn assert_no_completion_twice(journal: &[Value]) {
    let mut consumed: HashMap<u64, usize> = HashMap::new();
    for r in journal {
        if r["call"]["call"] == "await" {
            *consumed.entry(r["call"]["handle"].as_u64().unwrap()).or_default() += 1;
        }
    }
    assert!(consumed.values().all(|n| *n == 1), "a completion was journaled twice: {consumed:?}");
}

#[test]
fn resumes_after_kill_at_every_commit() {
    let reference = tempfile::tempdir().unwrap();
    let expected_result = expect_success(&order_command(reference.path(), "order").output().unwrap());
    let expected_journal = journal_modulo_time(reference.path(), "order");

    let mut kills = 0;
    for n in 1.. {
        let dir = tempfile::tempdir().unwrap();
        let first = run_killed_after(dir.path(), "order", n);
        if !killed(&first) {
            // The run needs fewer than n commits: every point was covered.
            assert_eq!(expect_success(&first), expected_result);
            break;
        }
        kills += 1;
        let resumed = order_command(dir.path(), "order").output().unwrap();
        assert_eq!(expect_success(&resumed), expected_result, "after a kill at commit {n}");
        let journal = journal_modulo_time(dir.path(), "order");
        assert_no_completion_twice(&journal);
        assert_eq!(journal, expected_journal, "journal after a kill at commit {n}");
        assert_store_is_consistent(dir.path());
        assert!(n < 200, "the run never finished without being killed");
    }
    assert!(kills >= 10, "expected the run to span many commits, killed only {kills} times");
}

#[test]
fn survives_being_killed_again_and_again() {
    let reference = tempfile::tempdir().unwrap();
    let expected_result = expect_success(&order_command(reference.path(), "order").output().unwrap());
    let expected_journal = journal_modulo_time(reference.path(), "order");

    // Every process dies after its 2nd commit; each still moves the run on.
    let dir = tempfile::tempdir().unwrap();
    let mut restarts = 0;
    loop {
        let output = run_killed_after(dir.path(), "order", 2);
        if !killed(&output) {
            assert_eq!(expect_success(&output), expected_result);
            break;
        }
        restarts += 1;
        assert!(restarts < 100, "no progress across restarts");
    }
    assert!(restarts >= 3, "only {restarts} restarts");
    assert_store_is_consistent(dir.path());
    let journal = journal_modulo_time(dir.path(), "order");
    assert_no_completion_twice(&journal);
    assert_eq!(journal, expected_journal);
}

#[test]
fn a_durable_timer_fires_on_time_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let mut cmd = cairn();
        cmd.arg("run")
            .arg(wasm("script"))
            .args(["--id", "sleeper", "--input", r#"[{"sleep_ms": 3000}]"#, "--data"])
            .arg(dir.path());
        cmd
    };
    let started = Instant::now();
    let mut child = run().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let output = run().output().unwrap();
    assert_eq!(json(&expect_success(&output)), serde_json::json!([{ "ok": null }]));
    let journal = journal(dir.path(), "sleeper");
    assert_eq!(kinds(&journal), ["started", "start-timer", "await", "completed"]);
    // The timer kept its original due time: it fired 3 s after it was set
    // by the first process, not 3 s after the restart.
    let set_at = journal[1]["at_ms"].as_u64().unwrap();
    let fired_at = journal[2]["at_ms"].as_u64().unwrap();
    assert!(fired_at >= set_at + 3000, "fired early: {}", fired_at - set_at);
    assert!(fired_at < set_at + 3800, "the timer restarted instead of keeping its due time: {} ms", fired_at - set_at);
    assert!(started.elapsed() < Duration::from_millis(3900));
}

/// The write-ahead log's records (after the 64-byte file header; each with
/// a 16-byte header: len, generation, crc), as (start, len) pairs of the
/// current generation, read the way the store reads them.
fn log_records(data: &Path) -> Vec<(usize, usize)> {
    const FILE_HEADER: usize = 64;
    let bytes = std::fs::read(data.join("cairn.wal")).unwrap();
    assert_eq!(bytes.get(..8), Some(&b"CAIRNWAL"[..]), "the log starts with its header");
    let Some(generation) = bytes.get(FILE_HEADER + 4..FILE_HEADER + 12) else { return Vec::new() };
    let mut out = Vec::new();
    let mut at = FILE_HEADER;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || &bytes[at + 4..at + 12] != generation || at + 16 + len > bytes.len() {
            break;
        }
        out.push((at, len));
        at += 16 + len;
    }
    out
}

/// `cairn check` on `dir` finds problems (exit 1); its report.
fn check_reports_problems(dir: &Path) -> String {
    let output = cairn().args(["check", "--data"]).arg(dir).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    stdout(&output)
}

/// `cairn check --salvage` on `dir`; what it said it gave up (stderr).
fn salvage(dir: &Path) -> String {
    stderr(&cairn().args(["check", "--salvage", "--data"]).arg(dir).output().unwrap())
}

/// Files in `dir` whose names start with `prefix`.
fn kept_copies(dir: &Path, prefix: &str) -> Vec<String> {
    let names = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok());
    names.filter(|name| name.starts_with(prefix)).collect()
}

/// The order run in `dir` goes on to its usual result.
fn order_resumes(dir: &Path) {
    let expected = read_json(&repo().join("examples/order/expected-output.json"));
    assert_eq!(json(&expect_success(&order_command(dir, "order").output().unwrap())), expected);
}

/// One flipped bit in the middle of the log after an unclean stop is
/// damage, not a torn tail: the store refuses to open and says where and
/// what to do, `cairn check` reports it, and `cairn check --salvage` opens
/// the store with the intact records before it, keeping the damaged log.
#[test]
fn a_damaged_log_is_reported_and_refused_never_absorbed() {
    let dir = tempfile::tempdir().unwrap();
    // Killed after its 10th commit (the first ones store the components):
    // the run's steps since are in the log only.
    assert!(killed(&run_killed_after(dir.path(), "order", 10)));
    let records = log_records(dir.path());
    assert!(records.len() >= 3, "the log holds the run's steps: {records:?}");
    let (start, _) = records[1];
    let path = dir.path().join("cairn.wal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[start + 16 + 3] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();

    let report = check_reports_problems(dir.path());
    assert!(report.contains(&format!("cairn.wal is damaged at byte {start}")), "{report}");
    assert!(report.contains("--salvage"), "{report}");
    // Resuming the run refuses too, and changes nothing.
    let output = order_command(dir.path(), "order").output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&format!("is damaged at byte {start}")), "{}", stderr(&output));
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the damaged log was left as it was");

    let said = salvage(dir.path());
    assert!(said.contains("the store opened with the 1 intact records before it"), "{said}");
    let kept = kept_copies(dir.path(), "cairn.wal.damaged-");
    assert_eq!(kept.len(), 1, "the damaged log is kept: {kept:?}");
    assert_store_is_consistent(dir.path());
    assert_store_is_consistent(dir.path());
    // The run goes on from what was kept.
    order_resumes(dir.path());
}

/// A log removed after an unclean stop is caught (the store records
/// whether it was closed cleanly); after a clean close it is not needed.
#[test]
fn a_missing_log_after_an_unclean_stop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(killed(&run_killed_after(dir.path(), "order", 10)));
    assert!(!log_records(dir.path()).is_empty(), "the log holds steps");
    std::fs::remove_file(dir.path().join("cairn.wal")).unwrap();
    let report = check_reports_problems(dir.path());
    assert!(
        report.contains("cairn.wal is missing, but the store in this directory was not closed cleanly"),
        "{report}"
    );
    let said = salvage(dir.path());
    assert!(said.contains("was missing"), "{said}");
    assert_store_is_consistent(dir.path());

    // Closed cleanly (a completed `cairn run`), a missing log loses nothing.
    let clean = tempfile::tempdir().unwrap();
    expect_success(&order_command(clean.path(), "order").output().unwrap());
    std::fs::remove_file(clean.path().join("cairn.wal")).unwrap();
    assert_store_is_consistent(clean.path());
}

/// A log cut short exactly at a record boundary looks like a log that
/// ends there; its header says how long it was made, so the cut is caught.
#[test]
fn a_log_cut_short_at_a_record_boundary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(killed(&run_killed_after(dir.path(), "order", 10)));
    let records = log_records(dir.path());
    assert!(records.len() >= 2, "the log holds steps: {records:?}");
    let path = dir.path().join("cairn.wal");
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(records[1].0 as u64).unwrap();

    let report = check_reports_problems(dir.path());
    assert!(report.contains(&format!("cairn.wal is {} bytes, but it was made", records[1].0)), "{report}");
    assert!(report.contains("it was cut short"), "{report}");
    let said = salvage(dir.path());
    assert!(said.contains("was cut short"), "{said}");
    assert_store_is_consistent(dir.path());
    order_resumes(dir.path());
}

/// Another store's log put in place of this one's is refused: replaying it
/// would write that store's steps into this one.
#[test]
fn another_stores_log_is_refused() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&ours, &theirs] {
        assert!(killed(&run_killed_after(dir.path(), "order", 10)));
    }
    std::fs::copy(theirs.path().join("cairn.wal"), ours.path().join("cairn.wal")).unwrap();
    let report = check_reports_problems(ours.path());
    assert!(report.contains("cairn.wal is not this store's write-ahead log: its header names store"), "{report}");
    let said = salvage(ours.path());
    assert!(said.contains("was not this store's log"), "{said}");
    assert_store_is_consistent(ours.path());
    assert_eq!(kept_copies(ours.path(), "cairn.wal.foreign-").len(), 1, "the foreign log is kept");
}

/// A redb file that lost a durable commit (redb repairs damage by rolling
/// back to an earlier commit; here an older copy is put back) is behind its
/// log: refused and reported, where before the log was silently ignored.
#[test]
fn a_store_file_behind_its_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(killed(&run_killed_after(dir.path(), "order", 8)));
    let older = dir.path().join("older.redb");
    std::fs::copy(dir.path().join("cairn.redb"), &older).unwrap();
    // Resumed (its open checkpoints the log and moves to a new generation),
    // killed again with steps in the log.
    assert!(killed(&run_killed_after(dir.path(), "order", 2)));
    assert!(!log_records(dir.path()).is_empty(), "the log holds steps");
    std::fs::copy(&older, dir.path().join("cairn.redb")).unwrap();

    let report = check_reports_problems(dir.path());
    assert!(report.contains("cairn.redb is behind its write-ahead log"), "{report}");
    let said = salvage(dir.path());
    assert!(said.contains("was behind its log"), "{said}");
    assert_store_is_consistent(dir.path());
}
