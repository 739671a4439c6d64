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

/// A run row for tests elsewhere in the crate.
pub(crate) fn meta_for_tests(id: &str, workflow: &str, status: RunStatus) -> RunMeta {
    RunMeta { id: id.into(), workflow: workflow.into(), status, ..meta(0) }
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
        slot: None,
        search: Default::default(),
    }
}

/// Runs each test on every backend: `name::redb` on an embedded store in
/// a temporary directory, `name::postgres` on a new database of the test
/// server.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(super::Store::open(dir.path()).unwrap()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let url = super::postgres::harness::server().database().await;
                let cache = tempfile::tempdir().unwrap();
                let store = super::Store::connect(&url, Some(cache.path().to_owned())).await.unwrap();
                // One host: it takes every shard.
                let host = super::HostIdentity {
                    id: "test-host".into(),
                    address: String::new(),
                    lease: std::time::Duration::from_secs(30),
                };
                let coordinator = store.coordinator(host);
                coordinator.start().await.unwrap();
                assert_eq!(coordinator.owned().len(), super::postgres::DEFAULT_SHARDS as usize);
                super::$name(store).await;
            }
        }
    )*};
}

on_every_backend!(
    a_completion_of_a_generation_the_run_left_is_not_stored,
    a_retried_continue_as_new_lands_once,
    a_long_journal_reads_back_whole_and_in_order,
    run_queries_page_through_their_index,
    a_runs_timers_are_its_own,
    an_append_over_other_bytes_is_refused_and_the_same_bytes_accepted,
    signals_to_an_ended_run_are_dropped,
    a_group_committed_twice_is_stored_once,
    components_and_compiled_artifacts_read_back,
    a_deployment_lands_only_over_the_revision_it_was_made_from,
    a_schedule_lands_only_over_the_revision_it_was_made_from_and_deletes,
    a_deleted_run_leaves_nothing_behind_and_others_keep_everything,
    queued_runs_get_slots_by_priority_then_age_and_only_up_to_the_limit,
    a_rate_limited_bucket_starts_no_more_than_its_tokens,
    runs_are_found_by_an_attributes_value_and_move_when_it_changes,
);

/// `store`, holding run `r` in `generation`, with its start.
async fn with_run(store: Store, generation: u32) -> Store {
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
async fn a_completion_of_a_generation_the_run_left_is_not_stored(store: Store) {
    let store = with_run(store, 1).await;
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
async fn a_retried_continue_as_new_lands_once(store: Store) {
    let store = with_run(store, 0).await;
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
async fn a_long_journal_reads_back_whole_and_in_order(store: Store) {
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
async fn run_queries_page_through_their_index(store: Store) {
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
    assert!(!report.problems.iter().any(|p| p.contains("index") || p.contains("column")), "{:?}", report.problems);
}

/// A run's timers are found without a scan of every timer, and a
/// continue-as-new disarms exactly its own.
async fn a_runs_timers_are_its_own(store: Store) {
    let store = with_run(store, 0).await;
    let timer = |run: &str, due_ms, handle| Write::PutTimer { due_ms, run_id: run.into(), handle };
    store.commit(vec![timer("r", 50, 1), timer("r", 10, 2), timer("r0", 20, 1), timer("q", 30, 1)]).await.unwrap();
    let of_r = store.run_timers("r").await.unwrap();
    assert_eq!(of_r.iter().map(|t| (t.due_ms, t.handle)).collect::<Vec<_>>(), vec![(10, 2), (50, 1)]);
    let all = store.timers(&[0]).await.unwrap();
    assert_eq!(all.iter().map(|t| t.due_ms).collect::<Vec<_>>(), vec![10, 20, 30, 50], "soonest first");
    store.commit(vec![Write::ContinueAsNew { meta: Box::new(meta(1)), start: Box::new(record(0)) }]).await.unwrap();
    assert!(store.run_timers("r").await.unwrap().is_empty());
    let left: Vec<String> = store.timers(&[0]).await.unwrap().into_iter().map(|t| t.run_id).collect();
    assert_eq!(left, vec!["r0".to_owned(), "q".to_owned()]);
}

/// The same record at a taken seq is a retry that landed (accepted, stored
/// once); other bytes there are refused, and the batch writes nothing.
async fn an_append_over_other_bytes_is_refused_and_the_same_bytes_accepted(store: Store) {
    let store = with_run(store, 0).await;
    let append = |record: Record| Write::Append { run_id: "r".into(), record };
    store.commit(vec![append(record(1))]).await.unwrap();
    store.commit(vec![append(record(1)), append(record(2))]).await.unwrap();
    let mut other = record(3);
    other.at_ms += 1;
    store.commit(vec![append(record(3))]).await.unwrap();
    let refused = store
        .commit(vec![append(other), Write::PutTimer { due_ms: 9, run_id: "r".into(), handle: 9 }])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Commit(CommitError::DuplicateSeq { ref run_id, seq: 3 }) if run_id == "r"),
        "{refused}"
    );
    // Twice in one batch is refused too.
    let twice = store.commit(vec![append(record(4)), append(record(4))]).await.unwrap_err();
    assert!(matches!(twice, StoreError::Commit(CommitError::DuplicateSeq { seq: 4, .. })), "{twice}");
    assert_eq!(store.journal("r").await.unwrap(), (0..4).map(record).collect::<Vec<_>>());
    assert!(store.run_timers("r").await.unwrap().is_empty(), "the refused batch wrote nothing");
    // Batches of one group are judged one by one: a refused batch does
    // not take its neighbours down.
    let (a, b) = (store.submit(vec![append(record(2))]), store.submit(vec![append(record(4))]));
    let mut changed = record(2);
    changed.at_ms += 5;
    let c = store.submit(vec![append(changed)]);
    assert!(durable(a).await.is_ok() && durable(b).await.is_ok());
    assert!(matches!(durable(c).await, Err(CommitError::DuplicateSeq { seq: 2, .. })));
    assert_eq!(store.journal("r").await.unwrap().len(), 5);
}

/// A run's end drops the signals it never read, and a signal that comes
/// after its end is not stored.
async fn signals_to_an_ended_run_are_dropped(store: Store) {
    let store = with_run(store, 0).await;
    let signal = |seq| Write::PutSignal {
        run_id: "r".into(),
        seq,
        signal: StoredSignal { name: "go".into(), payload: "1".into() },
    };
    store.commit(vec![signal(1), signal(2)]).await.unwrap();
    assert_eq!(store.signals("r").await.unwrap().len(), 2);
    assert_eq!(store.buffered_signals("r").await.unwrap().run.0, 2);
    store.commit(vec![Write::DeleteSignal { run_id: "r".into(), seq: 1 }]).await.unwrap();
    assert_eq!(store.signals("r").await.unwrap().iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![2]);
    let ended = RunMeta { status: RunStatus::Completed, result: Some("1".into()), ..meta(0) };
    store.commit(vec![Write::PutRun(ended)]).await.unwrap();
    assert!(store.signals("r").await.unwrap().is_empty());
    store.commit(vec![signal(3)]).await.unwrap();
    assert!(store.signals("r").await.unwrap().is_empty());
    assert_eq!(store.buffered_signals("r").await.unwrap().all.0, 0);
}

/// Every kind of write, committed twice (a retry after an unknown outcome:
/// the first commit landed, its answer was lost): the second changes
/// nothing.
async fn a_group_committed_twice_is_stored_once(store: Store) {
    let store = with_run(store, 0).await;
    let batch = vec![
        Write::Append { run_id: "r".into(), record: record(1) },
        Write::PutRun(RunMeta { custom_status: Some("\"busy\"".into()), ..meta(0) }),
        Write::PutTimer { due_ms: 7, run_id: "r".into(), handle: 1 },
        Write::PutSignal { run_id: "r".into(), seq: 4, signal: StoredSignal { name: "s".into(), payload: "2".into() } },
        completion(None, "\"done\""),
        Write::PutAttempts { run_id: "r".into(), handle: 2, failed: 3 },
        Write::DeleteTimer { due_ms: 99, run_id: "r".into(), handle: 9 },
    ];
    store.commit(batch.clone()).await.unwrap();
    let before = (
        store.journal("r").await.unwrap(),
        store.run("r").await.unwrap(),
        store.run_timers("r").await.unwrap(),
        store.signals("r").await.unwrap(),
        store.completions("r").await.unwrap(),
        store.attempts("r", 2).await.unwrap(),
    );
    store.commit(batch).await.unwrap();
    let after = (
        store.journal("r").await.unwrap(),
        store.run("r").await.unwrap(),
        store.run_timers("r").await.unwrap(),
        store.signals("r").await.unwrap(),
        store.completions("r").await.unwrap(),
        store.attempts("r", 2).await.unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(after.0.len(), 2);
    assert_eq!(after.5, 3);
}

/// Component bytes and compiled artifacts come back as they went in (on
/// PostgreSQL, through each host's disk cache), keyed by hash and engine.
async fn components_and_compiled_artifacts_read_back(store: Store) {
    let bytes: Arc<[u8]> = (0..=255u8).cycle().take(300_000).collect::<Vec<u8>>().into();
    store.commit(vec![Write::PutComponent { sha256: "c0ffee".into(), bytes: bytes.clone() }]).await.unwrap();
    let compiled = Write::PutCompiled { sha256: "c0ffee".into(), engine: "e1".into(), bytes: vec![1, 2, 3] };
    store.commit(vec![compiled]).await.unwrap();
    for _ in 0..2 {
        assert_eq!(store.component("c0ffee").await.unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(store.compiled("c0ffee", "e1").await.unwrap(), Some(vec![1, 2, 3]));
    }
    assert_eq!(store.compiled("c0ffee", "e2").await.unwrap(), None);
    assert_eq!(store.component("beef").await.unwrap(), None);
}

/// Two changes made from the same revision of a deployment (two hosts
/// deploying at once): the first lands, the second is refused; the same
/// write again (a retried commit) is accepted.
async fn a_deployment_lands_only_over_the_revision_it_was_made_from(store: Store) {
    let deployment = |revision, current| Deployment {
        name: "order".into(),
        kind: ComponentKind::Workflow,
        versions: (1..=current).map(|v| Version { version: v, sha256: format!("s{v}"), deployed_ms: 1 }).collect(),
        current,
        last_version: current,
        revision,
        retired: Vec::new(),
        retention_ms: None,
        concurrency: None,
        activity_limits: Default::default(),
    };
    store.commit(vec![Write::PutDeployment(deployment(1, 1))]).await.unwrap();
    store.commit(vec![Write::PutDeployment(deployment(1, 1))]).await.unwrap();
    store.commit(vec![Write::PutDeployment(deployment(2, 2))]).await.unwrap();
    let late = store.commit(vec![Write::PutDeployment(deployment(2, 3))]).await.unwrap_err();
    assert!(matches!(late, StoreError::Commit(CommitError::Conflict { found: 2, expected: 1, .. })), "{late}");
    let skipped = store.commit(vec![Write::PutDeployment(deployment(5, 3))]).await.unwrap_err();
    assert!(matches!(skipped, StoreError::Commit(CommitError::Conflict { .. })), "{skipped}");
    assert_eq!(store.deployment("order").await.unwrap(), Some(deployment(2, 2)));
    // Rows of older Cairns carry no revision and are written as they are.
    store.commit(vec![Write::PutDeployment(deployment(0, 1))]).await.unwrap();
    assert_eq!(store.deployment("order").await.unwrap(), Some(deployment(0, 1)));
}

/// Schedules follow the deployments' revision rule (the API and a host
/// firing it change one row at once), and a delete removes the row.
async fn a_schedule_lands_only_over_the_revision_it_was_made_from_and_deletes(store: Store) {
    let schedule = |revision, started| Schedule {
        name: "nightly".into(),
        revision,
        spec: ScheduleSpec {
            workflow: "w".into(),
            input: "{}".into(),
            when: When::Cron { expression: "0 3 * * *".into(), timezone: "Europe/Berlin".into() },
            overlap: Overlap::BufferOne,
            catchup_window_ms: 60_000,
        },
        state: ScheduleState { created_ms: 1, cursor_ms: 1, started, ..ScheduleState::default() },
    };
    store.commit(vec![Write::PutSchedule(schedule(1, 0))]).await.unwrap();
    let again = store.commit(vec![Write::PutSchedule(schedule(1, 5))]).await.unwrap_err();
    assert!(matches!(again, StoreError::Commit(CommitError::Conflict { what: "schedule", .. })), "{again}");
    store.commit(vec![Write::PutSchedule(schedule(2, 1))]).await.unwrap();
    store.commit(vec![Write::PutSchedule(schedule(2, 1))]).await.unwrap();
    let stale = store.commit(vec![Write::PutSchedule(schedule(2, 2))]).await.unwrap_err();
    assert!(matches!(stale, StoreError::Commit(CommitError::Conflict { found: 2, expected: 1, .. })), "{stale}");
    assert_eq!(store.schedule("nightly").await.unwrap(), Some(schedule(2, 1)));
    assert_eq!(store.schedules().await.unwrap(), vec![schedule(2, 1)]);
    store.commit(vec![Write::DeleteSchedule { name: "nightly".into() }]).await.unwrap();
    assert_eq!(store.schedule("nightly").await.unwrap(), None);
    assert!(store.schedules().await.unwrap().is_empty());
}

/// A run deleted (retention, `cairn delete`) takes every row of it along:
/// journal, history generations, inbox, timers, attempts, index entries;
/// another run keeps all of its own, and the store checks clean.
async fn a_deleted_run_leaves_nothing_behind_and_others_keep_everything(store: Store) {
    for id in ["r", "keep"] {
        let mut m = meta(0);
        m.id = id.into();
        let mut next = m.clone();
        next.generation = 1;
        let mut ended = next.clone();
        ended.status = RunStatus::Completed;
        ended.result = Some("1".into());
        ended.updated_ms = if id == "r" { 5_000 } else { 9_000 };
        let end = Record { seq: 1, at_ms: 5, entry: Entry::Completed { result: "1".into() } };
        let batches = vec![
            vec![Write::PutRun(m), Write::Append { run_id: id.into(), record: record(0) }],
            vec![Write::ContinueAsNew { meta: Box::new(next), start: Box::new(record(0)) }],
            vec![
                Write::PutTimer { due_ms: 77, run_id: id.into(), handle: 2 },
                Write::PutAttempts { run_id: id.into(), handle: 4, failed: 1 },
                Write::PutSignal {
                    run_id: id.into(),
                    seq: 1,
                    signal: StoredSignal { name: "go".into(), payload: "1".into() },
                },
            ],
            vec![Write::Append { run_id: id.into(), record: end }, Write::PutRun(ended)],
        ];
        for batch in batches {
            store.commit(batch).await.unwrap();
        }
    }
    assert_eq!(store.ended_before("w", 6_000, 10).await.unwrap(), vec!["r".to_owned()]);
    assert_eq!(store.ended_before("w", 10_000, 10).await.unwrap(), vec!["r".to_owned(), "keep".to_owned()]);
    assert!(store.ended_before("other", 10_000, 10).await.unwrap().is_empty());

    store.commit(vec![Write::DeleteRun { run_id: "r".into() }]).await.unwrap();
    store.commit(vec![Write::DeleteRun { run_id: "r".into() }]).await.unwrap();
    assert_eq!(store.run("r").await.unwrap(), None);
    assert!(store.journal("r").await.unwrap().is_empty());
    assert!(store.history("r", 0).await.unwrap().is_empty());
    assert!(store.run_timers("r").await.unwrap().is_empty());
    assert!(store.ended_before("w", 10_000, 10).await.unwrap() == vec!["keep".to_owned()]);
    let all = store.all_runs(RunQuery::all()).await.unwrap();
    assert_eq!(all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["keep"]);
    assert_eq!(store.journal("keep").await.unwrap().len(), 2);
    assert_eq!(store.history("keep", 0).await.unwrap().len(), 2);
    assert_eq!(store.run_timers("keep").await.unwrap().len(), 1);
    // Nothing of `r` is left for the check to find (`keep`'s fixtures are
    // not whole runs: no start entry, no component).
    let report = store.check().await.unwrap();
    let about_r = |line: &String| line.split(|c: char| !c.is_alphanumeric()).any(|w| w == "r");
    assert!(!report.problems.iter().chain(&report.warnings).any(about_r), "{report:?}");

    store.commit(vec![Write::PutComponent { sha256: "ab".into(), bytes: vec![1].into() }]).await.unwrap();
    store.commit(vec![Write::PutCompiled { sha256: "ab".into(), engine: "e".into(), bytes: vec![2] }]).await.unwrap();
    assert!(store.component("ab").await.unwrap().is_some());
    store.commit(vec![Write::DeleteComponent { sha256: "ab".into() }]).await.unwrap();
    assert_eq!(store.component("ab").await.unwrap(), None);
    assert_eq!(store.compiled("ab", "e").await.unwrap(), None);
}

/// A concurrency bucket's slots go to its queued runs first by priority,
/// then by age, never past the limit, as of the writes before the promote
/// in the same batch (an end frees a slot in the very transaction).
async fn queued_runs_get_slots_by_priority_then_age_and_only_up_to_the_limit(store: Store) {
    let queued = |id: &str, priority: u8, created_ms: u64| RunMeta {
        id: id.into(),
        status: RunStatus::Queued,
        created_ms,
        slot: Some(Slot { key: "acme".into(), priority }),
        ..meta(0)
    };
    let promote =
        |limit| Write::Promote { workflow: "w".into(), key: "acme".into(), admission: Admission { limit, rate: None } };
    let runs = [queued("a", 3, 1), queued("b", 1, 3), queued("c", 3, 2), queued("d", 3, 4)];
    let mut batch: Vec<Write> = runs.iter().cloned().map(Write::PutRun).collect();
    // Another bucket and another workflow are not counted.
    batch.push(Write::PutRun(RunMeta {
        id: "x".into(),
        status: RunStatus::Running,
        slot: Some(Slot { key: "other".into(), priority: 3 }),
        ..meta(0)
    }));
    store.commit(batch).await.unwrap();
    assert_eq!(store.queued("w", "acme", 10).await.unwrap(), ["b", "a", "c", "d"]);
    store.commit(vec![promote(2)]).await.unwrap();
    let status = |id: &'static str| {
        let store = store.clone();
        async move { store.run(id).await.unwrap().unwrap().status }
    };
    assert_eq!(
        (status("b").await, status("a").await, status("c").await),
        (RunStatus::Running, RunStatus::Running, RunStatus::Queued)
    );
    store.commit(vec![promote(2)]).await.unwrap();
    assert_eq!(status("c").await, RunStatus::Queued, "the bucket is full");
    // `a` ends; the same batch gives its slot to `c`.
    let ended = RunMeta { status: RunStatus::Completed, ..store.run("a").await.unwrap().unwrap() };
    store.commit(vec![Write::PutRun(ended), promote(2)]).await.unwrap();
    assert_eq!((status("c").await, status("d").await), (RunStatus::Running, RunStatus::Queued));
    assert_eq!(store.queued("w", "acme", 10).await.unwrap(), ["d"]);
    let buckets = store.buckets().await.unwrap();
    assert_eq!(buckets, [("w".into(), "acme".into(), 2, 1), ("w".into(), "other".into(), 1, 0)], "holding, queued");
    let running = store.all_runs(RunQuery::status(RunStatus::Running)).await.unwrap();
    assert_eq!(running.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["b", "c", "x"]);
    let report = store.check().await.unwrap();
    assert!(!report.problems.iter().any(|p| p.contains("index") || p.contains("column")), "{report:?}");
}

/// A token bucket starts at most `burst` runs at once, and then one per
/// `every_ms` (none within the same few milliseconds).
async fn a_rate_limited_bucket_starts_no_more_than_its_tokens(store: Store) {
    let queued = |id: &str, created_ms: u64| RunMeta {
        id: id.into(),
        status: RunStatus::Queued,
        created_ms,
        slot: Some(Slot { key: "k".into(), priority: 3 }),
        ..meta(0)
    };
    let rate = Some(Rate { every_ms: 60_000, burst: 2 });
    let promote =
        Write::Promote { workflow: "w".into(), key: "k".into(), admission: Admission { limit: u32::MAX, rate } };
    let mut batch: Vec<Write> = (0..5).map(|i| Write::PutRun(queued(&format!("r{i}"), i))).collect();
    batch.push(promote.clone());
    store.commit(batch).await.unwrap();
    let running = || {
        let store = store.clone();
        async move { store.all_runs(RunQuery::status(RunStatus::Running)).await.unwrap().len() }
    };
    assert_eq!(running().await, 2, "the burst");
    store.commit(vec![promote.clone()]).await.unwrap();
    store.commit(vec![promote]).await.unwrap();
    assert_eq!(running().await, 2, "no token until a minute passes");
    assert_eq!(store.queued("w", "k", 10).await.unwrap(), ["r2", "r3", "r4"]);
}

/// The attribute index lists exactly the runs with a value, in id order
/// and a page at a time; a changed or removed value moves the run; a
/// deleted run leaves it.
async fn runs_are_found_by_an_attributes_value_and_move_when_it_changes(store: Store) {
    use crate::search::SearchValue as V;
    let with = |id: &str, attributes: &[(&str, V)]| RunMeta {
        search: attributes.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        ..meta_for_tests(id, "order", RunStatus::Running)
    };
    let acme = || ("customer", V::Keyword("acme".into()));
    let mut writes = Vec::new();
    for i in 0..7 {
        let amount = ("amount", V::Int(if i % 2 == 0 { -5 } else { 1_200 }));
        let attributes =
            if i < 5 { vec![acme(), amount] } else { vec![("customer", V::Keyword("beta".into())), amount] };
        writes.push(Write::PutRun(with(&format!("r{i}"), &attributes)));
    }
    writes.push(Write::PutRun(with("plain", &[])));
    store.commit(writes).await.unwrap();
    let find = |attribute: (&str, V)| {
        let store = store.clone();
        let query = RunQuery { attribute: Some((attribute.0.to_owned(), attribute.1)), limit: 2, ..RunQuery::all() };
        async move { store.all_runs(query).await.unwrap().into_iter().map(|m| m.id).collect::<Vec<_>>() }
    };
    assert_eq!(find(acme()).await, ["r0", "r1", "r2", "r3", "r4"], "paged two at a time");
    assert_eq!(find(("amount", V::Int(-5))).await, ["r0", "r2", "r4", "r6"]);
    assert!(find(("amount", V::Keyword("-5".into()))).await.is_empty(), "a value of another type is another value");
    assert!(find(("customer", V::Keyword("acm".into()))).await.is_empty());

    // A changed value moves the run; a removed one or a deleted run leaves.
    let changes = vec![
        Write::PutRun(with("r1", &[("customer", V::Keyword("beta".into()))])),
        Write::PutRun(with("r2", &[])),
        Write::DeleteRun { run_id: "r3".into() },
    ];
    store.commit(changes).await.unwrap();
    assert_eq!(find(acme()).await, ["r0", "r4"]);
    assert_eq!(find(("customer", V::Keyword("beta".into()))).await, ["r1", "r5", "r6"]);
    let problems = store.check().await.unwrap().problems;
    assert!(!problems.iter().any(|p| p.contains("index")), "{problems:?}");
}
