//! Power loss: the store's every write and sync is recorded while a real
//! workload runs, and at each sync point the disk is rebuilt as a power cut
//! then would leave it, keeping only what completed syncs cover (see
//! `cairn_host::store::power`). Each image must open without a false alarm,
//! pass the integrity check, hold everything acknowledged before the cut,
//! and show no batch in part: each run's journal is a prefix of the one the
//! workload ended with.

use crate::server::{Api, Server};
use crate::support::*;
use cairn_host::journal::{self, Record};
use cairn_host::store::power::{self, Acked, Cut, Lost};
use cairn_host::store::{RunQuery, Store};
use serde_json::json;
use std::collections::HashMap;
use std::io;
use std::path::Path;

/// The journals of every generation of every run, as the workload ended.
struct Reference {
    /// run id → encoded records, per generation (the last is the journal).
    runs: HashMap<String, Vec<Vec<Vec<u8>>>>,
}

fn encoded(records: Vec<Record>) -> Vec<Vec<u8>> {
    records.iter().map(journal::encode).collect()
}

fn generations(store: &Store, run_id: &str, generation: u32) -> Vec<Vec<Vec<u8>>> {
    let mut journals: Vec<_> = (0..generation).map(|g| encoded(block_on(store.history(run_id, g)).unwrap())).collect();
    journals.push(encoded(block_on(store.journal(run_id)).unwrap()));
    journals
}

impl Reference {
    fn of(record: &Path, scratch: &Path) -> Reference {
        let dir = scratch.join("finished");
        power::finished(record, &dir).unwrap();
        let store = Store::open(&dir).unwrap();
        let runs = block_on(store.all_runs(RunQuery::all()))
            .unwrap()
            .into_iter()
            .map(|run| (run.id.clone(), generations(&store, &run.id, run.generation)));
        Reference { runs: runs.collect() }
    }
}

fn fail(cut: &Cut<'_>, what: String) -> io::Error {
    io::Error::other(format!("power cut {} ({} acknowledged before it): {what}", cut.index, cut.acked.len()))
}

/// Checks one cut's image; see the module's comment.
fn check(cut: Cut<'_>, reference: &Reference) -> io::Result<()> {
    if !cut.dir.join("cairn.redb").exists() {
        // The store's name was never made durable: fine only if nothing
        // had been acknowledged yet.
        return match cut.acked.is_empty() {
            true => Ok(()),
            false => Err(fail(&cut, "cairn.redb is gone, yet batches were acknowledged".into())),
        };
    }
    let file_ok = Store::verify_file(cut.dir).map_err(|e| fail(&cut, format!("redb cannot check the file: {e}")))?;
    if !file_ok {
        return Err(fail(&cut, "redb had to repair cairn.redb".into()));
    }
    let store = Store::open(cut.dir).map_err(|e| fail(&cut, format!("the store does not open: {e}")))?;
    let report = block_on(store.check()).map_err(|e| fail(&cut, e.to_string()))?;
    if !report.problems.is_empty() {
        return Err(fail(&cut, format!("cairn check: {:?}", report.problems)));
    }
    let mut runs = HashMap::new();
    for run in block_on(store.all_runs(RunQuery::all())).unwrap() {
        let journals = generations(&store, &run.id, run.generation);
        let Some(finished) = reference.runs.get(&run.id) else {
            return Err(fail(&cut, format!("run {} is not in the finished store", run.id)));
        };
        for (g, journal) in journals.iter().enumerate() {
            let whole = &finished[g];
            let last = g + 1 == journals.len();
            let fits = match last {
                true => journal.len() <= whole.len() && journal[..] == whole[..journal.len()],
                false => journal == whole,
            };
            if !fits {
                return Err(fail(
                    &cut,
                    format!(
                        "run {} generation {g}: {} records that are not what the workload wrote",
                        run.id,
                        journal.len()
                    ),
                ));
            }
        }
        runs.insert(run.id.clone(), (run, journals));
    }
    for acked in cut.acked {
        let kept = match acked {
            Acked::Append { run_id, seq, crc } => runs.get(run_id).is_some_and(|(_, journals)| {
                journals
                    .iter()
                    .any(|journal| journal.get(*seq as usize).is_some_and(|bytes| crc32fast::hash(bytes) == *crc))
            }),
            Acked::Run { run_id, status, generation, updated_ms } => runs.get(run_id).is_some_and(|(run, _)| {
                (run.generation, run.updated_ms) >= (*generation, *updated_ms)
                    && (!status.is_final() || run.status == *status)
            }),
            Acked::Deployment { name, last_version } => {
                block_on(store.deployment(name)).unwrap().is_some_and(|d| d.last_version >= *last_version)
            }
        };
        if !kept {
            return Err(fail(&cut, format!("acknowledged but lost: {acked:?}")));
        }
    }
    Ok(())
}

/// Replays `record`, checking the cuts `take` picks. Returns (cuts, checked).
fn check_cuts(record: &Path, scratch: &Path, lost: Lost, mut take: impl FnMut(usize) -> bool) -> (usize, usize) {
    let reference = Reference::of(record, scratch);
    let mut checked = 0;
    let cuts = power::replay(record, scratch, lost, &mut take, |cut| {
        checked += 1;
        check(cut, &reference)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (cuts, checked)
}

#[test]
fn a_power_cut_at_any_sync_of_the_order_example_loses_nothing_acknowledged() {
    let scratch = tempfile::tempdir().unwrap();
    let (data, record) = (scratch.path().join("data"), scratch.path().join("writes"));
    // A new store: the cuts include its first milliseconds.
    expect_success(&order_command(&data, "order").env(power::RECORD_VAR, &record).output().unwrap());
    let (cuts, checked) = check_cuts(&record, scratch.path(), Lost::EveryUnsyncedWrite, |_| true);
    println!("order example: {cuts} power cuts, all checked");
    assert_eq!(checked, cuts);
    assert!(cuts > 10, "{cuts} cuts: the record misses syncs");
    // And again with some of the unsynced writes on disk after all.
    for seed in 1..=4 {
        check_cuts(&record, scratch.path(), Lost::SomeUnsyncedWrites { seed }, |_| true);
    }
}

/// Starts `n` W10 runs (the bench workflow, ten activity steps) from 64
/// clients at once and waits for each to complete.
async fn w10(api: &Api, from: usize, n: usize) {
    let api = std::sync::Arc::new(api.clone());
    let clients = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in from..from + n {
        let (api, clients) = (api.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let _client = clients.acquire().await.unwrap();
            let start = json!({ "workflow": "bench", "id": format!("w{i}"), "input": { "steps": 10 } });
            let (status, run) = api.post_json("/runs?wait=60", &start).await;
            assert_eq!((status, &run["status"]), (201, &json!("completed")), "{run}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_under_load_with_a_checkpoint_continue_as_new_and_an_upgrade_loses_nothing_acknowledged() {
    let scratch = tempfile::tempdir().unwrap();
    let (data, record) = (scratch.path().join("data"), scratch.path().join("writes"));
    let server = Server::start_with_env(&data, &[], &[(power::RECORD_VAR, record.as_os_str())]);
    let api = Api::new(&server);
    for (name, kind) in [
        ("bench", "workflow"),
        ("noop", "activity"),
        ("subscription", "workflow"),
        ("hello", "workflow"),
        ("payments", "activity"),
        ("inventory", "activity"),
    ] {
        let (status, body) = api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await;
        assert_eq!(status, 201, "deploy {name}: {body}");
    }
    let shipping = |v: &str| std::fs::read(example_wasm(&format!("shipping_{v}"))).unwrap();
    assert_eq!(api.deploy("shipping", "workflow", shipping("v1")).await.0, 201);
    let order = json!({ "order_id": "P-1", "sku": "cairn-mug", "quantity": 1, "amount_cents": 2400, "card": "4242-4242-4242-4242", "address": "1 Main St" });
    let (status, body) = api.post_json("/runs", &json!({ "workflow": "shipping", "id": "ship", "input": order })).await;
    assert_eq!(status, 201, "{body}");
    // Continue-as-new: two generations of two months each.
    let sub = json!({ "workflow": "subscription", "id": "sub", "input": { "months": 4, "per_generation": 2 } });
    assert_eq!(api.post_json("/runs", &sub).await.0, 201);
    w10(&api, 0, 96).await;
    assert_eq!(api.wait("sub").await["generation"], 1);
    // A quiet second: the writer checkpoints and the log starts again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // An upgrade of the run in flight, then more load on the new log.
    let (status, body) =
        api.post("/components/shipping?kind=workflow&upgrade=compatible", shipping("v2_express")).await;
    assert_eq!(status, 201, "{body}");
    for signal in ["packed", "dispatch"] {
        api.post_json(&format!("/runs/ship/signals/{signal}"), &json!(null)).await;
    }
    assert_eq!(api.wait("ship").await["version"], 2);
    w10(&api, 96, 96).await;
    drop(server);

    let started = std::time::Instant::now();
    let (cuts, checked) = check_cuts(&record, scratch.path(), Lost::EveryUnsyncedWrite, |_| true);
    println!("under load: {cuts} power cuts, all checked in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(checked, cuts);
    // A seeded tenth of them again, with some unsynced writes kept.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (_, torn) = check_cuts(&record, scratch.path(), Lost::SomeUnsyncedWrites { seed: 7 }, |_| rng.below(10) == 0);
    println!("under load, some unsynced writes kept: {torn} cuts checked");
}
