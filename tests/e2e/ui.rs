//! The web UI in a real browser: Debian's Chromium, driven by
//! playwright-core (tests/e2e/ui/browser.mjs) against a `cairn serve` with a
//! token. Screenshots land in target/ui-screenshots/.

use crate::server::{Api, Server};
use crate::support::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

/// playwright-core, installed once into target/uienv.
fn playwright() -> PathBuf {
    let env = repo().join("target/uienv");
    let module = env.join("node_modules/playwright-core");
    if !module.exists() {
        std::fs::create_dir_all(&env).unwrap();
        let ok = Command::new("npm")
            .current_dir(&env)
            .args(["install", "--silent", "--no-audit", "--no-fund", "playwright-core@1"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "installing playwright-core into {} failed", env.display());
    }
    env.join("node_modules")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_lists_filters_shows_the_journal_and_signals_a_run() {
    let chromium = std::env::var("CAIRN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: `apt-get install chromium` (or set CAIRN_CHROMIUM)"
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "ui-secret").unwrap();
    let server = Server::start(&dir.path().join("data"), &["--token-file", token_file.to_str().unwrap()]);
    let mut api = Api::new(&server);
    api.token = Some("ui-secret".into());
    for (name, kind) in
        [("approval", "workflow"), ("cart", "workflow"), ("payments", "activity"), ("inventory", "activity")]
    {
        assert_eq!(api.deploy(name, kind, std::fs::read(wasm(name)).unwrap()).await.0, 201);
    }
    let input = read_json(&repo().join("examples/approval/input.json"));
    let (status, _) = api.post_json("/runs", &json!({ "workflow": "approval", "id": "ui-1", "input": input })).await;
    assert_eq!(status, 201);
    let limit = json!({ "key": "/customer", "limit": 3 });
    assert_eq!(api.put_json("/activities/payments.charge/limits", &limit).await.0, 200);
    let body = json!({ "args": "coffee", "start": { "workflow": "cart" } });
    let (status, added) = api.post_json("/runs/ui-cart/updates/add", &body).await;
    assert_eq!(status, 200, "{added}");
    // A finished run for the browser to delete.
    let (status, _) = api.post_json("/runs/ui-cart-done/updates/add", &body).await;
    assert_eq!(status, 200);
    assert_eq!(api.post_json("/runs/ui-cart-done/updates/checkout", &json!({})).await.0, 200);
    assert_eq!(api.wait("ui-cart-done").await["status"], "completed");

    let shots = repo().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let modules = playwright();
    let url = server.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(repo().join("tests/e2e/ui/browser.mjs"))
            .args([&url, "ui-secret", "ui-1"])
            .arg(&shots)
            .arg("ui-cart")
            .env("CAIRN_PLAYWRIGHT_DIR", modules.parent().unwrap())
            .env("CAIRN_CHROMIUM", chromium)
            .current_dir(modules.parent().unwrap())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let last = stdout(&output).lines().last().unwrap_or_default().to_owned();
    let report = json(&last);
    // The signal the browser sent completed the run with the approver's name.
    assert_eq!(report["result"]["status"], "charged", "{report}");
    assert_eq!(report["result"]["approved_by"], "the web ui");
    let run = api.wait("ui-1").await;
    assert_eq!(run["result"], report["result"]);
    // The reset's new run kept the start entry and waits for approval again.
    let reset = report["reset"].as_str().unwrap();
    let (_, copy) = api.get(&format!("/runs/{reset}")).await;
    assert_eq!((&copy["workflow"], &copy["status"]), (&json!("approval"), &json!("running")), "{copy}");
    assert_eq!(api.get("/runs/ui-cart-done").await.0, 404, "the browser deleted it");
    // The update the browser sent was journaled; its query wrote nothing.
    let (_, items) = api.get("/runs/ui-cart/queries/items").await;
    assert_eq!(items["result"], json!(["coffee", "tea"]), "{items}");
    let (_, schedule) = api.get("/schedules/ui-nightly").await;
    assert_eq!(
        (schedule["paused"].as_bool(), &schedule["when"]["timezone"]),
        (Some(true), &json!("Europe/Berlin")),
        "{schedule}"
    );
    for shot in ["runs", "run", "completed", "workflows", "update", "schedules"] {
        assert!(repo().join(format!("target/ui-screenshots/{shot}.png")).exists(), "{shot}.png");
    }
}
