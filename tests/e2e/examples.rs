//! The examples do what their folders say they do.

use crate::support::*;

#[test]
fn order_completes_with_the_expected_result_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let output = order_command(dir.path(), "order-1").output().unwrap();
    let result = expect_success(&output);
    assert_eq!(json(&result), read_json(&repo().join("examples/order/expected-output.json")));

    let journal = journal(dir.path(), "order-1");
    assert_eq!(
        kinds(&journal),
        [
            "started",
            "schedule-activity", // inventory.reserve
            "await",
            "schedule-activity", // payments.charge
            "await",
            "start-timer", // the warehouse pause
            "await",
            "schedule-activity", // inventory.ship
            "await",
            "completed",
        ]
    );
    let names: Vec<&str> = journal.iter().filter_map(|r| r["call"]["name"].as_str()).collect();
    assert_eq!(names, ["inventory.reserve", "payments.charge", "inventory.ship"]);
    assert_eq!(journal[5]["call"]["ms"], 500);
    // seqs are contiguous from 0
    for (i, r) in journal.iter().enumerate() {
        assert_eq!(r["seq"], i as u64);
    }
    // The charge saw the idempotency key of its handle.
    let charge = json(journal[4]["reply"]["completion"]["ok"].as_str().unwrap());
    assert_eq!(charge["idempotency_key"], "order-1/3");
}

#[test]
fn order_with_a_declined_card_compensates_by_releasing_stock() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = read_json(&repo().join("examples/order/input.json"));
    input["card"] = "4000-0000-0000-0002".into();
    let output = cairn()
        .arg("run")
        .arg(wasm("order"))
        .args(activity_args(&["payments", "inventory"]))
        .args(["--id", "declined", "--input", &input.to_string(), "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let result = json(&expect_success(&output));
    assert_eq!(result["status"], "payment-failed");
    assert!(result["reason"].as_str().unwrap().starts_with("card-declined"));

    let journal = journal(dir.path(), "declined");
    let names: Vec<&str> = journal.iter().filter_map(|r| r["call"]["name"].as_str()).collect();
    assert_eq!(names, ["inventory.reserve", "payments.charge", "inventory.release"]);
    // Declines are not retried: one attempt.
    let charge = &journal[4]["reply"]["completion"]["err"];
    assert_eq!(charge["kind"], "card-declined");
    assert_eq!(json(charge["details"].as_str().unwrap())["attempts"], 1);
}

#[test]
fn hello_prints_its_expected_output() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("hello"))
        .arg("--input")
        .arg(format!("@{}", repo().join("examples/hello/input.json").display()))
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(json(&expect_success(&output)), read_json(&repo().join("examples/hello/expected-output.json")));
}

#[test]
fn a_missing_activity_component_stops_the_run_without_losing_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("order"))
        .args(activity_args(&["inventory"]))
        .arg("--input")
        .arg(format!("@{}", repo().join("examples/order/input.json").display()))
        .args(["--id", "o", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("no activity component named \"payments\""), "{err}");
    assert!(err.contains("--activity payments=FILE.wasm"), "{err}");

    // Resuming with the component finishes the run from where it stopped.
    let output = order_command(dir.path(), "o").output().unwrap();
    assert_eq!(json(&expect_success(&output)), read_json(&repo().join("examples/order/expected-output.json")));
    let names: Vec<String> =
        journal(dir.path(), "o").iter().filter_map(|r| r["call"]["name"].as_str().map(String::from)).collect();
    assert_eq!(names, ["inventory.reserve", "payments.charge", "inventory.ship"]);
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("hello"))
        .args(["--input", "{not json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--input is not valid JSON"), "{}", stderr(&output));

    let output = cairn().arg("run").arg(repo().join("Cargo.toml")).arg("--data").arg(dir.path()).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("is not a valid WebAssembly component"), "{}", stderr(&output));
}

/// A stand-in OpenTelemetry collector on loopback: answers every request
/// with 200 and keeps the bodies.
fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let addr = http_server(move |r| {
        kept.lock().unwrap().push(r.body);
        (200, "{}".into())
    });
    (format!("http://{addr}"), bodies)
}

#[test]
fn traces_go_to_an_otlp_collector_when_asked() {
    let (url, bodies) = collector();
    let dir = tempfile::tempdir().unwrap();
    let output = cairn()
        .arg("run")
        .arg(wasm("hello"))
        .args(["--input", r#"{"name":"Ada"}"#, "--id", "traced", "--otlp-endpoint", &url, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    expect_success(&output);
    // Compact, whatever the exporter's formatting.
    let exported: Vec<String> = bodies.lock().unwrap().iter().map(|b| json(b).to_string()).collect();
    let exported = exported.join("\n");
    assert!(exported.contains("resourceSpans"), "OTLP JSON expected: {exported}");
    for name in [r#""name":"run""#, r#""name":"host_call""#, r#""stringValue":"traced""#, r#""stringValue":"cairn""#] {
        assert!(exported.contains(name), "{name} missing from {exported}");
    }
    // Off by default: nothing is sent without the flag.
    let before = bodies.lock().unwrap().len();
    let output = cairn()
        .arg("run")
        .arg(wasm("hello"))
        .args(["--input", r#"{"name":"Ada"}"#, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    expect_success(&output);
    assert_eq!(bodies.lock().unwrap().len(), before);
}
