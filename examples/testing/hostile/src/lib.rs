//! Test guest: misbehaves on request, to prove a bad guest fails only its
//! own run. Input: `{"mode": "loop" | "memory" | "recursion" | "trap" |
//! "huge-result" | "huge-input" | "host-loop" | "handles" | "trap-after-step"
//! | "loop-after-step" | "hold" | "ok"}`. The `-after-step` modes first call
//! the activity `noop.ping` once. `hold` takes `mib` MiB of memory, says
//! `"holding"` as its status, keeps the memory through a `ms` timer and
//! returns.

use cairn_sdk::{Context, Failure};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Input {
    mode: String,
    #[serde(default)]
    mib: usize,
    #[serde(default)]
    ms: u64,
}

/// Recursion that keeps its state in wasm locals (not Rust's shadow stack
/// in linear memory), so it exhausts the engine's native stack limit.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let r = recurse(n.wrapping_add(1));
    r.wrapping_mul(n | 1).rotate_left((n & 63) as u32)
}

fn misbehave(ctx: &Context, input: Input) -> Result<Value, Failure> {
    ctx.info(&format!("misbehaving: {}", input.mode));
    match input.mode.as_str() {
        "loop" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; 16 << 20];
                chunk[0] = 1;
                hoard.push(std::hint::black_box(chunk));
            }
        }
        "hold" => {
            let mut held = vec![0u8; input.mib << 20];
            // Touch every page, so the memory is really in use.
            for page in held.chunks_mut(4096) {
                page[0] = 1;
            }
            ctx.set_status(&"holding");
            ctx.sleep(std::time::Duration::from_millis(input.ms));
            Ok(json!({ "held_mib": std::hint::black_box(&held).len() >> 20 }))
        }
        "recursion" => Ok(json!(recurse(0))),
        "huge-result" => Ok(json!("x".repeat(5 << 20))),
        "huge-input" => {
            let _: Value = ctx.activity("nobody.home", &"x".repeat(5 << 20)).get()?;
            Ok(json!(null))
        }
        "host-loop" => {
            let mut i = 0u64;
            loop {
                ctx.set_status(&i);
                i += 1;
            }
        }
        "handles" => {
            // Thousands of pending operations, left behind when it returns.
            let timers: Vec<_> = (0..5000).map(|_| ctx.timer(std::time::Duration::from_secs(3600))).collect();
            Ok(json!({ "pending": timers.len() }))
        }
        "trap" => {
            let v: Vec<u32> = Vec::new();
            let i = std::hint::black_box(3usize);
            Ok(json!(v[i]))
        }
        "trap-after-step" => {
            let seen: Value = ctx.activity("noop.ping", &json!({ "seen": true })).get()?;
            let v: Vec<Value> = Vec::new();
            let i = std::hint::black_box(3usize);
            Ok(json!([seen, v[i]]))
        }
        "loop-after-step" => {
            let seen: Value = ctx.activity("noop.ping", &json!({ "seen": true })).get()?;
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(seen.as_object().map_or(1, |o| o.len() as u64)));
            }
        }
        _ => Ok(json!({ "ok": true })),
    }
}

cairn_sdk::workflow!(misbehave);
