//! Other guest languages: the same order workflow in Python produces the
//! same journal as in Rust, survives kills, and sees deterministic WASI.

use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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

/// JavaScript guests, built once per test run with `cairn build`.
fn js(name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<&'static str, PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tool = componentize_js();
            let mut built = HashMap::new();
            for name in ["order", "inventory"] {
                let file = repo().join(format!("target/guests/js/{name}.wasm"));
                let output = cairn()
                    .arg("build")
                    .arg(repo().join("examples/js").join(name))
                    .arg("--out")
                    .arg(&file)
                    .env("CAIRN_COMPONENTIZE_JS", &tool)
                    .output()
                    .unwrap();
                expect_success(&output);
                built.insert(name, file);
            }
            built
        })
        .get(name)
        .unwrap_or_else(|| panic!("no javascript guest {name}"))
        .clone()
}

/// Python guests, built once per test run with `cairn build`.
fn python(name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<&'static str, PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tool = componentize_py();
            let out = repo().join("target/guests/python");
            let mut built = HashMap::new();
            for (name, dir) in [
                ("order", "examples/python/order"),
                ("inventory", "examples/python/inventory"),
                ("clockwork", "examples/testing/python-clockwork"),
            ] {
                let file = out.join(format!("{name}.wasm"));
                let output = cairn()
                    .arg("build")
                    .arg(repo().join(dir))
                    .arg("--out")
                    .arg(&file)
                    .env("CAIRN_COMPONENTIZE_PY", &tool)
                    .output()
                    .unwrap();
                let printed = expect_success(&output);
                assert_eq!(Path::new(&printed), file.as_path());
                built.insert(name, file);
            }
            built
        })
        .get(name)
        .unwrap_or_else(|| panic!("no python guest {name}"))
        .clone()
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
fn the_order_workflow_in_python_and_javascript_journals_exactly_what_rust_does() {
    let dir = tempfile::tempdir().unwrap();
    let expected = read_json(&repo().join("examples/python/order/expected-output.json"));
    let rust = expect_success(&run_order(&wasm("order"), &wasm("inventory"), dir.path(), "rust").output().unwrap());
    let py = expect_success(&run_order(&python("order"), &wasm("inventory"), dir.path(), "python").output().unwrap());
    let javascript = expect_success(&run_order(&js("order"), &wasm("inventory"), dir.path(), "js").output().unwrap());
    assert_eq!(json(&rust), expected);
    assert_eq!(py, rust, "same result, byte for byte");
    assert_eq!(javascript, rust, "same result, byte for byte");
    let rust = comparable(dir.path(), "rust");
    assert_eq!(rust.len(), 10);
    for language in ["python", "js"] {
        let other = comparable(dir.path(), language);
        assert_eq!(other.len(), rust.len(), "{language}");
        for (r, o) in rust.iter().zip(&other) {
            // Entry by entry: kinds, arguments and replies. Only the run id
            // in the idempotency key the payments activity echoes differs.
            let normalise = |v: &Value| v.to_string().replace(&format!("\"{language}/"), "\"rust/");
            assert_eq!(normalise(o), normalise(r), "{language}");
        }
    }
    // Python and JavaScript activity components answer as the Rust one does.
    let expected_result = py.clone();
    for (id, inventory) in [("py-inventory", python("inventory")), ("js-inventory", js("inventory"))] {
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
