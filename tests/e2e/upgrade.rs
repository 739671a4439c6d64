//! Versions and replay-verified upgrades, against a real server.

use crate::server::{Api, Server};
use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn shipping(version: &str) -> Vec<u8> {
    std::fs::read(example_wasm(&format!("shipping_{version}"))).unwrap()
}

fn order(i: usize) -> Value {
    json!({ "order_id": format!("S-{i}"), "sku": "cairn-mug", "quantity": 1, "amount_cents": 2400, "card": "4242-4242-4242-4242", "address": "1 Main St" })
}

async fn setup(api: &Api) {
    for name in ["payments", "inventory"] {
        assert_eq!(api.deploy(name, "activity", std::fs::read(wasm(name)).unwrap()).await.0, 201);
    }
    let (status, body) = api.deploy("shipping", "workflow", shipping("v1")).await;
    assert_eq!((status, &body["version"]), (201, &json!(1)), "{body}");
}

async fn stage(api: &Api, id: &str) -> Value {
    api.get(&format!("/runs/{id}")).await.1["custom_status"]["stage"].clone()
}

async fn wait_stage(api: &Api, id: &str, stage_name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stage(api, id).await != stage_name {
        assert!(Instant::now() < deadline, "{id} never reached {stage_name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts runs 0..n on the current version; runs below `past_charge` are
/// moved past the charge (waiting for `dispatch`), the rest wait for `packed`.
async fn park_runs(api: &Api, n: usize, past_charge: usize) {
    for i in 0..n {
        let (status, body) =
            api.post_json("/runs", &json!({ "workflow": "shipping", "id": format!("s{i}"), "input": order(i) })).await;
        assert_eq!(status, 201, "{body}");
    }
    for i in 0..n {
        wait_stage(api, &format!("s{i}"), "packing").await;
    }
    for i in 0..past_charge {
        api.post_json(&format!("/runs/s{i}/signals/packed"), &json!(null)).await;
        wait_stage(api, &format!("s{i}"), "ready").await;
    }
}

async fn finish_all(api: &Api, n: usize) -> Vec<Value> {
    for i in 0..n {
        let id = format!("s{i}");
        if stage(api, &id).await == "packing" {
            api.post_json(&format!("/runs/{id}/signals/packed"), &json!(null)).await;
        }
        api.post_json(&format!("/runs/{id}/signals/dispatch"), &json!(null)).await;
    }
    let mut results = Vec::new();
    for i in 0..n {
        let run = api.wait(&format!("s{i}")).await;
        assert_eq!(run["status"], "completed", "{run}");
        results.push(run);
    }
    results
}

fn by_outcome<'a>(report: &'a Value, outcome: &str) -> Vec<&'a Value> {
    report["runs"].as_array().unwrap().iter().filter(|r| r["outcome"] == outcome).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_rollback_and_retire() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    let (status, body) = api.deploy("shipping", "workflow", shipping("v1")).await;
    assert_eq!(
        (status, &body["version"], &body["created"]),
        (200, &json!(1), &json!(false)),
        "same bytes, same version"
    );
    let (status, body) = api.deploy("shipping", "workflow", shipping("v2_patched")).await;
    assert_eq!((status, &body["version"]), (201, &json!(2)));

    let (_, run) = api.post_json("/runs", &json!({ "workflow": "shipping", "id": "on2", "input": order(1) })).await;
    assert_eq!(run["version"], 2);
    let (status, body) = api.post_json("/workflows/shipping/rollback", &json!({ "to": 1 })).await;
    assert_eq!((status, &body["current"]), (200, &json!(1)));
    let (_, run) = api.post_json("/runs", &json!({ "workflow": "shipping", "id": "on1", "input": order(2) })).await;
    assert_eq!(run["version"], 1);

    let (status, error) = api.delete("/workflows/shipping/versions/2").await;
    assert_eq!((status, error["code"].as_str()), (409, Some("version-in-use")), "{error}");
    let (status, error) = api.delete("/workflows/shipping/versions/1").await;
    assert_eq!((status, error["code"].as_str()), (409, Some("version-is-current")), "{error}");
    let (status, error) = api.delete("/workflows/shipping/versions/7").await;
    assert_eq!((status, error["code"].as_str()), (404, Some("version-not-found")), "{error}");

    let output = cairn().args(["versions", "shipping", "--json", "--server", &server.url]).output().unwrap();
    let versions = json(&expect_success(&output));
    assert_eq!(versions["versions"][0]["live_runs"], 1);
    assert_eq!(versions["versions"][0]["current"], true);
    assert_eq!(versions["versions"][1]["live_runs"], 1);

    // Finish the v2 run; then v2 can go, while v1's run is still live.
    api.post_json("/runs/on2/signals/packed", &json!(null)).await;
    api.post_json("/runs/on2/signals/dispatch", &json!(null)).await;
    assert_eq!(api.wait("on2").await["result"]["code_version"], 2);
    let output = cairn().args(["retire", "shipping", "2", "--server", &server.url]).output().unwrap();
    expect_success(&output);
    let (_, versions) = api.get("/workflows/shipping/versions").await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    // Numbers are never reused.
    let (_, body) = api.deploy("shipping", "workflow", shipping("v2_express")).await;
    assert_eq!(body["version"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compatible_v2_upgrades_every_run_and_its_behaviour_applies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    park_runs(&api, 4, 2).await;
    // Deploy and upgrade in one step, with the CLI.
    let file = example_wasm("shipping_v2_express");
    let output = cairn()
        .args(["deploy", "shipping"])
        .arg(&file)
        .args(["--upgrade", "compatible", "--json", "--server", &server.url])
        .output()
        .unwrap();
    let report = json(&expect_success(&output));
    assert_eq!(by_outcome(&json!({ "runs": report["upgrades"] }), "upgraded").len(), 4, "{report}");
    for run in finish_all(&api, 4).await {
        assert_eq!(run["version"], 2);
        assert_eq!(run["result"]["code_version"], 2, "{run}");
        assert_eq!(run["result"]["charged_cents"], 2400);
        let (_, journal) = api.get(&format!("/runs/{}/journal", run["id"].as_str().unwrap())).await;
        let entries = journal["entries"].as_array().unwrap();
        let switch = entries.iter().find(|e| e["entry"] == "version-switch").expect("a version-switch entry");
        assert_eq!((&switch["from_version"], &switch["to_version"]), (&json!(1), &json!(2)));
        let ship = entries.iter().find(|e| e["call"]["name"] == "inventory.ship").unwrap();
        assert!(
            ship["call"]["input"].as_str().unwrap().contains("\"express\":true"),
            "v2 behaviour for the rest: {ship}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_v2_is_refused_for_runs_past_the_change_with_the_exact_seq() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    park_runs(&api, 4, 2).await;
    api.deploy("shipping", "workflow", shipping("v2_unpatched")).await;

    // Dry run: reports, moves nothing.
    let (_, report) =
        api.post_json("/workflows/shipping/upgrade", &json!({ "from": 1, "to": 2, "dry_run": true })).await;
    assert_eq!((by_outcome(&report, "refused").len(), by_outcome(&report, "compatible").len()), (2, 2), "{report}");
    assert_eq!(api.get("/runs/s2").await.1["version"], 1);

    let output = cairn()
        .args(["upgrade", "--workflow", "shipping", "--from", "1", "--to", "2", "--server", &server.url])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    for i in [0, 1] {
        // seq 8 is the charge: the journal has 2400, v2 asks for 2900.
        assert!(text.contains(&format!("s{i}: refused, stays on v1: diverges at seq 8")), "{text}");
    }
    assert!(text.contains(r#""amount_cents":2400"#) && text.contains(r#""amount_cents":2900"#), "{text}");
    for i in [2, 3] {
        assert!(text.contains(&format!("s{i}: upgraded v1 -> v2")), "{text}");
    }
    let results = finish_all(&api, 4).await;
    for (i, run) in results.iter().enumerate() {
        let (version, charged) = if i < 2 { (1, 2400) } else { (2, 2900) };
        assert_eq!((&run["version"], &run["result"]["charged_cents"]), (&json!(version), &json!(charged)), "{run}");
        assert_eq!(run["result"]["code_version"], version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patched_makes_the_change_safe_for_runs_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    park_runs(&api, 4, 2).await;
    let (_, deployed) = api.deploy("shipping", "workflow", shipping("v2_patched")).await;
    let (_, report) =
        api.post_json("/workflows/shipping/upgrade", &json!({ "from": 1, "to": deployed["version"] })).await;
    assert_eq!(by_outcome(&report, "upgraded").len(), 4, "{report}");
    let results = finish_all(&api, 4).await;
    for (i, run) in results.iter().enumerate() {
        // Runs that had charged keep the old path; the others take the new one.
        let charged = if i < 2 { 2400 } else { 2900 };
        assert_eq!((&run["version"], &run["result"]["charged_cents"]), (&json!(2), &json!(charged)), "{run}");
    }
    // A new run on v2 takes the new branch.
    api.post_json("/runs", &json!({ "workflow": "shipping", "id": "new", "input": order(9) })).await;
    api.post_json("/runs/new/signals/packed", &json!(null)).await;
    api.post_json("/runs/new/signals/dispatch", &json!(null)).await;
    assert_eq!(api.wait("new").await["result"]["charged_cents"], 2900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_v2_under_load_drops_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    let started: std::sync::Arc<std::sync::Mutex<Vec<(String, u64)>>> = Default::default();
    let load = {
        let (api, started) = (Api::new(&server), started.clone());
        tokio::spawn(async move {
            for i in 0..80 {
                let id = format!("load-{i}");
                let (status, run) =
                    api.post_json("/runs", &json!({ "workflow": "shipping", "id": id, "input": order(i) })).await;
                assert_eq!(status, 201, "start {id}: {run}");
                started.lock().unwrap().push((id.clone(), run["version"].as_u64().unwrap()));
                for signal in ["packed", "dispatch"] {
                    let (status, body) = api.post_json(&format!("/runs/{id}/signals/{signal}"), &json!(null)).await;
                    assert_eq!(status, 202, "signal {id}: {body}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    while started.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = api.deploy("shipping", "workflow", shipping("v2_patched")).await;
    assert_eq!(status, 201, "{body}");
    load.await.expect("the client loop saw no failed request");
    let started = started.lock().unwrap().clone();
    assert!(started.iter().any(|(_, v)| *v == 1) && started.iter().any(|(_, v)| *v == 2), "{started:?}");
    for (id, version) in started {
        let run = api.wait(&id).await;
        assert_eq!(run["version"], version, "a run stays on the version it started with");
        assert_eq!(run["result"]["code_version"], version);
        assert_eq!(run["result"]["charged_cents"], if version == 1 { 2400 } else { 2900 });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_an_upgrade_leaves_each_run_wholly_on_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    let n = 40;
    park_runs(&api, n, 0).await;
    api.deploy("shipping", "workflow", shipping("v2_express")).await;
    let upgrade = {
        let base = api.base.clone();
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(format!("{base}/workflows/shipping/upgrade"))
                .json(&json!({ "from": 1, "to": 2 }))
                .send()
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    let _ = upgrade.await;
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    let mut moved = 0;
    for i in 0..n {
        let id = format!("s{i}");
        let run = api.get(&format!("/runs/{id}")).await.1;
        let (_, journal) = api.get(&format!("/runs/{id}/journal")).await;
        let entries = journal["entries"].as_array().unwrap();
        let switched = entries.iter().any(|e| e["entry"] == "version-switch");
        assert_eq!(run["version"] == 2, switched, "{id}: metadata and journal disagree: {run} {journal}");
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e["seq"], k as u64, "{id}: a gap or a duplicate seq");
        }
        moved += usize::from(switched);
    }
    eprintln!("{moved} of {n} runs moved before the kill");
    for run in finish_all(&api, n).await {
        assert_eq!(run["result"]["code_version"], run["version"], "{run}");
    }
}

#[test]
fn an_exported_journal_checks_new_code_offline() {
    let dir = tempfile::tempdir().unwrap();
    // A v1 run past the charge, exported as JSON lines.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = Server::start(dir.path(), &[]);
    runtime.block_on(async {
        let api = Api::new(&server);
        setup(&api).await;
        park_runs(&api, 1, 1).await;
    });
    let output = cairn().args(["journal", "s0", "--json", "--server", &server.url]).output().unwrap();
    let exported = dir.path().join("run.json");
    std::fs::write(&exported, expect_success(&output)).unwrap();
    server.kill();

    let replay = |version: &str| {
        cairn()
            .args(["replay", "--journal"])
            .arg(&exported)
            .arg("--with")
            .arg(example_wasm(&format!("shipping_{version}")))
            .output()
            .unwrap()
    };
    assert_eq!(replay("v2_patched").status.code(), Some(0), "{}", stdout(&replay("v2_patched")));
    let output = replay("v2_unpatched");
    assert_eq!(output.status.code(), Some(3));
    assert!(stdout(&output).contains("diverged at seq 8"), "{}", stdout(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_activities_and_a_removed_timer_are_refused_at_their_seq() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    park_runs(&api, 4, 2).await;
    // Every parked run has reserved (seq 1) and slept (seq 3) already.
    let cases = [
        ("v2_reordered", 1, "schedule-activity(inventory.reserve", "schedule-activity(payments.charge"),
        ("v2_no_timer", 3, "start-timer(1 ms)", "set-custom-status"),
    ];
    for (variant, seq, expected, actual) in cases {
        let (_, deployed) = api.deploy("shipping", "workflow", shipping(variant)).await;
        let to = deployed["version"].clone();
        let (_, report) = api.post_json("/workflows/shipping/upgrade", &json!({ "from": 1, "to": to })).await;
        let refused = by_outcome(&report, "refused");
        assert_eq!(refused.len(), 4, "{variant}: {report}");
        for r in refused {
            let d = &r["divergence"];
            assert_eq!(d["seq"], seq, "{variant}: {r}");
            assert!(d["expected"].as_str().unwrap().starts_with(expected), "{variant}: {r}");
            assert!(d["actual"].as_str().unwrap().starts_with(actual), "{variant}: {r}");
        }
    }
    // Refused runs are untouched and finish on v1.
    for run in finish_all(&api, 4).await {
        assert_eq!((&run["version"], &run["result"]["code_version"]), (&json!(1), &json!(1)), "{run}");
    }
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn scrape(server: &Server) -> String {
    let response = reqwest::get(format!("{}/metrics", server.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    response.text().await.unwrap()
}

/// A step costs one durable commit, never two in sequence: the order example
/// (3 activities and a timer) takes 6 commits from its start to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_commits_once_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    assert_eq!(api.deploy("order", "workflow", std::fs::read(wasm("order")).unwrap()).await.0, 201);
    let commits = |text: &str| sample(text, "cairn_journal_commit_seconds_count");
    let before = commits(&scrape(&server).await);
    // A card that the payments example charges on the first attempt.
    api.post_json("/runs", &json!({ "workflow": "order", "id": "c1", "input": order(1) })).await;
    assert_eq!(api.wait("c1").await["status"], "completed");
    let after = scrape(&server).await;
    // The start; each activity's schedule and result (3); the timer's
    // schedule, then its firing (2). The last activity's result shares
    // the end's commit: 6, not 7 -- unless the guest sees an epoch tick
    // (every 10 ms; a loaded machine makes one likelier) between that
    // result and its end, which seals the result on its own. Two commits
    // per step would be 10 or more.
    let commits = commits(&after) - before;
    assert!((6.0..=7.0).contains(&commits), "{commits} commits:\n{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_follow_a_scripted_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    let before = scrape(&server).await;
    assert!(before.contains("# TYPE cairn_journal_commit_seconds histogram"), "{before}");

    // One run to the end: 4 activity steps, 1 timer, 2 signals.
    api.post_json("/runs", &json!({ "workflow": "shipping", "id": "m1", "input": order(1) })).await;
    wait_stage(&api, "m1", "packing").await;
    let waiting = scrape(&server).await;
    assert_eq!(sample(&waiting, r#"cairn_runs_started_total{workflow="shipping",version="1"}"#), 1.0);
    assert_eq!(sample(&waiting, "cairn_runs_resident") + sample(&waiting, "cairn_runs_parked"), 1.0, "{waiting}");
    for signal in ["packed", "dispatch"] {
        api.post_json(&format!("/runs/m1/signals/{signal}"), &json!({})).await;
    }
    assert_eq!(api.wait("m1").await["status"], "completed");

    // A second run, checked against incompatible code (a divergence), then terminated.
    api.post_json("/runs", &json!({ "workflow": "shipping", "id": "m2", "input": order(2) })).await;
    wait_stage(&api, "m2", "packing").await;
    assert_eq!(api.deploy("shipping", "workflow", shipping("v2_reordered")).await.0, 201);
    let (status, report) = api.post_json("/runs/m2/upgrade", &json!({ "to": 2, "dry_run": true })).await;
    assert_eq!((status, report["refused"].as_u64()), (200, Some(1)), "{report}");
    api.post_json("/runs/m2/terminate", &json!({ "reason": "metrics test" })).await;
    assert_eq!(api.wait("m2").await["status"], "terminated");

    let after = scrape(&server).await;
    let v1 = r#"{workflow="shipping",version="1"}"#;
    assert_eq!(sample(&after, &format!("cairn_runs_started_total{v1}")), 2.0, "{after}");
    assert_eq!(sample(&after, &format!("cairn_runs_completed_total{v1}")), 1.0, "{after}");
    assert_eq!(sample(&after, &format!("cairn_runs_terminated_total{v1}")), 1.0, "{after}");
    // m1 scheduled reserve, charge, ship; m2 reserve before it was stopped.
    assert_eq!(sample(&after, r#"cairn_host_calls_total{kind="schedule-activity"}"#), 4.0, "{after}");
    assert_eq!(sample(&after, r#"cairn_host_calls_total{kind="wait-signal"}"#), 3.0, "{after}");
    assert_eq!(sample(&after, r#"cairn_activity_attempts_total{activity="payments.charge",outcome="ok"}"#), 1.0);
    assert_eq!(sample(&after, "cairn_divergences_total"), 1.0);
    assert_eq!(sample(&after, "cairn_replay_seconds_count"), 1.0);
    assert!(
        sample(&after, "cairn_journal_commit_seconds_count") > sample(&before, "cairn_journal_commit_seconds_count")
    );
    assert!(sample(&after, r#"cairn_journal_commit_batch_size_bucket{le="+Inf"}"#) >= 8.0, "{after}");
    assert_eq!(sample(&after, "cairn_runs_resident") + sample(&after, "cairn_runs_parked"), 0.0, "{after}");
}

/// The seq of the run's `wait-signal(name)` entry.
async fn wait_signal_seq(api: &Api, id: &str, name: &str) -> u64 {
    let (_, page) = api.get(&format!("/runs/{id}/journal")).await;
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["call"]["call"] == "wait-signal" && e["call"]["name"] == name)
        .unwrap_or_else(|| panic!("{id} never waited for {name}: {page}"))["seq"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_goes_live_from_a_seq_only_on_a_version_that_reproduces_the_kept_journal() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    setup(&api).await;
    // r0 ran to the end on v1.
    park_runs(&api, 1, 1).await;
    let done = finish_all(&api, 1).await.remove(0);
    assert_eq!(done["result"]["code_version"], 1, "{done}");
    let dispatch = wait_signal_seq(&api, "s0", "dispatch").await;
    for version in ["v2_reordered", "v2_express"] {
        assert_eq!(api.deploy("shipping", "workflow", shipping(version)).await.0, 201);
    }

    // v2 reordered charges before it reserves: refused, naming the seq,
    // and nothing is written.
    let (status, refused) = api.post_json("/runs/s0/reset", &json!({ "to": dispatch, "version": 2 })).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("reset-diverges")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("seq 1"), "{refused}");
    assert_eq!(api.get(&format!("/runs/s0-reset-{dispatch}")).await.0, 404);

    // v2 express is v1 until the dispatch: the new run keeps everything
    // before the wait for it, waits for it live, then ships express.
    let (status, reset) = api.post_json("/runs/s0/reset", &json!({ "to": dispatch, "version": 3 })).await;
    assert_eq!(status, 201, "{reset}");
    assert_eq!((reset["kept"].as_u64(), reset["terminated_original"].as_bool()), (Some(dispatch), Some(false)));
    let new_id = reset["run"]["id"].as_str().unwrap().to_owned();
    assert_eq!(new_id, format!("s0-reset-{dispatch}"));
    let (_, journal) = api.get(&format!("/runs/{new_id}/journal")).await;
    let (_, original) = api.get("/runs/s0/journal").await;
    let entries = journal["entries"].as_array().unwrap();
    assert_eq!(entries[..dispatch as usize], original["entries"].as_array().unwrap()[..dispatch as usize]);
    assert_eq!(entries[dispatch as usize]["entry"], "version-switch", "{journal}");
    api.post_json(&format!("/runs/{new_id}/signals/dispatch"), &json!(null)).await;
    let run = api.wait(&new_id).await;
    assert_eq!(
        (&run["status"], &run["result"]["code_version"], &run["version"]),
        (&json!("completed"), &json!(2), &json!(3)),
        "{run}"
    );
    assert_eq!(api.get("/runs/s0").await.1["status"], "completed", "the original is untouched");

    // Bad requests write nothing.
    let (status, again) = api.post_json("/runs/s0/reset", &json!({ "to": dispatch, "version": 3 })).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("run-exists")), "{again}");
    let last = original["entries"].as_array().unwrap().len() as u64;
    for to in [0, last + 1] {
        let (status, body) = api.post_json("/runs/s0/reset", &json!({ "to": to })).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid-reset")), "{to}: {body}");
    }
    let (status, body) = api.post_json("/runs/s0/reset", &json!({ "to": last, "id": "past-the-end" })).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid-reset")), "{body}");

    // A live run reset on its own version: the original is terminated,
    // the new run goes on from the seq.
    let (status, _) = api.post_json("/runs", &json!({ "workflow": "shipping", "id": "live", "input": order(7) })).await;
    assert_eq!(status, 201);
    wait_stage(&api, "live", "packing").await;
    api.post_json("/runs/live/signals/packed", &json!(null)).await;
    wait_stage(&api, "live", "ready").await;
    let at = wait_signal_seq(&api, "live", "dispatch").await;
    let output = cairn()
        .args(["reset", "live", "--to", &at.to_string(), "--id", "live-2", "--server", &server.url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("the original was terminated"), "{}", stdout(&output));
    assert_eq!(api.wait("live").await["status"], "terminated");
    api.post_json("/runs/live-2/signals/dispatch", &json!(null)).await;
    assert_eq!(api.wait("live-2").await["result"]["code_version"], 2, "on the current version, v2 express");
    let output =
        cairn().args(["reset", "s0", "--to", "2", "--version", "2", "--server", &server.url]).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}
