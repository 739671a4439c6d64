/* The workflow world's glue for the Cairn C SDK: the `run` export and the
 * runtime imports, over the bindings wit-bindgen generates (workflow.h). */

#include "cairn.h"
#include "workflow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static workflow_string_t borrow(const char *s) {
    workflow_string_t w = {(uint8_t *)s, s ? strlen(s) : 0};
    return w;
}

static char *owned(const workflow_string_t *w) {
    char *s = malloc(w->len + 1);
    if (s == NULL) abort();
    memcpy(s, w->ptr, w->len);
    s[w->len] = 0;
    return s;
}

/* JSON text for the host; `null` for a NULL value. */
static char *dump(const cairn_json *value) { return value ? cairn_json_dump(value) : strdup("null"); }

static void set_failure(workflow_failure_t *err, const cairn_failure *failure) {
    workflow_string_dup(&err->kind, failure->kind ? failure->kind : "error");
    workflow_string_dup(&err->message, failure->message ? failure->message : "");
    err->details.is_some = failure->details != NULL;
    if (failure->details) {
        char *details = cairn_json_dump(failure->details);
        err->details.val.ptr = (uint8_t *)details;
        err->details.val.len = strlen(details);
    }
}

bool exports_workflow_run(workflow_json_t *input, workflow_json_t *ret, workflow_failure_t *err) {
    char *error = NULL;
    cairn_json *value = cairn_json_parse((const char *)input->ptr, input->len, &error);
    workflow_json_free(input);
    if (value == NULL) {
        cairn_failure failure = cairn_failure_new("invalid-input", "the input is not JSON");
        if (error) {
            free(failure.message);
            size_t n = strlen(error) + 32;
            failure.message = malloc(n);
            snprintf(failure.message, n, "the input is not JSON: %s", error);
        }
        free(error);
        set_failure(err, &failure);
        cairn_failure_free(&failure);
        return false;
    }
    cairn_json *result = NULL;
    cairn_failure failure = {0};
    bool ok = cairn_workflow(value, &result, &failure);
    cairn_json_free(value);
    if (!ok) {
        set_failure(err, &failure);
        cairn_failure_free(&failure);
        cairn_json_free(result);
        return false;
    }
    char *text = dump(result);
    cairn_json_free(result);
    ret->ptr = (uint8_t *)text;
    ret->len = strlen(text);
    return true;
}

static const char *const ALWAYS_NON_RETRYABLE[] = {"invalid-input", "unknown-function"};

cairn_activity_options cairn_activity_defaults(void) {
    cairn_activity_options options = {
        .timeout_ms = 60000,
        .retry = {.max_attempts = 5, .initial_interval_ms = 1000, .backoff_coefficient = 2.0,
                  .max_interval_ms = 60000, .non_retryable = NULL, .non_retryable_count = 0},
    };
    return options;
}

cairn_handle cairn_activity(const char *name, const cairn_json *input) {
    cairn_activity_options options = cairn_activity_defaults();
    return cairn_activity_with(name, input, &options);
}

cairn_handle cairn_activity_with(const char *name, const cairn_json *input, const cairn_activity_options *options) {
    size_t count = 2 + options->retry.non_retryable_count;
    workflow_string_t *kinds = calloc(count, sizeof *kinds);
    if (kinds == NULL) abort();
    kinds[0] = borrow(ALWAYS_NON_RETRYABLE[0]);
    kinds[1] = borrow(ALWAYS_NON_RETRYABLE[1]);
    for (size_t i = 0; i < options->retry.non_retryable_count; i++) kinds[2 + i] = borrow(options->retry.non_retryable[i]);
    cairn_workflow_runtime_activity_options_t wit_options = {
        .timeout_ms = options->timeout_ms,
        .retry = {.max_attempts = options->retry.max_attempts,
                  .initial_interval_ms = options->retry.initial_interval_ms,
                  .backoff_coefficient = options->retry.backoff_coefficient,
                  .max_interval_ms = options->retry.max_interval_ms,
                  .non_retryable_kinds = {kinds, count}},
    };
    char *text = dump(input);
    workflow_string_t wit_name = borrow(name);
    workflow_string_t wit_input = borrow(text);
    cairn_handle handle = cairn_workflow_runtime_schedule_activity(&wit_name, &wit_input, &wit_options);
    free(text);
    free(kinds);
    return handle;
}

cairn_handle cairn_timer(uint64_t ms) { return cairn_workflow_runtime_start_timer(ms); }

cairn_handle cairn_signal(const char *name) {
    workflow_string_t wit_name = borrow(name);
    return cairn_workflow_runtime_wait_signal(&wit_name);
}

cairn_handle cairn_child(const char *workflow, const cairn_json *input) {
    char *text = dump(input);
    workflow_string_t wit_workflow = borrow(workflow);
    workflow_string_t wit_input = borrow(text);
    cairn_handle handle = cairn_workflow_runtime_start_child(&wit_workflow, &wit_input);
    free(text);
    return handle;
}

/* Takes the host's completion apart into an outcome, and frees it. */
static cairn_outcome outcome_of(cairn_workflow_runtime_completion_t *completion) {
    cairn_outcome outcome = {0};
    if (completion->tag == CAIRN_WORKFLOW_TYPES_COMPLETION_OK) {
        char *error = NULL;
        outcome.value = cairn_json_parse((const char *)completion->val.ok.ptr, completion->val.ok.len, &error);
        outcome.ok = outcome.value != NULL;
        if (!outcome.ok) outcome.failure = cairn_failure_new("invalid-output", error ? error : "not JSON");
        free(error);
    } else {
        cairn_workflow_types_failure_t *f = &completion->val.err_;
        outcome.failure.kind = owned(&f->kind);
        outcome.failure.message = owned(&f->message);
        if (f->details.is_some)
            outcome.failure.details = cairn_json_parse((const char *)f->details.val.ptr, f->details.val.len, NULL);
    }
    cairn_workflow_runtime_completion_free(completion);
    return outcome;
}

/* ---------------------------------------------- queries and updates -- */

/* An accepted update arrives as a signal named `$update`; while update
 * handlers are registered, every wait also waits for it and runs the
 * handler. Queries and validations come as a `$query` or `$validate-update`
 * failure at a wait in a scratch replay, answered with answer-query. */

typedef struct {
    char *name;
    cairn_query_fn handler;
    void *state;
} query_entry;

typedef struct {
    char *name;
    cairn_validate_fn validator;
    cairn_update_fn handler;
    void *state;
} update_entry;

static query_entry *queries;
static size_t query_count;
static update_entry *updates;
static size_t update_count;
static bool has_update_handle;
static cairn_handle update_handle;
static bool in_update;
/* Update ids handled in this generation: one delivered twice runs once. */
static char **handled;
static size_t handled_count;

static bool handled_before(const char *id) {
    for (size_t i = 0; i < handled_count; i++)
        if (strcmp(handled[i], id) == 0) return true;
    handled = realloc(handled, (handled_count + 1) * sizeof *handled);
    if (handled == NULL) abort();
    handled[handled_count++] = strdup(id);
    return false;
}

void cairn_on_query(const char *name, cairn_query_fn handler, void *state) {
    for (size_t i = 0; i < query_count; i++)
        if (strcmp(queries[i].name, name) == 0) {
            queries[i].handler = handler;
            queries[i].state = state;
            return;
        }
    queries = realloc(queries, (query_count + 1) * sizeof *queries);
    if (queries == NULL) abort();
    queries[query_count++] = (query_entry){strdup(name), handler, state};
}

void cairn_on_update(const char *name, cairn_validate_fn validator, cairn_update_fn handler, void *state) {
    for (size_t i = 0; i < update_count; i++)
        if (strcmp(updates[i].name, name) == 0) {
            updates[i] = (update_entry){updates[i].name, validator, handler, state};
            return;
        }
    updates = realloc(updates, (update_count + 1) * sizeof *updates);
    if (updates == NULL) abort();
    updates[update_count++] = (update_entry){strdup(name), validator, handler, state};
}

/* The update handle this wait also waits on, made on first need. */
static bool take_update_handle(cairn_handle *out) {
    if (update_count == 0 || in_update) return false;
    if (!has_update_handle) {
        update_handle = cairn_signal("$update");
        has_update_handle = true;
    }
    *out = update_handle;
    return true;
}

static cairn_failure unknown(const char *what, const char *name) {
    size_t n = strlen(name) + 64;
    char *message = malloc(n);
    if (message == NULL) abort();
    snprintf(message, n, "the workflow has no %s handler named \"%s\"", what, name);
    char kind[32];
    snprintf(kind, sizeof kind, "unknown-%s", what);
    cairn_failure failure = cairn_failure_new(kind, message);
    free(message);
    return failure;
}

/* A handler's outcome as the host's completion; free it with completion_free. */
static cairn_workflow_runtime_completion_t completion_of(bool ok, cairn_json *result, cairn_failure *failure) {
    cairn_workflow_runtime_completion_t completion;
    if (ok) {
        char *text = dump(result);
        completion.tag = CAIRN_WORKFLOW_TYPES_COMPLETION_OK;
        completion.val.ok.ptr = (uint8_t *)text;
        completion.val.ok.len = strlen(text);
    } else {
        completion.tag = CAIRN_WORKFLOW_TYPES_COMPLETION_ERR;
        set_failure(&completion.val.err_, failure);
    }
    cairn_json_free(result);
    if (!ok) cairn_failure_free(failure);
    return completion;
}

/* Answers a question the host delivered, if `completion` is one; then the
 * host never returns. */
static void answer_if_asked(const cairn_workflow_runtime_completion_t *completion) {
    if (completion->tag != CAIRN_WORKFLOW_TYPES_COMPLETION_ERR) return;
    const cairn_workflow_types_failure_t *f = &completion->val.err_;
    char *kind = owned(&f->kind);
    bool query = strcmp(kind, "$query") == 0;
    bool validate = strcmp(kind, "$validate-update") == 0;
    free(kind);
    if ((!query && !validate) || !f->details.is_some) return;
    char *name = owned(&f->message);
    cairn_json *args = cairn_json_parse((const char *)f->details.val.ptr, f->details.val.len, NULL);
    cairn_json *result = NULL;
    cairn_failure failure = {0};
    bool ok = false;
    if (query) {
        size_t i = 0;
        while (i < query_count && strcmp(queries[i].name, name) != 0) i++;
        if (i < query_count)
            ok = queries[i].handler(queries[i].state, args, &result, &failure);
        else
            failure = unknown("query", name);
    } else {
        size_t i = 0;
        while (i < update_count && strcmp(updates[i].name, name) != 0) i++;
        if (i < update_count)
            ok = updates[i].validator == NULL || updates[i].validator(updates[i].state, args, &failure);
        else
            failure = unknown("update", name);
    }
    cairn_workflow_runtime_completion_t answer = completion_of(ok, result, &failure);
    cairn_workflow_runtime_answer_query(&answer);
    /* The host never returns from answer-query. */
    abort();
}

/* Runs the handler of the update `payload` delivers and journals its end. */
static void run_update(const cairn_workflow_runtime_completion_t *completion) {
    if (completion->tag != CAIRN_WORKFLOW_TYPES_COMPLETION_OK) return;
    cairn_json *payload = cairn_json_parse((const char *)completion->val.ok.ptr, completion->val.ok.len, NULL);
    const char *id = cairn_json_get_string(payload, "id");
    const char *name = cairn_json_get_string(payload, "name");
    if (id == NULL || name == NULL || handled_before(id)) {
        cairn_json_free(payload);
        return;
    }
    cairn_json *result = NULL;
    cairn_failure failure = {0};
    bool ok = false;
    size_t i = 0;
    while (i < update_count && strcmp(updates[i].name, name) != 0) i++;
    if (i < update_count) {
        in_update = true;
        ok = updates[i].handler(updates[i].state, cairn_json_get(payload, "args"), &result, &failure);
        in_update = false;
    } else {
        failure = unknown("update", name);
    }
    cairn_workflow_runtime_completion_t outcome = completion_of(ok, result, &failure);
    workflow_string_t wit_id = borrow(id);
    cairn_workflow_runtime_complete_update(&wit_id, &outcome);
    cairn_workflow_runtime_completion_free(&outcome);
    cairn_json_free(payload);
}

/* Waits for the first of `handles`, serving updates and questions meanwhile.
 * `any` keeps the host call an await-any even for one handle (what
 * cairn_await_any always made). */
static size_t wait(const cairn_handle *handles, size_t count, bool any, cairn_workflow_runtime_completion_t *completion) {
    for (;;) {
        cairn_handle updates_at;
        bool serving = take_update_handle(&updates_at);
        cairn_handle winner;
        if (!serving && count == 1 && !any) {
            winner = handles[0];
            cairn_workflow_runtime_await(winner, completion);
        } else {
            cairn_handle *all = malloc((count + 1) * sizeof *all);
            if (all == NULL) abort();
            memcpy(all, handles, count * sizeof *all);
            if (serving) all[count] = updates_at;
            cairn_workflow_runtime_list_handle_t list = {all, count + (serving ? 1 : 0)};
            cairn_workflow_runtime_tuple2_handle_completion_t answer;
            cairn_workflow_runtime_await_any(&list, &answer);
            free(all);
            winner = answer.f0;
            *completion = answer.f1;
        }
        answer_if_asked(completion);
        size_t index = 0;
        while (index < count && handles[index] != winner) index++;
        if (serving && index == count && winner == updates_at) {
            has_update_handle = false;
            run_update(completion);
            cairn_workflow_runtime_completion_free(completion);
            continue;
        }
        return index < count ? index : 0;
    }
}

bool cairn_wait_until(bool (*condition)(void *state), void *state, cairn_failure *failure) {
    while (!condition(state)) {
        cairn_handle handle;
        if (!take_update_handle(&handle)) {
            *failure = cairn_failure_new("no-update-handlers",
                                         "cairn_wait_until: the condition is false and no update handler is registered");
            return false;
        }
        cairn_workflow_runtime_completion_t completion;
        cairn_workflow_runtime_await(handle, &completion);
        answer_if_asked(&completion);
        has_update_handle = false;
        if (completion.tag == CAIRN_WORKFLOW_TYPES_COMPLETION_ERR) {
            cairn_outcome failed = outcome_of(&completion);
            *failure = failed.failure;
            return false;
        }
        run_update(&completion);
        cairn_workflow_runtime_completion_free(&completion);
    }
    return true;
}

cairn_outcome cairn_await(cairn_handle handle) {
    cairn_workflow_runtime_completion_t completion;
    wait(&handle, 1, false, &completion);
    return outcome_of(&completion);
}

size_t cairn_await_any(const cairn_handle *handles, size_t count, cairn_outcome *outcome) {
    cairn_workflow_runtime_completion_t completion;
    size_t index = wait(handles, count, true, &completion);
    *outcome = outcome_of(&completion);
    return index;
}

void cairn_sleep(uint64_t ms) {
    cairn_outcome fired = cairn_await(cairn_timer(ms));
    cairn_outcome_free(&fired);
}

void cairn_cancel(cairn_handle handle) { cairn_workflow_runtime_cancel(handle); }

bool cairn_patched(const char *change_id) {
    workflow_string_t id = borrow(change_id);
    return cairn_workflow_runtime_patched(&id);
}

uint64_t cairn_now_ms(void) { return cairn_workflow_runtime_now_ms(); }
uint64_t cairn_random(void) { return cairn_workflow_runtime_random_u64(); }

char *cairn_run_id(void) {
    workflow_string_t id;
    cairn_workflow_runtime_run_id(&id);
    char *s = owned(&id);
    workflow_string_free(&id);
    return s;
}

void cairn_set_status(const cairn_json *status) {
    char *text = dump(status);
    workflow_string_t wit_status = borrow(text);
    cairn_workflow_runtime_set_custom_status(&wit_status);
    free(text);
}

void cairn_upsert_search_attributes(const cairn_json *attributes) {
    char *text = dump(attributes);
    workflow_string_t wit_attributes = borrow(text);
    cairn_workflow_runtime_upsert_search_attributes(&wit_attributes);
    free(text);
}

void cairn_log(cairn_log_level level, const char *message) {
    workflow_string_t wit_message = borrow(message);
    cairn_workflow_runtime_log((cairn_workflow_runtime_log_level_t)level, &wit_message);
}

void cairn_continue_as_new(const cairn_json *input) {
    char *text = dump(input);
    workflow_string_t wit_input = borrow(text);
    cairn_workflow_runtime_continue_as_new(&wit_input);
    /* The host never returns from continue-as-new. */
    abort();
}
