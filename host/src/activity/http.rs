//! The built-in `http.request` activity: the host makes an HTTP request for
//! the workflow, to the addresses on the activity allow-list only
//! (`--activity-allow HOST:PORT`), with the call's idempotency key in an
//! `Idempotency-Key` header.
//!
//! Input: `{"method": "POST", "url": "http://…", "headers": {…}, "body":
//! "…", "timeout_ms": 30000}` (only `url` is required). Output: `{"status":
//! 200, "headers": {…}, "body": "…"}` for any status; deciding what a 4xx
//! or 5xx means is the workflow's business. A transport error is the
//! retryable failure `http-error`; a host outside the allow-list, or bad
//! input, is `invalid-input` (never retried).

use crate::journal::{Failure, MAX_PAYLOAD_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The name the built-in answers to, unless a component is registered
/// under it.
pub const COMPONENT: &str = "http";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Serialize)]
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new("invalid-input", message)
}

/// Performs `http.<function>` (only `request` exists).
pub async fn call(allow: &Arc<[SocketAddr]>, function: &str, input: &str, key: &str) -> Result<String, Failure> {
    if function != "request" {
        return Err(Failure::new(
            "unknown-function",
            format!("the built-in http activity has no function `{function}`; it has: request"),
        ));
    }
    let request: Request = serde_json::from_str(input).map_err(|e| {
        invalid(format!(
            "http.request input: {e} (expected {{\"url\": …, \"method\", \"headers\", \"body\", \"timeout_ms\"}})"
        ))
    })?;
    let url =
        reqwest::Url::parse(&request.url).map_err(|e| invalid(format!("http.request url {:?}: {e}", request.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("http.request url {url}: only http and https are supported")));
    }
    let host = url.host_str().ok_or_else(|| invalid(format!("http.request url {url} has no host")))?.to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    // Resolve here and connect only to an allowed address, so a name that
    // resolves elsewhere later (DNS rebinding) cannot slip through.
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup.as_str(), port))
        .await
        .map_err(|e| Failure::new("http-error", format!("cannot resolve {host}: {e}")))?
        .collect();
    let Some(addr) = resolved.iter().find(|a| allow.contains(a)).copied() else {
        tracing::warn!(%url, "http.request to an address outside --activity-allow");
        return Err(invalid(format!(
            "http.request to {host}:{port} is not allowed: start the host with --activity-allow {host}:{port} to permit it"
        )));
    };
    let client = reqwest::Client::builder()
        .resolve(&host_for_lookup, addr)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_millis(request.timeout_ms.unwrap_or(30_000).max(1)))
        .build()
        .map_err(|e| Failure::new("http-error", e.to_string()))?;
    let method = request.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| invalid(format!("http.request method {method:?} is not an HTTP method")))?;
    let mut builder = client.request(method, url.clone()).header("idempotency-key", key);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(body) = request.body {
        builder = builder.body(body);
    }
    let response = builder.send().await.map_err(|e| Failure::new("http-error", format!("{url}: {e}")))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response.bytes().await.map_err(|e| Failure::new("http-error", format!("{url}: {e}")))?;
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(Failure::new(
            "output-too-large",
            format!("{url} answered {} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes", body.len()),
        ));
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(serde_json::to_string(&Response { status, headers, body }).expect("a response serialises"))
}
