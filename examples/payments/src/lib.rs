//! The `payments` activity component: a stand-in card processor.
//!
//! `charge` declines cards ending in `0002` (kind `card-declined`, never
//! retried) and fails cards ending in `0119` on their first two attempts with
//! a transient `gateway-unavailable`, to show retries with backoff.

use cairn_sdk::{ActivityContext, Failure};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct ChargeRequest {
    order_id: String,
    amount_cents: u64,
    card: String,
}

#[derive(Serialize)]
struct Charge {
    charge_id: String,
    amount_cents: u64,
    idempotency_key: String,
}

fn charge(ctx: &ActivityContext, req: ChargeRequest) -> Result<Charge, Failure> {
    if req.amount_cents == 0 {
        return Err(Failure::new("invalid-input", "amount_cents must be positive"));
    }
    if req.card.ends_with("0002") {
        return Err(Failure::new(
            "card-declined",
            format!("card ending {} was declined", &req.card[req.card.len() - 4..]),
        ));
    }
    if req.card.ends_with("0119") && ctx.attempt() < 3 {
        return Err(Failure::new(
            "gateway-unavailable",
            format!("the card gateway timed out (attempt {})", ctx.attempt()),
        ));
    }
    Ok(Charge {
        charge_id: format!("ch_{}_{}", req.order_id, req.amount_cents),
        amount_cents: req.amount_cents,
        idempotency_key: ctx.idempotency_key(),
    })
}

cairn_sdk::activities! { "charge" => charge }
