//! Operator controls on runs: pause and resume (a paused run takes no
//! steps; what comes meanwhile is kept, across a restart too).

use crate::server::{most_at_once, Api, Server};
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

async fn exists(api: &Api, id: &str) -> bool {
    api.get(&format!("/runs/{id}")).await.0 == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_the_expired_runs_and_collects_retired_components() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--retention-sweep-ms", "100", "--retention", "1h"]);
    let api = Api::new(&server);
    deploy_all(&api).await;
    let quick = |id: &str| json!({ "workflow": "mirror", "id": id, "input": { "n": 1 } });
    for id in ["old-0", "old-1", "old-2"] {
        assert_eq!(api.post_json("/runs", &quick(id)).await.0, 201);
        assert_eq!(api.wait(id).await["status"], "completed");
    }
    let waiting = json!({ "workflow": "mirror", "id": "live", "input": { "await_signal": true } });
    assert_eq!(api.post_json("/runs", &waiting).await.0, 201);
    // A live run cannot be deleted; a finished one can, with its journal.
    let (code, body) = api.delete("/runs/live").await;
    assert_eq!((code, body["code"].as_str()), (409, Some("run-live")), "{body}");
    assert_eq!(api.delete("/runs/old-2").await.0, 200);
    assert_eq!(api.get("/runs/old-2").await.0, 404);
    assert_eq!(api.get("/runs/old-2/journal").await.0, 404);

    // The server's default keeps them (1 h); the workflow's 2 s does not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(exists(&api, "old-0").await && exists(&api, "old-1").await);
    let put = |retention: Value| {
        let api = &api;
        async move { api.put_json("/workflows/mirror/retention", &json!({ "retention": retention })).await }
    };
    let (code, body) = put(json!("forever-ish")).await;
    assert_eq!((code, body["code"].as_str()), (400, Some("invalid-retention")), "{body}");
    let (code, body) = put(json!("2s")).await;
    assert_eq!((code, body["retention_ms"].as_u64()), (200, Some(2000)), "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while exists(&api, "old-0").await || exists(&api, "old-1").await {
        assert!(Instant::now() < deadline, "expired runs were not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Runs that ended just now, and the live one, stay.
    for id in ["new-0", "new-1"] {
        assert_eq!(api.post_json("/runs", &quick(id)).await.0, 201);
        assert_eq!(api.wait(id).await["status"], "completed");
    }
    let (_, page) = api.get("/runs?workflow=mirror").await;
    let left: Vec<&str> = page["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(left, ["live", "new-0", "new-1"]);

    // Version 1 retired: its component goes once its last run has.
    let (_, versions) = api.get("/workflows/mirror/versions").await;
    let v1 = versions["versions"][0]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(api.deploy("mirror", "workflow", std::fs::read(wasm("script")).unwrap()).await.0, 201);
    assert_eq!(api.post_json("/runs/live/terminate", &json!({})).await.0, 202);
    api.wait("live").await;
    let (code, body) = api.delete("/workflows/mirror/versions/1").await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while exists(&api, "new-0").await || exists(&api, "new-1").await || exists(&api, "live").await {
        assert!(Instant::now() < deadline, "v1's runs were not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, versions) = api.get("/workflows/mirror/versions").await;
    let v2 = versions["versions"][0]["sha256"].as_str().unwrap().to_owned();
    server.kill();
    let store = cairn_host::store::Store::open(dir.path()).unwrap();
    assert_eq!(store.component(&v1).await.unwrap(), None, "v1's bytes were collected");
    assert!(store.component(&v2).await.unwrap().is_some(), "v2's bytes stay");
    assert!(store.deployment("mirror").await.unwrap().unwrap().retired.is_empty());
    drop(store);
    let check = cairn().args(["check", "--json", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(json(&stdout(&check))["ok"], true, "{}", stdout(&check));
}

/// Runs of `status` among the mirror runs.
async fn with_status(api: &Api, status: &str) -> Vec<String> {
    let (_, page) = api.get(&format!("/runs?workflow=mirror&status={status}&limit=1000")).await;
    page["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_of_two_never_has_a_third_run_active_under_fifty_starts_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let mut api = Api::new(&server);
    deploy_all(&api).await;
    let (code, body) = api.put_json("/workflows/mirror/concurrency", &json!({ "limit": 0 })).await;
    assert_eq!((code, body["code"].as_str()), (400, Some("invalid-limit")), "{body}");
    let (code, body) = api.put_json("/workflows/mirror/concurrency", &json!({ "limit": 2 })).await;
    assert_eq!(code, 200, "{body}");
    let cli = |args: &[&str]| cairn().args(args).args(["--server", &server.url]).output().unwrap();
    let shown = cli(&["concurrency", "mirror"]);
    assert!(stdout(&shown).contains("at most 2 runs of each concurrency key"), "{}", stdout(&shown));
    let bad = cli(&["concurrency", "mirror", "--key", "acme"]);
    assert!(!bad.status.success() && stderr(&bad).contains("KEY=N"), "{}", stderr(&bad));
    let bad = cli(&["start", "mirror", "--priority", "0"]);
    assert!(!bad.status.success() && stderr(&bad).contains("invalid priority 0"), "{}", stderr(&bad));
    let start = |i: usize, priority: u8| {
        let api = api.clone();
        async move {
            let body = json!({ "workflow": "mirror", "id": format!("c{i:02}"), "input": { "await_signal": true },
                "concurrency_key": "acme", "priority": priority });
            let (code, run) = api.post_json("/runs", &body).await;
            assert_eq!(code, 201, "{run}");
        }
    };
    // 45 at once, then 5 more with the first priority.
    futures_util::future::join_all((0..45).map(|i| start(i, 3))).await;
    futures_util::future::join_all((45..50).map(|i| start(i, 1))).await;
    let (code, bad) = api.post_json("/runs", &json!({ "workflow": "mirror", "priority": 9 })).await;
    assert_eq!((code, bad["code"].as_str()), (400, Some("invalid-priority")), "{bad}");
    assert_eq!(with_status(&api, "running").await.len(), 2);
    assert_eq!(with_status(&api, "queued").await.len(), 48);
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\ncairn_runs_queued 48\n"), "{metrics}");
    assert!(
        metrics.contains("\ncairn_bucket_runs{workflow=\"mirror\",key=\"acme\",state=\"queued\"} 48\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ncairn_bucket_runs{workflow=\"mirror\",key=\"acme\",state=\"running\"} 2\n"),
        "{metrics}"
    );
    let (_, queued) = api.get("/runs/c49").await;
    assert_eq!(
        (&queued["status"], &queued["concurrency_key"], &queued["priority"]),
        (&json!("queued"), &json!("acme"), &json!(1)),
        "{queued}"
    );

    // The first-priority runs take the slots that come free first: let the
    // queue through one pair at a time and look at who holds the slots.
    let first_priority: Vec<String> = (45..50).map(|i| format!("c{i:02}")).collect();
    for round in 1..=3 {
        let released = with_status(&api, "running").await;
        for id in &released {
            api.post_json(&format!("/runs/{id}/signals/more"), &json!(1)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let running = loop {
            // The two released runs ended, and two others hold the slots.
            let completed = with_status(&api, "completed").await;
            let running = with_status(&api, "running").await;
            let ended = released.iter().all(|id| completed.contains(id));
            if ended && running.len() == 2 && !running.iter().any(|id| released.contains(id)) {
                break running;
            }
            assert!(Instant::now() < deadline, "round {round}: the slots were not handed on: {running:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let expected = if round < 3 { 2 } else { 1 };
        let taken = running.iter().filter(|id| first_priority.contains(id)).count();
        assert_eq!(taken, expected, "round {round}: {running:?} hold the slots");
    }

    // Let the rest through two at a time; kill the host half way.
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while with_status(&api, "completed").await.len() < 50 {
        assert!(Instant::now() < deadline, "the queue did not drain");
        let running = with_status(&api, "running").await;
        assert!(running.len() <= 2, "{running:?}");
        for id in running {
            api.post_json(&format!("/runs/{id}/signals/more"), &json!(1)).await;
        }
        if !killed && with_status(&api, "completed").await.len() >= 25 {
            server.kill();
            server = Server::start(dir.path(), &[]);
            api = Api::new(&server);
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(killed);

    // From the journals: when each run took its first step (it had a slot)
    // and when it ended. Never three at once.
    let mut spans = Vec::new();
    for i in 0..50 {
        spans.push(api.active_span(&format!("c{i:02}")).await);
    }
    let most = most_at_once(&spans);
    assert!(most <= 2, "{most} runs were active at once: {spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_filter_on_search_attributes_and_a_batch_cancel_touches_exactly_the_matching_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    deploy_all(&api).await;
    let runs = [
        ("a500", "acme", 500, true),
        ("a1500", "acme", 1500, true),
        ("g2000", "globex", 2000, true),
        ("a2500", "acme", 2500, true),
        ("a3000", "acme", 3000, false),
    ];
    for (id, customer, amount, waits) in runs {
        let input = json!({ "await_signal": waits, "attributes": { "customer": customer, "amount": amount, "due": { "time": "2026-12-24T00:00:00Z" } } });
        assert_eq!(api.post_json("/runs", &json!({ "workflow": "mirror", "id": id, "input": input })).await.0, 201);
    }
    assert_eq!(api.wait("a3000").await["status"], "completed");
    let steps = json!([{ "sleep_ms": 60_000 }]);
    assert_eq!(api.post_json("/runs", &json!({ "workflow": "script", "id": "other", "input": steps })).await.0, 201);
    let find = |q: &'static str| {
        let api = api.clone();
        async move {
            let url = format!("{}/runs?query={}", api.base, urlencode(q));
            let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            let mut ids: Vec<String> = page["runs"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while find(r#"amount >= 0"#).await.len() < 5 {
        assert!(Instant::now() < deadline, "the attributes never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        find(r#"workflow = "mirror" and status = "running" and amount > 1000"#).await,
        ["a1500", "a2500", "g2000"]
    );
    assert_eq!(find(r#"customer = "acme" and amount >= 1500"#).await, ["a1500", "a2500", "a3000"]);
    assert_eq!(
        find(r#"customer = "globex" or (amount < 1000 and due < "2027-01-01T00:00:00Z")"#).await,
        ["a500", "g2000"]
    );
    let (_, run) = api.get("/runs/a1500").await;
    assert_eq!(
        run["search_attributes"],
        json!({ "amount": 1500, "customer": "acme", "due": { "time": "2026-12-24T00:00:00Z" } }),
        "{run}"
    );
    let (code, bad) = api.get(&format!("/runs?query={}", urlencode("amount >"))).await;
    assert_eq!((code, bad["code"].as_str()), (400, Some("invalid-query")), "{bad}");

    // A batch cancel by query: the dry run lists the runs and touches none.
    let batch = |dry_run: bool| json!({ "query": r#"customer = "acme" and status = "running""#, "operation": "cancel", "dry_run": dry_run });
    let (code, dry) = api.post_json("/batch", &batch(true)).await;
    assert_eq!((code, dry["matched"].as_u64()), (200, Some(3)), "{dry}");
    assert!(dry["runs"].as_array().unwrap().iter().all(|r| r["outcome"] == "would-cancel"), "{dry}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in ["a500", "a1500", "a2500", "g2000", "other"] {
        assert_eq!(status(&api, id).await, "running", "{id} was touched by a dry run");
    }
    let (code, done) = api.post_json("/batch", &batch(false)).await;
    assert_eq!((code, done["matched"].as_u64()), (200, Some(3)), "{done}");
    for id in ["a500", "a1500", "a2500"] {
        let run = api.wait(id).await;
        assert_eq!(run["failure"]["kind"], "cancelled", "{run}");
    }
    for id in ["g2000", "other"] {
        assert_eq!(status(&api, id).await, "running", "{id} did not match");
    }
    let (code, bad) = api.post_json("/batch", &json!({ "query": "amount > 1", "operation": "explode" })).await;
    assert_eq!((code, bad["code"].as_str()), (400, Some("invalid-batch")), "{bad}");
    let listed = cairn().args(["list", "--query", r#"customer = "globex""#, "--server", &server.url]).output().unwrap();
    assert!(stdout(&listed).contains("g2000") && !stdout(&listed).contains("a1500"), "{}", stdout(&listed));

    // The attributes are journaled: every run replays identically.
    drop(server);
    let replay = cairn().args(["replay", "--all", "--data"]).arg(dir.path()).output().unwrap();
    assert!(replay.status.success(), "{}{}", stdout(&replay), stderr(&replay));
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_limit_starts_every_queued_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    deploy_all(&api).await;
    let put = |body: Value| {
        let api = &api;
        async move { api.put_json("/workflows/mirror/concurrency", &body).await.0 }
    };
    assert_eq!(put(json!({ "limit": 1 })).await, 200);
    for i in 0..6 {
        let body = json!({ "workflow": "mirror", "id": format!("q{i}"), "input": { "await_signal": true } });
        assert_eq!(api.post_json("/runs", &body).await.0, 201);
    }
    assert_eq!(with_status(&api, "queued").await.len(), 5);
    // No limit: every queued run starts and takes its first step.
    assert_eq!(put(json!({})).await, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..6 {
        while !journal(&api, &format!("q{i}")).await.iter().any(|e| e.to_string().contains("wait-signal")) {
            assert!(Instant::now() < deadline, "q{i} never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(with_status(&api, "queued").await.is_empty());
    let _ = server;
}

/// A fan-out parent's children wait for slots of their workflow's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_parents_children_wait_for_slots_of_their_workflows_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    for (name, kind) in [("family", "workflow"), ("hello", "workflow")] {
        assert_eq!(api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await.0, 201);
    }
    assert_eq!(api.put_json("/workflows/hello/concurrency", &json!({ "limit": 1 })).await.0, 200);
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    assert_eq!(api.post_json("/runs", &json!({ "workflow": "family", "id": "fan", "input": names })).await.0, 201);
    let run = api.wait("fan").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["result"].as_array().map(Vec::len), Some(8), "{run}");
    // From the children's journals: never two at once.
    let (_, page) = api.get("/runs?workflow=hello&limit=100").await;
    let mut spans = Vec::new();
    for child in page["runs"].as_array().unwrap() {
        assert_eq!(child["concurrency_key"], "", "{child}");
        spans.push(api.active_span(child["id"].as_str().unwrap()).await);
    }
    assert_eq!(spans.len(), 8);
    let most = most_at_once(&spans);
    assert!(most <= 1, "{most} children at once: {spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_starts_runs_no_faster_than_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    deploy_all(&api).await;
    let put = |body: Value| {
        let api = &api;
        async move { api.put_json("/workflows/mirror/concurrency", &body).await }
    };
    for bad in [json!({ "rate": "fast" }), json!({ "rate": "0/s" }), json!({ "rate": "5/week" }), json!({ "burst": 3 })]
    {
        let (code, body) = put(bad.clone()).await;
        assert_eq!((code, body["code"].as_str()), (400, Some("invalid-rate")), "{bad}: {body}");
    }
    // One start every 250 ms per key, two at once after a quiet spell.
    let (code, body) = put(json!({ "rate": "4/s", "burst": 2 })).await;
    assert_eq!((code, &body["rate"]), (200, &json!({ "every_ms": 250, "burst": 2 })), "{body}");
    let starts = (0..8).map(|i| {
        let api = api.clone();
        async move {
            let body =
                json!({ "workflow": "mirror", "id": format!("t{i}"), "input": { "n": i }, "concurrency_key": "k" });
            assert_eq!(api.post_json("/runs", &body).await.0, 201);
        }
    });
    futures_util::future::join_all(starts).await;
    let mut firsts = Vec::new();
    for i in 0..8 {
        assert_eq!(api.wait(&format!("t{i}")).await["status"], "completed");
        firsts.push(journal(&api, &format!("t{i}")).await[1]["at_ms"].as_u64().unwrap());
    }
    firsts.sort();
    // Never faster than the rate: the k-th start (after the burst of two)
    // comes at least (k - 1) × 250 ms after the first (less a little: a
    // run's first step is a moment after its start).
    for (k, at) in firsts.iter().enumerate().skip(2) {
        let earliest = firsts[0] + (k as u64 - 1) * 250;
        assert!(
            at + 60 >= earliest,
            "start {k} at +{} ms, before +{} ms: {firsts:?}",
            at - firsts[0],
            earliest - firsts[0]
        );
    }
    let _ = server;
}

/// Per-key activity limits from the input: never more attempts of a key in
/// flight than its limit, across a SIGKILL; the waiting ones visible in
/// `/metrics`; and a rate that spaces attempts' starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_limits_by_a_key_in_the_input_hold_across_a_kill_and_a_rate_spaces_the_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let mut api = Api::new(&server);
    deploy_all(&api).await;
    for (path, body, code) in [
        ("noop.hold", json!({ "key": "customer", "limit": 2 }), "invalid-key"),
        ("noop.hold", json!({ "limit": 0 }), "invalid-limit"),
        ("noop.hold", json!({ "rate": "fast" }), "invalid-rate"),
        ("mirror", json!({ "limit": 1 }), "not-an-activity"),
        ("no pe", json!({ "limit": 1 }), "invalid-activity"),
    ] {
        let (_, refused) = api.put_json(&format!("/activities/{path}/limits"), &body).await;
        assert_eq!(refused["code"], code, "{path} {body}: {refused}");
    }
    let cli = |url: &str, args: &[&str]| cairn().args(args).args(["--server", url]).output().unwrap();
    let set = cli(
        &server.url,
        &["activity-limits", "noop.hold", "--key-from", "/customer", "--limit", "2", "--key", "beta=1"],
    );
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(stdout(&set).contains("at most 2 attempts of each concurrency key"), "{}", stdout(&set));
    assert!(stdout(&set).contains("keys from the input at /customer"), "{}", stdout(&set));

    let runs: Vec<(String, &str)> =
        (0..10).map(|i| (format!("a{i:02}"), "acme")).chain((0..6).map(|i| (format!("b{i:02}"), "beta"))).collect();
    for (id, customer) in &runs {
        let steps =
            json!([{ "activity": "noop.hold", "input": { "customer": customer, "ms": 150 }, "timeout_ms": 5000 }]);
        let (status, body) = api.post_json("/runs", &json!({ "workflow": "script", "id": id, "input": steps })).await;
        assert_eq!(status, 201, "{body}");
    }
    // The attempts that wait are counted, by key.
    let waiting = r#"cairn_activity_attempts_waiting{activity="noop.hold",key="acme"}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l.starts_with(waiting) && !l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < deadline, "no waiting attempts in /metrics:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, shown) = api.get("/activities/noop.hold/limits").await;
    assert_eq!((&shown["key"], &shown["limit"], &shown["keys"]["beta"]), (&json!("/customer"), &json!(2), &json!(1)));
    server.kill();
    server = Server::start(dir.path(), &[]);
    api = Api::new(&server);

    let mut spans: std::collections::HashMap<&str, Vec<(u64, u64)>> = Default::default();
    for (id, customer) in &runs {
        let run = api.wait(id).await;
        assert_eq!(run["status"], "completed", "{run}");
        let held = &run["result"][0]["ok"];
        spans.entry(customer).or_default().push((held["start_ms"].as_u64().unwrap(), held["end_ms"].as_u64().unwrap()));
    }
    assert_eq!(most_at_once(&spans["acme"]), 2, "acme's limit is 2: {:?}", spans["acme"]);
    assert_eq!(most_at_once(&spans["beta"]), 1, "beta's own limit is 1: {:?}", spans["beta"]);

    // One start every 250 ms, none saved up: the fifth waits a second.
    let (status, body) = api.put_json("/activities/noop.ping/limits", &json!({ "rate": "4/s", "burst": 1 })).await;
    assert_eq!(status, 200, "{body}");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for i in 0..5 {
        let steps = json!([{ "activity": "noop.ping", "input": i }]);
        let (status, body) =
            api.post_json("/runs", &json!({ "workflow": "script", "id": format!("p{i}"), "input": steps })).await;
        assert_eq!(status, 201, "{body}");
    }
    let mut last = 0;
    for i in 0..5 {
        assert_eq!(api.wait(&format!("p{i}")).await["status"], "completed");
        last = last.max(api.active_span(&format!("p{i}")).await.1);
    }
    assert!(last >= before + 1000, "five pings at 4/s took {} ms", last - before);
    let cleared = cli(&server.url, &["activity-limits", "noop.ping", "--clear"]);
    assert!(stdout(&cleared).contains("noop.ping: no limits"), "{}", stdout(&cleared));
    // Limits of an activity nothing deploys (the built-in http) are kept
    // in a deployment with no versions, which the store check accepts.
    let set = cli(&server.url, &["activity-limits", "http", "--rate", "10/s"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let (_, all) = api.get("/activities/limits").await;
    let names: Vec<&str> =
        all["activities"].as_array().unwrap().iter().map(|a| a["activity"].as_str().unwrap()).collect();
    assert_eq!(names, ["http", "noop.hold"], "{all}");
    server.kill();
    let check = cairn().args(["check", "--data"]).arg(dir.path()).output().unwrap();
    assert!(check.status.success(), "{}{}", stdout(&check), stderr(&check));
}
