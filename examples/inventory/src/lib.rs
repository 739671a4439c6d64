//! The `inventory` activity component: reserve, release and ship stock.

use cairn_sdk::{ActivityContext, Failure};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct ReserveRequest {
    order_id: String,
    sku: String,
    quantity: u32,
}

#[derive(Serialize)]
struct Reservation {
    reservation_id: String,
    sku: String,
    quantity: u32,
}

fn reserve(_ctx: &ActivityContext, req: ReserveRequest) -> Result<Reservation, Failure> {
    if req.quantity == 0 || req.quantity > 100 {
        return Err(Failure::new("out-of-stock", format!("cannot reserve {} of {}", req.quantity, req.sku)));
    }
    Ok(Reservation {
        reservation_id: format!("res_{}_{}", req.order_id, req.sku),
        sku: req.sku,
        quantity: req.quantity,
    })
}

#[derive(Deserialize)]
struct ReleaseRequest {
    reservation_id: String,
}

#[derive(Serialize)]
struct Released {
    released: String,
}

fn release(_ctx: &ActivityContext, req: ReleaseRequest) -> Result<Released, Failure> {
    Ok(Released { released: req.reservation_id })
}

#[derive(Deserialize)]
struct ShipRequest {
    order_id: String,
    reservation_id: String,
    address: String,
}

#[derive(Serialize)]
struct Shipment {
    tracking: String,
    address: String,
}

fn ship(_ctx: &ActivityContext, req: ShipRequest) -> Result<Shipment, Failure> {
    let sku = req.reservation_id.rsplit('_').next().unwrap_or_default();
    Ok(Shipment { tracking: format!("TRK-{}-{}", req.order_id, sku), address: req.address })
}

cairn_sdk::activities! {
    "reserve" => reserve,
    "release" => release,
    "ship" => ship,
}
