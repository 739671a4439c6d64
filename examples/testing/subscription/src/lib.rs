//! Test workflow for continue-as-new with activities and child runs: a
//! subscription that charges one month at a time (`payments.charge`),
//! starts a `hello` child for each paid month, and continues as new every
//! `per_generation` months, so every generation makes the same calls at the
//! same seqs. The state it carries collects each charge's idempotency key
//! and each child's greeting.
//! Input: `{"months": 4, "per_generation": 2}`.

use cairn_sdk::{Context, Failure};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize)]
struct State {
    months: u32,
    per_generation: u32,
    #[serde(default)]
    month: u32,
    #[serde(default)]
    charges: Vec<String>,
    #[serde(default)]
    greetings: Vec<String>,
}

#[derive(Deserialize)]
struct Charge {
    idempotency_key: String,
}

#[derive(Deserialize)]
struct Greeting {
    greeting: String,
}

fn subscription(ctx: &Context, mut state: State) -> Result<State, Failure> {
    let until = state.months.min(state.month + state.per_generation.max(1));
    while state.month < until {
        let order = json!({ "order_id": format!("sub-{}", state.month), "amount_cents": 1000 + state.month, "card": "4242424242424242" });
        let charge: Charge = ctx.activity("payments.charge", &order).get()?;
        state.charges.push(charge.idempotency_key);
        let child: Greeting = ctx.child("hello", &json!({ "name": format!("month {}", state.month) })).get()?;
        state.greetings.push(child.greeting);
        state.month += 1;
    }
    if state.month < state.months {
        ctx.continue_as_new(&state)
    }
    Ok(state)
}

cairn_sdk::workflow!(subscription);
