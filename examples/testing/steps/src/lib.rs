//! Test workflow with deliberate variants: `baseline` and versions of it that
//! rename an activity, change an argument, add a call, drop a call or return
//! early. Replay tests run a journal written by `baseline` against each.

use cairn_sdk::{Context, Failure};
use serde_json::{json, Value};
use std::time::Duration;

/// Which change to make to the baseline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Baseline,
    Renamed,
    ChangedArg,
    ExtraCall,
    MissingCall,
    EarlyReturn,
}

/// The workflow: echo "reserve", sleep 20 ms, echo "charge".
pub fn run(ctx: &Context, input: Value, variant: Variant) -> Result<Value, Failure> {
    let sku = input.get("sku").cloned().unwrap_or(Value::Null);
    let amount = input.get("amount").and_then(Value::as_u64).unwrap_or(0);

    let reserve: Value = ctx.activity("flaky.echo", &json!({ "step": "reserve", "sku": sku })).get()?;
    if variant == Variant::EarlyReturn {
        return Ok(json!({ "reserve": reserve }));
    }
    if variant != Variant::MissingCall {
        ctx.sleep(Duration::from_millis(20));
    }
    if variant == Variant::ExtraCall {
        ctx.sleep(Duration::from_millis(5));
    }
    let name = if variant == Variant::Renamed { "flaky.fail-twice" } else { "flaky.echo" };
    let amount = if variant == Variant::ChangedArg { amount + 1 } else { amount };
    let charge: Value = ctx.activity(name, &json!({ "step": "charge", "amount": amount })).get()?;
    Ok(json!({ "reserve": reserve, "charge": charge }))
}
