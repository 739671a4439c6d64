"""Test guest: sets the search attributes its input lists, removes `drop`,
and returns its input."""

import cairn


def tag(ctx, attributes):
    ctx.upsert_search_attributes(attributes)
    ctx.upsert_search_attributes({"drop": None})
    return attributes


WitWorld = cairn.workflow(tag)
