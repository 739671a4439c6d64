"""The order workflow in Python: the same steps, activity names, inputs and
result as examples/order (Rust), so both produce the same journal.

Dict keys in activity inputs are written in sorted order, as Rust's
serde_json `json!` writes them; the result keeps the Rust struct's order.
"""

import cairn


def order(ctx, order):
    reservation = ctx.activity(
        "inventory.reserve",
        {"order_id": order["order_id"], "quantity": order["quantity"], "sku": order["sku"]},
    ).get()

    # Card networks have transient outages: retry those, never a decline.
    charge_options = cairn.ActivityOptions(
        timeout_ms=10_000,
        retry=cairn.RetryPolicy(max_attempts=4, initial_interval_ms=100, non_retryable=["card-declined"]),
    )
    try:
        charge = ctx.activity(
            "payments.charge",
            {"amount_cents": order["amount_cents"], "card": order["card"], "order_id": order["order_id"]},
            charge_options,
        ).get()
    except cairn.Failure as failure:
        # Compensate: give the stock back before reporting the failure.
        ctx.activity("inventory.release", {"reservation_id": reservation["reservation_id"]}).get()
        return {"order_id": order["order_id"], "status": "payment-failed", "reason": str(failure)}

    # Give the warehouse time to pick the order; durable across restarts.
    ctx.sleep(0.5)

    shipment = ctx.activity(
        "inventory.ship",
        {
            "address": order["address"],
            "order_id": order["order_id"],
            "reservation_id": reservation["reservation_id"],
        },
    ).get()
    return {
        "order_id": order["order_id"],
        "status": "shipped",
        "charge_id": charge["charge_id"],
        "tracking": shipment["tracking"],
    }


WitWorld = cairn.workflow(order)
