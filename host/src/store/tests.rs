//! The store's own tests, run on every backend: the rules of the module
//! docs (duplicate seqs, retried groups, continue-as-new, stale
//! completions) and the paged run queries.

use super::*;
use crate::journal::{Completion, Entry, HostCall, Reply};

/// A journal record for store tests.
pub(crate) fn record(seq: u64) -> Record {
    let entry = Entry::Call {
        call: HostCall::Await { handle: seq as u32 },
        reply: Reply::Completed { handle: seq as u32, completion: Completion::Ok(format!("{{\"n\":{seq}}}")) },
    };
    Record { seq, at_ms: 1_000 + seq, entry }
}

fn meta(generation: u32) -> RunMeta {
    RunMeta {
        id: "r".into(),
        workflow: "w".into(),
        component_sha256: "ab".into(),
        version: None,
        status: RunStatus::Running,
        input: "{}".into(),
        result: None,
        failure: None,
        custom_status: None,
        parent: None,
        generation,
        shard: 0,
        created_ms: 1,
        updated_ms: 1,
    }
}

/// A store in `dir` holding run `r` in `generation`, with its start.
async fn store_with_run(dir: &Path, generation: u32) -> Store {
    let store = Store::open_with(dir, false).unwrap();
    let start = vec![Write::PutRun(meta(generation)), Write::Append { run_id: "r".into(), record: record(0) }];
    store.commit(start).await.unwrap();
    store
}

fn completion(generation: Option<u32>, text: &str) -> Write {
    let completion = StoredCompletion { completion: Completion::Ok(text.into()), arrival: 1, generation };
    Write::PutCompletion { run_id: "r".into(), handle: 3, completion }
}

/// Handle numbers start over with each generation: a completion for an
/// earlier generation's handle 3 (a child that outlived its parent's
/// continue-as-new) must not take the place of the current one's.
#[tokio::test]
async fn a_completion_of_a_generation_the_run_left_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_run(dir.path(), 1).await;
    store.commit(vec![completion(Some(1), "\"current\"")]).await.unwrap();
    store.commit(vec![completion(Some(0), "\"stale\"")]).await.unwrap();
    let stored = store.completions("r").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1.completion, Completion::Ok("\"current\"".into()), "{stored:?}");
    // Rows of old hosts carry no generation and are taken as they are.
    store.commit(vec![completion(None, "\"legacy\"")]).await.unwrap();
    assert_eq!(store.completions("r").await.unwrap()[0].1.completion, Completion::Ok("\"legacy\"".into()));
}

/// A continue-as-new batch retried after it landed is taken as landed
/// whole: the ended generation's entries riding in it do not go into
/// the new generation's journal.
#[tokio::test]
async fn a_retried_continue_as_new_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_run(dir.path(), 0).await;
    let batch = vec![
        Write::Append { run_id: "r".into(), record: record(1) },
        Write::ContinueAsNew { meta: Box::new(meta(1)), start: Box::new(record(0)) },
    ];
    store.commit(batch.clone()).await.unwrap();
    store.commit(batch).await.unwrap();
    assert_eq!(store.journal("r").await.unwrap(), vec![record(0)], "the new generation's journal");
    let history = store.history("r", 0).await.unwrap();
    assert_eq!(history.len(), 3, "seq 0, seq 1 and the continued-as-new entry: {history:?}");
    assert!(matches!(history[2].entry, Entry::ContinuedAsNew { .. }), "{history:?}");
}

/// A long journal is read in two halves at once: the halves meet
/// exactly, and the neighbouring runs' entries stay out.
#[tokio::test]
async fn a_long_journal_reads_back_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), false).unwrap();
    let long = 4096 + 1001;
    let mut batch: Vec<Write> =
        (0..long).map(|seq| Write::Append { run_id: "r".into(), record: record(seq) }).collect();
    for neighbour in ["q", "r0", "s"] {
        batch.extend((0..3).map(|seq| Write::Append { run_id: neighbour.into(), record: record(seq) }));
    }
    store.commit(batch).await.unwrap();
    let journal = store.journal("r").await.unwrap();
    assert_eq!(journal.len() as u64, long);
    assert!(journal.iter().zip(0..).all(|(r, seq)| *r == record(seq)), "records out of order or changed");
    // Short journals take the one-thread path.
    assert_eq!(store.journal("s").await.unwrap(), (0..3).map(record).collect::<Vec<_>>());
    assert!(store.journal("t").await.unwrap().is_empty());
}

fn run_row(id: &str, workflow: &str, version: Option<u32>, status: RunStatus) -> RunMeta {
    RunMeta { id: id.into(), workflow: workflow.into(), version, status, ..meta(0) }
}

/// Pages of a query meet exactly (none lost, none twice), in either order,
/// and a run moves between indexes when its status changes.
#[tokio::test]
async fn run_queries_page_through_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), false).unwrap();
    let mut batch = Vec::new();
    for i in 0..25 {
        let (workflow, version) = if i % 2 == 0 { ("order", Some(1 + i % 3)) } else { ("refund", None) };
        let status = if i % 5 == 0 { RunStatus::Completed } else { RunStatus::Running };
        batch.push(Write::PutRun(run_row(&format!("run-{i:02}"), workflow, version, status)));
    }
    store.commit(batch).await.unwrap();

    let ids = |runs: &[RunMeta]| runs.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    let expect =
        |keep: &dyn Fn(u32) -> bool| (0..25).filter(|i| keep(*i)).map(|i| format!("run-{i:02}")).collect::<Vec<_>>();

    // Small pages, both orders, against what a filter of every run gives.
    let running_orders = RunQuery {
        workflow: Some("order".into()),
        statuses: vec![RunStatus::Running],
        limit: 3,
        ..RunQuery::default()
    };
    let want = expect(&|i| i % 2 == 0 && i % 5 != 0);
    assert_eq!(ids(&store.all_runs(running_orders.clone()).await.unwrap()), want);
    let mut reversed = want.clone();
    reversed.reverse();
    let descending = RunQuery { descending: true, ..running_orders.clone() };
    assert_eq!(ids(&store.all_runs(descending).await.unwrap()), reversed);
    let first = store.runs(&running_orders).await.unwrap();
    assert_eq!(ids(&first.runs), want[..3]);
    assert_eq!(first.next.as_deref(), Some(want[2].as_str()));

    // Every index, and none.
    let version_2 = RunQuery { version: Some(2), ..RunQuery::workflow("order") };
    assert_eq!(ids(&store.all_runs(version_2).await.unwrap()), expect(&|i| i % 2 == 0 && 1 + i % 3 == 2));
    assert_eq!(ids(&store.all_runs(RunQuery::workflow("refund")).await.unwrap()), expect(&|i| i % 2 == 1));
    assert_eq!(ids(&store.all_runs(RunQuery::status(RunStatus::Completed)).await.unwrap()), expect(&|i| i % 5 == 0));
    assert_eq!(store.all_runs(RunQuery { limit: 7, ..RunQuery::all() }).await.unwrap().len(), 25);
    let either = RunQuery { statuses: vec![RunStatus::Completed, RunStatus::Running], ..RunQuery::all() };
    assert_eq!(store.all_runs(either).await.unwrap().len(), 25);
    assert!(store.all_runs(RunQuery::workflow("ord")).await.unwrap().is_empty(), "a prefix is not a workflow");
    assert_eq!(store.count_running().await.unwrap(), 20);

    // A run that ends leaves the running index and joins the completed one.
    store.commit(vec![Write::PutRun(run_row("run-01", "refund", None, RunStatus::Completed))]).await.unwrap();
    assert_eq!(store.count_running().await.unwrap(), 19);
    let completed = ids(&store.all_runs(RunQuery::status(RunStatus::Completed)).await.unwrap());
    assert!(completed.contains(&"run-01".to_owned()), "{completed:?}");
    let running = ids(&store.all_runs(RunQuery::status(RunStatus::Running)).await.unwrap());
    assert!(!running.contains(&"run-01".to_owned()), "{running:?}");
    let report = store.check().await.unwrap();
    assert!(!report.problems.iter().any(|p| p.contains("index")), "{:?}", report.problems);
}

/// A run's timers are found without a scan of every timer, and a
/// continue-as-new disarms exactly its own.
#[tokio::test]
async fn a_runs_timers_are_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_run(dir.path(), 0).await;
    let timer = |run: &str, due_ms, handle| Write::PutTimer { due_ms, run_id: run.into(), handle };
    store.commit(vec![timer("r", 50, 1), timer("r", 10, 2), timer("r0", 20, 1), timer("q", 30, 1)]).await.unwrap();
    let of_r = store.run_timers("r").await.unwrap();
    assert_eq!(of_r.iter().map(|t| (t.due_ms, t.handle)).collect::<Vec<_>>(), vec![(10, 2), (50, 1)]);
    let all = store.timers().await.unwrap();
    assert_eq!(all.iter().map(|t| t.due_ms).collect::<Vec<_>>(), vec![10, 20, 30, 50], "soonest first");
    store.commit(vec![Write::ContinueAsNew { meta: Box::new(meta(1)), start: Box::new(record(0)) }]).await.unwrap();
    assert!(store.run_timers("r").await.unwrap().is_empty());
    let left: Vec<String> = store.timers().await.unwrap().into_iter().map(|t| t.run_id).collect();
    assert_eq!(left, vec!["r0".to_owned(), "q".to_owned()]);
}
