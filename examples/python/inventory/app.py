"""The inventory activity component in Python: reserve, release and ship,
answering exactly as examples/inventory (Rust) does."""

import cairn


def reserve(ctx, req):
    if req["quantity"] == 0 or req["quantity"] > 100:
        raise cairn.Failure("out-of-stock", f"cannot reserve {req['quantity']} of {req['sku']}")
    return {
        "reservation_id": f"res_{req['order_id']}_{req['sku']}",
        "sku": req["sku"],
        "quantity": req["quantity"],
    }


def release(ctx, req):
    return {"released": req["reservation_id"]}


def ship(ctx, req):
    sku = req["reservation_id"].rsplit("_", 1)[-1]
    return {"tracking": f"TRK-{req['order_id']}-{sku}", "address": req["address"]}


WitWorld = cairn.activities({"reserve": reserve, "release": release, "ship": ship})
