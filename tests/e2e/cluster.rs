//! Several hosts sharing one PostgreSQL database (Debian's postgresql-15,
//! started by the harness on loopback, one database per test): real
//! `cairn serve` processes killed with SIGKILL, paused with SIGSTOP, joined
//! while runs are under way, and the wake-up listener's connection killed.

use crate::server::{approval_input, Api, Server};
use crate::support::*;
use cairn_host::journal::Record;
use cairn_host::store::postgres::harness;
use cairn_host::store::{RunQuery, RunStatus, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A host of the cluster: `cairn serve --store URL` with its own data
/// directory (its component cache) and host id.
fn host(url: &str, dir: &Path, id: &str, lease_ms: u64) -> (Server, Api) {
    host_with(url, dir, id, lease_ms, &[])
}

fn host_with(url: &str, dir: &Path, id: &str, lease_ms: u64, extra: &[&str]) -> (Server, Api) {
    let lease = lease_ms.to_string();
    let mut args = vec!["--store", url, "--host-id", id, "--lease-ms", &lease];
    args.extend_from_slice(extra);
    let server = Server::start(&dir.join(id), &args);
    let api = Api::new(&server);
    (server, api)
}

async fn deploy(api: &Api, components: &[(&str, &str)]) {
    for (name, kind) in components {
        let (status, body) = api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await;
        assert!(status == 201 || status == 200, "deploy {name}: {status} {body}");
    }
}

/// The owners of the shards, and how many each holds.
async fn owners(url: &str) -> HashMap<String, usize> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query("SELECT coalesce(owner, ''), count(*) FROM cairn_shards WHERE lease_until > now() GROUP BY 1", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize)).collect()
}

/// Waits until exactly `hosts` hold every shard, evenly.
async fn wait_balanced(url: &str, hosts: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owners = owners(url).await;
        let share = 64usize.div_ceil(hosts.len());
        let total: usize = owners.values().sum();
        if total == 64
            && owners.len() == hosts.len()
            && hosts.iter().all(|h| owners.get(*h).is_some_and(|n| *n <= share))
        {
            return;
        }
        assert!(Instant::now() < deadline, "the shards never settled on {hosts:?}: {owners:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(url: &str) -> Store {
    Store::connect(url, None).await.unwrap()
}

/// `cairn check --store` finds nothing wrong, and no completion was
/// consumed twice.
fn assert_clean(url: &str) {
    let output = cairn().args(["check", "--json", "--store", url]).output().unwrap();
    let report = json(&stdout(&output));
    assert_eq!(report["ok"], true, "{report}");
    let warnings = report["report"]["warnings"].as_array().unwrap();
    assert!(!warnings.iter().any(|w| w.as_str().unwrap().contains("awaited more than once")), "{report}");
}

fn entries(records: Vec<Record>) -> Vec<String> {
    records.into_iter().map(|r| format!("{} {:?}", r.seq, r.entry)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_example_on_postgres_resumes_after_a_kill_at_every_commit() {
    let reference = tempfile::tempdir().unwrap();
    let expected_result = expect_success(&order_command(reference.path(), "order").output().unwrap());
    let expected = entries(Store::open(reference.path()).unwrap().journal("order").await.unwrap());
    let server = harness::server();
    let mut kills = 0;
    for n in 1.. {
        let url = server.database().await;
        let dir = tempfile::tempdir().unwrap();
        let run = |crash: Option<u32>| {
            let mut command = order_command(dir.path(), "order");
            command.args(["--store", &url]);
            if let Some(n) = crash {
                command.env("CAIRN_CRASH_AFTER_COMMITS", n.to_string());
            }
            command.output().unwrap()
        };
        let first = run(Some(n));
        use std::os::unix::process::ExitStatusExt;
        if first.status.signal() != Some(9) {
            assert_eq!(expect_success(&first), expected_result);
            break;
        }
        kills += 1;
        assert_eq!(expect_success(&run(None)), expected_result, "after a kill at commit {n}");
        let journal = entries(connect(&url).await.journal("order").await.unwrap());
        assert_eq!(journal, expected, "the journal after a kill at commit {n}");
        assert_clean(&url);
        assert!(n < 200, "the run never finished without being killed");
    }
    assert!(kills >= 10, "expected the run to span many commits, killed only {kills} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_on_postgres_serves_the_examples_and_a_restart_resumes_them() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = host(&url, dir.path(), "solo", 2000);
    deploy(&api, &[("approval", "workflow"), ("payments", "activity"), ("inventory", "activity")]).await;
    for i in 0..10 {
        let (status, body) = api
            .post_json("/runs", &json!({ "workflow": "approval", "id": format!("a{i}"), "input": approval_input(i) }))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Killed while every run waits for its approval; a new process of the
    // same host takes its shards back at once and goes on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    let (_server, api) = host(&url, dir.path(), "solo", 2000);
    for i in 0..10 {
        let (status, body) =
            api.post_json(&format!("/runs/a{i}/signals/approve"), &json!({ "approved": true, "by": "alice" })).await;
        assert_eq!(status, 202, "{body}");
    }
    for i in 0..10 {
        let run = api.wait(&format!("a{i}")).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["result"]["charge_id"], format!("ch_A-{i}_4200"), "{run}");
    }
    let (_, metrics) = reqwest_text(&format!("{}/metrics", api.base.trim_end_matches("/v1"))).await;
    assert!(metrics.contains("cairn_shards_owned 64"), "{metrics}");
    assert_clean(&url);
}

async fn reqwest_text(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What a run of the mixed load returns when it completes as it should.
fn expected(kind: usize, i: usize, result: &Value) -> bool {
    match kind {
        0 => {
            result["status"] == "charged"
                && result["charge_id"] == format!("ch_A-{i}_4200")
                && result["approved_by"] == "alice"
        }
        1 => *result == json!([{ "greeting": format!("Hello, a{i}!") }, { "greeting": format!("Hello, b{i}!") }]),
        2 => result.as_array().is_some_and(|steps| steps.len() == 4 && steps.iter().all(|s| s.get("ok").is_some())),
        _ => result["signal"] == json!(i),
    }
}

fn start_body(kind: usize, i: usize) -> Value {
    let id = format!("m{i}");
    match kind {
        0 => json!({ "workflow": "approval", "id": id, "input": approval_input(i) }),
        1 => json!({ "workflow": "family", "id": id, "input": [format!("a{i}"), format!("b{i}")] }),
        2 => json!({ "workflow": "script", "id": id, "input": [
            { "sleep_ms": 300 }, { "activity": "noop.ping", "input": i }, { "sleep_ms": 300 }, { "activity": "noop.ping", "input": i }
        ] }),
        _ => json!({ "workflow": "mirror", "id": id, "input": { "await_signal": true } }),
    }
}

async fn signal(api: &Api, kind: usize, i: usize) {
    let (path, body) = match kind {
        0 => ("approve", json!({ "approved": true, "by": "alice" })),
        _ => ("more", json!(i)),
    };
    let (status, reply) = api.post_json(&format!("/runs/m{i}/signals/{path}"), &body).await;
    assert_eq!(status, 202, "signal to m{i}: {reply}");
}

const MIXED: &[(&str, &str)] = &[
    ("approval", "workflow"),
    ("family", "workflow"),
    ("hello", "workflow"),
    ("script", "workflow"),
    ("mirror", "workflow"),
    ("payments", "activity"),
    ("inventory", "activity"),
    ("noop", "activity"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_two_hundred_runs_and_lose_nothing_when_one_is_killed() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let lease = 2000;
    let mut hosts: Vec<Option<(Server, Api)>> =
        ["h0", "h1", "h2"].iter().map(|id| Some(host(&url, dir.path(), id, lease))).collect();
    wait_balanced(&url, &["h0", "h1", "h2"]).await;
    let api = |i: usize, hosts: &[Option<(Server, Api)>]| hosts[i].as_ref().map(|(_, a)| a.clone()).unwrap();
    deploy(&api(0, &hosts), MIXED).await;

    // 200 runs started on all three hosts; each runs where its shard is.
    let n = 200;
    for i in 0..n {
        let (status, body) = api(i % 3, &hosts).post_json("/runs", &start_body(i % 4, i)).await;
        assert_eq!(status, 201, "{body}");
    }
    // Half the signals, to random hosts, then host h1 dies mid-load.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let waiting: Vec<usize> = (0..n).filter(|i| i % 4 == 0 || i % 4 == 3).collect();
    for i in &waiting[..waiting.len() / 2] {
        signal(&api(next(3), &hosts), i % 4, *i).await;
    }
    let killed_at = Instant::now();
    hosts[1].take().unwrap().0.kill();
    for i in &waiting[waiting.len() / 2..] {
        signal(&api([0, 2][next(2)], &hosts), i % 4, *i).await;
    }
    // Every run completes, as it should, wherever it ended up.
    for i in 0..n {
        let run = api([0, 2][i % 2], &hosts).wait(&format!("m{i}")).await;
        assert_eq!(run["status"], "completed", "m{i}: {run}");
        assert!(expected(i % 4, i, &run["result"]), "m{i} (kind {}): {run}", i % 4);
    }
    eprintln!(
        "cluster: {n} runs completed on three hosts, one killed; {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    wait_balanced(&url, &["h0", "h2"]).await;
    // The survivors timed their takeover of h1's shards.
    let mut takeovers = 0.0;
    for (server, _) in hosts.iter().flatten() {
        let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
        let value = |name: &str| {
            metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap()
        };
        takeovers += value("cairn_takeovers_total");
        if value("cairn_takeovers_total") > 0.0 {
            let took = value("cairn_takeover_seconds");
            assert!(took > 0.0 && took < 60.0, "takeover time {took} s: {metrics}");
        }
    }
    assert!(takeovers >= 1.0, "h1's shards were taken over");
    assert_clean(&url);
    // Exactly one journal per run, each with its expected shape: a run
    // driven by two hosts at once would have been refused (commit-refused).
    let store = connect(&url).await;
    let runs = store.all_runs(RunQuery::all()).await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.parent.is_none()).count(), n);
    assert_eq!(runs.iter().filter(|r| r.parent.is_some()).count(), n / 4 * 2, "two children per family run");
    assert!(runs.iter().all(|r| r.status == RunStatus::Completed), "a run did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_past_its_lease_is_fenced_and_writes_nothing_after_the_takeover() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let lease = 1500;
    let (paused, paused_api) = host(&url, dir.path(), "p0", lease);
    let (_other, api) = host(&url, dir.path(), "p1", lease);
    wait_balanced(&url, &["p0", "p1"]).await;
    deploy(&api, &[("script", "workflow"), ("noop", "activity")]).await;
    // Long runs: a step every 100 ms for about 3 s.
    let steps: Vec<Value> =
        (0..30).flat_map(|i| [json!({ "sleep_ms": 50 }), json!({ "activity": "noop.ping", "input": i })]).collect();
    for i in 0..40 {
        let (status, body) = paused_api
            .post_json("/runs", &json!({ "workflow": "script", "id": format!("s{i}"), "input": steps }))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pid = paused.pid() as i32;
    // SAFETY: signals to a child process of this test.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Past its lease: the other host takes every shard over.
    wait_balanced(&url, &["p1"]).await;
    let taken_over = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    for i in 0..40 {
        let run = api.wait(&format!("s{i}")).await;
        assert_eq!(run["status"], "completed", "s{i}: {run}");
        let results = run["result"].as_array().unwrap();
        assert_eq!(results.len(), 60, "{run}");
    }
    // The paused host found out, and what it tried to write after the
    // takeover was refused: every journal is whole, one entry per seq,
    // exactly as the other host wrote it.
    let (_, metrics) = reqwest_text(&format!("{}/metrics", paused_api.base.trim_end_matches("/v1"))).await;
    let value = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(value("cairn_shards_lost_total") >= 1, "{metrics}");
    eprintln!(
        "paused host: {} shards lost, {} writes refused after the takeover ({:.1} s to finish after it)",
        value("cairn_shards_lost_total"),
        value("cairn_fencing_refusals_total"),
        taken_over.elapsed().as_secs_f64()
    );
    assert_clean(&url);
    let store = connect(&url).await;
    for i in 0..40 {
        let journal = store.journal(&format!("s{i}")).await.unwrap();
        assert!(journal.iter().enumerate().all(|(i, r)| r.seq == i as u64), "a gap in s{i}");
    }
    drop(paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_host_takes_its_share_with_no_run_stalled_longer_than_a_lease() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let lease = 1500u64;
    let (_first, api) = host(&url, dir.path(), "j0", lease);
    wait_balanced(&url, &["j0"]).await;
    deploy(&api, &[("script", "workflow"), ("noop", "activity")]).await;
    let steps: Vec<Value> =
        (0..40).flat_map(|i| [json!({ "sleep_ms": 50 }), json!({ "activity": "noop.ping", "input": i })]).collect();
    for i in 0..40 {
        let (status, body) =
            api.post_json("/runs", &json!({ "workflow": "script", "id": format!("j{i}"), "input": steps })).await;
        assert_eq!(status, 201, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_second, _) = host(&url, dir.path(), "j1", lease);
    wait_balanced(&url, &["j0", "j1"]).await;
    let store = connect(&url).await;
    let mut worst = 0;
    for i in 0..40 {
        let run = api.wait(&format!("j{i}")).await;
        assert_eq!(run["status"], "completed", "j{i}: {run}");
        let journal = store.journal(&format!("j{i}")).await.unwrap();
        let gap = journal.windows(2).map(|w| w[1].at_ms.saturating_sub(w[0].at_ms)).max().unwrap_or(0);
        worst = worst.max(gap);
    }
    let shards = store
        .all_runs(RunQuery::all())
        .await
        .unwrap()
        .iter()
        .map(|r| r.shard)
        .collect::<std::collections::HashSet<_>>();
    eprintln!(
        "rebalance: the longest pause between two steps of a run was {worst} ms (lease {lease} ms), runs in {} shards",
        shards.len()
    );
    // A handed-back shard is taken at the next tick, not after a lease.
    assert!(worst <= lease, "a run stalled {worst} ms during the rebalance, longer than the lease ({lease} ms)");
    assert_clean(&url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_still_arrive_after_the_listen_connection_is_killed() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let (_a, api_a) = host(&url, dir.path(), "w0", 2000);
    let (_b, api_b) = host(&url, dir.path(), "w1", 2000);
    wait_balanced(&url, &["w0", "w1"]).await;
    deploy(&api_a, &[("mirror", "workflow")]).await;
    for i in 0..20 {
        let (status, body) = api_a
            .post_json(
                "/runs",
                &json!({ "workflow": "mirror", "id": format!("l{i}"), "input": { "await_signal": true } }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let db = url.rsplit('/').next().unwrap().to_owned();
    let listeners = format!("FROM pg_stat_activity WHERE query LIKE 'LISTEN cairn_wakeups%' AND datname = '{db}'");
    let killed = harness::server().admin(&format!("SELECT pg_terminate_backend(pid) {listeners}")).await;
    let rows = killed.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count();
    assert_eq!(rows, 2, "one listening connection per host");
    // Signals through both hosts reach runs wherever they run.
    for i in 0..20 {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let (status, body) = api.post_json(&format!("/runs/l{i}/signals/more"), &json!(i)).await;
        assert_eq!(status, 202, "{body}");
    }
    for i in 0..20 {
        let run = api_b.wait(&format!("l{i}")).await;
        assert_eq!(run["result"]["signal"], json!(i), "{run}");
    }
    // And the listeners came back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let back = harness::server().admin(&format!("SELECT pid {listeners}")).await;
        if back.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the hosts never listened again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_from_two_hosts_at_once_never_share_a_version_number() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let (_a, api_a) = host(&url, dir.path(), "d0", 2000);
    let (_b, api_b) = host(&url, dir.path(), "d1", 2000);
    // Two different components under one name, deployed through both hosts
    // at the same moment, four times over.
    let (hello, mirror) = (std::fs::read(wasm("hello")).unwrap(), std::fs::read(wasm("mirror")).unwrap());
    let mut versions = Vec::new();
    for round in 0..4 {
        let name = format!("racy{round}");
        let (a, b) = tokio::join!(
            api_a.deploy(&name, "workflow", hello.clone()),
            api_b.deploy(&name, "workflow", mirror.clone())
        );
        assert_eq!((a.0, b.0), (201, 201), "{a:?} {b:?}");
        let mut got = vec![a.1["version"].as_u64().unwrap(), b.1["version"].as_u64().unwrap()];
        got.sort_unstable();
        assert_eq!(got, vec![1, 2], "round {round}: both deploys got a version of their own");
        let (_, listed) = api_a.get(&format!("/workflows/{name}/versions")).await;
        assert_eq!(listed["versions"].as_array().unwrap().len(), 2, "{listed}");
        versions.push(got);
    }
    assert_clean(&url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_upgrades_updates_and_queries_reach_the_host_that_drives_the_run() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let (_a, api_a) = host(&url, dir.path(), "t0", 2000);
    let (_b, api_b) = host(&url, dir.path(), "t1", 2000);
    wait_balanced(&url, &["t0", "t1"]).await;
    let shipping = |v: &str| std::fs::read(example_wasm(&format!("shipping_{v}"))).unwrap();
    deploy(&api_a, &[("payments", "activity"), ("inventory", "activity"), ("mirror", "workflow")]).await;
    assert_eq!(api_a.deploy("shipping", "workflow", shipping("v1")).await.0, 201);
    let order = |i: usize| json!({ "order_id": format!("S-{i}"), "sku": "cairn-mug", "quantity": 1, "amount_cents": 2400, "card": "4242-4242-4242-4242", "address": "1 Main St" });
    for i in 0..12 {
        let (status, body) = api_a
            .post_json("/runs", &json!({ "workflow": "shipping", "id": format!("u{i}"), "input": order(i) }))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = api_a
            .post_json(
                "/runs",
                &json!({ "workflow": "mirror", "id": format!("x{i}"), "input": { "await_signal": true } }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for i in 0..12 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while api_a.get(&format!("/runs/u{i}")).await.1["custom_status"]["stage"] != "packing" {
            assert!(Instant::now() < deadline, "u{i} never reached packing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Pause and resume go to the run's host too.
    for i in 0..4 {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let (status, run) = api.post_json(&format!("/runs/x{i}/pause"), &json!({})).await;
        assert_eq!((status, run["status"].as_str()), (200, Some("paused")), "{run}");
        assert_eq!(api_a.get(&format!("/runs/x{i}")).await.1["status"], "paused");
        let (status, run) = api.post_json(&format!("/runs/x{i}/resume"), &json!({})).await;
        assert_eq!((status, run["status"].as_str()), (200, Some("running")), "{run}");
    }
    // Through both hosts: each request lands on the run's own host, about
    // half of them by way of the other.
    assert_eq!(api_b.deploy("shipping", "workflow", shipping("v2_express")).await.0, 201);
    for i in 0..12 {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let (status, body) = api.post_json(&format!("/runs/x{i}/terminate"), &json!({ "reason": "test" })).await;
        assert_eq!(status, 202, "{body}");
        let (status, report) = api.post_json(&format!("/runs/u{i}/upgrade"), &json!({ "to": 2 })).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["runs"][0]["outcome"], "upgraded", "{report}");
    }
    for i in 0..12 {
        assert_eq!(api_b.wait(&format!("x{i}")).await["status"], "terminated");
        for signal in ["packed", "dispatch"] {
            api_b.post_json(&format!("/runs/u{i}/signals/{signal}"), &json!(null)).await;
        }
        let run = api_a.wait(&format!("u{i}")).await;
        assert_eq!((&run["version"], &run["result"]["code_version"]), (&json!(2), &json!(2)), "{run}");
    }
    // Updates and queries through either host: validated by replay where
    // they land, handled where the run is driven, answered where they landed.
    assert_eq!(api_b.deploy("cart", "workflow", std::fs::read(wasm("cart")).unwrap()).await.0, 201);
    for i in 0..8 {
        let (first, second) = if i % 2 == 0 { (&api_a, &api_b) } else { (&api_b, &api_a) };
        let run = format!("/runs/c{i}");
        let start = json!({ "workflow": "cart", "input": { "limit": 2 } });
        let (status, added) =
            first.post_json(&format!("{run}/updates/add"), &json!({ "args": "a", "start": start })).await;
        assert_eq!((status, &added["result"]), (200, &json!(1)), "{added}");
        let (status, added) = second.post_json(&format!("{run}/updates/add"), &json!({ "args": "b" })).await;
        assert_eq!((status, &added["result"]), (200, &json!(2)), "{added}");
        let (status, full) = first.post_json(&format!("{run}/updates/add"), &json!({ "args": "c" })).await;
        assert_eq!((status, &full["failure"]["kind"]), (422, &json!("cart-full")), "{full}");
        for api in [first, second] {
            let (status, items) = api.get(&format!("{run}/queries/items")).await;
            assert_eq!((status, &items["result"]), (200, &json!(["a", "b"])), "{items}");
        }
        let (status, done) = second.post_json(&format!("{run}/updates/checkout"), &json!({})).await;
        assert_eq!((status, &done["result"]), (200, &json!("checked out")), "{done}");
        assert_eq!(first.wait(&format!("c{i}")).await["result"], json!({ "items": ["a", "b"] }));
    }
    assert_clean(&url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_polling_one_host_serves_the_runs_of_every_host() {
    use crate::workers::{expected, order, Worker};
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let external = ["--external-activity", "inventory", "--heartbeat-timeout-ms", "1500"];
    let (a, api_a) = host_with(&url, dir.path(), "w0", 2000, &external);
    let (b, api_b) = host_with(&url, dir.path(), "w1", 2000, &external);
    wait_balanced(&url, &["w0", "w1"]).await;
    deploy(&api_a, &[("order", "workflow"), ("payments", "activity")]).await;

    // One worker, polling w0 only, serves the runs both hosts drive.
    let worker = Worker::start("python", &a.url, "py-w0", None);
    let ids: Vec<String> = (0..8).map(|i| format!("ext-{i}")).collect();
    for id in &ids {
        assert_eq!(api_b.post_json("/runs", &order(id)).await.0, 201);
    }
    for id in &ids {
        let run = api_a.wait(id).await;
        assert_eq!(run["result"], expected(id), "{id}: {run}");
    }
    let store = connect(&url).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut driven_by = std::collections::HashSet::new();
    for id in &ids {
        let shard = store.run(id).await.unwrap().unwrap().shard as i32;
        let row = client.query_one("SELECT owner FROM cairn_shards WHERE shard = $1", &[&shard]).await.unwrap();
        driven_by.insert(row.get::<_, String>(0));
    }
    assert_eq!(driven_by.len(), 2, "the runs must be driven by both hosts for this test to mean anything");
    drop(worker);

    // A worker of w1 lost mid-task: after the heartbeat timeout the task
    // goes to a worker of w0, whichever host drives the run.
    let doomed = Worker::start("python", &b.url, "doomed", Some("ship"));
    assert_eq!(api_a.post_json("/runs", &order("ext-lost")).await.0, 201);
    let took = doomed.expect("took inventory.ship");
    drop(doomed);
    let rescuer = Worker::start("js", &a.url, "rescuer", None);
    let run = api_b.wait("ext-lost").await;
    assert_eq!(run["result"], expected("ext-lost"), "{run}");
    assert_ne!(rescuer.expect("took inventory.ship"), took, "a new attempt has a new task token");
    // The lost worker's late report is refused on either host.
    let token = took.rsplit(' ').next().unwrap();
    for api in [&api_a, &api_b] {
        let (status, body) = api.post_json(&format!("/tasks/{token}/complete"), &json!({ "result": {} })).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("task-gone")), "{body}");
    }
    let left: i64 = client.query_one("SELECT count(*) FROM cairn_tasks", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "answered tasks leave the board");
    assert_clean(&url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_time_on_one_host_and_moves_when_that_host_dies() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let lease = 1500;
    let mut hosts: Vec<Option<(Server, Api)>> =
        ["c0", "c1"].iter().map(|id| Some(host(&url, dir.path(), id, lease))).collect();
    wait_balanced(&url, &["c0", "c1"]).await;
    let api = hosts[0].as_ref().unwrap().1.clone();
    deploy(&api, &[("mirror", "workflow")]).await;
    let (status, body) = api
        .post_json(
            "/schedules",
            &json!({ "name": "tock", "workflow": "mirror", "every": "1s", "overlap": "allow-all" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let store = connect(&url).await;
    let runs = |store: Store| async move {
        let mut times: Vec<String> = store
            .all_runs(RunQuery::all())
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| r.id.strip_prefix("tock-").map(str::to_owned))
            .collect();
        times.sort();
        times
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs(connect(&url).await).await.len() < 3 {
        assert!(Instant::now() < deadline, "tock never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Kill the host that fires it; the other takes its shard and goes on,
    // making up the seconds in between.
    let shard = store.shard_for("tock") as i32;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let owner: String =
        client.query_one("SELECT owner FROM cairn_shards WHERE shard = $1", &[&shard]).await.unwrap().get(0);
    let (killed, survivor) = if owner == "c0" { (0, 1) } else { (1, 0) };
    hosts[killed].take().unwrap().0.kill();
    let before = runs(connect(&url).await).await.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs(connect(&url).await).await.len() < before + 4 {
        assert!(Instant::now() < deadline, "tock stopped firing after its host died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivor_api = hosts[survivor].as_ref().unwrap().1.clone();
    let (status, _) = survivor_api.post_json("/schedules/tock/pause", &json!({})).await;
    assert_eq!(status, 200);
    let times = runs(connect(&url).await).await;
    let seconds: Vec<i64> =
        times.iter().map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp()).collect();
    assert_eq!(seconds, (seconds[0]..=*seconds.last().unwrap()).collect::<Vec<_>>(), "a second missed or doubled");
    let (_, tock) = survivor_api.get("/schedules/tock").await;
    assert_eq!(tock["started"], json!(seconds.len()), "{tock}");
    assert_clean(&url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_of_runs_and_of_activities_hold_across_hosts() {
    let url = harness::server().database().await;
    let dir = tempfile::tempdir().unwrap();
    let (_a, api_a) = host(&url, dir.path(), "q0", 2000);
    let (_b, api_b) = host(&url, dir.path(), "q1", 2000);
    wait_balanced(&url, &["q0", "q1"]).await;
    deploy(&api_a, &[("mirror", "workflow")]).await;
    assert_eq!(api_b.put_json("/workflows/mirror/concurrency", &json!({ "keys": { "acme": 2 } })).await.0, 200);
    let n = 20;
    let starts = (0..n).map(|i| {
        let api = if i % 2 == 0 { api_a.clone() } else { api_b.clone() };
        async move {
            let body = json!({ "workflow": "mirror", "id": format!("k{i:02}"), "input": { "await_signal": true }, "concurrency_key": "acme" });
            assert_eq!(api.post_json("/runs", &body).await.0, 201);
        }
    });
    futures_util::future::join_all(starts).await;
    let status_of = |status: &'static str| {
        let api = api_a.clone();
        async move {
            let (_, page) = api.get(&format!("/runs?workflow=mirror&status={status}&limit=1000")).await;
            page["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(status_of("queued").await.len(), n - 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut turn = 0;
    while status_of("completed").await.len() < n {
        assert!(Instant::now() < deadline, "the queue did not drain across hosts");
        let running = status_of("running").await;
        assert!(running.len() <= 2, "{running:?}");
        for id in running {
            turn += 1;
            let api = if turn % 2 == 0 { &api_a } else { &api_b };
            api.post_json(&format!("/runs/{id}/signals/more"), &json!(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut spans = Vec::new();
    for i in 0..n {
        spans.push(api_a.active_span(&format!("k{i:02}")).await);
    }
    let most = crate::server::most_at_once(&spans);
    assert!(most <= 2, "{most} runs active at once: {spans:?}");

    // An activity limit holds across hosts too: the slots are rows every
    // host takes from.
    deploy(&api_a, &[("script", "workflow"), ("noop", "activity")]).await;
    let limit = json!({ "key": "/customer", "limit": 2 });
    assert_eq!(api_b.put_json("/activities/noop.hold/limits", &limit).await.0, 200);
    for i in 0..12 {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let steps =
            json!([{ "activity": "noop.hold", "input": { "customer": "acme", "ms": 150 }, "timeout_ms": 5000 }]);
        let (status, body) =
            api.post_json("/runs", &json!({ "workflow": "script", "id": format!("h{i:02}"), "input": steps })).await;
        assert_eq!(status, 201, "{body}");
    }
    let mut held = Vec::new();
    for i in 0..12 {
        let run = api_b.wait(&format!("h{i:02}")).await;
        let span = &run["result"][0]["ok"];
        held.push((span["start_ms"].as_u64().unwrap(), span["end_ms"].as_u64().unwrap()));
    }
    assert_eq!(crate::server::most_at_once(&held), 2, "{held:?}");
    assert_clean(&url);
}
