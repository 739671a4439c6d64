//! Benchmark and test activity: `ping` returns its input; `hold` sleeps
//! `{"ms": N}` and returns when it started and ended (wall clock, ms), so a
//! test can see how many attempts were in flight at once.

use cairn_sdk::{ActivityContext, Failure};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn ping(_ctx: &ActivityContext, input: Value) -> Result<Value, Failure> {
    Ok(input)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn hold(_ctx: &ActivityContext, input: Value) -> Result<Value, Failure> {
    let start_ms = now_ms();
    std::thread::sleep(Duration::from_millis(input["ms"].as_u64().unwrap_or(0)));
    Ok(json!({ "start_ms": start_ms, "end_ms": now_ms() }))
}

cairn_sdk::activities! { "ping" => ping, "hold" => hold }
