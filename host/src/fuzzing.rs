//! Fuzz targets: the code that reads what users and disks hand the host.
//! `fuzz/` drives them with cargo-fuzz (libFuzzer, nightly); the test suite
//! drives the same functions on stable with seeded inputs and replays every
//! input the fuzzer ever found (`tests/fixtures/fuzz/TARGET/`). Each target
//! panics only on a bug.

use crate::api::{router, AppState};
use crate::runtime::Runtime;
use crate::sandbox::Limits;
use crate::store::Store;
use axum::body::Body;
use axum::http::{Method, Request};
use std::time::Duration;
use tower::ServiceExt as _;

/// The journal decoder: any bytes decode to a record or give a
/// `DecodeError`; a record that decodes survives re-encoding unchanged.
pub fn journal_decode(data: &[u8]) {
    if let Ok(record) = crate::journal::decode(data) {
        let again = crate::journal::decode(&crate::journal::encode(&record));
        assert_eq!(again.ok(), Some(record), "a decoded record must re-encode to itself");
    }
}

/// One host with its HTTP API, kept across inputs (as a server is).
pub struct ApiTarget {
    tokio: tokio::runtime::Runtime,
    state: AppState,
    _dir: tempfile::TempDir,
}

/// How long one request may take before it counts as a long poll.
const REQUEST_BUDGET: Duration = Duration::from_millis(500);

impl ApiTarget {
    /// A host on a scratch store, without authentication.
    pub fn new() -> anyhow::Result<ApiTarget> {
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let dir = tempfile::tempdir()?;
        let limits = Limits { pool_instances: 64, step_budget_ms: 1_000, ..Limits::default() };
        let state = {
            let _guard = tokio.enter();
            AppState::new(Runtime::new(Store::open(dir.path())?, limits)?, None)
        };
        Ok(ApiTarget { tokio, state, _dir: dir })
    }

    /// Sends one request: the first byte picks the method, the bytes up to
    /// the first newline are the path under `/v1/`, the rest is the body. The
    /// API must answer with a success or a client error, never a server
    /// error, and still answer `/v1/health` afterwards.
    pub fn request(&self, data: &[u8]) {
        let Some((&selector, rest)) = data.split_first() else { return };
        let method = [Method::GET, Method::POST, Method::DELETE, Method::PUT][usize::from(selector % 4)].clone();
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let path = String::from_utf8_lossy(&rest[..split]);
        let body = rest.get(split + 1..).unwrap_or_default().to_vec();
        let Ok(request) = Request::builder()
            .method(method)
            .uri(format!("/v1/{path}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
        else {
            return; // not a URI: nothing a client could send
        };
        self.send(request);
    }

    /// Uploads `data` as component `fuzz` (a workflow, or an activity when the
    /// first byte is odd): refused with a client error or deployed, never a
    /// server error.
    pub fn upload(&self, data: &[u8]) {
        let kind = if data.first().is_some_and(|b| b % 2 == 1) { "activity" } else { "workflow" };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/components/fuzz?kind={kind}"))
            .body(Body::from(data.to_vec()))
            .expect("a fixed request is valid");
        self.send(request);
    }

    fn send(&self, request: Request<Body>) {
        let what = format!("{} {}", request.method(), request.uri());
        self.tokio.block_on(async {
            let app = router(self.state.clone());
            if let Ok(response) = tokio::time::timeout(REQUEST_BUDGET, app.oneshot(request)).await {
                let response = response.unwrap_or_else(|e| match e {});
                assert!(!response.status().is_server_error(), "{what} answered {}", response.status());
            }
            let health = Request::builder().uri("/v1/health").body(Body::empty()).expect("a fixed request is valid");
            let response = router(self.state.clone()).oneshot(health).await.unwrap_or_else(|e| match e {});
            assert!(response.status().is_success(), "/v1/health answered {} after {what}", response.status());
        });
    }
}
