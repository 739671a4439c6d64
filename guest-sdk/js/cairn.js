// Write Cairn workflows in JavaScript (componentize-js).
//
// A workflow is a function `(ctx, input) => result`; everything it learns
// from outside comes through `ctx`, and Cairn journals each call so a run
// survives crashes by replay. Do side effects in activities.
//
//   import { workflow } from './cairn.js';
//   function greet(ctx, input) {
//     const greeting = ctx.activity('greeter.greet', input.name).get();
//     ctx.sleep(1.0);
//     return { greeting };
//   }
//   export const run = workflow(greet);
//
// Build with `cairn build DIR` (the folder holds package.json and app.js).
// Throw `new Failure(kind, message)` to fail with a machine-readable kind.

import {
  runId, nowMs, randomU64, scheduleActivity, startTimer, startChild, waitSignal,
  await as awaitHandle, awaitAny, cancel, patched, setCustomStatus, upsertSearchAttributes, continueAsNew, log,
} from 'cairn:workflow/runtime@0.1.0';

import { Failure, callWithJson, dumps } from './failure.js';

export { Failure };

// Defaults as in the Rust SDK: 5 attempts, 1 s doubling up to 60 s, never
// retrying `invalid-input` or `unknown-function`.
export function retryPolicy({ maxAttempts = 5, initialIntervalMs = 1000, backoffCoefficient = 2.0, maxIntervalMs = 60000, nonRetryable = [] } = {}) {
  return {
    maxAttempts,
    initialIntervalMs: BigInt(initialIntervalMs),
    backoffCoefficient,
    maxIntervalMs: BigInt(maxIntervalMs),
    nonRetryableKinds: ['invalid-input', 'unknown-function', ...nonRetryable],
  };
}

export function activityOptions({ timeoutMs = 60000, retry = retryPolicy() } = {}) {
  return { timeoutMs: BigInt(timeoutMs), retry };
}

function decode(completion) {
  if (completion.tag === 'ok') return JSON.parse(completion.val);
  throw Failure.fromWit(completion.val);
}

export class Pending {
  constructor(handle) { this.handle = handle; }
  // Waits for the operation; returns its JSON result or throws a Failure.
  get() { return decode(awaitHandle(this.handle)); }
  cancel() { cancel(this.handle); }
}

export class Context {
  runId() { return runId(); }
  nowMs() { return Number(nowMs()); }
  random() { return randomU64(); }
  activity(name, input, options = activityOptions()) {
    return new Pending(scheduleActivity(name, dumps(input), options));
  }
  timer(seconds) { return new Pending(startTimer(BigInt(Math.round(seconds * 1000)))); }
  sleep(seconds) { this.timer(seconds).get(); }
  signal(name) { return new Pending(waitSignal(name)); }
  child(workflowName, input) { return new Pending(startChild(workflowName, dumps(input))); }
  select(pendings) {
    const handles = pendings.map((p) => p.handle);
    const [winner] = awaitAny(new Uint32Array(handles));
    return handles.indexOf(winner);
  }
  patched(changeId) { return patched(changeId); }
  setStatus(value) { setCustomStatus(dumps(value)); }
  // Typed attributes for `cairn list --query`: strings, integers, booleans
  // or { time: '<RFC 3339>' }; null removes one.
  upsertSearchAttributes(attributes) { upsertSearchAttributes(dumps(attributes)); }
  log(message, level = 'info') { log(level, String(message)); }
  continueAsNew(input) {
    continueAsNew(dumps(input));
    throw new Error('the host never returns from continue-as-new');
  }
}

// Makes `fn(ctx, input)` the workflow: `export const run = workflow(fn);`
export function workflow(fn) {
  return function run(input) {
    return callWithJson(fn, new Context(), input);
  };
}
