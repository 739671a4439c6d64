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
  completeUpdate, answerQuery,
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

// Queries and updates. An accepted update arrives as a signal named
// `$update`; while update handlers are registered, every wait also waits
// for it and runs the handler. Queries and update validations come as a
// `$query` or `$validate-update` failure at a wait in a scratch replay,
// answered with `answer-query`.
const queries = new Map();
const updates = new Map();
// `handled`: update ids handled in this generation (one delivered twice runs once).
const serving = { handle: null, inUpdate: false, handled: new Set() };

function updateHandle() {
  if (updates.size === 0 || serving.inUpdate) return null;
  if (serving.handle === null) serving.handle = waitSignal('$update');
  return serving.handle;
}

function unknown(what, name, known) {
  const have = [...known.keys()].sort().join(', ') || 'none where it waits now';
  return new Failure(`unknown-${what}`, `the workflow has no ${what} handler named ${JSON.stringify(name)} (it has: ${have})`);
}

function toCompletion(outcome) {
  if (outcome instanceof Failure) return { tag: 'err', val: outcome.toWit() };
  return { tag: 'ok', val: outcome };
}

// Answers a question the host delivered, if `completion` is one.
function answerIfAsked(completion) {
  if (completion.tag !== 'err') return;
  const { kind, message: name, details } = completion.val;
  if ((kind !== '$query' && kind !== '$validate-update') || details === undefined || details === null) return;
  const args = JSON.parse(details);
  let outcome;
  try {
    if (kind === '$query') {
      const handler = queries.get(name);
      if (!handler) throw unknown('query', name, queries);
      outcome = dumps(handler(args));
    } else {
      const entry = updates.get(name);
      if (!entry) throw unknown('update', name, updates);
      try {
        if (entry.validator) entry.validator(args);
      } catch (e) {
        // Any exception in a validator rejects the update.
        throw e instanceof Failure ? e : new Failure('rejected', String(e && e.message ? e.message : e));
      }
      outcome = 'null';
    }
  } catch (e) {
    if (!(e instanceof Failure)) throw e;
    outcome = e;
  }
  answerQuery(toCompletion(outcome));
  throw new Error('the host never returns from answer-query');
}

function runUpdate(completion) {
  if (completion.tag !== 'ok') return;
  const delivered = JSON.parse(completion.val);
  if (serving.handled.has(delivered.id)) return; // handled already: its end is journaled
  serving.handled.add(delivered.id);
  const entry = updates.get(delivered.name);
  let outcome;
  try {
    if (!entry) throw unknown('update', delivered.name, updates);
    serving.inUpdate = true;
    try {
      outcome = dumps(entry.handler(new Context(), delivered.args));
    } finally {
      serving.inUpdate = false;
    }
  } catch (e) {
    if (!(e instanceof Failure)) throw e;
    outcome = e;
  }
  completeUpdate(delivered.id, toCompletion(outcome));
}

// Waits for the first of `handles`, serving updates and questions
// meanwhile; returns [handle, completion]. `any` keeps the host call an
// await-any even for one handle (what `select` always made).
function wait(handles, any = false) {
  for (;;) {
    const extra = updateHandle();
    let winner, completion;
    if (extra === null && handles.length === 1 && !any) {
      winner = handles[0];
      completion = awaitHandle(winner);
    } else {
      const all = extra === null ? handles : [...handles, extra];
      [winner, completion] = awaitAny(new Uint32Array(all));
    }
    answerIfAsked(completion);
    if (extra !== null && winner === extra && !handles.includes(winner)) {
      serving.handle = null;
      runUpdate(completion);
      continue;
    }
    return [winner, completion];
  }
}

export class Pending {
  constructor(handle) { this.handle = handle; }
  // Waits for the operation; returns its JSON result or throws a Failure.
  get() { return decode(wait([this.handle])[1]); }
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
    const [winner] = wait(handles, true);
    return handles.indexOf(winner);
  }
  // Answers query `name` with `handler(args)` from the workflow's state
  // where it waits (a scratch replay: read state, do not change it).
  // Register handlers before the first wait.
  onQuery(name, handler) { queries.set(name, handler); }
  // Handles update `name`: `validator(args)` (or null) throws to reject it,
  // leaving no trace in the run, and must only read; then `handler(ctx,
  // args)` runs at the workflow's next wait, may call activities and
  // timers, and its result is answered once journaled. Throw a Failure in
  // it to fail the update.
  onUpdate(name, validator, handler) { updates.set(name, { validator, handler }); }
  // Serves updates until `condition()` is true; throws the Failure if the
  // wait fails instead (the run was cancelled).
  waitUntil(condition) {
    while (!condition()) {
      const extra = updateHandle();
      if (extra === null) throw new Error('waitUntil: the condition is false and no update handler is registered');
      const completion = awaitHandle(extra);
      answerIfAsked(completion);
      serving.handle = null;
      if (completion.tag === 'err') throw Failure.fromWit(completion.val);
      runUpdate(completion);
    }
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
