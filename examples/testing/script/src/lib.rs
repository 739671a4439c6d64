//! Test workflow that performs the steps its input lists, so one component
//! can exercise retries, timers, await-any and cancellation. Each step is one of
//! - `{"activity": NAME, "input": JSON, "timeout_ms": N, "max_attempts": N,
//!    "initial_interval_ms": N, "non_retryable": [KIND]}`
//! - `{"sleep_ms": N}`
//! - `{"race": [STEP, STEP, ...]}`: starts activities/timers, takes the first
//!   to complete, cancels the rest
//! - `{"all": [STEP, STEP, ...]}`: starts them all, then awaits each in the
//!   order they were started
//!
//! The result lists each step's outcome (`{"ok": …}` or `{"err": failure}`).

use cairn_sdk::{ActivityOptions, Context, Failure, Pending, RetryPolicy};
use serde_json::{json, Value};
use std::time::Duration;

fn start(ctx: &Context, step: &Value) -> Result<Pending<Value>, Failure> {
    if let Some(ms) = step.get("sleep_ms").and_then(Value::as_u64) {
        return Ok(ctx.timer(Duration::from_millis(ms)).untyped());
    }
    let name = step
        .get("activity")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::new("invalid-input", format!("step {step} has neither `activity` nor `sleep_ms`")))?;
    let num = |key: &str, default: u64| step.get(key).and_then(Value::as_u64).unwrap_or(default);
    let mut policy = RetryPolicy::default()
        .max_attempts(num("max_attempts", 3) as u32)
        .initial_interval(Duration::from_millis(num("initial_interval_ms", 50)));
    if let Some(c) = step.get("backoff").and_then(Value::as_f64) {
        policy = policy.backoff_coefficient(c);
    }
    if let Some(kinds) = step.get("non_retryable").and_then(Value::as_array) {
        policy = policy.non_retryable(kinds.iter().filter_map(Value::as_str));
    }
    let options = ActivityOptions::default().timeout(Duration::from_millis(num("timeout_ms", 5_000))).retry(policy);
    Ok(ctx.activity_with(name, step.get("input").unwrap_or(&Value::Null), &options))
}

fn outcome(result: Result<Value, Failure>) -> Value {
    match result {
        Ok(v) => json!({ "ok": v }),
        Err(f) => json!({ "err": f }),
    }
}

fn script(ctx: &Context, steps: Vec<Value>) -> Result<Value, Failure> {
    let mut results = Vec::new();
    for step in &steps {
        if let Some(racers) = step.get("race").and_then(Value::as_array) {
            let pending = racers.iter().map(|r| start(ctx, r)).collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&dyn cairn_sdk::Selectable> =
                pending.iter().map(|p| p as &dyn cairn_sdk::Selectable).collect();
            let winner = ctx.select(&refs);
            for (i, p) in pending.iter().enumerate() {
                if i != winner {
                    p.cancel();
                }
            }
            let losers: Vec<Value> =
                pending.iter().enumerate().filter(|(i, _)| *i != winner).map(|(_, p)| outcome(p.get())).collect();
            results.push(json!({ "winner": winner, "result": outcome(pending[winner].get()), "losers": losers }));
        } else if let Some(steps) = step.get("all").and_then(Value::as_array) {
            let pending = steps.iter().map(|s| start(ctx, s)).collect::<Result<Vec<_>, _>>()?;
            results.push(Value::Array(pending.into_iter().map(|p| outcome(p.get())).collect()));
        } else {
            results.push(outcome(start(ctx, step)?.get()));
        }
    }
    Ok(Value::Array(results))
}

cairn_sdk::workflow!(script);
