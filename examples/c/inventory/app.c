/* The inventory activity component in C: reserve, release and ship stock,
 * answering exactly as examples/inventory (Rust) does. */

#include "cairn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool fail(cairn_failure *failure, const char *kind, const char *message) {
    *failure = cairn_failure_new(kind, message);
    return false;
}

/* A formatted string as JSON (the text is at most a few hundred bytes). */
static cairn_json *formatted(const char *format, const char *a, const char *b) {
    size_t n = (size_t)snprintf(NULL, 0, format, a, b) + 1;
    char *text = malloc(n);
    snprintf(text, n, format, a, b);
    cairn_json *value = cairn_json_string(text);
    free(text);
    return value;
}

static bool reserve(const cairn_json *req, cairn_json **result, cairn_failure *failure) {
    const char *order_id = cairn_json_get_string(req, "order_id");
    const char *sku = cairn_json_get_string(req, "sku");
    uint64_t quantity;
    if (!order_id || !sku || !cairn_json_as_u64(cairn_json_get(req, "quantity"), &quantity) || quantity > UINT32_MAX)
        return fail(failure, "invalid-input", "reserve needs order_id, sku and quantity");
    if (quantity == 0 || quantity > 100) {
        char message[64];
        snprintf(message, sizeof message, "cannot reserve %llu of ", (unsigned long long)quantity);
        cairn_json *text = formatted("%s%s", message, sku);
        bool r = fail(failure, "out-of-stock", cairn_json_as_string(text));
        cairn_json_free(text);
        return r;
    }
    *result = cairn_json_object();
    cairn_json_set(*result, "reservation_id", formatted("res_%s_%s", order_id, sku));
    cairn_json_set(*result, "sku", cairn_json_string(sku));
    cairn_json_set(*result, "quantity", cairn_json_uint(quantity));
    return true;
}

static bool release(const cairn_json *req, cairn_json **result, cairn_failure *failure) {
    const char *reservation_id = cairn_json_get_string(req, "reservation_id");
    if (!reservation_id) return fail(failure, "invalid-input", "release needs reservation_id");
    *result = cairn_json_set(cairn_json_object(), "released", cairn_json_string(reservation_id));
    return true;
}

static bool ship(const cairn_json *req, cairn_json **result, cairn_failure *failure) {
    const char *order_id = cairn_json_get_string(req, "order_id");
    const char *reservation_id = cairn_json_get_string(req, "reservation_id");
    const char *address = cairn_json_get_string(req, "address");
    if (!order_id || !reservation_id || !address)
        return fail(failure, "invalid-input", "ship needs order_id, reservation_id and address");
    const char *sku = strrchr(reservation_id, '_');
    *result = cairn_json_object();
    cairn_json_set(*result, "tracking", formatted("TRK-%s-%s", order_id, sku ? sku + 1 : reservation_id));
    cairn_json_set(*result, "address", cairn_json_string(address));
    return true;
}

bool cairn_execute(const char *name, const cairn_json *input, cairn_json **result, cairn_failure *failure) {
    if (strcmp(name, "reserve") == 0) return reserve(input, result, failure);
    if (strcmp(name, "release") == 0) return release(input, result, failure);
    if (strcmp(name, "ship") == 0) return ship(input, result, failure);
    cairn_json *message = formatted("this activity component has no function `%s`; it has: %s", name, "reserve, release, ship");
    bool r = fail(failure, "unknown-function", cairn_json_as_string(message));
    cairn_json_free(message);
    return r;
}
