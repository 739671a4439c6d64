// Test guest: the cart of examples/cart in JavaScript (updates `add` and
// `checkout`, queries `items` and `size`); input {"limit": N}.
import { workflow, Failure } from './cairn.js';

function cart(ctx, input) {
  const limit = (input && input.limit) || 10;
  const items = [];
  let done = false;

  ctx.onQuery('items', () => [...items]);
  ctx.onQuery('size', () => items.length);

  ctx.onUpdate(
    'add',
    (item) => {
      if (typeof item !== 'string' || item.trim() === '') throw new Failure('empty-item', 'name the item to add');
      if (items.includes(item)) throw new Failure('duplicate-item', `${item} is already in the cart`);
      if (items.length >= limit) throw new Failure('cart-full', `the cart holds at most ${limit} items`);
    },
    (ctx, item) => {
      ctx.sleep(0.01);
      items.push(item);
      return items.length;
    },
  );
  ctx.onUpdate(
    'checkout',
    () => {
      if (items.length === 0) throw new Failure('empty-cart', 'add an item before checking out');
    },
    () => {
      done = true;
      return 'checked out';
    },
  );
  ctx.waitUntil(() => done);
  return { items };
}

export const run = workflow(cart);
