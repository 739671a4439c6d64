//! Test activity component for retries and timeouts.
//! - `fail-twice`: fails (kind `transient`) on attempts 1 and 2, then succeeds.
//! - `declined`: always fails with kind `declined` (callers mark it non-retryable).
//! - `slow`: takes `ms` milliseconds of real time (for timeout tests).
//! - `echo`: returns its input, the attempt and the idempotency key.
//! - `served`: how many calls this instance has served, this one included
//!   (instances are kept warm between calls).
//! - `panic`: panics, which traps the instance.

use cairn_sdk::{ActivityContext, Failure};
use serde_json::{json, Value};
use std::time::Duration;

fn fail_twice(ctx: &ActivityContext, _input: Value) -> Result<Value, Failure> {
    if ctx.attempt() < 3 {
        return Err(Failure::new("transient", format!("attempt {} failed", ctx.attempt())));
    }
    Ok(json!({ "attempt": ctx.attempt(), "key": ctx.idempotency_key() }))
}

fn declined(ctx: &ActivityContext, _input: Value) -> Result<Value, Failure> {
    Err(Failure::new("declined", format!("declined on attempt {}", ctx.attempt())))
}

fn slow(ctx: &ActivityContext, input: Value) -> Result<Value, Failure> {
    let ms = input.get("ms").and_then(Value::as_u64).unwrap_or(1000);
    // Only the first attempt is slow, so a retry after a timeout succeeds.
    if ctx.attempt() == 1 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    Ok(json!({ "attempt": ctx.attempt() }))
}

fn echo(ctx: &ActivityContext, input: Value) -> Result<Value, Failure> {
    Ok(json!({ "input": input, "attempt": ctx.attempt(), "key": ctx.idempotency_key() }))
}

static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn served(_ctx: &ActivityContext, _input: Value) -> Result<Value, Failure> {
    let n = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    Ok(json!({ "served": n }))
}

fn panic(_ctx: &ActivityContext, _input: Value) -> Result<Value, Failure> {
    SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    panic!("this instance is broken now")
}

/// Connects to `input.addr` over TCP and returns the first line the peer
/// sends: an activity reaching out to the network, which the host allows
/// only for addresses on its allow-list.
fn connect(_ctx: &ActivityContext, input: Value) -> Result<Value, Failure> {
    use std::io::{BufRead, BufReader};
    let addr =
        input["addr"].as_str().ok_or_else(|| Failure::new("invalid-input", "connect needs {\"addr\": HOST:PORT}"))?;
    let stream = std::net::TcpStream::connect(addr)
        .map_err(|e| Failure::new("connect-failed", format!("cannot connect to {addr}: {e}")))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| Failure::new("read-failed", e.to_string()))?;
    Ok(json!({ "reply": line.trim() }))
}

cairn_sdk::activities! {
    "connect" => connect,
    "fail-twice" => fail_twice,
    "declined" => declined,
    "slow" => slow,
    "echo" => echo,
    "served" => served,
    "panic" => panic,
}
