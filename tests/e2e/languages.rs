//! Other guest languages: the same order workflow in Python produces the
//! same journal as in Rust, survives kills, and sees deterministic WASI.

use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// componentize-py: on PATH, or installed once into target/pyenv.
fn componentize_py() -> PathBuf {
    if Command::new("componentize-py").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return PathBuf::from("componentize-py");
    }
    let venv = repo().join("target/pyenv");
    let tool = venv.join("bin/componentize-py");
    if !tool.exists() {
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "componentize-py==0.25.1"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "installing componentize-py into {} failed", venv.display());
    }
    tool
}

/// componentize-js: CAIRN_COMPONENTIZE_JS, or installed once into
/// target/jsenv.
fn componentize_js() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_COMPONENTIZE_JS") {
        return PathBuf::from(path);
    }
    let env = repo().join("target/jsenv");
    let cli = env.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    if !cli.exists() {
        std::fs::create_dir_all(&env).unwrap();
        let ok = Command::new("npm")
            .current_dir(&env)
            .args(["install", "--silent", "--no-audit", "--no-fund", "@bytecodealliance/componentize-js@0.23.0"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "installing componentize-js into {} failed", env.display());
    }
    cli
}

/// Builds each `(name, folder)` with `cairn build` into
/// target/guests/LANGUAGE/NAME.wasm, with `env` set for the build tool, and
/// checks the printed path.
fn build_guests(
    language: &str,
    guests: &[(&'static str, &str)],
    env: &[(&str, PathBuf)],
) -> HashMap<&'static str, PathBuf> {
    let mut built = HashMap::new();
    for &(name, dir) in guests {
        let file = repo().join(format!("target/guests/{language}/{name}.wasm"));
        let mut command = cairn();
        command.arg("build").arg(repo().join(dir)).arg("--out").arg(&file);
        for (key, value) in env {
            command.env(key, value);
        }
        let printed = expect_success(&command.output().unwrap());
        assert_eq!(Path::new(&printed), file.as_path());
        built.insert(name, file);
    }
    built
}

fn built(guests: &OnceLock<HashMap<&'static str, PathBuf>>, name: &str) -> PathBuf {
    guests.get().and_then(|g| g.get(name)).unwrap_or_else(|| panic!("no guest {name}")).clone()
}

/// JavaScript guests, built once per test run.
fn js(name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<&'static str, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let guests = [
            ("order", "examples/js/order"),
            ("inventory", "examples/js/inventory"),
            ("tags", "examples/testing/js-tags"),
            ("cart", "examples/testing/js-cart"),
        ];
        build_guests("js", &guests, &[("CAIRN_COMPONENTIZE_JS", componentize_js())])
    });
    built(&BUILT, name)
}

/// C guests, built once per test run (clang, lld and wasi-libc from
/// Debian; .ci/run installs them).
pub(crate) fn c(name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<&'static str, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let guests = [
            ("order", "examples/c/order"),
            ("inventory", "examples/c/inventory"),
            ("tags", "examples/testing/c-tags"),
            ("cart", "examples/testing/c-cart"),
        ];
        build_guests("c", &guests, &[])
    });
    built(&BUILT, name)
}

/// Python guests, built once per test run.
fn python(name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<&'static str, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let guests = [
            ("order", "examples/python/order"),
            ("inventory", "examples/python/inventory"),
            ("clockwork", "examples/testing/python-clockwork"),
            ("tags", "examples/testing/python-tags"),
            ("cart", "examples/testing/python-cart"),
        ];
        build_guests("python", &guests, &[("CAIRN_COMPONENTIZE_PY", componentize_py())])
    });
    built(&BUILT, name)
}

fn run_order(workflow: &Path, inventory: &Path, data: &Path, id: &str) -> std::process::Command {
    let mut cmd = cairn();
    cmd.arg("run")
        .arg(workflow)
        .arg(format!("--activity=payments={}", wasm("payments").display()))
        .arg(format!("--activity=inventory={}", inventory.display()))
        .arg("--input")
        .arg(format!("@{}", repo().join("examples/order/input.json").display()))
        .args(["--id", id, "--data"])
        .arg(data);
    cmd
}

/// The journal without timestamps and component hashes.
fn comparable(data: &Path, id: &str) -> Vec<Value> {
    journal_modulo_time(data, id)
        .into_iter()
        .map(|mut r| {
            if let Some(obj) = r.as_object_mut() {
                // Both differ by construction: the code, and the run id the
                // seed is derived from.
                obj.remove("component_sha256");
                obj.remove("seed");
            }
            r
        })
        .collect()
}

#[test]
fn the_order_workflow_in_python_javascript_and_c_journals_exactly_what_rust_does() {
    let dir = tempfile::tempdir().unwrap();
    let expected = read_json(&repo().join("examples/python/order/expected-output.json"));
    let rust = expect_success(&run_order(&wasm("order"), &wasm("inventory"), dir.path(), "rust").output().unwrap());
    let py = expect_success(&run_order(&python("order"), &wasm("inventory"), dir.path(), "python").output().unwrap());
    let javascript = expect_success(&run_order(&js("order"), &wasm("inventory"), dir.path(), "js").output().unwrap());
    assert_eq!(json(&rust), expected);
    assert_eq!(py, rust, "same result, byte for byte");
    assert_eq!(javascript, rust, "same result, byte for byte");
    let c_result = expect_success(&run_order(&c("order"), &wasm("inventory"), dir.path(), "c").output().unwrap());
    assert_eq!(c_result, rust, "same result, byte for byte");
    let rust = comparable(dir.path(), "rust");
    assert_eq!(rust.len(), 10);
    for language in ["python", "js", "c"] {
        let other = comparable(dir.path(), language);
        assert_eq!(other.len(), rust.len(), "{language}");
        for (r, o) in rust.iter().zip(&other) {
            // Entry by entry: kinds, arguments and replies. Only the run id
            // in the idempotency key the payments activity echoes differs.
            let normalise = |v: &Value| v.to_string().replace(&format!("\"{language}/"), "\"rust/");
            assert_eq!(normalise(o), normalise(r), "{language}");
        }
    }
    // Python, JavaScript and C activity components answer as the Rust one does.
    let expected_result = py.clone();
    for (id, inventory) in
        [("py-inventory", python("inventory")), ("js-inventory", js("inventory")), ("c-inventory", c("inventory"))]
    {
        let mixed = expect_success(&run_order(&wasm("order"), &inventory, dir.path(), id).output().unwrap());
        assert_eq!(mixed, expected_result, "{id}");
        let normalise = |v: &Value| v.to_string().replace(&format!("\"{id}/"), "\"rust/");
        let mixed: Vec<String> = comparable(dir.path(), id).iter().map(normalise).collect();
        assert_eq!(mixed, rust.iter().map(normalise).collect::<Vec<_>>(), "{id}");
    }
}

#[test]
fn a_python_run_killed_mid_run_resumes_by_replay() {
    killed_and_resumed(&python("order"), &[7, 10]);
}

#[test]
fn a_javascript_run_killed_mid_run_resumes_by_replay() {
    killed_and_resumed(&js("order"), &[9]);
}

fn killed_and_resumed(workflow: &Path, kill_points: &[u32]) {
    let reference = tempfile::tempdir().unwrap();
    let workflow = workflow.to_owned();
    let expected = expect_success(&run_order(&workflow, &wasm("inventory"), reference.path(), "o").output().unwrap());
    let expected_journal = comparable(reference.path(), "o");
    // Commits 1-6 store the components; later ones are the run's steps.
    for &n in kill_points {
        let dir = tempfile::tempdir().unwrap();
        let killed = run_order(&workflow, &wasm("inventory"), dir.path(), "o")
            .env("CAIRN_CRASH_AFTER_COMMITS", n.to_string())
            .output()
            .unwrap();
        assert!(!killed.status.success(), "not killed at commit {n}");
        let resumed = run_order(&workflow, &wasm("inventory"), dir.path(), "o").output().unwrap();
        assert_eq!(expect_success(&resumed), expected, "after a kill at commit {n}");
        assert_eq!(comparable(dir.path(), "o"), expected_journal, "after a kill at commit {n}");
        let replay = cairn().args(["replay", "o", "--data"]).arg(dir.path()).output().unwrap();
        assert_eq!(replay.status.code(), Some(0), "{}", stdout(&replay));
    }
}

#[test]
fn a_c_run_killed_mid_run_resumes_by_replay() {
    killed_and_resumed(&c("order"), &[8, 11]);
}

#[test]
fn python_random_and_time_are_the_same_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let run = |id: &str| {
        let output =
            cairn().arg("run").arg(python("clockwork")).args(["--id", id, "--data"]).arg(dir.path()).output().unwrap();
        json(&expect_success(&output))
    };
    let first = run("py-1");
    let journal = journal(dir.path(), "py-1");
    assert_eq!(first["before_ms"], journal[0]["at_ms"], "time.time() reads workflow time");
    assert!(first["after_ms"].as_u64().unwrap() >= first["before_ms"].as_u64().unwrap() + 30);
    assert!(first["random"].as_f64().unwrap() > 0.0);
    // Replay re-executes the Python code and checks its result against the
    // journal: the same random numbers, UUID and clock readings.
    let replay = cairn().args(["replay", "py-1", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(replay.status.code(), Some(0), "{}", stdout(&replay));
    // Another run has another seed.
    let second = run("py-2");
    assert_ne!(first["random"], second["random"]);
    assert_ne!(first["uuid"], second["uuid"]);
}

#[test]
fn cairn_build_explains_a_folder_it_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn().arg("build").arg(dir.path()).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("expected Cargo.toml (Rust), app.py (Python)"), "{}", stderr(&output));
    std::fs::write(dir.path().join("app.py"), "WitWorld = None\n").unwrap();
    let output = cairn()
        .arg("build")
        .arg(dir.path())
        .env("CAIRN_COMPONENTIZE_PY", "/nonexistent/componentize-py")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("cannot run /nonexistent/componentize-py"), "{}", stderr(&output));
}

/// A JSON value of the kinds workflows exchange, with awkward strings and
/// numbers (keys come out sorted, as serde_json writes a map).
fn arbitrary_json(rng: &mut Rng, depth: u32) -> Value {
    const PIECES: [&str; 10] = ["a", "é", "😀", "\"", "\\", "\n", "\u{1}", "/", "\u{7f}", "order_id"];
    let string = |rng: &mut Rng| -> String { (0..rng.below(6)).map(|_| PIECES[rng.below(10) as usize]).collect() };
    match rng.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next() >> rng.below(64)),
        3 => Value::from(-((rng.next() >> (1 + rng.below(63))) as i64)),
        4 => Value::String(string(rng)),
        5 => Value::Array((0..rng.below(4)).map(|_| arbitrary_json(rng, depth + 1)).collect()),
        _ => Value::Object((0..rng.below(4)).map(|_| (string(rng), arbitrary_json(rng, depth + 1))).collect()),
    }
}

/// The C SDK's JSON, built natively: writes what serde_json writes for the
/// same value, reads back what it writes, and refuses what serde_json
/// refuses. Otherwise a C workflow's journal could differ from Rust's.
#[test]
fn the_c_sdks_json_reads_and_writes_what_serde_json_does() {
    let driver = repo().join("target/guests/c/json_lines");
    std::fs::create_dir_all(driver.parent().unwrap()).unwrap();
    let sdk = repo().join("guest-sdk/c");
    let compiled = Command::new("cc")
        .args(["-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&sdk)
        .arg(sdk.join("cairn_json.c"))
        .arg(repo().join("tests/e2e/c/json_lines.c"))
        .arg("-o")
        .arg(&driver)
        .arg("-lm")
        .output()
        .unwrap();
    assert!(compiled.status.success(), "{}", stderr(&compiled));
    let run = |args: &[&str], lines: &[String]| -> Vec<String> {
        use std::io::Write;
        let mut child = Command::new(&driver)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = lines.join("\n") + "\n";
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(output.status.success());
        stdout(&output).lines().map(str::to_owned).collect()
    };

    let mut rng = Rng(0x0c5d_4a11_7e57_0001);
    let values: Vec<Value> = (0..2000).map(|_| arbitrary_json(&mut rng, 0)).collect();
    let texts: Vec<String> = values.iter().map(Value::to_string).collect();
    assert_eq!(run(&[], &texts), texts, "canonical JSON comes back byte for byte");

    // Truncated and corrupted documents: accepted exactly when serde_json
    // accepts them, and then written as serde_json writes them.
    let mut broken = Vec::new();
    for text in texts.iter().filter(|t| t.len() > 1) {
        let cut = (1..text.len()).filter(|&i| text.is_char_boundary(i)).nth(rng.below(text.len() as u64 - 1) as usize);
        if let Some(cut) = cut {
            broken.push(text[..cut].to_owned());
        }
        let mut bytes = text.clone().into_bytes();
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] = b"{}[]\",:0-etn "[rng.below(13) as usize];
        if let Ok(corrupted) = String::from_utf8(bytes) {
            broken.push(corrupted);
        }
    }
    broken.extend(
        ["", " ", "01", "1.", "-", "1e", "[1,]", "{\"a\"}", "\"\\x\"", "\"\\ud800\"", "nul", "[]]"].map(String::from),
    );
    for (text, answer) in broken.iter().zip(run(&[], &broken)) {
        match serde_json::from_str::<Value>(text) {
            Ok(value) if !text.contains("\\u0000") => {
                // The same value (serde_json sorts keys the C SDK keeps).
                assert_eq!(serde_json::from_str::<Value>(&answer).ok(), Some(value), "{text:?}");
            }
            Ok(_) => assert!(answer.starts_with("error: "), "{text:?}: {answer}"),
            Err(_) => assert!(answer.starts_with("error: "), "{text:?} is not JSON, yet the C SDK read {answer}"),
        }
    }

    // Doubles are spelled as Rust spells them.
    let doubles: Vec<f64> =
        [0.1, 1.0, 2.5, -0.0, 1e15, 1e16, 1e21, 1.5e-7, 0.001, 1e-5, 1e-6, 123456.789, f64::MAX, 5e-324]
            .into_iter()
            .chain((0..500).map(|_| f64::from_bits(rng.next())).filter(|d| d.is_finite()))
            .collect();
    let lines: Vec<String> = doubles.iter().map(|d| format!("{d:e}")).collect();
    let expected: Vec<String> = doubles.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
    let written = run(&["--double"], &lines);
    assert_eq!(written.len(), expected.len());
    for ((line, written), expected) in lines.iter().zip(&written).zip(&expected) {
        assert_eq!(written, expected, "{line}");
    }
}

#[test]
fn python_javascript_and_c_workflows_set_typed_search_attributes() {
    use cairn_host::journal::{Entry, HostCall};
    use cairn_host::search::SearchValue;
    let dir = tempfile::tempdir().unwrap();
    let input = r#"{"customer":"acme","amount":1200,"vip":true,"drop":"x","due":{"time":"2026-12-24T00:00:00Z"}}"#;
    let built = [("python", python("tags")), ("js", js("tags")), ("c", c("tags"))];
    for (language, workflow) in &built {
        let output = cairn()
            .arg("run")
            .arg(workflow)
            .args(["--input", input, "--id", language, "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        expect_success(&output);
    }
    let store = cairn_host::store::Store::open(dir.path()).unwrap();
    for (language, _) in &built {
        let run = block_on(store.run(language)).unwrap().unwrap();
        let expected: std::collections::BTreeMap<String, SearchValue> = [
            ("amount".to_owned(), SearchValue::Int(1200)),
            ("customer".to_owned(), SearchValue::Keyword("acme".into())),
            ("due".to_owned(), SearchValue::Time(1_798_070_400_000)),
            ("vip".to_owned(), SearchValue::Bool(true)),
        ]
        .into();
        assert_eq!(run.search, expected, "{language}");
        let journal = block_on(store.journal(language)).unwrap();
        let upserts = journal
            .iter()
            .filter(|r| matches!(&r.entry, Entry::Call { call: HostCall::UpsertSearchAttributes { .. }, .. }))
            .count();
        assert_eq!(upserts, 2, "{language}: {journal:?}");
    }
}

/// The cart of `examples/cart` in each language: updates validated (a
/// rejection leaves no entry), handled with a durable step and journaled;
/// queries answered on the evicted run; the journals of all four languages
/// make the same calls, and replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_javascript_and_c_workflows_take_updates_and_answer_queries() {
    use crate::server::{Api, Server};
    use serde_json::json;
    let built = [("rust", wasm("cart")), ("python", python("cart")), ("js", js("cart")), ("c", c("cart"))];
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--idle-ms", "200"]);
    let api = Api::new(&server);
    let mut calls = Vec::new();
    for (language, component) in &built {
        let workflow = format!("cart-{language}");
        let (status, body) = api.deploy(&workflow, "workflow", std::fs::read(component).unwrap()).await;
        assert_eq!(status, 201, "{language}: {body}");
        let run = format!("/runs/{language}");
        let start = json!({ "workflow": workflow, "input": { "limit": 2 } });
        for (item, expected) in [("apple", 1), ("pear", 2)] {
            let body = json!({ "args": item, "start": start });
            let (status, added) = api.post_json(&format!("{run}/updates/add"), &body).await;
            assert_eq!((status, &added["result"]), (200, &json!(expected)), "{language}: {added}");
        }
        let journal_len = || async {
            let (_, page) = api.get(&format!("{run}/journal")).await;
            page["entries"].as_array().unwrap().len()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.get("/metrics").await.1["resident"] != 0 {
            assert!(Instant::now() < deadline, "{language}: the run never left memory");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = journal_len().await;
        for (item, kind) in [("apple", "duplicate-item"), ("fig", "cart-full"), ("", "empty-item")] {
            let (status, refused) = api.post_json(&format!("{run}/updates/add"), &json!({ "args": item })).await;
            assert_eq!((status, &refused["failure"]["kind"]), (422, &json!(kind)), "{language}: {refused}");
        }
        let (status, unknown) = api.post_json(&format!("{run}/updates/remove"), &json!({})).await;
        assert_eq!((status, unknown["code"].as_str()), (404, Some("unknown-update")), "{language}: {unknown}");
        let (status, items) = api.get(&format!("{run}/queries/items")).await;
        assert_eq!((status, &items["result"]), (200, &json!(["apple", "pear"])), "{language}: {items}");
        let (status, size) = api.get(&format!("{run}/queries/size")).await;
        assert_eq!((status, &size["result"]), (200, &json!(2)), "{language}: {size}");
        let (status, unknown) = api.get(&format!("{run}/queries/total")).await;
        assert_eq!((status, unknown["code"].as_str()), (404, Some("unknown-query")), "{language}: {unknown}");
        assert_eq!(journal_len().await, before, "{language}: rejections and queries wrote nothing");
        let (status, done) = api.post_json(&format!("{run}/updates/checkout"), &json!({})).await;
        assert_eq!((status, &done["result"]), (200, &json!("checked out")), "{language}: {done}");
        let ended = api.wait(language).await;
        assert_eq!(ended["result"], json!({ "items": ["apple", "pear"] }), "{language}: {ended}");
        let (_, page) = api.get(&format!("{run}/journal")).await;
        let kinds: Vec<String> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["call"]["call"].as_str().unwrap_or(e["entry"].as_str().unwrap()).to_owned())
            .collect();
        calls.push((language, kinds));
    }
    for (language, kinds) in &calls[1..] {
        assert_eq!(kinds, &calls[0].1, "{language} makes other calls than Rust");
    }
    server.kill();
    let replay = cairn().args(["replay", "--all", "--data"]).arg(dir.path()).output().unwrap();
    expect_success(&replay);
}
