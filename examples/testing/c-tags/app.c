/* Test guest: sets the search attributes its input lists, removes `drop`,
 * and returns its input. */

#include "cairn.h"

bool cairn_workflow(const cairn_json *attributes, cairn_json **result, cairn_failure *failure) {
    (void)failure;
    cairn_upsert_search_attributes(attributes);
    cairn_json *drop = cairn_json_object();
    cairn_json_set(drop, "drop", cairn_json_null());
    cairn_upsert_search_attributes(drop);
    cairn_json_free(drop);
    *result = cairn_json_clone(attributes);
    return true;
}
