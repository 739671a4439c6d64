/* Write Cairn workflows and activities in C.
 *
 * A workflow defines `cairn_workflow`; everything it learns from outside
 * comes through the calls below, and Cairn journals each one so a run
 * survives crashes by replay. Do side effects in activities.
 *
 *   #include "cairn.h"
 *
 *   bool cairn_workflow(const cairn_json *input, cairn_json **result, cairn_failure *failure) {
 *       cairn_outcome greeting = cairn_await(cairn_activity("greeter.greet", cairn_json_get(input, "name")));
 *       if (!greeting.ok) { *failure = greeting.failure; return false; }
 *       cairn_sleep(1000);
 *       *result = cairn_json_set(cairn_json_object(), "greeting", greeting.value);
 *       return true;
 *   }
 *
 * An activity component defines `cairn_execute` instead. Build either with
 * `cairn build DIR` (the folder holds app.c, and optionally a Makefile).
 *
 * Ownership: functions that return `cairn_json *` or `char *` hand the caller
 * a value to free (`cairn_json_free`, `free`); `cairn_json_set` and
 * `cairn_json_append` take ownership of the value they are given; a
 * `const cairn_json *` is borrowed. Workflows are short-lived, so leaking is
 * harmless, but the SDK itself never leaks.
 */
#ifndef CAIRN_H
#define CAIRN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- JSON -- */

typedef enum {
    CAIRN_JSON_NULL,
    CAIRN_JSON_BOOL,
    CAIRN_JSON_NUMBER,
    CAIRN_JSON_STRING,
    CAIRN_JSON_ARRAY,
    CAIRN_JSON_OBJECT,
} cairn_json_type;

typedef struct cairn_json cairn_json;

/* Parses `len` bytes of JSON text. On bad input returns NULL and, when
 * `error` is not NULL, sets it to a message saying where (free it). */
cairn_json *cairn_json_parse(const char *text, size_t len, char **error);
/* Compact JSON text, objects in insertion order: the text serde_json writes
 * for a Rust value with the same fields, so journals compare across
 * languages. Numbers keep the digits they were parsed or made with. */
char *cairn_json_dump(const cairn_json *value);
void cairn_json_free(cairn_json *value);
cairn_json *cairn_json_clone(const cairn_json *value);

cairn_json *cairn_json_null(void);
cairn_json *cairn_json_bool(bool value);
cairn_json *cairn_json_int(int64_t value);
cairn_json *cairn_json_uint(uint64_t value);
/* Shortest text that reads back as the same double; NaN and infinities
 * become null, as in serde_json. */
cairn_json *cairn_json_double(double value);
/* `value` must be UTF-8; NULL gives null. */
cairn_json *cairn_json_string(const char *value);
cairn_json *cairn_json_array(void);
cairn_json *cairn_json_object(void);
/* Appends `item` (taking it) and returns `array`. */
cairn_json *cairn_json_append(cairn_json *array, cairn_json *item);
/* Sets `key` to `value` (taking it): replaces an existing key in place, else
 * appends. Returns `object`, so calls chain. */
cairn_json *cairn_json_set(cairn_json *object, const char *key, cairn_json *value);

cairn_json_type cairn_json_typeof(const cairn_json *value);
/* The member `key` of an object, or NULL (also when not an object). */
const cairn_json *cairn_json_get(const cairn_json *object, const char *key);
/* Elements of an array or members of an object; 0 for anything else. */
size_t cairn_json_length(const cairn_json *value);
const cairn_json *cairn_json_at(const cairn_json *value, size_t index);
const char *cairn_json_key_at(const cairn_json *object, size_t index);
/* The string, or NULL unless `value` is a string. */
const char *cairn_json_as_string(const cairn_json *value);
/* Each returns false (leaving *out alone) unless the value fits. */
bool cairn_json_as_bool(const cairn_json *value, bool *out);
bool cairn_json_as_u64(const cairn_json *value, uint64_t *out);
bool cairn_json_as_i64(const cairn_json *value, int64_t *out);
bool cairn_json_as_double(const cairn_json *value, double *out);
/* Shorthand for cairn_json_as_string(cairn_json_get(object, key)). */
const char *cairn_json_get_string(const cairn_json *object, const char *key);

/* ------------------------------------------------------------ failures -- */

/* Why an operation failed: a machine-readable kind ("card-declined",
 * "timeout", "cancelled", ...), a message for people, optional details. */
typedef struct {
    char *kind;
    char *message;
    cairn_json *details;
} cairn_failure;

cairn_failure cairn_failure_new(const char *kind, const char *message);
/* "kind: message", as the Rust, Python and JavaScript SDKs print it. */
char *cairn_failure_to_string(const cairn_failure *failure);
void cairn_failure_free(cairn_failure *failure);

/* What an awaited operation gave: `value` when `ok`, else `failure`. */
typedef struct {
    bool ok;
    cairn_json *value;
    cairn_failure failure;
} cairn_outcome;

void cairn_outcome_free(cairn_outcome *outcome);

/* ----------------------------------------------------------- workflows -- */

/* Define this in a workflow. Return true with *result set (NULL means
 * null), or false with *failure set. The input is borrowed. */
bool cairn_workflow(const cairn_json *input, cairn_json **result, cairn_failure *failure);

typedef uint32_t cairn_handle;

typedef struct {
    uint32_t max_attempts;
    uint64_t initial_interval_ms;
    double backoff_coefficient;
    uint64_t max_interval_ms;
    /* Failure kinds never retried, besides "invalid-input" and
     * "unknown-function", which never are. */
    const char *const *non_retryable;
    size_t non_retryable_count;
} cairn_retry_policy;

typedef struct {
    uint64_t timeout_ms;
    cairn_retry_policy retry;
} cairn_activity_options;

/* As in the other SDKs: a 60 s timeout per attempt, 5 attempts, 1 s
 * doubling up to 60 s between them. */
cairn_activity_options cairn_activity_defaults(void);

/* Schedules the activity `component.function` with `input` (borrowed; NULL
 * means null). Nothing waits until the handle is awaited. */
cairn_handle cairn_activity(const char *name, const cairn_json *input);
cairn_handle cairn_activity_with(const char *name, const cairn_json *input, const cairn_activity_options *options);
/* A durable timer: fires `ms` of workflow time from now, across restarts. */
cairn_handle cairn_timer(uint64_t ms);
/* The next signal named `name` (signals of one name arrive in order). */
cairn_handle cairn_signal(const char *name);
/* Starts a child run of the deployed workflow `workflow`. */
cairn_handle cairn_child(const char *workflow, const cairn_json *input);

/* Waits for one handle. */
cairn_outcome cairn_await(cairn_handle handle);
/* Waits for the first of `count` handles to finish: returns its index and
 * sets *outcome. The others stay pending. */
size_t cairn_await_any(const cairn_handle *handles, size_t count, cairn_outcome *outcome);
/* Queries and updates. A query handler reads the workflow's state where it
 * waits (it runs in a scratch replay: what it changes is forgotten); set
 * *result (taken; NULL means null) and return true, or set *failure and
 * return false. An update's validator (NULL accepts all) returns false with
 * *failure set to reject it, leaving no trace in the run; it must only
 * read. Its handler runs at the workflow's next wait, may await activities
 * and timers, and its result is answered to the client once journaled.
 * `args` is borrowed; `state` is passed back as given. Register handlers
 * before the first wait; a name registered again is replaced. */
typedef bool (*cairn_query_fn)(void *state, const cairn_json *args, cairn_json **result, cairn_failure *failure);
typedef bool (*cairn_validate_fn)(void *state, const cairn_json *args, cairn_failure *failure);
typedef bool (*cairn_update_fn)(void *state, const cairn_json *args, cairn_json **result, cairn_failure *failure);
void cairn_on_query(const char *name, cairn_query_fn handler, void *state);
void cairn_on_update(const char *name, cairn_validate_fn validator, cairn_update_fn handler, void *state);
/* Serves updates until `condition(state)` holds, and returns true. Returns
 * false with *failure set if the wait fails instead (kind "cancelled": the
 * run was cancelled), or at once if no update handler is registered
 * (kind "no-update-handlers": nothing could make it hold). */
bool cairn_wait_until(bool (*condition)(void *state), void *state, cairn_failure *failure);

/* Durable sleep: cairn_await(cairn_timer(ms)). */
void cairn_sleep(uint64_t ms);
/* Cancels a pending handle: awaiting it gives the failure "cancelled". */
void cairn_cancel(cairn_handle handle);
/* Temporal's patch rule: true for new runs and runs that reached this point
 * on new code, false when replaying a run that passed it on old code. */
bool cairn_patched(const char *change_id);
/* Workflow time and randomness: journaled, so the same on replay. */
uint64_t cairn_now_ms(void);
uint64_t cairn_random(void);
/* This run's id (free it). In an activity: the calling run's id. */
char *cairn_run_id(void);
void cairn_set_status(const cairn_json *status);

/* Sets typed search attributes of this run (`cairn list --query`): an
 * object of strings, integers, booleans and {"time": "<RFC 3339>"} values;
 * null removes one. Any other value fails the run. */
void cairn_upsert_search_attributes(const cairn_json *attributes);

typedef enum {
    CAIRN_LOG_TRACE,
    CAIRN_LOG_DEBUG,
    CAIRN_LOG_INFO,
    CAIRN_LOG_WARN,
    CAIRN_LOG_ERROR,
} cairn_log_level;

/* Logged live, not on replay. */
void cairn_log(cairn_log_level level, const char *message);
/* Ends this run and starts a fresh one with `input`; never returns. */
void cairn_continue_as_new(const cairn_json *input) __attribute__((noreturn));

/* ---------------------------------------------------------- activities -- */

/* Define this in an activity component: `name` is the function part of
 * `component.function`. Return true with *result set, or false with
 * *failure set. Unknown names should fail with kind "unknown-function". */
bool cairn_execute(const char *name, const cairn_json *input, cairn_json **result, cairn_failure *failure);

/* "<run id>/<handle>": the same on every attempt of one call. Free it. */
char *cairn_idempotency_key(void);
/* 1 on the first attempt. */
uint32_t cairn_attempt(void);

#ifdef __cplusplus
}
#endif

#endif
