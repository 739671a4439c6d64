//! Test workflow for continue-as-new: counts `n` up to `until`, one
//! generation per step, and returns the signals it collected on the way.
//! Input: `{"n": 0, "until": 3, "notes": []}`.

use cairn_sdk::{Context, Failure};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct State {
    n: u32,
    until: u32,
    #[serde(default)]
    notes: Vec<String>,
}

fn count(ctx: &Context, mut state: State) -> Result<State, Failure> {
    if state.n >= state.until {
        return Ok(state);
    }
    // Generation 1 waits for a note; one sent during generation 0 carries over.
    if state.n == 1 {
        state.notes.push(ctx.signal::<String>("note").get()?);
    }
    ctx.sleep(Duration::from_millis(5));
    state.n += 1;
    ctx.continue_as_new(&state)
}

cairn_sdk::workflow!(count);
