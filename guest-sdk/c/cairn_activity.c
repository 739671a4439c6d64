/* The activity world's glue for the Cairn C SDK: the `execute` export and
 * the activity-context imports, over wit-bindgen's bindings (activity.h). */

#include "cairn.h"
#include "activity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *owned(const activity_string_t *w) {
    char *s = malloc(w->len + 1);
    if (s == NULL) abort();
    memcpy(s, w->ptr, w->len);
    s[w->len] = 0;
    return s;
}

static void set_failure(activity_failure_t *err, const cairn_failure *failure) {
    activity_string_dup(&err->kind, failure->kind ? failure->kind : "error");
    activity_string_dup(&err->message, failure->message ? failure->message : "");
    err->details.is_some = failure->details != NULL;
    if (failure->details) {
        char *details = cairn_json_dump(failure->details);
        err->details.val.ptr = (uint8_t *)details;
        err->details.val.len = strlen(details);
    }
}

bool exports_activity_execute(activity_string_t *name, activity_json_t *input, activity_json_t *ret,
                              activity_failure_t *err) {
    char *function = owned(name);
    activity_string_free(name);
    char *error = NULL;
    cairn_json *value = cairn_json_parse((const char *)input->ptr, input->len, &error);
    activity_json_free(input);
    cairn_json *result = NULL;
    cairn_failure failure = {0};
    bool ok = false;
    if (value == NULL) {
        size_t n = strlen(error ? error : "") + 32;
        char *message = malloc(n);
        snprintf(message, n, "the input is not JSON: %s", error ? error : "");
        failure = cairn_failure_new("invalid-input", message);
        free(message);
    } else {
        ok = cairn_execute(function, value, &result, &failure);
    }
    free(error);
    free(function);
    cairn_json_free(value);
    if (!ok) {
        set_failure(err, &failure);
        cairn_failure_free(&failure);
        cairn_json_free(result);
        return false;
    }
    char *text = result ? cairn_json_dump(result) : strdup("null");
    cairn_json_free(result);
    ret->ptr = (uint8_t *)text;
    ret->len = strlen(text);
    return true;
}

char *cairn_idempotency_key(void) {
    activity_string_t key;
    cairn_workflow_activity_context_idempotency_key(&key);
    char *s = owned(&key);
    activity_string_free(&key);
    return s;
}

uint32_t cairn_attempt(void) { return cairn_workflow_activity_context_attempt(); }

char *cairn_run_id(void) {
    activity_string_t id;
    cairn_workflow_activity_context_run_id(&id);
    char *s = owned(&id);
    activity_string_free(&id);
    return s;
}
