//! Bounded resources: what a client can make the host hold is capped, with
//! a clear answer past the cap and nothing half-recorded.

use crate::server::{approval_input, examples_server, Api};
use serde_json::{json, Value};

async fn park(api: &Api, id: &str) {
    let (status, body) = api.post_json("/runs", &json!({ "workflow": "approval", "id": id, "input": approval_input(1) })).await;
    assert_eq!(status, 201, "{body}");
}

async fn signal(api: &Api, id: &str, payload: &Value) -> (u16, Value) {
    // `noise` is a signal the approval workflow never reads: it stays buffered.
    api.post_json(&format!("/runs/{id}/signals/noise"), payload).await
}

/// Signals a run never reads are capped per run and over every run (a
/// `429` that names the cap); a run's end frees what it had buffered, and
/// the counts survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_signals_are_capped_per_run_and_in_total() {
    let dir = tempfile::tempdir().unwrap();
    let caps = ["--max-signals-per-run", "5", "--max-signal-mib", "1"];
    let (server, api) = examples_server(dir.path(), &caps).await;
    park(&api, "a").await;
    for i in 0..5 {
        let (status, body) = signal(&api, "a", &json!({ "i": i })).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = signal(&api, "a", &json!({ "i": 5 })).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("too-many-signals")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("already has 5 signals it has not consumed"), "{body}");
    // Another run is not held up by that one's cap, but by the total.
    park(&api, "b").await;
    let big = json!("x".repeat(400 << 10));
    for _ in 0..2 {
        let (status, body) = signal(&api, "b", &big).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = signal(&api, "b", &big).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("signal-buffer-full")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("limit of 1048576 bytes"), "{body}");

    // Counted again from the store after a restart.
    drop(server);
    let (server, api) = examples_server(dir.path(), &caps).await;
    assert_eq!(signal(&api, "a", &json!(6)).await.0, 429);
    assert_eq!(signal(&api, "b", &big).await.0, 429);
    // A run's end frees its signals.
    assert_eq!(api.post_json("/runs/b/terminate", &json!({})).await.0, 202);
    assert_eq!(api.wait("b").await["status"], "terminated");
    park(&api, "c").await;
    assert_eq!(signal(&api, "c", &big).await.0, 202);
    drop(server);
}
