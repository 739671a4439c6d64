//! Test guest: reads time and randomness through plain Rust std and a
//! random crate, never through the SDK, and returns what it saw. On replay
//! it must see exactly the same values.

use cairn_sdk::{Context, Failure};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn observe(ctx: &Context, _input: Value) -> Result<Value, Failure> {
    let wall_before = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| Failure::new("clock", e.to_string()))?;
    let started = Instant::now();
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| Failure::new("random", e.to_string()))?;
    // HashMap seeds itself from wasi:random/insecure-seed.
    let order: Vec<u32> = (0..16u32).map(|i| (i, ())).collect::<HashMap<_, _>>().into_keys().collect();

    ctx.sleep(Duration::from_millis(30));

    let wall_after = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| Failure::new("clock", e.to_string()))?;
    let elapsed = started.elapsed();
    Ok(json!({
        "wall_before_ms": wall_before.as_millis() as u64,
        "wall_after_ms": wall_after.as_millis() as u64,
        "monotonic_elapsed_ms": elapsed.as_millis() as u64,
        "random": random,
        "sdk_random": ctx.random(),
        "hash_order": order,
    }))
}

cairn_sdk::workflow!(observe);
