//! Property tests of replay: generated workflow scripts run live, then are
//! replayed; replay always reproduces them, and a mutation of any one
//! journaled call is caught at exactly its seq.

use crate::support::*;
use cairn_host::journal::{Entry, HostCall, Record};
use cairn_host::runtime::{RunError, RunOutcome, Runtime, StartRequest};
use cairn_host::sandbox::Limits;
use cairn_host::store::{Store, Write};
use serde_json::{json, Value};

fn step(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0..=3 => json!({ "activity": "flaky.echo", "input": { "n": rng.below(1000) } }),
        4 => json!({ "sleep_ms": 1 + rng.below(3) }),
        5 => json!({ "activity": "flaky.declined", "max_attempts": 1 }),
        _ => json!({ "race": [{ "activity": "flaky.echo", "input": { "r": rng.below(10) } }, { "sleep_ms": 200 }] }),
    }
}

fn mutate(call: &HostCall) -> Option<HostCall> {
    match call {
        HostCall::ScheduleActivity { name, input, options } => Some(HostCall::ScheduleActivity {
            name: name.clone(),
            input: format!("{{\"mutated\":{input}}}"),
            options: options.clone(),
        }),
        HostCall::StartTimer { ms } => Some(HostCall::StartTimer { ms: ms + 1 }),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_scripts_replay_exactly_and_every_mutation_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = Runtime::new(store.clone(), Limits::default()).unwrap();
    let script_bytes = std::fs::read(wasm("script")).unwrap();
    let script = rt.components().load_bytes("script", script_bytes.clone()).await.unwrap();
    let flaky = rt.components().load_bytes("flaky", std::fs::read(wasm("flaky")).unwrap()).await.unwrap();
    rt.activities().register("flaky", &flaky).unwrap();

    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut mutations = 0;
    for case in 0..25 {
        let steps: Vec<Value> = (0..1 + rng.below(6)).map(|_| step(&mut rng)).collect();
        let id = format!("case-{case}");
        let input = Value::Array(steps.clone()).to_string();
        let request = StartRequest {
            workflow: "script".into(),
            component: script.clone(),
            input,
            run_id: Some(id.clone()),
            version: None,
        };
        rt.start(request).await.unwrap();
        let outcome = rt.drive(&id).await.unwrap();
        assert!(matches!(outcome, RunOutcome::Completed { .. }), "{id} {steps:?}: {outcome:?}");
        let report = rt.replay(&id, None).await.unwrap_or_else(|e| panic!("{id} {steps:?}: {e}"));
        assert!(report.finished);

        // Mutate one call and replay the mutated journal from a fresh store.
        let journal = store.journal(&id).await.unwrap();
        let candidates: Vec<usize> = journal
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(&r.entry, Entry::Call { call, .. } if mutate(call).is_some()))
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let at = candidates[rng.below(candidates.len() as u64) as usize];
        let mut mutated: Vec<Record> = journal.clone();
        if let Entry::Call { call, .. } = &mut mutated[at].entry {
            *call = mutate(call).unwrap();
        }
        let other = tempfile::tempdir().unwrap();
        let other_store = Store::open(other.path()).unwrap();
        let mut batch = vec![Write::PutRun(store.run(&id).await.unwrap().unwrap())];
        batch.extend(mutated.into_iter().map(|record| Write::Append { run_id: id.clone(), record }));
        other_store.commit(batch).await.unwrap();
        let other_rt = Runtime::new(other_store, Limits::default()).unwrap();
        let code = other_rt.components().load_transient("script", script_bytes.clone()).await.unwrap();
        match other_rt.replay(&id, Some(code)).await {
            Err(RunError::Diverged { divergence, .. }) => {
                assert_eq!(divergence.seq, journal[at].seq, "{id}: caught at the wrong seq: {divergence}");
                assert!(divergence.expected.contains("mutated") || divergence.expected.contains("ms)"), "{divergence}");
            }
            other => panic!("{id}: a mutation at seq {} went unnoticed: {other:?}", journal[at].seq),
        }
        mutations += 1;
    }
    assert!(mutations >= 15, "only {mutations} mutations tried");
}
