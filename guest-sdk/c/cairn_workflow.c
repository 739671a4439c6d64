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

cairn_outcome cairn_await(cairn_handle handle) {
    cairn_workflow_runtime_completion_t completion;
    cairn_workflow_runtime_await(handle, &completion);
    return outcome_of(&completion);
}

size_t cairn_await_any(const cairn_handle *handles, size_t count, cairn_outcome *outcome) {
    cairn_workflow_runtime_list_handle_t list = {(cairn_handle *)handles, count};
    cairn_workflow_runtime_tuple2_handle_completion_t answer;
    cairn_workflow_runtime_await_any(&list, &answer);
    *outcome = outcome_of(&answer.f1);
    for (size_t i = 0; i < count; i++)
        if (handles[i] == answer.f0) return i;
    return 0;
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
