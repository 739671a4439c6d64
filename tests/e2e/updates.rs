//! Updates and queries over HTTP and the CLI (`examples/cart`, the Rust
//! SDK); the other languages' SDKs are in `languages.rs`.

use crate::server::*;
use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn journal_len(api: &Api, id: &str) -> usize {
    let (status, page) = api.get(&format!("/runs/{id}/journal")).await;
    assert_eq!(status, 200, "{page}");
    page["entries"].as_array().unwrap().len()
}

/// What the store holds for a run besides its journal: buffered signals
/// show up in the signal count of `/metrics` (the Prometheus text).
async fn residency(api: &Api) -> Value {
    api.get("/metrics").await.1
}

async fn wait_evicted(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while residency(api).await["resident"] != 0 {
        assert!(Instant::now() < deadline, "the run never left memory: {}", residency(api).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn add(api: &Api, run: &str, item: &str, update_id: &str) -> (u16, Value) {
    let body = json!({ "args": item, "update_id": update_id });
    api.post_json(&format!("/runs/{run}/updates/add"), &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_validated_journaled_once_and_replayed_and_queries_answer_evicted_runs_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--idle-ms", "300"]);
    let mut api = Api::new(&server);
    let (status, body) = api.deploy("cart", "workflow", std::fs::read(wasm("cart")).unwrap()).await;
    assert_eq!(status, 201, "{body}");

    // Update-with-start: the first call creates the session, a second one
    // with the same start finds it.
    let start = json!({ "workflow": "cart", "input": { "limit": 2 } });
    let body = json!({ "args": "apple", "update_id": "u-apple", "start": start });
    let (status, first) = api.post_json("/runs/s1/updates/add", &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((&first["status"], &first["result"], &first["started"]), (&json!("completed"), &json!(1), &json!(true)));
    let body = json!({ "args": "pear", "update_id": "u-pear", "start": start });
    let (status, second) = api.post_json("/runs/s1/updates/add", &body).await;
    assert_eq!((status, &second["result"], &second["started"]), (200, &json!(2), &json!(false)), "{second}");

    // A rejection is answered with the workflow's reason and leaves no
    // trace. (Once the run has left memory, its journal is all stored.)
    wait_evicted(&api).await;
    let before = journal_len(&api, "s1").await;
    for (item, kind) in [("apple", "duplicate-item"), ("fig", "cart-full"), (" ", "empty-item")] {
        let (status, refused) = add(&api, "s1", item, &format!("r-{}", item.trim())).await;
        assert_eq!((status, refused["code"].as_str()), (422, Some("rejected")), "{refused}");
        assert_eq!(refused["failure"]["kind"], kind, "{refused}");
    }
    let (status, unknown) = api.post_json("/runs/s1/updates/remove", &json!({ "args": "apple" })).await;
    assert_eq!((status, unknown["code"].as_str()), (404, Some("unknown-update")), "{unknown}");
    assert!(unknown["message"].as_str().unwrap().contains("add, checkout"), "{unknown}");
    let (status, bad) = api.post("/runs/s1/updates/add", r#"{"args": nope}"#).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid-json")), "{bad}");
    // Sending an update id again returns its result, not a second update.
    let (status, again) = add(&api, "s1", "pear", "u-pear").await;
    assert_eq!((status, &again["result"]), (200, &json!(2)), "{again}");
    assert_eq!(journal_len(&api, "s1").await, before, "rejected and repeated updates wrote nothing");

    // The handler's steps are journaled once: a complete-update per update,
    // after the timer it slept on.
    let (_, page) = api.get("/runs/s1/journal").await;
    let kinds: Vec<&str> =
        page["entries"].as_array().unwrap().iter().filter_map(|e| e["call"]["call"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "complete-update").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "start-timer").count(), 2, "{kinds:?}");

    // Queries on the evicted run: answered by replay, the run not rebuilt,
    // nothing written.
    wait_evicted(&api).await;
    let (before_len, before) = (journal_len(&api, "s1").await, residency(&api).await);
    let (status, items) = api.get("/runs/s1/queries/items").await;
    assert_eq!((status, &items["result"]), (200, &json!(["apple", "pear"])), "{items}");
    let (status, size) = api.post("/runs/s1/queries/size", "null").await;
    assert_eq!((status, &size["result"]), (200, &json!(2)), "{size}");
    let (status, unknown) = api.get("/runs/s1/queries/total").await;
    assert_eq!((status, unknown["code"].as_str()), (404, Some("unknown-query")), "{unknown}");
    let (status, missing) = api.get("/runs/nope/queries/items").await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("run-not-found")), "{missing}");
    let after = residency(&api).await;
    assert_eq!(journal_len(&api, "s1").await, before_len);
    assert_eq!((&after["resident"], &after["rebuilds"]), (&json!(0), &before["rebuilds"]), "{before} {after}");

    // Across a SIGKILL: the run is rebuilt from a journal holding the
    // updates, and answers as before.
    server.kill();
    server = Server::start(dir.path(), &["--idle-ms", "300"]);
    api = Api::new(&server);
    let cli = |args: &[&str]| cairn().args(args).args(["--server", &server.url]).output().unwrap();
    let queried = cli(&["query", "s1", "items"]);
    assert!(queried.status.success(), "{}", stderr(&queried));
    assert_eq!(stdout(&queried).trim(), r#"["apple","pear"]"#);
    let refused = cli(&["update", "s1", "add", r#""kiwi""#]);
    assert!(!refused.status.success() && stderr(&refused).contains("cart-full"), "{}", stderr(&refused));
    let checkout = cli(&["update", "s1", "checkout"]);
    assert!(checkout.status.success(), "{}", stderr(&checkout));
    assert_eq!(stdout(&checkout).trim(), r#""checked out""#);
    let run = api.wait("s1").await;
    assert_eq!((&run["status"], &run["result"]), (&json!("completed"), &json!({ "items": ["apple", "pear"] })));
    let (status, ended) = api.get("/runs/s1/queries/items").await;
    assert_eq!((status, ended["code"].as_str()), (409, Some("run-ended")), "{ended}");
    let (status, late) = add(&api, "s1", "plum", "u-plum").await;
    assert_eq!((status, late["code"].as_str()), (409, Some("run-ended")), "{late}");
    // A finished update can still be asked for its result.
    let (status, done) = add(&api, "s1", "apple", "u-apple").await;
    assert_eq!((status, &done["result"]), (200, &json!(1)), "{done}");

    // The journal with its updates replays exactly.
    server.kill();
    let replay = cairn().args(["replay", "s1", "--data"]).arg(dir.path()).output().unwrap();
    assert!(replay.status.success(), "{}{}", stdout(&replay), stderr(&replay));
}

/// Update-with-start from the CLI, and an update whose handler outlives
/// the wait: accepted, then its result fetched by sending the id again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_outliving_its_wait_is_accepted_and_its_id_fetches_the_result_later() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-signals-per-run", "1"]);
    let api = Api::new(&server);
    let (status, body) = api.deploy("cart", "workflow", std::fs::read(wasm("cart")).unwrap()).await;
    assert_eq!(status, 201, "{body}");
    let cli = |args: &[&str]| cairn().args(args).args(["--server", &server.url]).output().unwrap();
    let created = cli(&["update", "s2", "add", r#""tea""#, "--start", "cart", "--input", r#"{"limit":5}"#]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert_eq!(stdout(&created), "started s2\n1");
    let bad = cli(&["update", "s2", "add", "{", "--start", "cart"]);
    assert!(!bad.status.success() && stderr(&bad).contains("ARGS is not valid JSON"), "{}", stderr(&bad));

    // Paused, the run takes no steps: the update is accepted and waits.
    let (status, _) = api.post_json("/runs/s2/pause", &json!({})).await;
    assert_eq!(status, 200);
    let (status, accepted) =
        api.post_json("/runs/s2/updates/add?wait=0.5", &json!({ "args": "milk", "update_id": "u-milk" })).await;
    assert_eq!((status, &accepted["status"]), (202, &json!("accepted")), "{accepted}");
    // An accepted update waits in the run's signal buffer, within its cap.
    let (status, full) = api.post_json("/runs/s2/updates/add?wait=0", &json!({ "args": "jam" })).await;
    assert_eq!((status, full["code"].as_str()), (429, Some("too-many-signals")), "{full}");
    let (status, _) = api.post_json("/runs/s2/resume", &json!({})).await;
    assert_eq!(status, 200);
    let (status, done) = api.post_json("/runs/s2/updates/add", &json!({ "args": "milk", "update_id": "u-milk" })).await;
    assert_eq!((status, &done["status"], &done["result"]), (200, &json!("completed"), &json!(2)), "{done}");
    let (_, items) = api.get("/runs/s2/queries/items").await;
    assert_eq!(items["result"], json!(["tea", "milk"]), "{items}");
    // A cancel reaches a workflow waiting on updates alone.
    assert_eq!(api.post_json("/runs/s2/cancel", &json!({})).await.0, 202);
    let run = api.wait("s2").await;
    assert_eq!((&run["status"], &run["failure"]["kind"]), (&json!("failed"), &json!("cancelled")), "{run}");
    // An update name the server cannot make an id from still gets one.
    let (status, odd) = api.post_json("/runs/s3/updates/add%20item", &json!({ "start": { "workflow": "cart" } })).await;
    assert_eq!((status, odd["code"].as_str()), (404, Some("unknown-update")), "{odd}");
}
