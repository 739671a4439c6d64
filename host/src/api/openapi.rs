//! The OpenAPI 3 description of the API, served at `/v1/openapi.json`.

use axum::Json;
use serde_json::{json, Value};

fn error_responses(codes: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        out.insert((*code).to_owned(), json!({ "$ref": "#/components/responses/Error" }));
    }
    Value::Object(out)
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn ok(status: &str, schema: &str) -> Value {
    json!({ status: { "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } } })
}

pub(crate) async fn document() -> Json<Value> {
    let run_id = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } });
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Cairn",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Durable workflows in WebAssembly. Errors are JSON {code, message}. With --token-file, every request needs `Authorization: Bearer <token>`."
        },
        "servers": [{ "url": "/v1" }],
        "security": [{ "bearer": [] }],
        "paths": {
            "/health": { "get": { "summary": "Liveness and residency counters", "responses": { "200": { "description": "OK" } } } },
            "/metrics": { "get": { "summary": "Residency counters: resident, evictions, rebuilds, finished", "responses": ok("200", "Metrics") } },
            "/components": { "get": { "summary": "List deployed components", "responses": { "200": { "description": "OK" } } } },
            "/components/{name}": { "post": {
                "summary": "Deploy a component: raw .wasm body; same bytes give the existing version",
                "parameters": [
                    { "name": "name", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" } },
                    { "name": "kind", "in": "query", "schema": { "type": "string", "enum": ["workflow", "activity"], "default": "workflow" } },
                    { "name": "upgrade", "in": "query", "description": "compatible: move live runs of older versions that verify", "schema": { "type": "string", "enum": ["compatible", "none"] } }
                ],
                "requestBody": { "required": true, "content": { "application/wasm": { "schema": { "type": "string", "format": "binary" } } } },
                "responses": merge(merge(ok("201", "Deployed"), ok("200", "Deployed")), error_responses(&["400", "401", "409", "413", "422"]))
            } },
            "/runs": {
                "post": {
                    "summary": "Start a run; an existing id returns that run (idempotent). With `wait`, the response waits up to that many seconds for the run to end and returns it as `/runs/{id}/result` would",
                    "parameters": [{ "name": "wait", "in": "query", "schema": { "type": "number", "minimum": 0, "maximum": 60, "default": 0 } }],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/StartRequest" } } } },
                    "responses": merge(merge(ok("201", "Run"), ok("200", "Run")), error_responses(&["400", "401", "404", "409", "413"]))
                },
                "get": {
                    "summary": "List runs, by id, paginated",
                    "parameters": [
                        { "name": "workflow", "in": "query", "schema": { "type": "string" } },
                        { "name": "status", "in": "query", "schema": { "$ref": "#/components/schemas/Status" } },
                        { "name": "query", "in": "query", "description": "a filter on fields and search attributes: workflow = \"order\" and amount > 1000", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                        { "name": "after", "in": "query", "description": "the `next` of the previous page", "schema": { "type": "string" } },
                        { "name": "order", "in": "query", "description": "id order; the ids the host makes are time-ordered, so `desc` lists the newest first", "schema": { "type": "string", "enum": ["asc", "desc"], "default": "asc" } }
                    ],
                    "responses": merge(ok("200", "RunList"), error_responses(&["400", "401"]))
                }
            },
            "/runs/{id}": {
                "get": { "summary": "A run's status", "parameters": [run_id], "responses": merge(ok("200", "Run"), error_responses(&["401", "404"])) },
                "delete": { "summary": "Delete a finished run with its journal and history (409 run-live for a live one)", "parameters": [run_id], "responses": merge(json!({ "200": { "description": "deleted" } }), error_responses(&["401", "404", "409"])) }
            },
            "/workflows/{name}/concurrency": { "put": {
                "summary": "Concurrency limits: {\"limit\": N, \"keys\": {\"KEY\": N}}: at most N runs of one concurrency key at once (runs without a key share one); the rest are queued, by priority then age. {} removes them",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "limit": { "type": "integer", "minimum": 1 }, "keys": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 1 } }, "rate": { "type": "string", "description": "N/s, N/min or N/h per key" }, "burst": { "type": "integer", "minimum": 1 }, "key_rates": { "type": "object", "additionalProperties": { "type": "string" }, "description": "rates of particular keys (N/s, N/min, N/h), in place of `rate`" } } } } } },
                "responses": merge(json!({ "200": { "description": "set" } }), error_responses(&["400", "401", "404"]))
            } },
            "/workflows/{name}/retention": { "put": {
                "summary": "How long finished runs of the workflow are kept: {\"retention\": \"30d\"}, or null for the server's --retention",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "retention": { "type": "string", "nullable": true } } } } } },
                "responses": merge(json!({ "200": { "description": "set" } }), error_responses(&["400", "401", "404"]))
            } },
            "/runs/{id}/result": { "get": {
                "summary": "Long-poll: wait up to `wait` seconds for the run to end, then return it",
                "parameters": [run_id, { "name": "wait", "in": "query", "schema": { "type": "number", "minimum": 0, "maximum": 60, "default": 0 } }],
                "responses": merge(ok("200", "Run"), error_responses(&["400", "401", "404"]))
            } },
            "/runs/{id}/journal": { "get": {
                "summary": "A run's journal entries, paginated by seq",
                "parameters": [run_id,
                    { "name": "generation", "in": "query", "description": "an earlier generation (before continue-as-new); default: the current one", "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "from", "in": "query", "schema": { "type": "integer", "minimum": 0, "default": 0 } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 1000 } }],
                "responses": merge(ok("200", "JournalPage"), error_responses(&["400", "401", "404"]))
            } },
            "/runs/{id}/signals/{name}": { "post": {
                "summary": "Send a signal; the body is its JSON payload (empty: null)",
                "parameters": [run_id, { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "content": { "application/json": { "schema": {} } } },
                "responses": merge(json!({ "202": { "description": "stored durably" } }), error_responses(&["400", "401", "404", "409", "413", "429"]))
            } },
            "/runs/{id}/updates/{name}": { "post": {
                "summary": "Send an update: its validator runs first (a rejection, 422 `rejected` with the workflow's `failure`, records nothing), then its handler at the run's next wait; answered once the handler's end is journaled. With `start`, the run is started under {id} first if none exists (update-with-start)",
                "parameters": [run_id, { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "wait", "in": "query", "schema": { "type": "number", "minimum": 0, "maximum": 60, "default": 60 }, "description": "seconds to wait for the handler; past it, 202 `accepted` (send the same update_id again to wait on)" }],
                "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/UpdateRequest" } } } },
                "responses": merge(merge(ok("200", "UpdateResult"), json!({ "202": { "description": "accepted; the handler had not finished" } })), error_responses(&["400", "401", "404", "409", "422", "429"]))
            } },
            "/runs/{id}/queries/{name}": {
                "get": {
                    "summary": "Ask a query: answered from the run's current state by replay in a scratch sandbox; nothing is written and the run is not disturbed",
                    "parameters": [run_id, { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                        { "name": "args", "in": "query", "schema": { "type": "string" }, "description": "the query's arguments as JSON text (default null)" }],
                    "responses": merge(ok("200", "QueryResult"), error_responses(&["400", "401", "404", "409", "422"]))
                },
                "post": {
                    "summary": "Ask a query with its JSON arguments as the body",
                    "parameters": [run_id, { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "requestBody": { "content": { "application/json": { "schema": {} } } },
                    "responses": merge(ok("200", "QueryResult"), error_responses(&["400", "401", "404", "409", "422"]))
                }
            },
            "/activities/limits": { "get": {
                "summary": "Every activity with limits, with its buckets now (slots held on every host, attempts waiting on this one)",
                "responses": { "200": { "description": "OK" } }
            } },
            "/activities/{name}/limits": {
                "get": {
                    "summary": "An activity's limits and its buckets now; {name} is COMPONENT.FUNCTION, or COMPONENT for its functions without limits of their own",
                    "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": merge(ok("200", "ActivityLimits"), error_responses(&["400", "401"]))
                },
                "put": {
                    "summary": "Set an activity's limits on attempts in flight and started per time, per key from the input (an empty body removes them); held across hosts",
                    "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ActivityLimits" } } } },
                    "responses": merge(ok("200", "ActivityLimits"), error_responses(&["400", "401", "409"]))
                }
            },
            "/runs/{id}/cancel": { "post": {
                "summary": "Cancel: the run's current (or next) await fails with kind `cancelled`",
                "parameters": [run_id],
                "responses": merge(json!({ "202": { "description": "requested" } }), error_responses(&["401", "404", "409"]))
            } },
            "/runs/{id}/upgrade": { "post": {
                "summary": "Verify a run against another version by replay and, unless dry_run, move it there",
                "parameters": [run_id],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["to"], "additionalProperties": false,
                    "properties": { "to": { "type": "integer" }, "dry_run": { "type": "boolean" } } } } } },
                "responses": merge(ok("200", "UpgradeReport"), error_responses(&["400", "401", "404", "409"]))
            } },
            "/workers/poll": { "post": {
                "summary": "An external worker long-polls for a task of the activities it serves (full names or component names); `task` is null when none came within wait_ms (default 30000, at most 60000)",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["worker_id", "activities"], "additionalProperties": false,
                    "properties": { "worker_id": { "type": "string" }, "activities": { "type": "array", "items": { "type": "string" } }, "wait_ms": { "type": "integer" } } } } } },
                "responses": merge(json!({ "200": { "description": "{\"task\": {task_token, activity, input, run_id, idempotency_key, attempt, heartbeat_timeout_ms} or null}" } }), error_responses(&["400", "401"]))
            } },
            "/tasks/{token}/complete": { "post": {
                "summary": "A worker's result for its task",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["result"], "properties": { "result": {} } } } } },
                "responses": merge(json!({ "200": { "description": "accepted" } }), error_responses(&["400", "401", "404"]))
            } },
            "/tasks/{token}/fail": { "post": {
                "summary": "A worker's failure for its task; the activity's retry policy decides what happens next",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["kind", "message"], "properties": { "kind": { "type": "string" }, "message": { "type": "string" }, "details": {} } } } } },
                "responses": merge(json!({ "200": { "description": "accepted" } }), error_responses(&["400", "401", "404"]))
            } },
            "/tasks/{token}/heartbeat": { "post": {
                "summary": "A worker is still on its task; without one within heartbeat_timeout_ms the task goes to another worker (404 task-gone then)",
                "responses": merge(json!({ "200": { "description": "alive" } }), error_responses(&["401", "404"]))
            } },
            "/batch": { "post": {
                "summary": "signal, cancel, terminate, delete or upgrade every run a query matches (at most 10,000), run by run; dry_run lists them only",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["query", "operation"], "properties": {
                    "query": { "type": "string" }, "operation": { "type": "string", "enum": ["signal", "cancel", "terminate", "delete", "upgrade"] },
                    "dry_run": { "type": "boolean" }, "signal": { "type": "string" }, "payload": {}, "reason": { "type": "string" }, "to": { "type": "integer" } } } } } },
                "responses": merge(json!({ "200": { "description": "one outcome per run" } }), error_responses(&["400", "401"]))
            } },
            "/runs/{id}/reset": { "post": {
                "summary": "A new run from the entries before `to`, on `version` (default current) once that version reproduces them in a scratch replay; the original, if live, is terminated. 409 reset-diverges names the first diverging seq",
                "parameters": [run_id],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["to"], "properties": { "to": { "type": "integer", "minimum": 1 }, "version": { "type": "integer" }, "id": { "type": "string" } } } } } },
                "responses": merge(json!({ "201": { "description": "the new run" } }), error_responses(&["400", "401", "404", "409"]))
            } },
            "/runs/{id}/pause": { "post": {
                "summary": "Pause a running run: it takes no steps until resumed; timers that fire, results and signals that arrive are kept (pausing a paused run changes nothing)",
                "parameters": [run_id],
                "responses": merge(ok("200", "Run"), error_responses(&["401", "404", "409", "503"]))
            } },
            "/runs/{id}/resume": { "post": {
                "summary": "Resume a paused run: it is rebuilt by replay and takes what came while it was paused",
                "parameters": [run_id],
                "responses": merge(ok("200", "Run"), error_responses(&["401", "404", "409", "503"]))
            } },
            "/workflows/{name}/versions": { "get": {
                "summary": "A workflow's versions with their runs",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": merge(json!({ "200": { "description": "OK" } }), error_responses(&["401", "404"]))
            } },
            "/workflows/{name}/versions/{version}": { "delete": {
                "summary": "Retire a version no live run uses (not the current one)",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "version", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "responses": merge(json!({ "200": { "description": "retired" } }), error_responses(&["400", "401", "404", "409"]))
            } },
            "/workflows/{name}/rollback": { "post": {
                "summary": "Make an existing version current",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["to"], "properties": { "to": { "type": "integer" } } } } } },
                "responses": merge(json!({ "200": { "description": "OK" } }), error_responses(&["400", "401", "404"]))
            } },
            "/workflows/{name}/upgrade": { "post": {
                "summary": "Verify every live run on `from` against `to` and move those that replay cleanly",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["from", "to"], "additionalProperties": false,
                    "properties": { "from": { "type": "integer" }, "to": { "type": "integer" }, "dry_run": { "type": "boolean" } } } } } },
                "responses": merge(ok("200", "UpgradeReport"), error_responses(&["400", "401", "404", "409"]))
            } },
            "/runs/{id}/terminate": { "post": {
                "summary": "Terminate: stop the run at once",
                "parameters": [run_id],
                "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "reason": { "type": "string" } }, "additionalProperties": false } } } },
                "responses": merge(json!({ "202": { "description": "requested" } }), error_responses(&["400", "401", "404", "409"]))
            } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } } },
            "schemas": {
                "Error": { "type": "object", "required": ["code", "message"], "properties": { "code": { "type": "string" }, "message": { "type": "string" },
                    "failure": { "$ref": "#/components/schemas/Failure", "description": "the workflow's own failure, when it refused (a rejected update, a failed query)" } } },
                "Status": { "type": "string", "enum": ["running", "queued", "paused", "completed", "failed", "diverged", "terminated"] },
                "Failure": { "type": "object", "properties": { "kind": { "type": "string" }, "message": { "type": "string" }, "details": { "type": "string", "nullable": true } } },
                "StartRequest": { "type": "object", "required": ["workflow"], "additionalProperties": false, "properties": {
                    "workflow": { "type": "string" }, "input": { "description": "any JSON" }, "id": { "type": "string" },
                    "concurrency_key": { "type": "string", "description": "the run's bucket under the workflow's concurrency limits" },
                    "priority": { "type": "integer", "minimum": 1, "maximum": 5, "default": 3, "description": "order among queued runs (1 first)" } } },
                "ActivityLimits": { "type": "object", "properties": {
                    "key": { "type": "string", "nullable": true, "description": "JSON pointer into the input (`/customer`); calls without one share the key \"\"" },
                    "limit": { "type": "integer", "minimum": 1, "nullable": true, "description": "most attempts of one key in flight at once" },
                    "keys": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 1 }, "description": "limits of particular keys" },
                    "rate": { "description": "PUT: `10/s`, `100/min`, `5/h`; GET: {every_ms, burst}" },
                    "burst": { "type": "integer", "minimum": 1, "description": "PUT: most starts at once after a quiet spell" },
                    "key_rates": { "type": "object", "description": "rates of particular keys, in place of `rate`" },
                    "buckets": { "type": "array", "readOnly": true, "items": { "type": "object", "properties": {
                        "key": { "type": "string" }, "held": { "type": "integer" }, "waiting": { "type": "integer" } } } } } },
                "UpdateRequest": { "type": "object", "additionalProperties": false, "properties": {
                    "args": { "description": "any JSON (default null)" },
                    "update_id": { "type": "string", "description": "sending the same id again returns the same result instead of updating twice" },
                    "start": { "$ref": "#/components/schemas/StartRequest" } } },
                "UpdateResult": { "type": "object", "properties": {
                    "run_id": { "type": "string" }, "update": { "type": "string" }, "update_id": { "type": "string" },
                    "started": { "type": "boolean", "description": "update-with-start created the run" },
                    "status": { "type": "string", "enum": ["completed", "failed", "accepted"] },
                    "result": { "description": "the handler's JSON result (completed)" },
                    "failure": { "$ref": "#/components/schemas/Failure" } } },
                "QueryResult": { "type": "object", "properties": {
                    "run_id": { "type": "string" }, "query": { "type": "string" }, "result": { "description": "the handler's JSON answer" } } },
                "Run": { "type": "object", "properties": {
                    "id": { "type": "string" }, "workflow": { "type": "string" }, "version": { "type": "integer", "nullable": true }, "generation": { "type": "integer" }, "parent": { "type": "string", "nullable": true },
                    "status": { "$ref": "#/components/schemas/Status" }, "input": {}, "custom_status": {}, "result": {},
                    "failure": { "allOf": [{ "$ref": "#/components/schemas/Failure" }], "nullable": true },
                    "created_ms": { "type": "integer" }, "updated_ms": { "type": "integer" } } },
                "RunList": { "type": "object", "properties": { "runs": { "type": "array", "items": { "$ref": "#/components/schemas/Run" } }, "next": { "type": "string", "nullable": true } } },
                "JournalPage": { "type": "object", "properties": { "run_id": { "type": "string" }, "generation": { "type": "integer" }, "entries": { "type": "array", "items": { "type": "object" } }, "next": { "type": "integer", "nullable": true } } },
                "Deployed": { "type": "object", "properties": {
                    "name": { "type": "string" }, "kind": { "type": "string" }, "version": { "type": "integer" }, "sha256": { "type": "string" }, "created": { "type": "boolean" } } },
                "UpgradeReport": { "type": "object", "properties": {
                    "refused": { "type": "integer" },
                    "runs": { "type": "array", "items": { "type": "object", "properties": {
                        "run_id": { "type": "string" }, "outcome": { "type": "string", "enum": ["upgraded", "compatible", "refused", "skipped"] },
                        "from": { "type": "integer", "nullable": true }, "to": { "type": "integer" }, "reason": { "type": "string" },
                        "divergence": { "type": "object", "properties": { "seq": { "type": "integer" }, "expected": { "type": "string" }, "actual": { "type": "string" } } } } } } } },
                "Metrics": { "type": "object", "properties": {
                    "resident": { "type": "integer" }, "evictions": { "type": "integer" }, "rebuilds": { "type": "integer" }, "finished": { "type": "integer" } } }
            }
        }
    });
    if let Some(paths) = document["paths"].as_object_mut() {
        if let Value::Object(more) = schedule_paths() {
            paths.extend(more);
        }
    }
    if let Some(schemas) = document["components"]["schemas"].as_object_mut() {
        if let Value::Object(more) = schedule_schemas() {
            schemas.extend(more);
        }
    }
    Json(document)
}

fn schedule_paths() -> Value {
    let name = json!([{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }]);
    let fired = || merge(ok("200", "Firings"), error_responses(&["400", "401", "404"]));
    json!({
        "/schedules": {
            "post": {
                "summary": "Create a schedule: runs of a workflow by cron (in a time zone), interval, or once; each firing's run id is NAME-TIME",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewSchedule" } } } },
                "responses": merge(ok("201", "Schedule"), error_responses(&["400", "401", "404", "409"]))
            },
            "get": { "summary": "List the schedules", "responses": merge(ok("200", "ScheduleList"), error_responses(&["401"])) }
        },
        "/schedules/{name}": {
            "get": { "summary": "A schedule: spec, counts, latest and next firings", "parameters": name, "responses": merge(ok("200", "Schedule"), error_responses(&["401", "404"])) },
            "delete": { "summary": "Delete a schedule; the runs it started stay", "parameters": name, "responses": merge(json!({ "200": { "description": "deleted" } }), error_responses(&["401", "404"])) }
        },
        "/schedules/{name}/pause": { "post": {
            "summary": "Pause: nothing fires until resumed. Body {note?}",
            "parameters": name, "responses": merge(ok("200", "Schedule"), error_responses(&["400", "401", "404"]))
        } },
        "/schedules/{name}/resume": { "post": {
            "summary": "Resume from now (what was due while paused is not made up)",
            "parameters": name, "responses": merge(ok("200", "Schedule"), error_responses(&["401", "404"]))
        } },
        "/schedules/{name}/trigger": { "post": { "summary": "Fire now; the overlap policy applies", "parameters": name, "responses": fired() } },
        "/schedules/{name}/backfill": { "post": {
            "summary": "Start the run of every firing in [from, to] (RFC 3339); firings whose runs exist are not started again",
            "parameters": name,
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["from", "to"], "properties": { "from": { "type": "string", "format": "date-time" }, "to": { "type": "string", "format": "date-time" } } } } } },
            "responses": fired()
        } }
    })
}

fn schedule_schemas() -> Value {
    let firing = json!({ "type": "object", "properties": { "at": { "type": "string", "format": "date-time" }, "run_id": { "type": "string" }, "outcome": { "type": "string", "enum": ["started", "triggered", "backfilled", "exists", "skipped", "buffered", "missed"] } } });
    json!({
        "NewSchedule": { "type": "object", "required": ["name", "workflow"], "additionalProperties": false, "description": "Exactly one of cron, every or start_at", "properties": {
            "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$" }, "workflow": { "type": "string" }, "input": { "description": "any JSON, default null" },
            "cron": { "type": "string", "description": "5 fields, or 6 with seconds first" }, "timezone": { "type": "string", "description": "IANA name, default UTC" },
            "every": { "type": "string", "description": "a duration: 30s, 15m, 1h 30m" }, "offset": { "type": "string" },
            "start_at": { "type": "string", "format": "date-time" },
            "overlap": { "type": "string", "enum": ["skip", "buffer-one", "allow-all", "cancel-previous"], "default": "skip" },
            "catchup_window": { "type": "string", "default": "1h" }, "paused": { "type": "boolean" }, "note": { "type": "string" } } },
        "Schedule": { "type": "object", "properties": {
            "name": { "type": "string" }, "revision": { "type": "integer" }, "workflow": { "type": "string" }, "input": {},
            "when": { "type": "object", "description": "{cron, timezone} | {every_ms, offset_ms} | {start_at}" },
            "overlap": { "type": "string" }, "catchup_window_ms": { "type": "integer" }, "paused": { "type": "boolean" }, "note": { "type": "string" }, "done": { "type": "boolean" },
            "created": { "type": "string", "format": "date-time" }, "handled_until": { "type": "string", "format": "date-time" },
            "last_run": { "type": "string", "nullable": true }, "buffered": { "type": "string", "nullable": true },
            "started": { "type": "integer" }, "skipped": { "type": "integer" }, "missed": { "type": "integer" },
            "recent": { "type": "array", "items": firing }, "next": { "type": "array", "items": { "type": "string", "format": "date-time" } } } },
        "ScheduleList": { "type": "object", "properties": { "schedules": { "type": "array", "items": { "$ref": "#/components/schemas/Schedule" } } } },
        "Firings": { "type": "object", "properties": { "firings": { "type": "array", "items": firing } } }
    })
}
