"""Test guest: the cart of examples/cart in Python (updates `add` and
`checkout`, queries `items` and `size`); input {"limit": N}."""

import cairn


def cart(ctx, input):
    limit = (input or {}).get("limit", 10)
    items = []
    state = {"done": False}

    ctx.on_query("items", lambda _: list(items))
    ctx.on_query("size", lambda _: len(items))

    def check_add(item):
        if not isinstance(item, str) or not item.strip():
            raise cairn.Failure("empty-item", "name the item to add")
        if item in items:
            raise cairn.Failure("duplicate-item", f"{item} is already in the cart")
        if len(items) >= limit:
            raise cairn.Failure("cart-full", f"the cart holds at most {limit} items")

    def add(ctx, item):
        ctx.sleep(0.01)
        items.append(item)
        return len(items)

    def check_checkout(_):
        if not items:
            raise cairn.Failure("empty-cart", "add an item before checking out")

    def checkout(ctx, _):
        state["done"] = True
        return "checked out"

    ctx.on_update("add", check_add, add)
    ctx.on_update("checkout", check_checkout, checkout)
    ctx.wait_until(lambda: state["done"])
    return {"items": items}


WitWorld = cairn.workflow(cart)
