//! The host server: a real `cairn serve` process, real HTTP on loopback.

use crate::support::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `cairn serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(data, extra, &[])
    }

    pub fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            .env("CAIRN_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting cairn serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reading the listen line");
        let url = line
            .trim()
            .strip_prefix("cairn listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from cairn serve: {line:?}"))
            .to_owned();
        Server { child, url }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api { base: format!("{}/v1", server.url), http: reqwest::Client::new(), token: None }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.auth(self.http.get(format!("{}{path}", self.base))).send().await.expect("GET");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .auth(self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body))
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.auth(self.http.delete(format!("{}{path}", self.base))).send().await.expect("DELETE");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, body.to_string()).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.auth(self.http.put(format!("{}{path}", self.base)).json(body)).send().await.expect("PUT");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn deploy(&self, name: &str, kind: &str, bytes: Vec<u8>) -> (u16, Value) {
        self.post(&format!("/components/{name}?kind={kind}"), bytes).await
    }

    /// When a run held a slot, from its journal: its first step after the
    /// start (it had a slot by then) to its last entry.
    pub async fn active_span(&self, id: &str) -> (u64, u64) {
        let (_, page) = self.get(&format!("/runs/{id}/journal")).await;
        let entries = page["entries"].as_array().unwrap_or_else(|| panic!("no journal for {id}: {page}"));
        let at = |e: &Value| e["at_ms"].as_u64().unwrap();
        (at(&entries[1]), at(entries.last().unwrap()))
    }

    /// Waits for a run to end (long-polling) and returns it.
    pub async fn wait(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, run) = self.get(&format!("/runs/{id}/result?wait=10")).await;
            assert_eq!(status, 200, "{run}");
            if run["status"] != "running" {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} did not end: {run}");
        }
    }
}

async fn deploy_examples(api: &Api) {
    for (name, kind) in
        [("approval", "workflow"), ("order", "workflow"), ("payments", "activity"), ("inventory", "activity")]
    {
        let (status, body) = api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await;
        assert!(status == 201 || status == 200, "deploy {name}: {status} {body}");
    }
}

/// A server on `dir` started with `args`, the examples deployed.
pub async fn examples_server(dir: &std::path::Path, args: &[&str]) -> (Server, Api) {
    let server = Server::start(dir, args);
    let api = Api::new(&server);
    deploy_examples(&api).await;
    (server, api)
}

pub fn approval_input(i: usize) -> Value {
    json!({ "order_id": format!("A-{i}"), "sku": "cairn-lamp", "quantity": 1, "amount_cents": 4200, "card": "4242-4242-4242-4242" })
}

fn order_input(i: usize) -> Value {
    let mut input = read_json(&repo().join("examples/order/input.json"));
    input["order_id"] = json!(format!("O-{i}"));
    input
}

fn expected_order(i: usize) -> Value {
    json!({ "order_id": format!("O-{i}"), "status": "shipped", "charge_id": format!("ch_O-{i}_2400"), "tracking": format!("TRK-O-{i}-cairn-mug") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_approvals_deployed_started_and_signalled_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Deploy with the CLI, as a user would.
    for (name, extra) in [("approval", None), ("payments", Some("--activity")), ("inventory", Some("--activity"))] {
        let mut cmd = cairn();
        cmd.args(["deploy", name]).arg(wasm(name)).args(["--server", &server.url]);
        cmd.args(extra);
        expect_success(&cmd.output().unwrap());
    }
    let api = Api::new(&server);
    let ids: Vec<String> = (0..100).map(|i| format!("approval-{i}")).collect();
    let starts = ids.iter().enumerate().map(|(i, id)| {
        let api = &api;
        async move {
            let (status, run) =
                api.post_json("/runs", &json!({ "workflow": "approval", "id": id, "input": approval_input(i) })).await;
            assert_eq!(status, 201, "{run}");
            assert_eq!(run["version"], 1);
        }
    });
    futures_join(starts).await;
    let signals = ids.iter().map(|id| {
        let api = &api;
        async move {
            let (status, body) = api
                .post_json(&format!("/runs/{id}/signals/approve"), &json!({ "approved": true, "by": "alice" }))
                .await;
            assert_eq!(status, 202, "{body}");
        }
    });
    futures_join(signals).await;
    for (i, id) in ids.iter().enumerate() {
        let run = api.wait(id).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            run["result"],
            json!({ "order_id": format!("A-{i}"), "status": "charged", "approved_by": "alice", "charge_id": format!("ch_A-{i}_4200") })
        );
    }
    // The example's own input gives its expected output.
    let (_, run) = api
        .post_json("/runs", &json!({ "workflow": "approval", "id": "sample", "input": read_json(&repo().join("examples/approval/input.json")) }))
        .await;
    assert_eq!(run["status"], "running");
    api.post_json("/runs/sample/signals/approve", &json!({ "approved": true, "by": "alice" })).await;
    assert_eq!(api.wait("sample").await["result"], read_json(&repo().join("examples/approval/expected-output.json")));

    // The CLI reads it back.
    let output = cairn().args(["result", "sample", "--server", &server.url]).output().unwrap();
    assert_eq!(json(&expect_success(&output)), read_json(&repo().join("examples/approval/expected-output.json")));
    let output = cairn().args(["list", "--status", "completed", "--json", "--server", &server.url]).output().unwrap();
    assert_eq!(json(&expect_success(&output))["runs"].as_array().unwrap().len(), 100);
}

/// `POST /v1/runs?wait=S` starts a run and answers when it ends or after S
/// seconds, with the run as the result long poll returns it: one request
/// from start to result. `cairn start --wait` uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_can_wait_for_the_runs_end() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = examples_server(dir.path(), &[]).await;
    let start = json!({ "workflow": "approval", "id": "w", "input": approval_input(7) });
    // Waiting for a signal, the run is still running when the wait is over.
    let asked = Instant::now();
    let (status, run) = api.post_json("/runs?wait=0.5", &start).await;
    assert_eq!((status, run["status"].as_str()), (201, Some("running")), "{run}");
    assert!(asked.elapsed() >= Duration::from_millis(500), "the start did not wait");
    api.post_json("/runs/w/signals/approve", &json!({ "approved": true, "by": "alice" })).await;
    // The same start again (idempotent) waits for the end and has the result.
    let (status, run) = api.post_json("/runs?wait=30", &start).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("completed")), "{run}");
    let expected =
        json!({ "order_id": "A-7", "status": "charged", "approved_by": "alice", "charge_id": "ch_A-7_4200" });
    assert_eq!(run["result"], expected);
    // The CLI prints the result from that one answer.
    let output = cairn()
        .args(["start", "approval", "--id", "w", "--wait", "--server", &server.url, "--input"])
        .arg(approval_input(7).to_string())
        .output()
        .unwrap();
    assert_eq!(json(&expect_success(&output)), expected);
}

async fn futures_join<F: std::future::Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut set = Vec::new();
    for f in futures {
        set.push(f);
    }
    // Run them concurrently on this task.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_waiting_for_approval_releases_the_stock() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = examples_server(dir.path(), &[]).await;
    api.post_json("/runs", &json!({ "workflow": "approval", "id": "c1", "input": approval_input(1) })).await;
    // Wait until it is parked on the signal.
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.get("/runs/c1").await.1["custom_status"] != json!({ "stage": "awaiting-approval" }) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = api.post("/runs/c1/cancel", "").await;
    assert_eq!(status, 202, "{body}");
    let run = api.wait("c1").await;
    assert_eq!(run["result"], json!({ "order_id": "A-1", "status": "cancelled" }));
    let (_, journal) = api.get("/runs/c1/journal").await;
    let activities: Vec<&str> = journal["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["call"]["call"] == "schedule-activity")
        .filter_map(|e| e["call"]["name"].as_str())
        .collect();
    assert_eq!(activities, ["inventory.reserve", "inventory.release"]);
    // The await on the signal is the one that received the cancellation.
    let cancelled =
        journal["entries"].as_array().unwrap().iter().find(|e| e["reply"]["completion"]["err"]["kind"] == "cancelled");
    assert_eq!(cancelled.unwrap()["call"]["call"], "await");

    // A finished run takes no more input.
    let (status, body) = api.post_json("/runs/c1/signals/approve", &json!({ "approved": true, "by": "x" })).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run-ended")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_stops_a_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = examples_server(dir.path(), &[]).await;
    api.post_json("/runs", &json!({ "workflow": "approval", "id": "t1", "input": approval_input(1) })).await;
    let (status, _) = api.post_json("/runs/t1/terminate", &json!({ "reason": "fraud suspected" })).await;
    assert_eq!(status, 202);
    let run = api.wait("t1").await;
    assert_eq!(run["status"], "terminated");
    assert_eq!(run["failure"]["message"], "fraud suspected");
    let (_, journal) = api.get("/runs/t1/journal").await;
    let last = journal["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["entry"], "terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_the_server_being_killed_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let runs = 300;
    let (mut server, api) = examples_server(dir.path(), &[]).await;
    for i in 0..runs {
        let (status, body) = api
            .post_json("/runs", &json!({ "workflow": "order", "id": format!("o-{i}"), "input": order_input(i) }))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Kill at different moments of the load (seeded, so a failure replays).
    for (round, delay_ms) in [150u64, 420, 75, 900].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        eprintln!("round {round}: SIGKILL pid {} after {delay_ms} ms", server.pid());
        server.kill();
        server = Server::start(dir.path(), &[]);
    }
    let api = Api::new(&server);
    for i in 0..runs {
        let id = format!("o-{i}");
        let run = api.wait(&id).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["result"], expected_order(i));
        let (_, journal) = api.get(&format!("/runs/{id}/journal")).await;
        let entries = journal["entries"].as_array().unwrap();
        let mut awaited = std::collections::HashSet::new();
        for e in entries {
            if e["call"]["call"] == "await" {
                assert!(awaited.insert(e["call"]["handle"].as_u64().unwrap()), "{id}: a completion was consumed twice");
            }
        }
        assert_eq!(entries.iter().filter(|e| e["entry"] == "completed").count(), 1);
        for (n, e) in entries.iter().enumerate() {
            assert_eq!(e["seq"], n as u64, "{id}: gap or duplicate in the journal");
        }
    }
    server.kill();
    crate::crash::assert_store_is_consistent(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_waiting_runs_fit_in_ten_resident_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = examples_server(dir.path(), &["--resident-cap", "10", "--idle-ms", "200"]).await;
    let runs = 1000;
    for i in 0..runs {
        let (status, body) = api
            .post_json("/runs", &json!({ "workflow": "approval", "id": format!("e-{i}"), "input": approval_input(i) }))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for i in 0..runs {
        let (status, body) = api
            .post_json(&format!("/runs/e-{i}/signals/approve"), &json!({ "approved": i % 2 == 0, "by": "bob" }))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    for i in 0..runs {
        let run = api.wait(&format!("e-{i}")).await;
        let expected = if i % 2 == 0 { "charged" } else { "rejected" };
        assert_eq!(run["result"]["status"], expected, "{run}");
    }
    let (_, metrics) = api.get("/metrics").await;
    assert!(metrics["evictions"].as_u64().unwrap() > 0, "{metrics}");
    assert!(metrics["rebuilds"].as_u64().unwrap() > 0, "{metrics}");
    assert!(metrics["resident"].as_u64().unwrap() <= 10, "{metrics}");
}

/// The ids the host makes sort in start order, so `order=desc` (what
/// `cairn list` and the web UI ask for) shows the newest runs first, and
/// paging with `after` walks on down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_without_an_id_are_listed_newest_first_with_order_desc() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = examples_server(dir.path(), &[]).await;
    let mut started = Vec::new();
    for i in 0..3 {
        let (status, run) =
            api.post_json("/runs", &json!({ "workflow": "approval", "input": approval_input(i) })).await;
        assert_eq!(status, 201, "{run}");
        started.push(run["id"].as_str().unwrap().to_owned());
    }
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, oldest_first) = api.get("/runs?workflow=approval").await;
    assert_eq!(ids(&oldest_first), started);
    let (_, first) = api.get("/runs?workflow=approval&order=desc&limit=2").await;
    assert_eq!(ids(&first), [started[2].clone(), started[1].clone()]);
    let after = first["next"].as_str().unwrap();
    let (_, rest) = api.get(&format!("/runs?workflow=approval&order=desc&after={after}")).await;
    assert_eq!(ids(&rest), [started[0].clone()]);
    assert!(rest["next"].is_null(), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_with_one_id_make_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = examples_server(dir.path(), &[]).await;
    let body = json!({ "workflow": "approval", "id": "same", "input": approval_input(7) });
    let starts = (0..16).map(|_| {
        let (api, body) = (&api, body.clone());
        async move {
            let (status, run) = api.post_json("/runs", &body).await;
            assert!(status == 201 || status == 200, "{status} {run}");
            assert_eq!(run["id"], "same");
        }
    });
    futures_join(starts).await;
    let (_, page) = api.get("/runs?workflow=approval").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    let (_, journal) = api.get("/runs/same/journal").await;
    assert_eq!(journal["entries"].as_array().unwrap().iter().filter(|e| e["entry"] == "started").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_documented_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = examples_server(dir.path(), &[]).await;
    api.post_json("/runs", &json!({ "workflow": "approval", "id": "keep", "input": approval_input(1) })).await;

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/runs", b"{not json".to_vec(), 400, "invalid-json"),
        ("POST", "/runs", br#"{"workflow": 42}"#.to_vec(), 400, "invalid-json"),
        ("POST", "/runs", br#"{"workflow": "approval", "extra": 1}"#.to_vec(), 400, "invalid-json"),
        ("POST", "/runs", br#"{"workflow": "nope"}"#.to_vec(), 404, "workflow-not-found"),
        ("POST", "/runs", br#"{"workflow": "approval", "id": "bad id!"}"#.to_vec(), 400, "invalid-run-id"),
        ("POST", "/runs", vec![b' '; 5 << 20], 413, "too-large"),
        ("GET", "/runs/missing", vec![], 404, "run-not-found"),
        ("GET", "/runs/missing/journal", vec![], 404, "run-not-found"),
        ("GET", "/runs/keep/result?wait=abc", vec![], 400, "invalid-query"),
        ("GET", "/runs/keep/result?wait=1000", vec![], 400, "invalid-wait"),
        ("POST", "/runs?wait=-1", br#"{"workflow": "approval", "id": "waited"}"#.to_vec(), 400, "invalid-wait"),
        ("GET", "/runs?status=sleeping", vec![], 400, "invalid-status"),
        ("GET", "/runs?order=sideways", vec![], 400, "invalid-order"),
        ("POST", "/runs/missing/signals/approve", b"{}".to_vec(), 404, "run-not-found"),
        ("POST", "/runs/keep/signals/approve", b"{oops".to_vec(), 400, "invalid-json"),
        ("POST", "/runs/keep/signals/$cancel", b"{}".to_vec(), 400, "invalid-signal-name"),
        ("POST", "/runs/missing/cancel", vec![], 404, "run-not-found"),
        ("POST", "/runs/keep/terminate", br#"{"reason": 5}"#.to_vec(), 400, "invalid-json"),
        ("POST", "/components/x?kind=workflow", b"not wasm at all".to_vec(), 422, "invalid-component"),
        ("POST", "/components/x?kind=gizmo", b"\0asm".to_vec(), 400, "invalid-kind"),
        ("POST", "/components/bad%20name", b"\0asm".to_vec(), 400, "invalid-name"),
        ("POST", "/components/x", vec![], 400, "empty-body"),
        ("GET", "/nope", vec![], 404, "no-such-endpoint"),
        ("DELETE", "/runs", vec![], 405, "method-not-allowed"),
    ];
    // No connection reuse: the server closes a connection whose oversized
    // body it refused without reading.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    for (method, path, body, status, code) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = http.request(method.clone(), format!("{}{path}", api.base)).body(body).send().await.unwrap();
        let got = response.status().as_u16();
        let error: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!((got, error["code"].as_str()), (status, Some(code)), "{method} {path}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // A start refused for its `wait` started nothing.
    assert_eq!(api.get("/runs/waited").await.0, 404);

    // Upload validation names what is wrong: an activity is not a workflow.
    let (status, error) = api.deploy("wrong", "workflow", std::fs::read(wasm("payments")).unwrap()).await;
    assert_eq!((status, error["code"].as_str()), (422, Some("invalid-component")), "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message
            .contains("wrong is not a valid workflow component: this component exports `execute`: it is an activity"),
        "{error}"
    );
    assert!(!message.contains(&cairn_host::sandbox::sha256_hex(&std::fs::read(wasm("payments")).unwrap())), "{error}");
    // A workflow imports cairn:workflow/runtime, which activities do not get.
    let (status, error) = api.deploy("wrong", "activity", std::fs::read(wasm("hello")).unwrap()).await;
    assert_eq!(status, 422, "{error}");
    assert!(error["message"].as_str().unwrap().contains("this component exports `run`: it is a workflow"), "{error}");
    // A name keeps its kind, and the message says how to deploy under it.
    let (status, error) = api.deploy("payments", "workflow", std::fs::read(wasm("hello")).unwrap()).await;
    assert_eq!((status, error["code"].as_str()), (409, Some("kind-conflict")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("add `--activity`"), "{error}");
    // Same bytes: same version, nothing new.
    let (status, deployed) = api.deploy("payments", "activity", std::fs::read(wasm("payments")).unwrap()).await;
    assert_eq!((status, &deployed["version"], &deployed["created"]), (200, &json!(1), &json!(false)));

    // The store is intact: the one run, untouched.
    let (_, page) = api.get("/runs").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert_eq!(page["runs"][0]["status"], "running");
    let (_, components) = api.get("/components").await;
    assert_eq!(components["components"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protects_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &["--token-file", token_file.to_str().unwrap()]);
    let mut api = Api::new(&server);
    for (path, token) in [("/health", None), ("/runs", Some("wrong")), ("/openapi.json", Some("s3cret-toke"))] {
        api.token = token.map(String::from);
        let (status, error) = api.get(path).await;
        assert_eq!((status, error["code"].as_str()), (401, Some("unauthorized")), "{path}");
    }
    // The Prometheus endpoint sits outside /v1, behind the same token.
    let metrics = format!("{}/metrics", server.url);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&metrics).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&metrics).bearer_auth("s3cret-token").send().await.unwrap().status(), 200);
    api.token = Some("s3cret-token".into());
    assert_eq!(api.get("/health").await.0, 200);
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/runs/{id}/signals/{name}",
        "/runs/{id}/pause",
        "/runs/{id}/resume",
        "/schedules",
        "/schedules/{name}/backfill",
        "/workflows/{name}/retention",
        "/workflows/{name}/concurrency",
        "/runs/{id}/reset",
        "/runs/{id}/updates/{name}",
        "/runs/{id}/queries/{name}",
        "/activities/{name}/limits",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not in the OpenAPI document");
    }
    assert!(doc["paths"]["/runs/{id}"]["delete"].is_object());
    assert!(doc["components"]["schemas"]["Schedule"].is_object());
    // The CLI sends the token from CAIRN_TOKEN.
    let output = cairn().args(["list", "--server", &server.url]).env("CAIRN_TOKEN", "s3cret-token").output().unwrap();
    expect_success(&output);
    let output = cairn().args(["list", "--server", &server.url]).output().unwrap();
    assert!(stderr(&output).contains("Authorization: Bearer"), "{}", stderr(&output));
}

#[test]
fn the_server_refuses_to_listen_publicly_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn().args(["serve", "--listen", "0.0.0.0:0", "--data"]).arg(dir.path()).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--token-file"), "{}", stderr(&output));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let pid = server.pid();
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "cairn serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runs_report_their_results_to_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    for name in ["family", "hello"] {
        assert_eq!(api.deploy(name, "workflow", std::fs::read(wasm(name)).unwrap()).await.0, 201);
    }
    let (status, _) =
        api.post_json("/runs", &json!({ "workflow": "family", "id": "fam", "input": ["Ada", "Grace", ""] })).await;
    assert_eq!(status, 201);
    let run = api.wait("fam").await;
    assert_eq!(
        run["result"],
        json!([{ "greeting": "Hello, Ada!" }, { "greeting": "Hello, Grace!" }, { "failed": "invalid-input" }])
    );
    // Children have ids derived from the parent's id and the call's seq.
    for (seq, status) in [(1, "completed"), (2, "completed"), (3, "failed")] {
        let (code, child) = api.get(&format!("/runs/fam:{seq}")).await;
        assert_eq!(code, 200, "{child}");
        assert_eq!((child["status"].as_str(), child["parent"].as_str()), (Some(status), Some("fam")));
    }
    let (_, page) = api.get("/runs?workflow=hello").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 3, "a replay must not start children twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_smaller_than_the_load_makes_runs_wait_for_slots_not_fail_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    // Four instance slots for six order runs and their activities: without
    // the resident cap the pool imposes, four runs waiting on activities
    // would hold every slot and the activities could never start.
    let server = Server::start(dir.path(), &["--pool-instances", "4", "--idle-ms", "600000"]);
    let api = Api::new(&server);
    assert_eq!(api.deploy("order", "workflow", std::fs::read(wasm("order")).unwrap()).await.0, 201);
    for name in ["payments", "inventory"] {
        assert_eq!(api.deploy(name, "activity", std::fs::read(wasm(name)).unwrap()).await.0, 201);
    }
    let input = read_json(&repo().join("examples/order/input.json"));
    for i in 0..6 {
        let (status, body) =
            api.post_json("/runs", &json!({ "workflow": "order", "id": format!("o{i}"), "input": input })).await;
        assert_eq!(status, 201, "{body}");
    }
    let expected = read_json(&repo().join("examples/order/expected-output.json"));
    for i in 0..6 {
        let run = api.wait(&format!("o{i}")).await;
        assert_eq!(run["result"], expected, "o{i}");
    }
}

#[test]
fn a_pool_too_small_to_work_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        cairn().args(["run", "--pool-instances", "2", "--data"]).arg(dir.path()).arg(wasm("hello")).output().unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("a pool of 2 instances is too small: use 0 (no pool) or at least 4"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_starts_a_fresh_journal_and_keeps_history_and_signals() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    assert_eq!(api.deploy("counter", "workflow", std::fs::read(wasm("counter")).unwrap()).await.0, 201);
    api.post_json("/runs", &json!({ "workflow": "counter", "id": "cnt", "input": { "n": 0, "until": 3 } })).await;
    // Sent while generation 0 runs; generation 1 consumes it.
    let (status, body) = api.post_json("/runs/cnt/signals/note", &json!("carried over")).await;
    assert_eq!(status, 202, "{body}");
    let run = api.wait("cnt").await;
    assert_eq!(run["result"], json!({ "n": 3, "until": 3, "notes": ["carried over"] }));
    assert_eq!(run["generation"], 3);
    let (_, current) = api.get("/runs/cnt/journal").await;
    let entries = current["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "the last generation only started and completed: {current}");
    assert_eq!(json(entries[0]["input"].as_str().unwrap())["n"], 3);
    for generation in 0..3 {
        let (status, old) = api.get(&format!("/runs/cnt/journal?generation={generation}")).await;
        assert_eq!(status, 200);
        let old = old["entries"].as_array().unwrap();
        assert_eq!(json(old[0]["input"].as_str().unwrap())["n"], generation);
        let (sleep, end) = (&old[old.len() - 2], &old[old.len() - 1]);
        assert_eq!(sleep["reply"]["completion"]["ok"], "null", "each generation ends after its sleep");
        assert_eq!(end["entry"], "continued-as-new", "and says it continued as new: {end}");
        assert_eq!(json(end["input"].as_str().unwrap())["n"], generation + 1);
    }
    let (status, error) = api.get("/runs/cnt/journal?generation=9").await;
    assert_eq!((status, error["code"].as_str()), (400, Some("invalid-generation")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_importing_an_interface_the_host_lacks_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    let (status, error) = api.deploy("rogue", "workflow", std::fs::read(wasm("rogue")).unwrap()).await;
    assert_eq!((status, error["code"].as_str()), (422, Some("invalid-component")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("acme:db/query"), "{error}");
    let (_, components) = api.get("/components").await;
    assert_eq!(components["components"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_uploads_and_garbled_json_never_break_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = examples_server(dir.path(), &[]).await;
    // Seeded, so a failure replays.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = std::fs::read(wasm("hello")).unwrap();
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    for i in 0..60 {
        let mut bytes = valid.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => bytes.truncate(at.max(8)),
                _ => bytes.insert(at, next() as u8),
            }
        }
        let response =
            http.post(format!("{}/components/m{i}?kind=workflow", api.base)).body(bytes).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert!([200, 201, 422].contains(&status), "upload {i}: {status} {body}");
        assert!(body["code"].is_string() || body["sha256"].is_string(), "{body}");
    }
    let fragments = [
        "{",
        "}",
        "\"workflow\"",
        ":",
        "\"approval\"",
        ",",
        "\"input\"",
        "[",
        "]",
        "null",
        "1e999",
        "\"id\"",
        "\"\\u0000\"",
    ];
    for i in 0..300 {
        let body: String = (0..next() % 12).map(|_| fragments[(next() % fragments.len() as u64) as usize]).collect();
        let response = http.post(format!("{}/runs", api.base)).body(body.clone()).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(status < 500, "body {i} {body:?} gave {status}");
    }
    assert_eq!(api.get("/health").await.0, 200);
    server.kill();
    crate::crash::assert_store_is_consistent(dir.path());
}

/// A run's input, a signal's payload and the result reach the workflow,
/// the journal and every API read as the client's own text: no float is
/// rounded, no integer past 64 bits turned into a float.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_passes_numbers_through_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    assert_eq!(api.deploy("mirror", "workflow", std::fs::read(wasm("mirror")).unwrap()).await.0, 201);
    let input = r#"{"await_signal":true,"amount":1796586362.1859999,"big":123456789012345678901234567890,"exp":1E+2,"cents":3.10}"#;
    let payload = r#"{"price":0.30000000000000004,"n":18446744073709551616}"#;
    let (status, body) = api.post("/runs", format!(r#"{{"workflow":"mirror","id":"nums","input":{input}}}"#)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(api.post("/runs/nums/signals/more", payload).await.0, 202);
    assert_eq!(api.wait("nums").await["status"], "completed");

    let expected = format!(r#"{{"run_id":"nums","input":{input},"signal":{payload}}}"#);
    let journal = journal_over_api(&server, "nums");
    assert_eq!(journal.first().unwrap()["input"], input, "the journal's input");
    assert_eq!(journal.last().unwrap()["result"], expected.as_str(), "the journal's result");
    let text = reqwest::get(format!("{}/v1/runs/nums", server.url)).await.unwrap().text().await.unwrap();
    assert!(text.contains(&format!(r#""input":{input}"#)), "GET /runs/nums altered the input: {text}");
    assert!(text.contains(&format!(r#""result":{expected}"#)), "GET /runs/nums altered the result: {text}");
    let listed = reqwest::get(format!("{}/v1/runs?workflow=mirror", server.url)).await.unwrap().text().await.unwrap();
    assert!(listed.contains(&format!(r#""result":{expected}"#)), "GET /runs altered the result: {listed}");

    // The CLI sends and prints the same text.
    let output = cairn().args(["result", "nums", "--server", &server.url]).output().unwrap();
    assert_eq!(expect_success(&output), expected);
    let output = cairn()
        .args([
            "start",
            "mirror",
            "--id",
            "cli",
            "--wait",
            "--server",
            &server.url,
            "--input",
            r#"{"x":1796586362.1859999}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(expect_success(&output), r#"{"run_id":"cli","input":{"x":1796586362.1859999}}"#);
}

/// `cairn journal ID --json` against the server.
fn journal_over_api(server: &Server, id: &str) -> Vec<Value> {
    let output = cairn().args(["journal", id, "--json", "--server", &server.url]).output().unwrap();
    expect_success(&output).lines().map(json).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_payloads_get_a_413_that_states_the_limit_from_the_server_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    assert_eq!(api.deploy("mirror", "workflow", std::fs::read(wasm("mirror")).unwrap()).await.0, 201);
    let limit = 4 << 20;
    // No connection reuse: the server closes a connection whose oversized
    // body it refused without reading.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let post = |path: &str, body: String| {
        let request = http.post(format!("{}{path}", api.base)).header("content-type", "application/json").body(body);
        async move {
            let response = request.send().await.expect("POST");
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Between the old 1 MiB body limit and the 4 MiB payload limit: taken.
    let input = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2 << 20));
    let (status, body) = post("/runs", format!(r#"{{"workflow":"mirror","id":"big","input":{input}}}"#)).await;
    assert_eq!(status, 201, "a 2 MiB input fits the payload limit: {body}");
    // Over it: 413 with the limit, from the runtime or the body limit.
    for size in [limit + 10, limit + (1 << 20)] {
        let input = format!(r#"{{"pad":"{}"}}"#, "x".repeat(size));
        let (status, body) = post("/runs", format!(r#"{{"workflow":"mirror","input":{input}}}"#)).await;
        assert_eq!((status, body["code"].as_str()), (413, Some("too-large")), "{size}: {body}");
        assert!(body["message"].as_str().unwrap().contains(&limit.to_string()), "{body}");
    }
    let (status, body) = post("/runs/big/signals/more", format!(r#""{}""#, "x".repeat(limit))).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too-large")), "{body}");

    // The CLI says so before it sends anything, never "cannot reach".
    let file = dir.path().join("big.json");
    std::fs::write(&file, format!(r#"{{"pad":"{}"}}"#, "x".repeat(10 << 20))).unwrap();
    let at_file = format!("@{}", file.display());
    let start = cairn().args(["start", "mirror", "--server", &server.url, "--input", &at_file]).output().unwrap();
    let run = cairn()
        .arg("run")
        .arg(wasm("mirror"))
        .arg("--data")
        .arg(dir.path().join("embedded"))
        .args(["--input", &at_file])
        .output()
        .unwrap();
    for output in [start, run] {
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(err.contains("over the limit of 4194304 bytes"), "{err}");
        assert!(!err.contains("not valid JSON") && !err.contains("cannot reach"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_ids_dot_and_dot_dot_are_refused_by_the_server_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    assert_eq!(api.deploy("mirror", "workflow", std::fs::read(wasm("mirror")).unwrap()).await.0, 201);
    for id in [".", ".."] {
        let (status, body) = api.post_json("/runs", &json!({ "workflow": "mirror", "id": id, "input": {} })).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid-run-id")), "{id}: {body}");
        let output = cairn().args(["status", id, "--server", &server.url]).output().unwrap();
        assert!(!output.status.success());
        assert!(stderr(&output).contains("cannot be addressed in a URL"), "{}", stderr(&output));
    }
    // Other ids with dots and colons are fine, and reachable.
    let (status, _) = api.post_json("/runs", &json!({ "workflow": "mirror", "id": "a.b:c", "input": {} })).await;
    assert_eq!(status, 201);
    let output = cairn().args(["status", "a.b:c", "--server", &server.url]).output().unwrap();
    assert!(expect_success(&output).contains("a.b:c"));
}

/// Sends `request` on a fresh connection and hangs up after `wait`
/// (possibly before the answer, possibly while the server commits).
async fn hang_up_after(addr: std::net::SocketAddr, request: String, wait: Duration) {
    use tokio::io::AsyncWriteExt;
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return };
    if stream.write_all(request.as_bytes()).await.is_ok() {
        tokio::time::sleep(wait).await;
    }
    drop(stream);
}

fn post_request(path: &str, body: &str) -> String {
    format!(
        "POST /v1{path} HTTP/1.1\r\nhost: cairn\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Whatever a request committed is acted on whether or not its client is
/// still there: clients that hang up at random moments (before the commit,
/// during it, after it) leave no stored start unrun and no stored signal
/// undelivered, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_acted_on_when_its_client_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    assert_eq!(api.deploy("mirror", "workflow", std::fs::read(wasm("mirror")).unwrap()).await.0, 201);
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    // Runs waiting for a signal, started the ordinary way.
    for i in 0..1000 {
        let start = json!({ "workflow": "mirror", "id": format!("wait-{i}"), "input": { "await_signal": true } });
        assert_eq!(api.post_json("/runs", &start).await.0, 201);
    }
    let mut rng = Rng(0x0bad_c0ff_ee15_600d);
    let mut requests = Vec::new();
    for i in 0..2000 {
        let body = json!({ "workflow": "mirror", "id": format!("gone-{i}"), "input": { "i": i } }).to_string();
        requests.push((post_request("/runs", &body), Duration::from_micros(rng.below(3000))));
    }
    for i in 0..1000 {
        let path = format!("/runs/wait-{i}/signals/more");
        requests.push((post_request(&path, &i.to_string()), Duration::from_micros(rng.below(3000))));
    }
    for chunk in requests.chunks(64) {
        futures_join(chunk.iter().map(|(request, wait)| hang_up_after(addr, request.clone(), *wait))).await;
    }

    // Settled: nothing left running that has what it needs to go on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stuck = loop {
        let mut stuck = Vec::new();
        let mut after = String::new();
        loop {
            let (_, page) = api.get(&format!("/runs?limit=1000&workflow=mirror&status=running&after={after}")).await;
            let runs = page["runs"].as_array().unwrap();
            stuck
                .extend(runs.iter().map(|r| r["id"].as_str().unwrap().to_owned()).filter(|id| id.starts_with("gone-")));
            match page["next"].as_str() {
                Some(next) => after = next.to_owned(),
                None => break,
            }
        }
        if stuck.is_empty() || Instant::now() > deadline {
            break stuck;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stuck.is_empty(), "{} stored starts never ran, e.g. {:?}", stuck.len(), &stuck[..stuck.len().min(5)]);
    // Signals: a run still waiting must have no signal stored for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, page) = api.get("/runs?limit=1000&workflow=mirror&status=running").await;
    let waiting: Vec<String> =
        page["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    server.kill();
    let store = cairn_host::store::Store::open(dir.path()).unwrap();
    let mut undelivered = Vec::new();
    for id in &waiting {
        if !store.signals(id).await.unwrap().is_empty() {
            undelivered.push(id);
        }
    }
    assert!(
        undelivered.is_empty(),
        "{} stored signals never delivered, e.g. {:?}",
        undelivered.len(),
        &undelivered[..undelivered.len().min(5)]
    );
    let ran = store
        .all_runs(cairn_host::store::RunQuery::all())
        .await
        .unwrap()
        .iter()
        .filter(|m| m.id.starts_with("gone-"))
        .count();
    let delivered = 1000 - waiting.len();
    eprintln!("hang-ups: {ran} of 2000 starts stored and run, {delivered} of 1000 signals stored and delivered");
}

/// The most of `spans` (from, to) under way at one moment.
pub fn most_at_once(spans: &[(u64, u64)]) -> usize {
    spans.iter().map(|(from, _)| spans.iter().filter(|(a, b)| a <= from && from < b).count()).max().unwrap_or(0)
}
