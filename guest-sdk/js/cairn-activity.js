// Write Cairn activity components in JavaScript (componentize-js).
//
//   import { activities, Failure } from './cairn-activity.js';
//   function greet(ctx, name) { return `hello, ${name} (attempt ${ctx.attempt()})`; }
//   export const execute = activities({ greet });
//
// An activity may be attempted more than once: pass ctx.idempotencyKey() to
// the services it calls. Throw `new Failure(kind, message)` for a failure
// with a machine-readable kind (retry policies match on it).

import { idempotencyKey, attempt, runId } from 'cairn:workflow/activity-context@0.1.0';
import { Failure, callWithJson } from './failure.js';

export { Failure };

export class ActivityContext {
  // The same for every attempt of one scheduled call.
  idempotencyKey() { return idempotencyKey(); }
  // This attempt's number, from 1.
  attempt() { return attempt(); }
  runId() { return runId(); }
}

// Exports `{ name: fn(ctx, input) }` as this component's activities:
// `export const execute = activities({ ... });`
export function activities(functions) {
  return function execute(name, input) {
    const fn = functions[name];
    if (typeof fn !== 'function') {
      const known = Object.keys(functions).sort().join(', ');
      throw new Failure('unknown-function', `this activity component has no function \`${name}\`; it has: ${known}`).toWit();
    }
    return callWithJson(fn, new ActivityContext(), input);
  };
}
