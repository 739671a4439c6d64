//! Activities: retries with backoff, non-retryable failures, timeouts,
//! idempotency keys, await-any and cancellation.

use crate::support::*;
use serde_json::{json as j, Value};

/// Runs the `script` workflow with the `flaky` activities.
fn script(id: &str, steps: Value) -> (Value, Vec<Value>) {
    script_with(id, steps, &[])
}

fn script_with(id: &str, steps: Value, extra: &[&str]) -> (Value, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("script"))
        .args(activity_args(&["flaky"]))
        .args(extra)
        .args(["--id", id, "--input", &steps.to_string(), "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let result = json(&expect_success(&output));
    (result, journal(dir.path(), id))
}

#[test]
fn an_activity_that_fails_twice_completes_on_attempt_3_with_backoff() {
    let (result, journal) =
        script("retry", j!([{ "activity": "flaky.fail-twice", "max_attempts": 5, "initial_interval_ms": 100 }]));
    assert_eq!(result[0]["ok"]["attempt"], 3);
    // Every attempt saw the same idempotency key: run id + handle.
    assert_eq!(result[0]["ok"]["key"], "retry/1");
    // Backoff: 100 ms, then 200 ms between the attempts.
    let scheduled = journal[1]["at_ms"].as_u64().unwrap();
    let completed = journal[2]["at_ms"].as_u64().unwrap();
    assert!(completed - scheduled >= 300, "retried after {} ms", completed - scheduled);
}

#[test]
fn an_activity_instance_serves_calls_until_it_traps_or_times_out() {
    let once = |activity: &str| j!({ "activity": activity, "max_attempts": 1 });
    let slow = j!({ "activity": "flaky.slow", "input": { "ms": 5000 }, "timeout_ms": 200, "max_attempts": 1 });
    let steps = j!([
        once("flaky.served"),
        once("flaky.served"),
        once("flaky.declined"),
        once("flaky.served"),
        once("flaky.panic"),
        once("flaky.served"),
        slow,
        once("flaky.served"),
    ]);
    let (result, _) = script("warm", steps);
    let served: Vec<Value> = result.as_array().unwrap().iter().map(|r| r["ok"]["served"].clone()).collect();
    // Warm between calls, also after a failure the activity returned; a
    // trap or a timeout replaces the instance with a fresh one.
    assert_eq!(served, [j!(1), j!(2), Value::Null, j!(3), Value::Null, j!(1), Value::Null, j!(1)], "{result}");
    assert_eq!(result[4]["err"]["kind"], "trap", "{result}");
    assert_eq!(result[6]["err"]["kind"], "timeout", "{result}");
}

#[test]
fn a_non_retryable_failure_is_not_retried() {
    let (result, _) =
        script("declined", j!([{ "activity": "flaky.declined", "max_attempts": 5, "non_retryable": ["declined"] }]));
    let err = &result[0]["err"];
    assert_eq!(err["kind"], "declined");
    assert_eq!(err["message"], "declined on attempt 1");
}

#[test]
fn retries_stop_at_max_attempts() {
    let (result, _) =
        script("exhausted", j!([{ "activity": "flaky.declined", "max_attempts": 3, "initial_interval_ms": 10 }]));
    assert_eq!(result[0]["err"]["message"], "declined on attempt 3");
    assert_eq!(result[0]["err"]["details"]["attempts"], 3);
}

#[test]
fn a_timed_out_attempt_counts_as_a_failure_and_is_retried() {
    let (result, _) = script(
        "slow",
        j!([{ "activity": "flaky.slow", "input": { "ms": 5000 }, "timeout_ms": 200, "max_attempts": 2, "initial_interval_ms": 10 }]),
    );
    assert_eq!(result[0]["ok"]["attempt"], 2);

    let (result, _) = script(
        "slow-once",
        j!([{ "activity": "flaky.slow", "input": { "ms": 5000 }, "timeout_ms": 200, "max_attempts": 1 }]),
    );
    assert_eq!(result[0]["err"]["kind"], "timeout");
}

#[test]
fn await_any_takes_the_first_to_finish_and_cancel_stops_the_rest() {
    let (result, journal) = script(
        "race",
        j!([{ "race": [
            { "activity": "flaky.slow", "input": { "ms": 3000 }, "timeout_ms": 10000 },
            { "sleep_ms": 50 }
        ] }]),
    );
    assert_eq!(result[0]["winner"], 1);
    assert_eq!(result[0]["result"], j!({ "ok": null }));
    assert_eq!(result[0]["losers"][0]["err"]["kind"], "cancelled");
    assert_eq!(
        kinds(&journal),
        ["started", "schedule-activity", "start-timer", "await-any", "cancel", "await", "await", "completed"]
    );
    // The slow activity was abandoned, not awaited: the run took far less than 3 s.
    let took = journal.last().unwrap()["at_ms"].as_u64().unwrap() - journal[0]["at_ms"].as_u64().unwrap();
    assert!(took < 2500, "took {took} ms");
}

#[test]
fn activities_started_together_run_at_the_same_time_whichever_is_awaited_first() {
    // The run polls the activity it started last while it awaits it; it
    // must not hold it back while it awaits the others.
    let slow = j!({ "activity": "flaky.slow", "input": { "ms": 600 }, "max_attempts": 1 });
    let (result, journal) = script("fan-out", j!([{ "all": [slow, slow, slow] }]));
    assert_eq!(result[0], j!([{ "ok": { "attempt": 1 } }, { "ok": { "attempt": 1 } }, { "ok": { "attempt": 1 } }]));
    assert_eq!(
        kinds(&journal),
        [
            "started",
            "schedule-activity",
            "schedule-activity",
            "schedule-activity",
            "await",
            "await",
            "await",
            "completed"
        ]
    );
    // One after another would take 1.8 s, and holding back the last one 1.2 s.
    let took = journal[6]["at_ms"].as_u64().unwrap() - journal[1]["at_ms"].as_u64().unwrap();
    assert!(took < 1000, "three 600 ms activities took {took} ms together");
}

#[test]
fn an_invalid_retry_policy_fails_the_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let steps = j!([{ "activity": "flaky.echo", "backoff": 0.5 }]);
    let output = cairn()
        .arg("run")
        .arg(wasm("script"))
        .args(activity_args(&["flaky"]))
        .args(["--id", "bad-policy", "--input", &steps.to_string(), "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json(stderr(&output).lines().last().unwrap());
    assert_eq!(report["failure"]["kind"], "contract-violation");
    assert!(report["failure"]["message"].as_str().unwrap().contains("backoff-coefficient 0.5"), "{report}");
}

#[test]
fn retry_attempts_survive_a_crash() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let steps = j!([{ "activity": "flaky.declined", "max_attempts": 2, "initial_interval_ms": 4000 }]);
    let run = || {
        let mut cmd = cairn();
        cmd.arg("run")
            .arg(wasm("script"))
            .args(activity_args(&["flaky"]))
            .args(["--id", "retrying", "--input", &steps.to_string(), "--data"])
            .arg(dir.path());
        cmd
    };
    // Attempt 1 fails at once; kill the process during the 4 s backoff.
    let mut child = run().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    {
        let store = cairn_host::store::Store::open(dir.path()).unwrap();
        assert_eq!(block_on(store.attempts("retrying", 1)).unwrap(), 1, "the failed attempt was recorded");
    }
    // The restarted run goes on with attempt 2 instead of starting over.
    let started = Instant::now();
    let output = run().output().unwrap();
    let result = json(&expect_success(&output));
    assert_eq!(result[0]["err"]["message"], "declined on attempt 2");
    assert!(started.elapsed() < Duration::from_millis(3500), "attempt 1 was made again: {:?}", started.elapsed());
}

/// A TCP server on loopback that greets each connection with one line, and
/// counts them.
fn greeter(line: &'static str) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = writeln!(stream, "{line}");
        }
    });
    (addr, count)
}

#[test]
fn an_activity_reaches_only_the_hosts_on_its_allow_list() {
    let (allowed, allowed_count) = greeter("hello from the allowed host");
    let (other, other_count) = greeter("nobody should read this");
    let connect = |addr: std::net::SocketAddr| j!({ "activity": "flaky.connect", "input": { "addr": addr.to_string() }, "max_attempts": 1 });
    let steps = j!([connect(allowed), connect(other)]);

    let allow = allowed.to_string();
    let (result, _) = script_with("net", steps.clone(), &["--activity-allow", &allow]);
    assert_eq!(result[0], j!({ "ok": { "reply": "hello from the allowed host" } }), "{result}");
    assert_eq!(result[1]["err"]["kind"], "connect-failed", "{result}");
    let message = result[1]["err"]["message"].as_str().unwrap();
    assert!(message.contains(&other.to_string()) && message.to_lowercase().contains("denied"), "{message}");
    assert_eq!(allowed_count.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(other_count.load(std::sync::atomic::Ordering::SeqCst), 0, "the denied connection never left the host");

    // Without an allow-list, activities have no network at all.
    let (result, _) = script("offline", steps);
    assert_eq!(result[0]["err"]["kind"], "connect-failed", "{result}");
    assert_eq!(allowed_count.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn an_allow_list_entry_that_is_not_an_address_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("hello"))
        .args(["--activity-allow", "no-port-here", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--activity-allow \"no-port-here\" is not an address: give HOST:PORT"),
        "{}",
        stderr(&output)
    );
}

/// An HTTP server on loopback answering 201 with what it received (method,
/// path, Idempotency-Key header, body) as JSON.
fn echo_server() -> std::net::SocketAddr {
    http_server(|r| {
        let key = r.headers.get("idempotency-key").cloned().unwrap_or_default();
        (201, j!({ "method": r.method, "path": r.path, "key": key, "body": r.body }).to_string())
    })
}

#[test]
fn the_built_in_http_activity_calls_allowed_hosts_with_the_idempotency_key() {
    let server = echo_server();
    let (forbidden, forbidden_count) = greeter("never reached");
    let request = |addr: std::net::SocketAddr| {
        j!({ "activity": "http.request", "max_attempts": 1, "input": {
            "method": "POST", "url": format!("http://{addr}/charges"),
            "headers": { "content-type": "application/json" }, "body": "{\"amount\":5}" } })
    };
    let allow = server.to_string();
    let (result, journal) =
        script_with("http", j!([request(server), request(forbidden)]), &["--activity-allow", &allow]);

    let response = &result[0]["ok"];
    assert_eq!(response["status"], 201, "{result}");
    assert_eq!(response["headers"]["content-type"], "application/json");
    // The first call's handle is 1: its key is `<run>/1`, on every attempt.
    assert_eq!(
        json(response["body"].as_str().unwrap()),
        j!({ "method": "POST", "path": "/charges", "key": "http/1", "body": "{\"amount\":5}" })
    );
    assert_eq!(result[1]["err"]["kind"], "invalid-input", "{result}");
    let message = result[1]["err"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("--activity-allow {forbidden}")), "{message}");
    assert_eq!(forbidden_count.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The response is journaled like any activity result: a replay does not
    // call the server again.
    assert!(journal.iter().any(|e| e["reply"]["completion"]["ok"].as_str().is_some_and(|ok| ok.contains("201"))));
}
