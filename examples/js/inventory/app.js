// The inventory activity component in JavaScript: reserve, release and
// ship, answering exactly as examples/inventory (Rust) does.

import { activities, Failure } from './cairn-activity.js';

function reserve(ctx, req) {
  if (req.quantity === 0 || req.quantity > 100) {
    throw new Failure('out-of-stock', `cannot reserve ${req.quantity} of ${req.sku}`);
  }
  return { reservation_id: `res_${req.order_id}_${req.sku}`, sku: req.sku, quantity: req.quantity };
}

function release(ctx, req) {
  return { released: req.reservation_id };
}

function ship(ctx, req) {
  const parts = req.reservation_id.split('_');
  return { tracking: `TRK-${req.order_id}-${parts[parts.length - 1]}`, address: req.address };
}

export const execute = activities({ reserve, release, ship });
