#!/usr/bin/env node
// An external Cairn activity worker in JavaScript (Node 18+, no dependencies).
//
// It serves the `inventory` activities of the order example (reserve,
// release, ship), answering exactly as examples/inventory (Rust) does, from
// outside the sandbox: it long-polls `cairn serve` for tasks and reports each
// result with the task's token, heartbeating while it works.
//
//   cairn serve --external-activity inventory &
//   node worker.mjs --server http://127.0.0.1:7233
//
// Copy `Worker` into your own service and register your functions: each
// takes (input, task) and returns a JSON value (or a promise of one), or
// throws `new ActivityFailure(kind, message)`.

export class ActivityFailure extends Error {
  constructor(kind, message, details) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.failureMessage = message;
    this.details = details;
  }
}

export class Worker {
  constructor({ server, functions, workerId, token, component = 'inventory' }) {
    this.server = server.replace(/\/$/, '');
    this.functions = functions;
    this.workerId = workerId;
    this.token = token;
    this.component = component;
  }

  async post(path, body) {
    const headers = { 'content-type': 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(`${this.server}/v1${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  async runOnce(hangOn) {
    const poll = await this.post('/workers/poll', { worker_id: this.workerId, activities: [this.component], wait_ms: 20000 });
    if (poll.status !== 200) throw new Error(`poll failed: ${poll.status} ${JSON.stringify(poll.body)}`);
    const task = poll.body.task;
    if (!task) return;
    const fn = task.activity.split('.').slice(1).join('.');
    console.log(`took ${task.activity} ${task.task_token}`);
    if (fn === hangOn) await new Promise(() => {}); // stuck (or about to be killed) mid-task
    const interval = Math.max(task.heartbeat_timeout_ms / 3, 50);
    const beat = setInterval(() => this.post(`/tasks/${task.task_token}/heartbeat`, {}).catch(() => {}), interval);
    try {
      const handler = this.functions[fn];
      if (!handler) throw new ActivityFailure('unknown-function', `this worker has no function \`${fn}\``);
      const result = await handler(JSON.parse(task.input), task);
      await this.post(`/tasks/${task.task_token}/complete`, { result });
    } catch (e) {
      const failure = e instanceof ActivityFailure
        ? { kind: e.kind, message: e.failureMessage, ...(e.details === undefined ? {} : { details: e.details }) }
        : { kind: 'worker-error', message: String(e) };
      await this.post(`/tasks/${task.task_token}/fail`, failure);
    } finally {
      clearInterval(beat);
    }
    console.log(`done ${task.activity} ${task.task_token}`);
  }

  async run(hangOn) {
    for (;;) {
      try {
        await this.runOnce(hangOn);
      } catch (e) {
        console.error(`server unreachable (${e}); retrying`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
}

// The inventory activities, answering as examples/inventory does.
const inventory = {
  reserve(req) {
    if (req.quantity === 0 || req.quantity > 100) {
      throw new ActivityFailure('out-of-stock', `cannot reserve ${req.quantity} of ${req.sku}`);
    }
    return { reservation_id: `res_${req.order_id}_${req.sku}`, sku: req.sku, quantity: req.quantity };
  },
  release(req) {
    return { released: req.reservation_id };
  },
  ship(req) {
    const sku = req.reservation_id.split('_').pop();
    return { tracking: `TRK-${req.order_id}-${sku}`, address: req.address };
  },
};

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const worker = new Worker({
    server: arg('server', process.env.CAIRN_SERVER ?? 'http://127.0.0.1:7233'),
    token: arg('token', process.env.CAIRN_TOKEN),
    workerId: arg('id', `js-${process.pid}`),
    functions: inventory,
  });
  worker.run(arg('hang-on', undefined));
}
