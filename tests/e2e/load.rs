//! Load with faults, counted: 64 clients start W10 runs (ten activity
//! steps each) while the server is killed with SIGKILL at ten random
//! moments and restarted on the same store. Each client retries a start
//! whose answer it did not get, with the same id, as the API tells it to.
//! Afterwards every acknowledged run must exist and complete exactly once
//! (its journal has the one shape a W10 journal has), and `cairn check`
//! is clean after every kill.

use crate::crash::assert_store_is_consistent;
use crate::server::{Api, Server};
use crate::support::*;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const CLIENTS: usize = 64;
const KILLS: usize = 10;

#[derive(Default)]
struct Tally {
    /// Ids whose start was answered 200/201.
    acknowledged: std::sync::Mutex<BTreeSet<String>>,
    /// Starts whose answer was lost to a kill (then retried with the same
    /// id until answered).
    unanswered: AtomicU64,
}

async fn client(n: usize, url: Arc<RwLock<String>>, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("c{n}-{i}");
        let body = json!({ "workflow": "bench", "id": id, "input": { "steps": 10 } });
        let mut retried = false;
        loop {
            let base = url.read().unwrap().clone();
            match http.post(format!("{base}/v1/runs?wait=30")).json(&body).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status().as_u16() == 503 => {}
                Ok(r) => panic!("start {id}: {} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(_) if !retried => {
                    retried = true;
                    tally.unanswered.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tally.acknowledged.lock().unwrap().insert(id);
        i += 1;
    }
}

async fn start(data: &std::path::Path) -> Server {
    let server = Server::start(data, &[]);
    let api = Api::new(&server);
    for (name, kind) in [("bench", "workflow"), ("noop", "activity")] {
        let (status, body) = api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await;
        assert!(status == 200 || status == 201, "deploy {name}: {body}");
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_under_load_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data).await;
    let url = Arc::new(RwLock::new(server.url.clone()));
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients: Vec<_> =
        (0..CLIENTS).map(|n| tokio::spawn(client(n, url.clone(), stop.clone(), tally.clone()))).collect();
    let mut rng = Rng(0x5eed_f10a);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
        server.kill();
        assert_store_is_consistent(&data);
        server = start(&data).await;
        *url.write().unwrap() = server.url.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let api = Api::new(&server);
    let acknowledged = tally.acknowledged.lock().unwrap().clone();
    let (mut completed, mut lost, mut duplicated) = (0, Vec::new(), Vec::new());
    let mut shapes: HashMap<Vec<String>, usize> = HashMap::new();
    for id in &acknowledged {
        let (status, run) = api.get(&format!("/runs/{id}/result?wait=30")).await;
        if status != 200 || run["status"] != "completed" {
            lost.push(format!("{id}: {status} {run}"));
            continue;
        }
        completed += 1;
        let (_, journal) = api.get(&format!("/runs/{id}/journal")).await;
        let entries = journal["entries"].as_array().unwrap();
        let shape: Vec<String> = entries
            .iter()
            .map(|e| format!("{}{}", e["entry"].as_str().unwrap_or(""), e["call"]["call"].as_str().unwrap_or("")))
            .collect();
        let activities = entries.iter().filter(|e| e["call"]["name"] == "noop.ping").count();
        if activities != 10 {
            duplicated.push(format!("{id}: {activities} activity calls"));
        }
        *shapes.entry(shape).or_default() += 1;
    }
    println!(
        "load with faults: {CLIENTS} clients, {KILLS} SIGKILLs: {} starts acknowledged, {completed} completed, {} lost, {} duplicated, {} starts retried after a kill; cairn check clean after every kill",
        acknowledged.len(),
        lost.len(),
        duplicated.len(),
        tally.unanswered.load(Ordering::Relaxed),
    );
    assert!(lost.is_empty(), "acknowledged runs lost or not completed: {lost:?}");
    assert!(duplicated.is_empty(), "{duplicated:?}");
    assert_eq!(shapes.len(), 1, "every W10 journal has the same shape: {:?}", shapes.values().collect::<Vec<_>>());
    assert!(acknowledged.len() > 500, "the load was too light to mean much: {}", acknowledged.len());
    server.kill();
    assert_store_is_consistent(&data);
}
