// The error type of Cairn workflows and activities (shared by cairn.js and
// cairn-activity.js).

// Compact and in insertion order: the same text serde_json writes for a
// Rust struct, so journals compare across languages.
export const dumps = (value) => JSON.stringify(value === undefined ? null : value);

export class Failure extends Error {
  constructor(kind, message, details) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.failureMessage = message;
    this.details = details;
  }
  isCancelled() { return this.kind === 'cancelled'; }
  toString() { return `${this.kind}: ${this.failureMessage}`; }
  toWit() {
    return { kind: this.kind, message: this.failureMessage, details: this.details === undefined ? undefined : dumps(this.details) };
  }
  static fromWit(f) {
    let details;
    if (f.details !== undefined && f.details !== null) {
      try { details = JSON.parse(f.details); } catch { details = f.details; }
    }
    return new Failure(f.kind, f.message, details);
  }
}


// Calls `fn(ctx, input)` on JSON text and returns its result as JSON text;
// a thrown Failure becomes the component's `err(failure)`.
export function callWithJson(fn, ctx, input) {
  let value;
  try {
    value = JSON.parse(input);
  } catch (e) {
    throw new Failure('invalid-input', `the input is not JSON: ${e}`).toWit();
  }
  try {
    return dumps(fn(ctx, value));
  } catch (e) {
    if (e instanceof Failure) throw e.toWit();
    throw e;
  }
}
