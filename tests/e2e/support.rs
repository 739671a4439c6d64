//! Shared helpers: build the guests once, run the binary, read journals.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs a future to its end from code that is not async (a store read in
/// a callback, say): on the multi-threaded runtime it is called from, or on
/// a runtime of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(future)),
        Err(_) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime").block_on(future)
        }
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_owned()
}

/// Builds every guest in examples/ once per test run (cargo makes it a
/// no-op when they are up to date) and returns the release output folder.
pub fn guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let examples = repo().join("examples");
        let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
        if !installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "wasm32-wasip2")) {
            let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
            assert!(status.is_ok_and(|s| s.success()), "`rustup target add wasm32-wasip2` failed");
        }
        let status = Command::new(env!("CARGO"))
            .current_dir(&examples)
            .args(["build", "--release", "--lib", "--examples", "--target-dir"])
            .arg(examples.join("target"))
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the guests");
        assert!(status.success(), "building the example guests failed");
        examples.join("target/wasm32-wasip2/release")
    })
}

/// A guest component built from examples/ (`name` is the crate).
pub fn wasm(name: &str) -> PathBuf {
    guests().join(format!("{name}.wasm"))
}

/// A guest component built from a cargo example target (the steps variants).
pub fn example_wasm(name: &str) -> PathBuf {
    guests().join("examples").join(format!("{name}.wasm"))
}

pub fn cairn() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.env_remove("CAIRN_CRASH_AFTER_COMMITS").env("CAIRN_LOG", "warn");
    cmd
}

pub fn activity_args(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("--activity={n}={}", wasm(n).display())).collect()
}

/// `cairn run` of the order example.
pub fn order_command(data: &Path, id: &str) -> Command {
    let mut cmd = cairn();
    cmd.arg("run")
        .arg(wasm("order"))
        .args(activity_args(&["payments", "inventory"]))
        .arg("--input")
        .arg(format!("@{}", repo().join("examples/order/input.json").display()))
        .arg("--data")
        .arg(data)
        .arg("--id")
        .arg(id);
    cmd
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

pub fn expect_success(output: &Output) -> String {
    assert!(output.status.success(), "cairn failed ({}): {}", output.status, stderr(output));
    stdout(output)
}

/// The journal as JSON records.
pub fn journal(data: &Path, id: &str) -> Vec<Value> {
    let output = cairn().args(["journal", id, "--json", "--data"]).arg(data).output().expect("running cairn journal");
    expect_success(&output).lines().map(|l| serde_json::from_str(l).expect("journal lines are JSON")).collect()
}

/// The journal without timestamps and run ids, for comparing runs.
pub fn journal_modulo_time(data: &Path, id: &str) -> Vec<Value> {
    journal(data, id)
        .into_iter()
        .map(|mut r| {
            let obj = r.as_object_mut().expect("records are objects");
            obj.remove("at_ms");
            // Exports name their run; the entries are what is compared.
            obj.remove("run_id");
            r
        })
        .collect()
}

/// Each entry's label: `started`, a call kind, `completed`, `failed`.
pub fn kinds(journal: &[Value]) -> Vec<String> {
    journal
        .iter()
        .map(|r| match r["entry"].as_str() {
            Some("call") => r["call"]["call"].as_str().unwrap_or("?").to_owned(),
            Some(other) => other.to_owned(),
            None => "?".to_owned(),
        })
        .collect()
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn read_json(path: &Path) -> Value {
    json(&std::fs::read_to_string(path).expect("reading a JSON file"))
}

/// A seeded generator (xorshift), so a failing case replays.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One request a [`http_server`] received.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

/// An HTTP/1.1 server on loopback, one connection at a time: `respond`
/// gives each request's status and JSON body.
pub fn http_server(respond: impl Fn(HttpRequest) -> (u16, String) + Send + 'static) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut headers = std::collections::HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
            let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut parts = request_line.split_whitespace();
            let request = HttpRequest {
                method: parts.next().unwrap_or_default().to_owned(),
                path: parts.next().unwrap_or_default().to_owned(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let (status, body) = respond(request);
            let _ = write!(
                reader.into_inner(),
                "HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}
