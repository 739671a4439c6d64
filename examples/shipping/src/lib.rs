//! A shipping workflow in several versions.
//!
//! Reserve stock → wait for the `packed` signal → charge the card → wait for
//! the `dispatch` signal → ship. Version 2 adds a 500-cent shipping fee to
//! the charge. Runs already past the charge have journaled the old amount,
//! so for them the new code must take the old path: `ctx.patched` tells
//! which path a run is on (Temporal's rule). Without it (`V2Unpatched`),
//! Cairn refuses to move those runs, naming the seq of the charge.

use cairn_sdk::{Context, Failure};
use serde::Deserialize;
use serde_json::{json, Value};

/// Which version of the code this component is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The original.
    V1,
    /// Adds the fee, guarded by `patched("shipping-fee")`: safe.
    V2Patched,
    /// Adds the fee unguarded: incompatible with runs past the charge.
    V2Unpatched,
    /// Only ships express: changes nothing before the last gate.
    V2Express,
    /// Charges before reserving: incompatible with every run in flight.
    V2Reordered,
    /// Drops the settling timer after the reservation: incompatible too.
    V2NoTimer,
}

/// The fee version 2 adds.
pub const SHIPPING_FEE_CENTS: u64 = 500;

#[derive(Deserialize)]
pub struct Order {
    order_id: String,
    sku: String,
    quantity: u32,
    amount_cents: u64,
    card: String,
    address: String,
}

pub fn shipping(ctx: &Context, order: Order, version: Version) -> Result<Value, Failure> {
    let charge_input = |amount: u64| json!({ "order_id": order.order_id, "amount_cents": amount, "card": order.card });
    let early_charge: Option<Value> = match version {
        Version::V2Reordered => Some(ctx.activity("payments.charge", &charge_input(order.amount_cents)).get()?),
        _ => None,
    };
    let reservation: Value = ctx
        .activity(
            "inventory.reserve",
            &json!({ "order_id": order.order_id, "sku": order.sku, "quantity": order.quantity }),
        )
        .get()?;
    // Let the stock system settle before packing.
    if version != Version::V2NoTimer {
        ctx.sleep(std::time::Duration::from_millis(1));
    }
    ctx.set_status(&json!({ "stage": "packing" }));
    let _: Value = ctx.signal("packed").get()?;

    let fee = match version {
        Version::V1 | Version::V2Express | Version::V2Reordered | Version::V2NoTimer => 0,
        Version::V2Unpatched => SHIPPING_FEE_CENTS,
        // Runs that charged before v2 was deployed replay `false` here and
        // keep their journaled amount; new runs get the fee.
        Version::V2Patched => {
            if ctx.patched("shipping-fee") {
                SHIPPING_FEE_CENTS
            } else {
                0
            }
        }
    };
    let charged = order.amount_cents + fee;
    let charge: Value = match early_charge {
        Some(charge) => charge,
        None => ctx.activity("payments.charge", &charge_input(charged)).get()?,
    };
    ctx.set_status(&json!({ "stage": "ready" }));
    let _: Value = ctx.signal("dispatch").get()?;

    let mut ship = json!({ "order_id": order.order_id, "reservation_id": reservation["reservation_id"], "address": order.address });
    if version == Version::V2Express {
        ship["express"] = json!(true);
    }
    let shipment: Value = ctx.activity("inventory.ship", &ship).get()?;
    Ok(json!({
        "order_id": order.order_id,
        "charged_cents": charged,
        "charge_id": charge["charge_id"],
        "tracking": shipment["tracking"],
        "code_version": if version == Version::V1 { 1 } else { 2 },
    }))
}
