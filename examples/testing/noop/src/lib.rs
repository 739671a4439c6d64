//! Benchmark activity: `ping` returns its input.

use cairn_sdk::{ActivityContext, Failure};
use serde_json::Value;

fn ping(_ctx: &ActivityContext, input: Value) -> Result<Value, Failure> {
    Ok(input)
}

cairn_sdk::activities! { "ping" => ping }
