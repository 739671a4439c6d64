/* Test guest: the cart of examples/cart in C (updates `add` and `checkout`,
 * queries `items` and `size`); input {"limit": N}. */

#include "cairn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    cairn_json *items;
    uint64_t limit;
    bool done;
} cart;

static bool fail(cairn_failure *failure, const char *kind, const char *message) {
    *failure = cairn_failure_new(kind, message);
    return false;
}

static bool items(void *state, const cairn_json *args, cairn_json **result, cairn_failure *failure) {
    (void)args, (void)failure;
    *result = cairn_json_clone(((cart *)state)->items);
    return true;
}

static bool size(void *state, const cairn_json *args, cairn_json **result, cairn_failure *failure) {
    (void)args, (void)failure;
    *result = cairn_json_uint(cairn_json_length(((cart *)state)->items));
    return true;
}

static bool check_add(void *state, const cairn_json *args, cairn_failure *failure) {
    cart *c = state;
    const char *item = cairn_json_as_string(args);
    if (item == NULL || strspn(item, " ") == strlen(item)) return fail(failure, "empty-item", "name the item to add");
    for (size_t i = 0; i < cairn_json_length(c->items); i++)
        if (strcmp(cairn_json_as_string(cairn_json_at(c->items, i)), item) == 0)
            return fail(failure, "duplicate-item", "the item is already in the cart");
    if (cairn_json_length(c->items) >= c->limit) return fail(failure, "cart-full", "the cart is full");
    return true;
}

static bool add(void *state, const cairn_json *args, cairn_json **result, cairn_failure *failure) {
    (void)failure;
    cart *c = state;
    cairn_sleep(10);
    cairn_json_append(c->items, cairn_json_clone(args));
    *result = cairn_json_uint(cairn_json_length(c->items));
    return true;
}

static bool check_checkout(void *state, const cairn_json *args, cairn_failure *failure) {
    (void)args;
    if (cairn_json_length(((cart *)state)->items) == 0)
        return fail(failure, "empty-cart", "add an item before checking out");
    return true;
}

static bool checkout(void *state, const cairn_json *args, cairn_json **result, cairn_failure *failure) {
    (void)args, (void)failure;
    ((cart *)state)->done = true;
    *result = cairn_json_string("checked out");
    return true;
}

static bool done(void *state) { return ((cart *)state)->done; }

bool cairn_workflow(const cairn_json *input, cairn_json **result, cairn_failure *failure) {
    static cart c;
    c.items = cairn_json_array();
    c.limit = 10;
    cairn_json_as_u64(cairn_json_get(input, "limit"), &c.limit);
    cairn_on_query("items", items, &c);
    cairn_on_query("size", size, &c);
    cairn_on_update("add", check_add, add, &c);
    cairn_on_update("checkout", check_checkout, checkout, &c);
    if (!cairn_wait_until(done, &c, failure)) return false;
    *result = cairn_json_set(cairn_json_object(), "items", c.items);
    return true;
}
