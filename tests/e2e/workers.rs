//! External activity workers: the order example's `inventory` activities
//! served by a Python and a JavaScript process polling `cairn serve`, and a
//! worker lost mid-task whose task goes to another after the heartbeat
//! timeout.

use crate::server::{Api, Server};
use crate::support::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A worker process, killed when dropped; its stdout lines arrive on `lines`.
pub(crate) struct Worker {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    pub(crate) fn start(language: &str, server: &str, id: &str, hang_on: Option<&str>) -> Worker {
        let mut command = match language {
            "python" => {
                let mut c = Command::new("python3");
                c.arg(repo().join("examples/workers/python/worker.py"));
                c
            }
            _ => {
                let mut c = Command::new("node");
                c.arg(repo().join("examples/workers/js/worker.mjs"));
                c
            }
        };
        command.args(["--server", server, "--id", id]);
        if let Some(function) = hang_on {
            command.args(["--hang-on", function]);
        }
        let mut child = command.stdout(Stdio::piped()).spawn().expect("starting a worker");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Worker { child, lines }
    }

    /// Waits for a line starting with `prefix`.
    pub(crate) fn expect(&self, prefix: &str) -> String {
        loop {
            let line =
                self.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no `{prefix}` line"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn order_server(dir: &std::path::Path, heartbeat_ms: &str) -> (Server, Api) {
    let server = Server::start(dir, &["--external-activity", "inventory", "--heartbeat-timeout-ms", heartbeat_ms]);
    let api = Api::new(&server);
    assert_eq!(api.deploy("order", "workflow", std::fs::read(wasm("order")).unwrap()).await.0, 201);
    assert_eq!(api.deploy("payments", "activity", std::fs::read(wasm("payments")).unwrap()).await.0, 201);
    (server, api)
}

pub(crate) fn order(id: &str) -> Value {
    let mut input = read_json(&repo().join("examples/order/input.json"));
    input["order_id"] = json!(id);
    json!({ "workflow": "order", "id": id, "input": input })
}

pub(crate) fn expected(id: &str) -> Value {
    json!({ "order_id": id, "status": "shipped", "charge_id": format!("ch_{id}_2400"), "tracking": format!("TRK-{id}-cairn-mug") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_workers_serve_the_order_examples_inventory() {
    for language in ["python", "js"] {
        let dir = tempfile::tempdir().unwrap();
        let (server, api) = order_server(dir.path(), "5000").await;
        let _worker = Worker::start(language, &server.url, &format!("{language}-1"), None);
        let ids: Vec<String> = (0..3).map(|i| format!("{language}-{i}")).collect();
        for id in &ids {
            assert_eq!(api.post_json("/runs", &order(id)).await.0, 201);
        }
        for id in &ids {
            let run = api.wait(id).await;
            assert_eq!(run["result"], expected(id), "{language}: {run}");
            // The journal holds the worker's own text, as the Rust inventory
            // component writes it.
            let (_, journal) = api.get(&format!("/runs/{id}/journal")).await;
            let reserved = journal["entries"][2]["reply"]["completion"]["ok"].as_str().unwrap().to_owned();
            assert_eq!(
                reserved,
                format!(r#"{{"reservation_id":"res_{id}_cairn-mug","sku":"cairn-mug","quantity":2}}"#)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_mid_task_has_its_task_retried_by_another_after_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = order_server(dir.path(), "1000").await;
    let stuck = Worker::start("python", &server.url, "doomed", Some("ship"));
    assert_eq!(api.post_json("/runs", &order("lost")).await.0, 201);
    let took = stuck.expect("took inventory.ship");
    drop(stuck); // SIGKILL, mid-task
    let rescuer = Worker::start("js", &server.url, "rescuer", None);
    let run = api.wait("lost").await;
    assert_eq!(run["result"], expected("lost"), "{run}");
    let retried = rescuer.expect("took inventory.ship");
    assert_ne!(retried, took, "a new attempt has a new task token");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"cairn_activity_attempts_total{activity="inventory.ship",outcome="failed"} 1"#),
        "{metrics}"
    );
    // A late report from the lost worker is refused: its task is gone.
    let token = took.rsplit(' ').next().unwrap();
    let (status, body) = api.post_json(&format!("/tasks/{token}/complete"), &json!({ "result": {} })).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("task-gone")), "{body}");
}
