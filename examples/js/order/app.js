// The order workflow in JavaScript: the same steps, activity names, inputs
// and result as examples/order (Rust), so both produce the same journal.
// Object keys in activity inputs are written in sorted order, as Rust's
// serde_json `json!` writes them; the result keeps the Rust struct's order.

import { workflow, activityOptions, retryPolicy, Failure } from './cairn.js';

function order(ctx, order) {
  const reservation = ctx
    .activity('inventory.reserve', { order_id: order.order_id, quantity: order.quantity, sku: order.sku })
    .get();

  // Card networks have transient outages: retry those, never a decline.
  const chargeOptions = activityOptions({
    timeoutMs: 10000,
    retry: retryPolicy({ maxAttempts: 4, initialIntervalMs: 100, nonRetryable: ['card-declined'] }),
  });
  let charge;
  try {
    charge = ctx
      .activity('payments.charge', { amount_cents: order.amount_cents, card: order.card, order_id: order.order_id }, chargeOptions)
      .get();
  } catch (failure) {
    if (!(failure instanceof Failure)) throw failure;
    // Compensate: give the stock back before reporting the failure.
    ctx.activity('inventory.release', { reservation_id: reservation.reservation_id }).get();
    return { order_id: order.order_id, status: 'payment-failed', reason: failure.toString() };
  }

  // Give the warehouse time to pick the order; durable across restarts.
  ctx.sleep(0.5);

  const shipment = ctx
    .activity('inventory.ship', { address: order.address, order_id: order.order_id, reservation_id: reservation.reservation_id })
    .get();
  return { order_id: order.order_id, status: 'shipped', charge_id: charge.charge_id, tracking: shipment.tracking };
}

export const run = workflow(order);
