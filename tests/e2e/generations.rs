//! Continue-as-new starts handle numbers afresh in every generation: what is
//! keyed by a handle (child ids, idempotency keys, completions) must still
//! name one generation's operation only.

use crate::server::{Api, Server};
use crate::support::*;
use serde_json::{json, Value};

/// A server with the subscription workflow, `hello` and `payments`, and one
/// subscription of four months, two per generation, run to its end.
async fn subscription(dir: &std::path::Path) -> (Server, Api, Value) {
    let server = Server::start(dir, &[]);
    let api = Api::new(&server);
    for (name, kind) in [("subscription", "workflow"), ("hello", "workflow"), ("payments", "activity")] {
        let (status, body) = api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await;
        assert_eq!(status, 201, "deploy {name}: {body}");
    }
    let start = json!({ "workflow": "subscription", "id": "sub", "input": { "months": 4, "per_generation": 2 } });
    let (status, body) = api.post_json("/runs", &start).await;
    assert_eq!(status, 201, "{body}");
    let run = api.wait("sub").await;
    (server, api, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_ids_are_unique_across_generations() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api, run) = subscription(dir.path()).await;
    // Generation 1 starts its first child at the same seq as generation 0
    // did: with ids made of the parent's id and the seq alone it took the
    // id of generation 0's child, its commit was refused and the run hung.
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["generation"], 1);
    assert_eq!(
        run["result"]["greetings"],
        json!(["Hello, month 0!", "Hello, month 1!", "Hello, month 2!", "Hello, month 3!"])
    );
    let (_, page) = api.get("/runs?workflow=hello").await;
    let mut children: Vec<(String, String)> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r["input"]["name"].as_str().unwrap().to_owned()))
        .collect();
    children.sort();
    let expected = [("sub:1.3", "month 2"), ("sub:1.7", "month 3"), ("sub:3", "month 0"), ("sub:7", "month 1")];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(children, expected, "one child per month, under the README's id rule");
    for (id, _) in &children {
        let (_, child) = api.get(&format!("/runs/{id}")).await;
        assert_eq!((child["status"].as_str(), child["parent"].as_str()), (Some("completed"), Some("sub")), "{child}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_differ_across_generations() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _api, run) = subscription(dir.path()).await;
    assert_eq!(run["status"], "completed", "{run}");
    // Month 2's charge is generation 1's first activity, at the seq of
    // month 0's in generation 0: with `<run>/<handle>` keys a provider
    // would have returned month 0's charge instead of making a new one.
    assert_eq!(run["result"]["charges"], json!(["sub/1", "sub/5", "sub/1/1", "sub/1/5"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_that_continued_as_new_ends_with_an_entry_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, api, run) = subscription(dir.path()).await;
    assert_eq!(run["status"], "completed", "{run}");
    let (status, old) = api.get("/runs/sub/journal?generation=0").await;
    assert_eq!(status, 200, "{old}");
    let last = old["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["entry"], "continued-as-new", "{last}");
    assert_eq!(json(last["input"].as_str().unwrap())["month"], 2, "{last}");
    let (_, current) = api.get("/runs/sub/journal").await;
    assert_eq!(current["entries"].as_array().unwrap().last().unwrap()["entry"], "completed");
}

/// A run id a client took first is the id a child would get: the child is
/// not started, its handle fails with `child-id-in-use`, and the parent goes
/// on (before, the parent's commit was refused and it stalled silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_id_is_taken_fails_its_handle_and_the_parent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);
    for name in ["family", "hello"] {
        assert_eq!(api.deploy(name, "workflow", std::fs::read(wasm(name)).unwrap()).await.0, 201);
    }
    let squat = json!({ "workflow": "hello", "id": "fam:1", "input": { "name": "Squatter" } });
    assert_eq!(api.post_json("/runs", &squat).await.0, 201);
    let start = json!({ "workflow": "family", "id": "fam", "input": ["Ada", "Grace"] });
    assert_eq!(api.post_json("/runs", &start).await.0, 201);
    let run = api.wait("fam").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["result"], json!([{ "failed": "child-id-in-use" }, { "greeting": "Hello, Grace!" }]));
    let (_, squatter) = api.get("/runs/fam:1").await;
    assert_eq!(
        (squatter["parent"].clone(), squatter["result"]["greeting"].clone()),
        (Value::Null, json!("Hello, Squatter!"))
    );
}

/// Any commit the store refuses (here: an entry planted at the seq the
/// run's next step takes) fails the run visibly, with the refusal as its
/// failure, and overwrites nothing; before, the run stalled as `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_fails_the_run_visibly_and_overwrites_nothing() {
    use cairn_host::journal::{Entry, HostCall, Record, Reply};
    use cairn_host::runtime::{RunError, Runtime, StartRequest};
    use cairn_host::store::{RunStatus, Store, Write};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = Runtime::new(store.clone(), cairn_host::sandbox::Limits::default()).unwrap();
    let mirror = rt.components().load_bytes("mirror", std::fs::read(wasm("mirror")).unwrap()).await.unwrap();
    let input = r#"{"await_signal": true}"#.to_owned();
    let request =
        StartRequest { workflow: "mirror".into(), component: mirror, input, run_id: Some("m".into()), version: None };
    rt.start(request).await.unwrap();
    let driver = tokio::spawn({
        let rt = rt.clone();
        async move { rt.drive("m").await }
    });
    // The run waits for its signal once `wait-signal` (seq 1) is stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.journal("m").await.unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the run never waited for its signal");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let planted = Record {
        seq: 2,
        at_ms: 1,
        entry: Entry::Call { call: HostCall::SetCustomStatus { status: "\"planted\"".into() }, reply: Reply::Unit },
    };
    store.commit(vec![Write::Append { run_id: "m".into(), record: planted.clone() }]).await.unwrap();
    rt.signal("m", "more", "1").await.unwrap();

    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), driver).await.expect("the run stalled");
    match outcome.unwrap() {
        Err(RunError::Refused { failure, .. }) => {
            assert!(failure.message.contains("journal entry 2 of run m"), "{failure}")
        }
        other => panic!("expected a refused commit, got {other:?}"),
    }
    let meta = store.run("m").await.unwrap().unwrap();
    assert_eq!(meta.status, RunStatus::Failed);
    assert_eq!(meta.failure.as_ref().map(|f| f.kind.as_str()), Some("commit-refused"), "{meta:?}");
    let journal = store.journal("m").await.unwrap();
    assert_eq!(journal.len(), 3, "nothing after the refused step was written: {journal:?}");
    assert_eq!(journal[2], planted, "the planted entry was overwritten");
}
