//! Bounded resources: what a client can make the host hold is capped, with
//! a clear answer past the cap and nothing half-recorded.

use crate::server::{approval_input, examples_server, Api};
use serde_json::{json, Value};

async fn park(api: &Api, id: &str) {
    let (status, body) =
        api.post_json("/runs", &json!({ "workflow": "approval", "id": id, "input": approval_input(1) })).await;
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
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\ncairn_signals_buffered 7\n"), "{metrics}");

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

/// Connections that send nothing, or their headers a byte at a time,
/// cannot lock an authenticated client out: at the connection cap the one
/// idle the longest is closed to make room, and idle ones are closed after
/// the idle timeout anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_cannot_lock_clients_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let args = ["--token-file", token.to_str().unwrap(), "--max-connections", "32", "--idle-timeout-s", "600"];
    let server = crate::server::Server::start(&dir.path().join("data"), &args);
    let addr = server.url.trim_start_matches("http://").to_owned();
    // Four times the cap of connections that never finish a request.
    let mut idle = Vec::new();
    for i in 0..128 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(b"GET /v1/runs HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        }
        idle.push(stream);
    }
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build().unwrap();
    for _ in 0..3 {
        let response = client.get(format!("{}/v1/runs", server.url)).bearer_auth("s3cret").send().await;
        assert_eq!(response.expect("an authenticated client gets in").status(), 200);
    }
    // The oldest idle ones were closed to make room.
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), idle[0].read(&mut first)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the oldest idle connection is closed: {read:?}");
    drop(server);

    // With a short idle timeout, an idle connection and a slow one close by
    // themselves.
    let dir = tempfile::tempdir().unwrap();
    let server = crate::server::Server::start(dir.path(), &["--idle-timeout-s", "1"]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut quiet = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let dripping = tokio::spawn(async move {
        for byte in b"GET /v1/health HTTP/1.1\r\nHost: a-very-slow-client\r\n".iter().cycle().take(200) {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    });
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), quiet.read(&mut first)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "an idle connection is closed: {read:?}");
    assert!(dripping.await.unwrap(), "a connection sending its headers a byte at a time is closed");
    drop(server);
}

/// Runs share one guest memory budget: with room for two runs' memory,
/// the third waits for one to finish instead of the host growing past it,
/// and all three complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_wait_for_the_guest_memory_budget_rather_than_grow_past_it() {
    let dir = tempfile::tempdir().unwrap();
    // Runs stay resident while they wait (no eviction frees their memory).
    let args = ["--memory-budget-mib", "300", "--max-memory-mib", "256", "--idle-ms", "600000"];
    let server = crate::server::Server::start(dir.path(), &args);
    let api = Api::new(&server);
    let (status, body) =
        api.deploy("hostile", "workflow", std::fs::read(crate::support::wasm("hostile")).unwrap()).await;
    assert_eq!(status, 201, "{body}");
    for i in 0..3 {
        let start = json!({ "workflow": "hostile", "id": format!("h{i}"), "input": { "mode": "hold", "mib": 110, "ms": 1500 } });
        assert_eq!(api.post_json("/runs", &start).await.0, 201);
    }
    let (mut most, mut saw_one_waiting) = (0, false);
    loop {
        let mut holding = 0;
        let mut done = 0;
        for i in 0..3 {
            let (_, run) = api.get(&format!("/runs/h{i}")).await;
            match run["status"].as_str() {
                Some("running") => holding += usize::from(run["custom_status"] == "holding"),
                Some("completed") => done += 1,
                other => panic!("h{i} is {other:?}: {run}"),
            }
        }
        if holding == 2 {
            let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
            let free: u64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix("cairn_guest_memory_free_mib "))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{metrics}"));
            assert!(free < 300 - 2 * 110, "two runs hold their memory, yet {free} MiB are free");
        }
        most = most.max(holding);
        saw_one_waiting |= holding == 2 && done == 0;
        if done == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(most <= 2, "{most} runs held their memory at once, past the budget");
    assert!(saw_one_waiting, "two runs held the budget while the third waited");
}
