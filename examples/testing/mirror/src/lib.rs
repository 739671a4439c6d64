//! Test workflow that hands back, as untouched JSON text, what it was given:
//! its input, the payload of a `more` signal when its input asks for one
//! (`{"await_signal": true, ...}`), and its run id. With `"attributes"` in
//! its input, it sets them as its search attributes first.

use cairn_sdk::{Context, Failure};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Duration;

#[derive(Serialize)]
struct Mirror {
    run_id: String,
    input: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<Box<RawValue>>,
}

fn mirror(ctx: &Context, input: Box<RawValue>) -> Result<Mirror, Failure> {
    let parsed: Value = serde_json::from_str(input.get()).unwrap_or(Value::Null);
    if let Some(attributes) = parsed.get("attributes") {
        ctx.upsert_search_attributes(attributes);
    }
    let signal = match parsed.get("await_signal").and_then(Value::as_bool) {
        Some(true) => Some(ctx.signal::<Box<RawValue>>("more").get()?),
        _ => None,
    };
    ctx.sleep(Duration::from_millis(1));
    Ok(Mirror { run_id: ctx.run_id(), input, signal })
}

cairn_sdk::workflow!(mirror);
