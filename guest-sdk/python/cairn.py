"""Write Cairn workflows and activities in Python.

A workflow is a function ``fn(ctx, input) -> result``; everything it learns
from outside comes through ``ctx`` (activity results, timers, signals, the
time, randomness), and Cairn journals each of those calls so the run
survives crashes by replay. Do side effects in activities.

    import cairn

    def greet(ctx, input):
        greeting = ctx.activity("greeter.greet", input["name"]).get()
        ctx.sleep(1.0)
        return {"greeting": greeting}

    WitWorld = cairn.workflow(greet)

An activity component exports named functions ``fn(ctx, input) -> result``:

    WitWorld = cairn.activities({"greet": lambda ctx, name: f"hello, {name}"})

Build either with ``cairn build DIR`` (componentize-py under the hood).
Inputs and results are JSON values (dicts, lists, str, numbers, None).
Raise ``cairn.Failure(kind, message)`` to fail with a machine-readable kind.
"""

import json

# componentize-py bundles only what is imported when the component is built,
# so the bindings are imported here; a component has one world, so one of
# these is missing.
from wit_world.imports import types as _types
from componentize_py_types import Err as _Err

try:
    from wit_world.imports import runtime as _runtime
except ImportError:  # an activity component
    _runtime = None
try:
    from wit_world.imports import activity_context as _activity_context
except ImportError:  # a workflow component
    _activity_context = None

__all__ = ["Failure", "RetryPolicy", "ActivityOptions", "Pending", "Context", "workflow", "activities"]


def _dumps(value):
    # Compact, UTF-8, keys in insertion order: the same text serde_json
    # writes for a Rust struct, so journals compare across languages.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Failure(Exception):
    """Why something failed: a machine-readable ``kind`` and a ``message``."""

    def __init__(self, kind, message, details=None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.details = details

    def is_cancelled(self):
        return self.kind == "cancelled"

    def __str__(self):
        return f"{self.kind}: {self.message}"

    def _to_wit(self, types):
        details = None if self.details is None else _dumps(self.details)
        return types.Failure(kind=self.kind, message=self.message, details=details)

    @staticmethod
    def _from_wit(f):
        details = None
        if f.details is not None:
            try:
                details = json.loads(f.details)
            except ValueError:
                details = f.details
        return Failure(f.kind, f.message, details)


class RetryPolicy:
    """How a failed activity attempt is retried (defaults as in the Rust SDK:
    5 attempts, 1 s doubling up to 60 s, never retrying ``invalid-input`` or
    ``unknown-function``)."""

    def __init__(self, max_attempts=5, initial_interval_ms=1000, backoff_coefficient=2.0,
                 max_interval_ms=60_000, non_retryable=()):
        self.max_attempts = max_attempts
        self.initial_interval_ms = initial_interval_ms
        self.backoff_coefficient = float(backoff_coefficient)
        self.max_interval_ms = max_interval_ms
        self.non_retryable_kinds = ["invalid-input", "unknown-function"] + list(non_retryable)


class ActivityOptions:
    """A per-attempt timeout (ms) and a retry policy."""

    def __init__(self, timeout_ms=60_000, retry=None):
        self.timeout_ms = timeout_ms
        self.retry = retry or RetryPolicy()

    def _to_wit(self, types):
        r = self.retry
        policy = types.RetryPolicy(
            max_attempts=r.max_attempts,
            initial_interval_ms=r.initial_interval_ms,
            backoff_coefficient=r.backoff_coefficient,
            max_interval_ms=r.max_interval_ms,
            non_retryable_kinds=list(r.non_retryable_kinds),
        )
        return types.ActivityOptions(timeout_ms=self.timeout_ms, retry=policy)


def _imports():
    return _runtime, _types


def _decode(completion):
    _, types = _imports()
    if isinstance(completion, types.Completion_Ok):
        return json.loads(completion.value)
    raise Failure._from_wit(completion.value)


# Queries and updates. An accepted update arrives as a signal named
# `$update`; while update handlers are registered, every wait also waits for
# it and runs the handler. Queries and update validations come as a
# `$query` or `$validate-update` failure at a wait in a scratch replay, and
# are answered with `answer-query`.
_queries = {}
_updates = {}
# `handled`: update ids handled in this generation (one delivered twice runs once).
_serving = {"handle": None, "in_update": False, "handled": set()}


def _update_handle():
    if not _updates or _serving["in_update"]:
        return None
    if _serving["handle"] is None:
        _serving["handle"] = _runtime.wait_signal("$update")
    return _serving["handle"]


def _unknown(what, name, known):
    have = ", ".join(sorted(known)) or "none where it waits now"
    return Failure(f"unknown-{what}", f"the workflow has no {what} handler named {name!r} (it has: {have})")


def _completion(outcome):
    if isinstance(outcome, Failure):
        return _types.Completion_Err(outcome._to_wit(_types))
    return _types.Completion_Ok(outcome)


def _answer_if_asked(completion):
    """Answers a question the host delivered, if ``completion`` is one."""
    if not isinstance(completion, _types.Completion_Err):
        return
    f = completion.value
    if f.kind not in ("$query", "$validate-update") or f.details is None:
        return
    name, args = f.message, json.loads(f.details)
    try:
        if f.kind == "$query":
            handler = _queries.get(name)
            if handler is None:
                raise _unknown("query", name, _queries)
            outcome = _dumps(handler(args))
        else:
            entry = _updates.get(name)
            if entry is None:
                raise _unknown("update", name, _updates)
            validator = entry[0]
            try:
                if validator is not None:
                    validator(args)
            except Failure:
                raise
            except Exception as e:  # any exception in a validator rejects
                raise Failure("rejected", str(e))
            outcome = "null"
    except Failure as failure:
        outcome = failure
    _runtime.answer_query(_completion(outcome))
    raise RuntimeError("the host never returns from answer-query")


def _run_update(completion):
    if not isinstance(completion, _types.Completion_Ok):
        return
    delivered = json.loads(completion.value)
    if delivered["id"] in _serving["handled"]:
        return  # handled already: its end is journaled
    _serving["handled"].add(delivered["id"])
    name = delivered.get("name")
    entry = _updates.get(name)
    try:
        if entry is None:
            raise _unknown("update", name, _updates)
        _serving["in_update"] = True
        try:
            outcome = _dumps(entry[1](Context(), delivered.get("args")))
        finally:
            _serving["in_update"] = False
    except Failure as failure:
        outcome = failure
    _runtime.complete_update(delivered["id"], _completion(outcome))


def _wait(handles, any_=False):
    """Waits for the first of ``handles``, serving updates and questions
    meanwhile; returns (handle, completion). ``any_`` keeps the host call an
    await-any even for one handle (what ``select`` always made)."""
    while True:
        serving = _update_handle()
        if serving is None and len(handles) == 1 and not any_:
            winner, completion = handles[0], _runtime.await_(handles[0])
        elif serving is None:
            winner, completion = _runtime.await_any(list(handles))
        else:
            winner, completion = _runtime.await_any(list(handles) + [serving])
        _answer_if_asked(completion)
        if serving is not None and winner == serving and winner not in handles:
            _serving["handle"] = None
            _run_update(completion)
            continue
        return winner, completion


class Pending:
    """A pending operation (activity, timer, signal, child). Nothing blocks
    until ``get()``."""

    def __init__(self, handle):
        self.handle = handle

    def get(self):
        """Waits for the operation and returns its JSON result, or raises
        ``Failure``."""
        return _decode(_wait([self.handle])[1])

    def cancel(self):
        """Abandons the operation; ``get()`` then raises a ``cancelled`` Failure."""
        runtime, _ = _imports()
        runtime.cancel(self.handle)


class Context:
    """The workflow's window on the world; every call is journaled or
    derived from the journal, so replays see the same values."""

    def run_id(self):
        return _imports()[0].run_id()

    def now_ms(self):
        """Workflow time (ms since the epoch). ``time.time()`` reads the same clock."""
        return _imports()[0].now_ms()

    def random(self):
        """A random 64-bit integer, the same on replay."""
        return _imports()[0].random_u64()

    def activity(self, name, input=None, options=None):
        """Schedules activity ``"<component>.<function>"``; ``.get()`` for its result."""
        runtime, types = _imports()
        options = options or ActivityOptions()
        return Pending(runtime.schedule_activity(name, _dumps(input), options._to_wit(types)))

    def timer(self, seconds):
        """A durable timer; ``.get()`` returns when it fires."""
        return Pending(_imports()[0].start_timer(int(round(seconds * 1000))))

    def sleep(self, seconds):
        """Sleeps durably for ``seconds`` of workflow time."""
        self.timer(seconds).get()

    def signal(self, name):
        """Waits for the next signal called ``name``; ``.get()`` returns its payload."""
        return Pending(_imports()[0].wait_signal(name))

    def child(self, workflow, input=None):
        """Starts a child run of a deployed workflow."""
        return Pending(_imports()[0].start_child(workflow, _dumps(input)))

    def select(self, pendings):
        """Waits for the first of ``pendings`` to complete; returns its index."""
        handles = [p.handle for p in pendings]
        winner, _ = _wait(handles, any_=True)
        return handles.index(winner)

    def on_query(self, name, handler):
        """Answers query ``name`` with ``handler(args)`` from the workflow's
        state where it waits. It runs in a scratch replay: read state, do
        not change it. Register handlers before the first wait."""
        _queries[name] = handler

    def on_update(self, name, validator, handler):
        """Handles update ``name``: ``validator(args)`` (or None) raises to
        reject it, leaving no trace in the run, and must only read; then
        ``handler(ctx, args)`` runs at the workflow's next wait, may call
        activities and timers, and its result is answered to the client once
        journaled. Raise ``Failure`` in it to fail the update."""
        _updates[name] = (validator, handler)

    def wait_until(self, condition):
        """Serves updates until ``condition()`` is true; raises the
        ``Failure`` if the wait fails instead (the run was cancelled)."""
        while not condition():
            serving = _update_handle()
            if serving is None:
                raise RuntimeError("wait_until: the condition is false and no update handler is registered")
            completion = _runtime.await_(serving)
            _answer_if_asked(completion)
            _serving["handle"] = None
            if isinstance(completion, _types.Completion_Err):
                raise Failure._from_wit(completion.value)
            _run_update(completion)

    def patched(self, change_id):
        """Temporal's versioning marker: True for runs that reach this point
        with the new code, False for runs journaled before the change."""
        return _imports()[0].patched(change_id)

    def set_status(self, value):
        _imports()[0].set_custom_status(_dumps(value))

    def upsert_search_attributes(self, attributes):
        """Typed, indexed attributes for `cairn list --query`: a dict of
        str, int, bool or {"time": "<RFC 3339>"} values; None removes one."""
        _imports()[0].upsert_search_attributes(_dumps(attributes))

    def log(self, message, level="info"):
        runtime, types = _imports()
        levels = {
            "trace": types.LogLevel.TRACE, "debug": types.LogLevel.DEBUG, "info": types.LogLevel.INFO,
            "warn": types.LogLevel.WARN, "error": types.LogLevel.ERROR,
        }
        runtime.log(levels.get(level, types.LogLevel.INFO), str(message))

    def continue_as_new(self, input):
        """Ends this journal and starts over with ``input``. Does not return."""
        _imports()[0].continue_as_new(_dumps(input))
        raise RuntimeError("the host never returns from continue-as-new")


def _failure_err(failure):
    return _Err(failure._to_wit(_types))


def workflow(fn):
    """Makes ``fn(ctx, input)`` this component's workflow:
    ``WitWorld = cairn.workflow(fn)``."""
    import wit_world

    class WitWorld(wit_world.WitWorld):
        def run(self, input):
            try:
                value = json.loads(input)
            except ValueError as e:
                raise _failure_err(Failure("invalid-input", f"the input is not JSON: {e}"))
            try:
                result = fn(Context(), value)
            except Failure as f:
                raise _failure_err(f)
            return _dumps(result)

    return WitWorld


class ActivityContext:
    """What an activity attempt knows about itself."""

    def _ctx(self):
        return _activity_context

    def idempotency_key(self):
        """The same for every attempt of one scheduled call."""
        return self._ctx().idempotency_key()

    def attempt(self):
        return self._ctx().attempt()

    def run_id(self):
        return self._ctx().run_id()


def activities(functions):
    """Exports ``{"name": fn(ctx, input)}`` as this activity component:
    ``WitWorld = cairn.activities({...})``."""
    import wit_world

    err = _failure_err

    class WitWorld(wit_world.WitWorld):
        def execute(self, name, input):
            fn = functions.get(name)
            if fn is None:
                known = ", ".join(sorted(functions))
                raise err(Failure("unknown-function", f"this activity component has no function `{name}`; it has: {known}"))
            try:
                value = json.loads(input)
            except ValueError as e:
                raise err(Failure("invalid-input", f"the input is not JSON: {e}"))
            try:
                return _dumps(fn(ActivityContext(), value))
            except Failure as f:
                raise err(f)

    return WitWorld
