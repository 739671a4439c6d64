//! Hostile guests fail their own run with a clear error; the host and the
//! next run are unharmed.

use crate::support::*;
use cairn_host::runtime::{RunError, RunOutcome, Runtime, StartRequest};
use cairn_host::sandbox::Limits;
use cairn_host::store::{RunStatus, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_fail_only_their_own_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let limits = Limits { max_memory_bytes: 64 << 20, step_budget_ms: 300, ..Limits::default() };
    let runtime = Runtime::new(store.clone(), limits).unwrap();
    let load = |name: &str| {
        let runtime = runtime.clone();
        let (name, path) = (name.to_owned(), wasm(name));
        async move { runtime.components().load_bytes(&name, std::fs::read(path).unwrap()).await.unwrap() }
    };
    let hostile = load("hostile").await;
    let hello = load("hello").await;

    let cases = [
        ("loop", "runaway", "without calling the host"),
        ("memory", "out-of-memory", "memory limit of 64 MiB"),
        ("recursion", "stack-overflow", "overflowed its"),
        ("trap", "trap", "trapped"),
        ("huge-result", "contract-violation", "over the limit of 4194304 bytes"),
        ("huge-input", "contract-violation", "the activity input is 5242882 bytes"),
        ("host-loop", "contract-violation", "the journal reached 100000 entries"),
    ];
    for (mode, kind, message) in cases {
        let meta = runtime
            .start(StartRequest {
                workflow: "hostile".into(),
                component: hostile.clone(),
                input: format!(r#"{{"mode":"{mode}"}}"#),
                run_id: Some(format!("hostile-{mode}")),
                version: None,
            })
            .await
            .unwrap();
        match runtime.drive(&meta.id).await {
            Err(RunError::Trapped { failure, .. } | RunError::Contract { failure, .. }) => {
                assert_eq!(failure.kind, kind, "{mode}: {failure}");
                assert!(failure.message.contains(message), "{mode}: {failure}");
            }
            other => panic!("{mode}: expected a trapped run, got {other:?}"),
        }
        let meta = store.run(&meta.id).await.unwrap().unwrap();
        assert_eq!(meta.status, RunStatus::Failed);
        // Traps are not journaled: only the start entry is there.
        assert_eq!(store.journal(&meta.id).await.unwrap().len(), 1);

        // The same process still runs a healthy workflow to completion.
        let ok = runtime
            .start(StartRequest {
                workflow: "hello".into(),
                component: hello.clone(),
                input: r#"{"name":"after"}"#.into(),
                run_id: Some(format!("after-{mode}")),
                version: None,
            })
            .await
            .unwrap();
        assert_eq!(
            runtime.drive(&ok.id).await.unwrap(),
            RunOutcome::Completed { result: r#"{"greeting":"Hello, after!"}"#.into() }
        );
    }
}

#[test]
fn a_runaway_workflow_fails_with_a_clear_message_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("hostile"))
        .args(["--input", r#"{"mode":"loop"}"#, "--step-budget-ms", "200", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json(stderr(&output).lines().last().unwrap());
    assert_eq!(report["status"], "failed");
    assert_eq!(report["failure"]["kind"], "runaway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_pending_handles_are_disarmed_when_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let runtime = Runtime::new(store.clone(), Limits::default()).unwrap();
    let hostile = runtime.components().load_bytes("hostile", std::fs::read(wasm("hostile")).unwrap()).await.unwrap();
    let request = StartRequest {
        workflow: "hostile".into(),
        component: hostile,
        input: r#"{"mode":"handles"}"#.into(),
        run_id: Some("many".into()),
        version: None,
    };
    runtime.start(request).await.unwrap();
    assert_eq!(runtime.drive("many").await.unwrap(), RunOutcome::Completed { result: r#"{"pending":5000}"#.into() });
    assert_eq!(store.journal("many").await.unwrap().len(), 5002);
    assert!(store.timers(&[0]).await.unwrap().is_empty(), "the ended run's timers are disarmed");
    assert!(store.check().await.unwrap().problems.is_empty());
}

/// A workflow sees an in-process activity's result before its entry is
/// durable (the entry rides with the next journaled call or the end). When
/// the guest fails instead, right away or after computing past an epoch
/// tick, the step it saw is still journaled: nothing it did is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_seen_just_before_a_failure_stays_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let limits = Limits { step_budget_ms: 300, ..Limits::default() };
    let runtime = Runtime::new(store.clone(), limits).unwrap();
    let noop = runtime.components().load_bytes("noop", std::fs::read(wasm("noop")).unwrap()).await.unwrap();
    runtime.activities().register("noop", &noop).unwrap();
    let hostile = runtime.components().load_bytes("hostile", std::fs::read(wasm("hostile")).unwrap()).await.unwrap();
    for (mode, kind) in [("trap-after-step", "trap"), ("loop-after-step", "runaway")] {
        let request = StartRequest {
            workflow: "hostile".into(),
            component: hostile.clone(),
            input: format!(r#"{{"mode":"{mode}"}}"#),
            run_id: Some(mode.into()),
            version: None,
        };
        runtime.start(request).await.unwrap();
        match runtime.drive(mode).await {
            Err(RunError::Trapped { failure, .. }) => assert_eq!(failure.kind, kind, "{mode}: {failure}"),
            other => panic!("{mode}: expected a failed run, got {other:?}"),
        }
        assert_eq!(store.run(mode).await.unwrap().unwrap().status, RunStatus::Failed);
        let journal = store.journal(mode).await.unwrap();
        let kinds: Vec<String> = journal.iter().map(|r| format!("{:?}", r.entry)).collect();
        // The start, the schedule and the await with the activity's result.
        assert_eq!(journal.len(), 3, "{mode}: {kinds:?}");
        assert!(kinds[2].contains("seen"), "{mode}: {kinds:?}");
        assert!(store.check().await.unwrap().problems.is_empty());
    }
}
