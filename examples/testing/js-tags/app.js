// Test guest: sets the search attributes its input lists, removes `drop`,
// and returns its input.
import { workflow } from './cairn.js';

function tag(ctx, attributes) {
  ctx.upsertSearchAttributes(attributes);
  ctx.upsertSearchAttributes({ drop: null });
  return attributes;
}

export const run = workflow(tag);
