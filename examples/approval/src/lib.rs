//! An approval workflow: reserve stock, wait for a human's `approve` signal,
//! then charge the card. A rejection, or a cancel of the run while it waits,
//! releases the reserved stock (a compensation) before the run ends.
//!
//! Signal `approve` with `{"approved": true, "by": "alice"}` (or
//! `"approved": false`). Activities: `inventory.reserve`,
//! `inventory.release`, `payments.charge`.

use cairn_sdk::{Context, Failure};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Order {
    order_id: String,
    sku: String,
    quantity: u32,
    amount_cents: u64,
    card: String,
}

#[derive(Deserialize)]
struct Decision {
    approved: bool,
    by: String,
}

#[derive(Deserialize)]
struct Reservation {
    reservation_id: String,
}

#[derive(Deserialize)]
struct Charge {
    charge_id: String,
}

#[derive(Serialize)]
struct Outcome {
    order_id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    charge_id: Option<String>,
}

fn release(ctx: &Context, reservation: &Reservation) -> Result<(), Failure> {
    let _: Value = ctx.activity("inventory.release", &json!({ "reservation_id": reservation.reservation_id })).get()?;
    Ok(())
}

fn approval(ctx: &Context, order: Order) -> Result<Outcome, Failure> {
    let reservation: Reservation = ctx
        .activity(
            "inventory.reserve",
            &json!({ "order_id": order.order_id, "sku": order.sku, "quantity": order.quantity }),
        )
        .get()?;
    ctx.set_status(&json!({ "stage": "awaiting-approval" }));
    let outcome =
        |status, approved_by, charge_id| Outcome { order_id: order.order_id.clone(), status, approved_by, charge_id };

    let decision = match ctx.signal::<Decision>("approve").get() {
        Ok(decision) => decision,
        Err(failure) if failure.is_cancelled() => {
            ctx.set_status(&json!({ "stage": "cancelled" }));
            release(ctx, &reservation)?;
            return Ok(outcome("cancelled", None, None));
        }
        Err(failure) => return Err(failure),
    };
    if !decision.approved {
        release(ctx, &reservation)?;
        return Ok(outcome("rejected", Some(decision.by), None));
    }
    ctx.set_status(&json!({ "stage": "charging" }));
    let charge: Charge = ctx
        .activity(
            "payments.charge",
            &json!({ "order_id": order.order_id, "amount_cents": order.amount_cents, "card": order.card }),
        )
        .get()?;
    Ok(outcome("charged", Some(decision.by), Some(charge.charge_id)))
}

cairn_sdk::workflow!(approval);
