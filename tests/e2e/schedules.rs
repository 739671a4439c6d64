//! Schedules: firings are durable (one run per firing time, whatever
//! crashes), missed firings are made up within the catch-up window after
//! downtime, overlap policies hold, and bad specs are refused clearly.

use crate::server::{Api, Server};
use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn mirror_server(dir: &std::path::Path) -> (Server, Api) {
    let server = Server::start(dir, &[]);
    let api = Api::new(&server);
    let (status, body) = api.deploy("mirror", "workflow", std::fs::read(wasm("mirror")).unwrap()).await;
    assert!(status == 201 || status == 200, "{body}");
    (server, api)
}

async fn create(api: &Api, body: Value) -> Value {
    let (status, created) = api.post_json("/schedules", &body).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// The runs a schedule started, by firing time (seconds since the epoch).
async fn fired(api: &Api, name: &str) -> Vec<(i64, Value)> {
    let (_, page) = api.get("/runs?workflow=mirror&limit=1000").await;
    let prefix = format!("{name}-");
    let mut out: Vec<(i64, Value)> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let at = r["id"].as_str()?.strip_prefix(&prefix)?;
            let at = chrono::DateTime::parse_from_rfc3339(at).ok()?.timestamp();
            Some((at, r.clone()))
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out
}

async fn wait_for_runs(api: &Api, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fired(api, name).await.len() < n {
        assert!(Instant::now() < deadline, "{name} never fired {n} times");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_time_across_a_kill_and_makes_up_what_it_missed_within_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = mirror_server(dir.path()).await;
    let every = json!({ "workflow": "mirror", "every": "1s", "overlap": "allow-all", "input": { "n": 1 } });
    let mut tick = every.clone();
    tick["name"] = json!("tick");
    create(&api, tick).await;
    let mut late = every.clone();
    late["name"] = json!("late");
    late["catchup_window"] = json!("1s");
    create(&api, late).await;
    wait_for_runs(&api, "tick", 2).await;

    // Down for about four seconds: several firings of each are due.
    server.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    let back = chrono::Utc::now().timestamp();
    wait_for_runs(&api, "tick", fired(&api, "tick").await.len() + 2).await;
    for name in ["tick", "late"] {
        let (status, _) = api.post_json(&format!("/schedules/{name}/pause"), &json!({ "note": "test over" })).await;
        assert_eq!(status, 200);
    }

    // `tick` made up every second it was down: one run per second, none
    // twice, none missing, each completed with the schedule's input.
    let runs = fired(&api, "tick").await;
    let times: Vec<i64> = runs.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, (times[0]..=*times.last().unwrap()).collect::<Vec<_>>(), "a second with no run, or two");
    assert!(times.iter().any(|t| *t < back - 2), "the downtime's firings are there: {times:?}");
    for (_, run) in &runs {
        let id = run["id"].as_str().unwrap();
        let ended = api.wait(id).await;
        assert_eq!(ended["result"]["input"], json!({ "n": 1 }), "{ended}");
    }
    let (_, tick) = api.get("/schedules/tick").await;
    assert_eq!(tick["started"], json!(runs.len()), "{tick}");
    assert_eq!((tick["missed"].as_u64(), tick["paused"].as_bool()), (Some(0), Some(true)), "{tick}");
    assert_eq!(tick["next"], json!([]), "a paused schedule has no next firing");

    // `late` (window 1 s) missed what was older than a second when the
    // host came back, and started nothing for those times.
    let (_, late) = api.get("/schedules/late").await;
    let missed = late["missed"].as_u64().unwrap();
    assert!(missed >= 2, "{late}");
    let late_times: Vec<i64> = fired(&api, "late").await.iter().map(|(at, _)| *at).collect();
    let gaps = late_times.windows(2).map(|w| w[1] - w[0] - 1).sum::<i64>();
    assert!(gaps as u64 >= missed, "the missed firings have no runs: {late_times:?}, {late}");
    assert_eq!(late["started"], json!(late_times.len()), "{late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies_skip_or_buffer_while_the_previous_run_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = mirror_server(dir.path()).await;
    let waiting = json!({ "await_signal": true });
    for (name, overlap) in [("skipper", "skip"), ("buffer", "buffer-one")] {
        create(
            &api,
            json!({ "name": name, "workflow": "mirror", "every": "1s", "overlap": overlap, "input": waiting }),
        )
        .await;
    }
    wait_for_runs(&api, "skipper", 1).await;
    wait_for_runs(&api, "buffer", 1).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // The first run of each still waits for its signal: no second run.
    assert_eq!(fired(&api, "skipper").await.len(), 1);
    assert_eq!(fired(&api, "buffer").await.len(), 1);
    let (_, skipper) = api.get("/schedules/skipper").await;
    assert!(skipper["skipped"].as_u64().unwrap() >= 2, "{skipper}");
    let (_, buffer) = api.get("/schedules/buffer").await;
    assert!(buffer["buffered"].is_string(), "{buffer}");

    // The buffered firing starts as soon as the first run ends.
    let first = fired(&api, "buffer").await[0].1["id"].as_str().unwrap().to_owned();
    api.post_json(&format!("/runs/{first}/signals/more"), &json!(1)).await;
    api.wait(&first).await;
    wait_for_runs(&api, "buffer", 2).await;
    let (_, buffer) = api.get("/schedules/buffer").await;
    let second = &fired(&api, "buffer").await[1].1;
    assert_eq!(buffer["last_run"], second["id"], "{buffer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_backfills_and_bad_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = mirror_server(dir.path()).await;
    let nightly = json!({ "name": "nightly", "workflow": "mirror", "cron": "0 3 * * *", "timezone": "Europe/Berlin" });
    let created = create(&api, nightly.clone()).await;
    let next = created["next"][0].as_str().unwrap();
    assert!(next.ends_with("T02:00:00Z") || next.ends_with("T01:00:00Z"), "03:00 in Berlin: {created}");
    let (status, body) = api.post_json("/schedules", &nightly).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("schedule-exists")), "{body}");

    // A backfill starts one run per firing in the range, and never twice.
    let range = json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-05T12:00:00Z" });
    let (status, first) = api.post_json("/schedules/nightly/backfill", &range).await;
    assert_eq!(status, 200, "{first}");
    let outcomes: Vec<&str> =
        first["firings"].as_array().unwrap().iter().map(|f| f["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["backfilled"; 5], "{first}");
    assert_eq!(first["firings"][0]["run_id"], "nightly-2026-01-01T02:00:00Z", "winter: UTC+1");
    let (_, again) = api.post_json("/schedules/nightly/backfill", &range).await;
    assert!(again["firings"].as_array().unwrap().iter().all(|f| f["outcome"] == "exists"), "{again}");
    assert_eq!(fired(&api, "nightly").await.len(), 5);

    // Trigger: one run now.
    let (status, triggered) = api.post_json("/schedules/nightly/trigger", &json!({})).await;
    assert_eq!(status, 200, "{triggered}");
    let run = triggered["firings"][0]["run_id"].as_str().unwrap();
    assert_eq!(api.wait(run).await["status"], "completed");

    // Bad input: each says what is wrong and writes nothing.
    for (body, code, says) in [
        (json!({ "name": "a", "workflow": "mirror", "cron": "0 25 * * *" }), "invalid-cron", "0 25 * * *"),
        (
            json!({ "name": "a", "workflow": "mirror", "cron": "0 3 * * *", "timezone": "Mars/Base" }),
            "unknown-timezone",
            "IANA",
        ),
        (json!({ "name": "a", "workflow": "mirror", "every": "soon" }), "invalid-schedule", "15m"),
        (json!({ "name": "a", "workflow": "mirror" }), "invalid-schedule", "one of cron"),
        (
            json!({ "name": "a", "workflow": "mirror", "every": "1m", "cron": "* * * * *" }),
            "invalid-schedule",
            "exactly one",
        ),
        (
            json!({ "name": "a", "workflow": "mirror", "every": "1m", "overlap": "sometimes" }),
            "invalid-schedule",
            "buffer-one",
        ),
        (json!({ "name": "a b", "workflow": "mirror", "every": "1m" }), "invalid-schedule-name", "letters"),
        (
            json!({ "name": "a", "workflow": "mirror", "start_at": "2020-01-01T00:00:00Z" }),
            "invalid-schedule",
            "in the past",
        ),
        (
            json!({ "name": "a", "workflow": "mirror", "every": "1m", "catchup_window": "0s" }),
            "invalid-schedule",
            "at least 1s",
        ),
        (json!({ "name": "a", "workflow": "nope", "every": "1m" }), "workflow-not-found", "cairn deploy nope"),
    ] {
        let (status, answer) = api.post_json("/schedules", &body).await;
        assert!(status == 400 || status == 404, "{body}: {status} {answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    let (_, list) = api.get("/schedules").await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1, "{list}");
    let (status, _) = api.get("/schedules/nope").await;
    assert_eq!(status, 404);
    let (status, _) = api.delete("/schedules/nightly").await;
    assert_eq!(status, 200);
    assert_eq!(fired(&api, "nightly").await.len(), 6, "its runs stay");
}

#[test]
fn the_cli_creates_lists_and_deletes_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let server = block_on(async { mirror_server(dir.path()).await.0 });
    let cli = |args: &[&str]| {
        let output = cairn().args(args).args(["--server", &server.url]).output().unwrap();
        (output.status.success(), stdout(&output), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, out, err) =
        cli(&["schedule", "create", "reports", "--workflow", "mirror", "--every", "1h", "--offset", "5m", "--paused"]);
    assert!(ok, "{err}");
    assert!(out.contains("every 1h offset 5m"), "{out}");
    let (ok, out, _) = cli(&["schedule", "list"]);
    assert!(ok && out.contains("reports\tmirror") && out.contains("paused"), "{out}");
    let (ok, _, err) = cli(&["schedule", "create", "bad", "--workflow", "mirror", "--cron", "61 * * * *"]);
    assert!(!ok && err.contains("invalid cron expression"), "{err}");
    let (ok, out, err) = cli(&["schedule", "resume", "reports"]);
    assert!(ok && out.contains("next "), "{out}{err}");
    let (ok, _, err) = cli(&["schedule", "delete", "reports"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["schedule", "list"]);
    assert!(ok && out.contains("no schedules"), "{out}");
}
