//! An order workflow: reserve stock, charge the card (with retries), then
//! wait for the warehouse and ship. If the charge fails for good, the
//! reservation is released (a compensation) and the order ends as
//! `payment-failed`.
//!
//! Activities: `inventory.reserve`, `inventory.release`, `inventory.ship`
//! (examples/inventory) and `payments.charge` (examples/payments).

use cairn_sdk::{ActivityOptions, Context, Failure, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Deserialize)]
struct Order {
    order_id: String,
    sku: String,
    quantity: u32,
    amount_cents: u64,
    card: String,
    address: String,
}

#[derive(Deserialize)]
struct Reservation {
    reservation_id: String,
}

#[derive(Deserialize)]
struct Charge {
    charge_id: String,
}

#[derive(Deserialize)]
struct Shipment {
    tracking: String,
}

#[derive(Serialize)]
struct Outcome {
    order_id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    charge_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracking: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn order(ctx: &Context, order: Order) -> Result<Outcome, Failure> {
    let reservation: Reservation = ctx
        .activity(
            "inventory.reserve",
            &json!({ "order_id": order.order_id, "sku": order.sku, "quantity": order.quantity }),
        )
        .get()?;

    // Card networks have transient outages: retry those, never a decline.
    let charge_options = ActivityOptions::default().timeout(Duration::from_secs(10)).retry(
        RetryPolicy::default()
            .max_attempts(4)
            .initial_interval(Duration::from_millis(100))
            .non_retryable(["card-declined"]),
    );
    let charge = ctx
        .activity_with::<_, Charge>(
            "payments.charge",
            &json!({ "order_id": order.order_id, "amount_cents": order.amount_cents, "card": order.card }),
            &charge_options,
        )
        .get();
    let charge = match charge {
        Ok(charge) => charge,
        Err(failure) => {
            // Compensate: give the stock back before reporting the failure.
            let _: Value =
                ctx.activity("inventory.release", &json!({ "reservation_id": reservation.reservation_id })).get()?;
            return Ok(Outcome {
                order_id: order.order_id,
                status: "payment-failed",
                charge_id: None,
                tracking: None,
                reason: Some(failure.to_string()),
            });
        }
    };

    // Give the warehouse time to pick the order; durable across restarts.
    ctx.sleep(Duration::from_millis(500));

    let shipment: Shipment = ctx
        .activity(
            "inventory.ship",
            &json!({ "order_id": order.order_id, "reservation_id": reservation.reservation_id, "address": order.address }),
        )
        .get()?;

    Ok(Outcome {
        order_id: order.order_id,
        status: "shipped",
        charge_id: Some(charge.charge_id),
        tracking: Some(shipment.tracking),
        reason: None,
    })
}

cairn_sdk::workflow!(order);
