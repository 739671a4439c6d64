/* The order workflow in C: the same steps, activity names, inputs and result
 * as examples/order (Rust), so both produce the same journal. Keys in
 * activity inputs are written in sorted order, as Rust's serde_json `json!`
 * writes them; the result keeps the Rust struct's field order. */

#include "cairn.h"

#include <stdlib.h>

/* A copy of the input's field `key`, or NULL when it is missing. */
static cairn_json *field(const cairn_json *order, const char *key) { return cairn_json_clone(cairn_json_get(order, key)); }

static bool invalid(cairn_failure *failure, const char *message) {
    *failure = cairn_failure_new("invalid-input", message);
    return false;
}

bool cairn_workflow(const cairn_json *order, cairn_json **result, cairn_failure *failure) {
    const char *fields[] = {"order_id", "sku", "quantity", "amount_cents", "card", "address"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (cairn_json_get(order, fields[i]) == NULL) return invalid(failure, "an order needs order_id, sku, quantity, amount_cents, card and address");

    cairn_json *input = cairn_json_object();
    cairn_json_set(input, "order_id", field(order, "order_id"));
    cairn_json_set(input, "quantity", field(order, "quantity"));
    cairn_json_set(input, "sku", field(order, "sku"));
    cairn_outcome reservation = cairn_await(cairn_activity("inventory.reserve", input));
    cairn_json_free(input);
    if (!reservation.ok) {
        *failure = reservation.failure;
        return false;
    }
    const cairn_json *reservation_id = cairn_json_get(reservation.value, "reservation_id");

    /* Card networks have transient outages: retry those, never a decline. */
    static const char *const never_retry[] = {"card-declined"};
    cairn_activity_options charge_options = cairn_activity_defaults();
    charge_options.timeout_ms = 10000;
    charge_options.retry.max_attempts = 4;
    charge_options.retry.initial_interval_ms = 100;
    charge_options.retry.non_retryable = never_retry;
    charge_options.retry.non_retryable_count = 1;
    input = cairn_json_object();
    cairn_json_set(input, "amount_cents", field(order, "amount_cents"));
    cairn_json_set(input, "card", field(order, "card"));
    cairn_json_set(input, "order_id", field(order, "order_id"));
    cairn_outcome charge = cairn_await(cairn_activity_with("payments.charge", input, &charge_options));
    cairn_json_free(input);

    *result = cairn_json_object();
    cairn_json_set(*result, "order_id", field(order, "order_id"));
    if (!charge.ok) {
        /* Compensate: give the stock back before reporting the failure. */
        input = cairn_json_set(cairn_json_object(), "reservation_id", cairn_json_clone(reservation_id));
        cairn_outcome released = cairn_await(cairn_activity("inventory.release", input));
        cairn_json_free(input);
        cairn_outcome_free(&reservation);
        if (!released.ok) {
            cairn_json_free(*result);
            *result = NULL;
            *failure = released.failure;
            cairn_outcome_free(&charge);
            return false;
        }
        char *reason = cairn_failure_to_string(&charge.failure);
        cairn_json_set(*result, "status", cairn_json_string("payment-failed"));
        cairn_json_set(*result, "reason", cairn_json_string(reason));
        free(reason);
        cairn_outcome_free(&released);
        cairn_outcome_free(&charge);
        return true;
    }

    /* Give the warehouse time to pick the order; durable across restarts. */
    cairn_sleep(500);

    input = cairn_json_object();
    cairn_json_set(input, "address", field(order, "address"));
    cairn_json_set(input, "order_id", field(order, "order_id"));
    cairn_json_set(input, "reservation_id", cairn_json_clone(reservation_id));
    cairn_outcome shipment = cairn_await(cairn_activity("inventory.ship", input));
    cairn_json_free(input);
    cairn_outcome_free(&reservation);
    if (!shipment.ok) {
        cairn_json_free(*result);
        *result = NULL;
        *failure = shipment.failure;
        cairn_outcome_free(&charge);
        return false;
    }
    cairn_json_set(*result, "status", cairn_json_string("shipped"));
    cairn_json_set(*result, "charge_id", field(charge.value, "charge_id"));
    cairn_json_set(*result, "tracking", field(shipment.value, "tracking"));
    cairn_outcome_free(&charge);
    cairn_outcome_free(&shipment);
    return true;
}
