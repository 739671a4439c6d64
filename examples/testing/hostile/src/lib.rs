//! Test guest: misbehaves on request, to prove a bad guest fails only its
//! own run. Input: `{"mode": "loop" | "memory" | "recursion" | "trap" | "ok"}`.

use cairn_sdk::{Context, Failure};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Input {
    mode: String,
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    next[0] = pad[0];
    recurse(std::hint::black_box(depth + 1), std::hint::black_box(&mut next)) + next[1] as u64
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
        "recursion" => {
            let mut pad = [0u8; 256];
            Ok(json!(recurse(0, &mut pad)))
        }
        "trap" => {
            let v: Vec<u32> = Vec::new();
            let i = std::hint::black_box(3usize);
            Ok(json!(v[i]))
        }
        _ => Ok(json!({ "ok": true })),
    }
}

cairn_sdk::workflow!(misbehave);
