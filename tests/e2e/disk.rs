//! Failing writes (a full disk): the host stops advancing runs instead of
//! corrupting them, says so on /v1/health, and resumes by itself once
//! writes succeed again, with every run finishing as it would have.

use crate::crash::assert_store_is_consistent;
use crate::server::Server;
use crate::support::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

async fn deploy_order(http: &reqwest::Client, url: &str) {
    for (name, kind) in [("order", "workflow"), ("payments", "activity"), ("inventory", "activity")] {
        let r = http
            .post(format!("{url}/v1/components/{name}?kind={kind}"))
            .body(std::fs::read(wasm(name)).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "deploy {name}");
    }
}

fn order(id: &str) -> (Value, Value) {
    let mut input = read_json(&repo().join("examples/order/input.json"));
    input["order_id"] = json!(id);
    let expected = json!({ "order_id": id, "status": "shipped", "charge_id": format!("ch_{id}_2400"), "tracking": format!("TRK-{id}-cairn-mug") });
    (json!({ "workflow": "order", "id": id, "input": input }), expected)
}

/// Starts a run in the background: while writes fail, the start itself waits.
fn start(http: &reqwest::Client, url: &str, body: Value) -> tokio::task::JoinHandle<u16> {
    let (http, url) = (http.clone(), url.to_owned());
    tokio::spawn(async move { http.post(format!("{url}/v1/runs")).json(&body).send().await.unwrap().status().as_u16() })
}

async fn health(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(format!("{url}/v1/health")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Waits until /v1/health reports failing writes, and returns its message.
async fn wait_degraded(http: &reqwest::Client, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = health(http, url).await;
        if status == 503 {
            assert_eq!(body["code"], "store-writes-failing", "{body}");
            return body["message"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "health never reported the failing writes: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn result(http: &reqwest::Client, url: &str, id: &str) -> Value {
    loop {
        let run: Value =
            http.get(format!("{url}/v1/runs/{id}/result?wait=10")).send().await.unwrap().json().await.unwrap();
        if run["status"] != "running" {
            return run;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_pause_runs_and_they_resume_when_writes_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("disk-is-full");
    let data = dir.path().join("data");
    // The server's writer fails every commit while `full` exists.
    let server = Server::start_with_env(&data, &[], &[("CAIRN_FAIL_WRITES_WHILE", full.as_os_str())]);
    let http = client();
    let url = server.url.clone();
    deploy_order(&http, &url).await;

    // A run in flight when the disk fills, and one started while it is full.
    let (body, expected) = order("before");
    assert_eq!(start(&http, &url, body).await.unwrap(), 201);
    std::fs::write(&full, "").unwrap();
    let (body, expected_during) = order("during");
    let during = start(&http, &url, body);
    let message = wait_degraded(&http, &url).await;
    assert!(message.contains("No space left on device"), "{message}");
    // Nothing advances: the order's 500 ms timer would long have fired.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run: Value = http.get(format!("{url}/v1/runs/before")).send().await.unwrap().json().await.unwrap();
    assert_eq!(run["status"], "running", "reads still work, and the run is paused: {run}");
    assert!(!during.is_finished(), "a start is acknowledged only once it is durable");
    // A start with `?wait` answers by its deadline all the same, and says
    // the outcome is unknown (not "nothing was changed": it may land).
    let (body, expected_waited) = order("waited");
    let asked = Instant::now();
    let r = http.post(format!("{url}/v1/runs?wait=1")).json(&body).send().await.unwrap();
    let (status, answer): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert!(asked.elapsed() < Duration::from_secs(5), "answered after {:?}", asked.elapsed());
    assert_eq!((status, answer["code"].as_str()), (503, Some("outcome-unknown")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("No space left on device"), "{answer}");

    std::fs::remove_file(&full).unwrap();
    assert_eq!(during.await.unwrap(), 201);
    assert_eq!(result(&http, &url, "before").await["result"], expected);
    assert_eq!(result(&http, &url, "during").await["result"], expected_during);
    // The start whose answer was "unknown" landed once space returned, and
    // ran, without a restart.
    assert_eq!(result(&http, &url, "waited").await["result"], expected_waited);
    assert_eq!(health(&http, &url).await.0, 200);
    server.kill();
    assert_store_is_consistent(&data);
    let journal = journal(&data, "before");
    assert!(journal.iter().enumerate().all(|(i, e)| e["seq"] == i), "no gap: {journal:?}");
}

/// A real full file system (a tmpfs mounted for the test; skipped where
/// mounting is not allowed, the test above covers the logic there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_really_full_disk_pauses_runs_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"]).arg(&mount).output();
    if !mounted.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); failing_writes_pause_runs covers the logic");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let data = mount.join("data");
    let server = Server::start(&data, &[]);
    let http = client();
    let url = server.url.clone();
    deploy_order(&http, &url).await;

    // Fill the disk to the last byte.
    let filler = mount.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while file.write_all(&block).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] = 1;
        }
    }
    // Start runs until the store runs out of room (redb first fills the
    // free pages it has).
    let mut started = Vec::new();
    let mut degraded = None;
    for i in 0..400 {
        let (mut body, expected) = order(&format!("full-{i}"));
        // Room the store set aside (its log is made 1 MiB at a time) takes
        // small runs for a while: large inputs run out of it sooner.
        body["input"]["note"] = json!("n".repeat(64 << 10));
        started.push((format!("full-{i}"), expected, start(&http, &url, body)));
        let (status, body) = health(&http, &url).await;
        if status == 503 {
            degraded = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let message = match degraded {
        Some(body) => body["message"].as_str().unwrap().to_owned(),
        None => wait_degraded(&http, &url).await,
    };
    assert!(message.contains("No space left on device"), "{message}");

    std::fs::remove_file(&filler).unwrap();
    for (id, expected, start) in started {
        assert_eq!(start.await.unwrap(), 201, "{id}");
        assert_eq!(result(&http, &url, &id).await["result"], expected, "{id}");
    }
    assert_eq!(health(&http, &url).await.0, 200);
    server.kill();
    assert_store_is_consistent(&data);
}
