#!/usr/bin/env python3
"""An external Cairn activity worker in Python (standard library only).

It serves the `inventory` activities of the order example (reserve,
release, ship), answering exactly as examples/inventory (Rust) does, from
outside the sandbox: it long-polls `cairn serve` for tasks and reports each
result with the task's token, heartbeating while it works.

    cairn serve --external-activity inventory &
    python3 worker.py --server http://127.0.0.1:7233

Copy the `Worker` class into your own service and register your functions:
each takes (input, task) and returns a JSON-serialisable value, or raises
`ActivityFailure(kind, message)`.
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


class ActivityFailure(Exception):
    """A failure with a machine-readable kind; the retry policy decides."""

    def __init__(self, kind, message, details=None):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.details = kind, message, details


class Worker:
    def __init__(self, server, functions, worker_id, token=None, component="inventory"):
        self.server = server.rstrip("/")
        self.functions = functions
        self.worker_id = worker_id
        self.token = token
        self.component = component
        # Straight to the server: never through an HTTP proxy from the environment.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _post(self, path, body, timeout=70):
        request = urllib.request.Request(
            f"{self.server}/v1{path}",
            data=json.dumps(body, separators=(",", ":")).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def _heartbeat(self, token, stop, interval):
        while not stop.wait(interval):
            status, _ = self._post(f"/tasks/{token}/heartbeat", {})
            if status == 404:
                return  # the task went to another worker

    def run_once(self, hang_on=None):
        status, reply = self._post(
            "/workers/poll", {"worker_id": self.worker_id, "activities": [self.component], "wait_ms": 20000}
        )
        if status != 200:
            raise RuntimeError(f"poll failed: {status} {reply}")
        task = reply.get("task")
        if not task:
            return
        function = task["activity"].split(".", 1)[1]
        print(f"took {task['activity']} {task['task_token']}", flush=True)
        if function == hang_on:
            time.sleep(3600)  # a worker stuck (or about to be killed) mid-task
        stop = threading.Event()
        interval = max(task["heartbeat_timeout_ms"] / 3000, 0.05)
        threading.Thread(target=self._heartbeat, args=(task["task_token"], stop, interval), daemon=True).start()
        try:
            handler = self.functions.get(function)
            if handler is None:
                raise ActivityFailure("unknown-function", f"this worker has no function `{function}`")
            result = handler(json.loads(task["input"]), task)
            self._post(f"/tasks/{task['task_token']}/complete", {"result": result})
        except ActivityFailure as failure:
            body = {"kind": failure.kind, "message": failure.message}
            if failure.details is not None:
                body["details"] = failure.details
            self._post(f"/tasks/{task['task_token']}/fail", body)
        except Exception as e:  # a bug in the handler: report it, keep serving
            self._post(f"/tasks/{task['task_token']}/fail", {"kind": "worker-error", "message": repr(e)})
        finally:
            stop.set()
        print(f"done {task['activity']} {task['task_token']}", flush=True)

    def run(self, hang_on=None):
        while True:
            try:
                self.run_once(hang_on)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                print(f"server unreachable ({e}); retrying", file=sys.stderr, flush=True)
                time.sleep(0.5)


# The inventory activities, answering as examples/inventory does.
def reserve(req, task):
    quantity, sku = req["quantity"], req["sku"]
    if quantity == 0 or quantity > 100:
        raise ActivityFailure("out-of-stock", f"cannot reserve {quantity} of {sku}")
    return {"reservation_id": f"res_{req['order_id']}_{sku}", "sku": sku, "quantity": quantity}


def release(req, task):
    return {"released": req["reservation_id"]}


def ship(req, task):
    sku = req["reservation_id"].rsplit("_", 1)[-1]
    return {"tracking": f"TRK-{req['order_id']}-{sku}", "address": req["address"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("CAIRN_SERVER", "http://127.0.0.1:7233"))
    parser.add_argument("--token", default=os.environ.get("CAIRN_TOKEN"))
    parser.add_argument("--id", default=f"python-{os.getpid()}")
    parser.add_argument("--hang-on", help="take tasks of this function and never answer (for tests)")
    args = parser.parse_args()
    worker = Worker(args.server, {"reserve": reserve, "release": release, "ship": ship}, args.id, args.token)
    worker.run(args.hang_on)
