//! A shopping cart session driven by updates and read by queries: the
//! "get or create a session" case of update-with-start.
//!
//! - update `add` (a string): validated (not empty, not a duplicate, the
//!   cart not full), then, after a durable 10 ms timer, added; answers
//!   the number of items.
//! - update `checkout`: ends the run with the items; refused on an empty
//!   cart.
//! - query `items`: the items so far; query `size`: how many.
//!
//! Input: `{"limit": N}` (at most N items, default 10), or `null`.

use cairn_sdk::{Context, Failure};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct Receipt {
    items: Vec<String>,
}

fn cart(ctx: &Context, input: Option<Input>) -> Result<Receipt, Failure> {
    let limit = input.unwrap_or_default().limit.unwrap_or(10);
    let items = Rc::new(RefCell::new(Vec::<String>::new()));
    let done = Rc::new(Cell::new(false));

    let seen = items.clone();
    ctx.on_query("items", move |_: serde_json::Value| Ok(seen.borrow().clone()));
    let seen = items.clone();
    ctx.on_query("size", move |_: serde_json::Value| Ok(seen.borrow().len()));

    let (checked, added) = (items.clone(), items.clone());
    ctx.on_update(
        "add",
        move |item: &String| {
            let items = checked.borrow();
            if item.trim().is_empty() {
                Err(Failure::new("empty-item", "name the item to add"))
            } else if items.contains(item) {
                Err(Failure::new("duplicate-item", format!("{item} is already in the cart")))
            } else if items.len() >= limit {
                Err(Failure::new("cart-full", format!("the cart holds at most {limit} items")))
            } else {
                Ok(())
            }
        },
        move |ctx, item: String| {
            // The validator saw the cart as it was when the update came;
            // one accepted just before may have filled it since.
            if added.borrow().contains(&item) || added.borrow().len() >= limit {
                return Err(Failure::new("cart-changed", format!("{item} no longer fits the cart")));
            }
            // A durable step inside the handler: replayed like any other.
            ctx.sleep(Duration::from_millis(10));
            added.borrow_mut().push(item);
            Ok(added.borrow().len())
        },
    );

    let (checked, finished) = (items.clone(), done.clone());
    ctx.on_update(
        "checkout",
        move |_: &serde_json::Value| match checked.borrow().is_empty() {
            true => Err(Failure::new("empty-cart", "add an item before checking out")),
            false => Ok(()),
        },
        move |_ctx, _: serde_json::Value| {
            finished.set(true);
            Ok("checked out")
        },
    );

    ctx.wait_until(|| done.get())?;
    let items = items.borrow().clone();
    Ok(Receipt { items })
}

cairn_sdk::workflow!(cart);
