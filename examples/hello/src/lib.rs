//! The smallest Cairn workflow: greet someone after a short durable sleep.

use cairn_sdk::{Context, Failure};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Deserialize)]
struct Input {
    name: String,
}

#[derive(Serialize)]
struct Output {
    greeting: String,
}

fn hello(ctx: &Context, input: Input) -> Result<Output, Failure> {
    if input.name.trim().is_empty() {
        return Err(Failure::new("invalid-input", "name must not be empty"));
    }
    ctx.sleep(Duration::from_millis(10));
    Ok(Output { greeting: format!("Hello, {}!", input.name) })
}

cairn_sdk::workflow!(hello);
