//! Operator controls on runs: pause and resume (a paused run takes no
//! steps; what comes meanwhile is kept, across a restart too).

use crate::server::{Api, Server};
use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn deploy_all(api: &Api) {
    for (name, kind) in [("mirror", "workflow"), ("script", "workflow"), ("noop", "activity")] {
        let (status, body) = api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await;
        assert!(status == 201 || status == 200, "{name}: {body}");
    }
}

async fn journal(api: &Api, id: &str) -> Vec<Value> {
    let (status, page) = api.get(&format!("/runs/{id}/journal")).await;
    assert_eq!(status, 200, "{page}");
    page["entries"].as_array().unwrap().clone()
}

async fn status(api: &Api, id: &str) -> String {
    api.get(&format!("/runs/{id}")).await.1["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_takes_no_steps_keeps_what_comes_across_a_restart_and_goes_on_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    deploy_all(&api).await;

    // A run whose timer comes due while it is paused.
    let steps = json!([{ "sleep_ms": 1500 }, { "activity": "noop.ping", "input": 1 }]);
    let (code, _) = api.post_json("/runs", &json!({ "workflow": "script", "id": "p-timer", "input": steps })).await;
    assert_eq!(code, 201);
    let (code, paused) = api.post_json("/runs/p-timer/pause", &json!({})).await;
    assert_eq!((code, paused["status"].as_str()), (200, Some("paused")), "{paused}");
    // A run that is sent the signal it waits for while it is paused.
    let (code, _) = api
        .post_json("/runs", &json!({ "workflow": "mirror", "id": "p-signal", "input": { "await_signal": true } }))
        .await;
    assert_eq!(code, 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !journal(&api, "p-signal").await.iter().any(|e| e.to_string().contains("wait-signal")) {
        assert!(Instant::now() < deadline, "p-signal never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.post_json("/runs/p-signal/pause", &json!({})).await.0, 200);
    assert_eq!(api.post_json("/runs/p-signal/pause", &json!({})).await.0, 200, "pausing twice changes nothing");
    let (code, _) = api.post("/runs/p-signal/signals/more", "7").await;
    assert_eq!(code, 202);

    let before = (journal(&api, "p-timer").await, journal(&api, "p-signal").await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!((journal(&api, "p-timer").await, journal(&api, "p-signal").await), before, "a paused run took a step");
    let (_, listed) = api.get("/runs?status=paused").await;
    let ids: Vec<&str> = listed["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["p-signal", "p-timer"]);
    // A waiting client is not told a paused run ended.
    let (_, waited) = api.get("/runs/p-timer/result?wait=1").await;
    assert_eq!(waited["status"], "paused", "{waited}");

    // Still paused after a crash and a restart, still without new steps.
    server.kill();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for id in ["p-timer", "p-signal"] {
        assert_eq!(status(&api, id).await, "paused", "{id}");
    }
    assert_eq!((journal(&api, "p-timer").await, journal(&api, "p-signal").await), before);

    // Bad requests say what is wrong.
    let (code, body) = api.post_json("/runs/nope/pause", &json!({})).await;
    assert_eq!((code, body["code"].as_str()), (404, Some("run-not-found")), "{body}");

    // Resumed, each goes on with what it was kept.
    for id in ["p-timer", "p-signal"] {
        let (code, resumed) = api.post_json(&format!("/runs/{id}/resume"), &json!({})).await;
        assert_eq!((code, resumed["status"].as_str()), (200, Some("running")), "{resumed}");
    }
    let timer = api.wait("p-timer").await;
    assert_eq!(timer["status"], "completed", "{timer}");
    assert_eq!(timer["result"].as_array().map(Vec::len), Some(2), "{timer}");
    let signal = api.wait("p-signal").await;
    assert_eq!(signal["result"]["signal"], json!(7), "{signal}");
    let (code, body) = api.post_json("/runs/p-timer/pause", &json!({})).await;
    assert_eq!((code, body["code"].as_str()), (409, Some("run-ended")), "{body}");
    let (code, _) =
        api.post_json("/runs", &json!({ "workflow": "mirror", "id": "live", "input": { "await_signal": true } })).await;
    assert_eq!(code, 201);
    let (code, body) = api.post_json("/runs/live/resume", &json!({})).await;
    assert_eq!((code, body["code"].as_str()), (409, Some("run-not-paused")), "{body}");
    drop(server);
    let check = cairn().args(["check", "--json", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(json(&stdout(&check))["ok"], true, "{}", stdout(&check));
}
