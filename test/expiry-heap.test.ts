/**
 * src/daemon/expiry-heap.ts against a plain reference (a Map of end times,
 * its minimum found by a scan): seeded random pushes, re-keys both ways,
 * removals from anywhere and growth, with the top and every end time
 * compared after each step.
 */
import test from 'ava';
import { ExpiryHeap } from '../src/daemon/expiry-heap.js';
import { Rng, seedFromEnv } from '../testkit/rng.js';

function minOf(ref: Map<number, number>): number {
  let best = Infinity;
  for (const v of ref.values()) if (v < best) best = v;
  return best;
}

test('top() is always a slot with the earliest end, through 20,000 random pushes, updates, removals and growths', (t) => {
  const seed = seedFromEnv();
  const rng = new Rng(seed);
  const heap = new ExpiryHeap();
  const ref = new Map<number, number>();
  let cap = 0;
  const grow = (to: number) => {
    heap.grow(to);
    cap = to;
  };
  grow(8);
  const ops = { push: 0, update: 0, remove: 0, grow: 0 };
  for (let step = 0; step < 20_000; step++) {
    const free = [...Array(cap).keys()].filter((s) => !ref.has(s));
    const held = [...ref.keys()];
    const r = rng.int(100);
    // Few distinct end times, so ties are common.
    const at = 1_000 + rng.int(50) * 10;
    if (r < 40 && free.length > 0) {
      const slot = free[rng.int(free.length)]!;
      heap.push(slot, at);
      ref.set(slot, at);
      ops.push++;
    } else if (r < 70 && held.length > 0) {
      const slot = held[rng.int(held.length)]!;
      heap.update(slot, at);
      ref.set(slot, at);
      ops.update++;
    } else if (r < 98 && held.length > 0) {
      const slot = held[rng.int(held.length)]!;
      heap.remove(slot);
      ref.delete(slot);
      ops.remove++;
    } else if (cap < 4096) {
      grow(cap * 2);
      ops.grow++;
    }
    if (heap.length !== ref.size) return t.fail(`step ${step} (seed ${seed}): length ${heap.length}, reference ${ref.size}`);
    if (ref.size === 0) {
      if (heap.top() !== -1) return t.fail(`step ${step}: top ${heap.top()} of an empty heap`);
      continue;
    }
    const top = heap.top();
    if (ref.get(top) !== minOf(ref)) return t.fail(`step ${step} (seed ${seed}): top slot ${top} ends ${ref.get(top)}, the earliest is ${minOf(ref)}`);
    for (const [slot, end] of ref) if (heap.endOf(slot) !== end) return t.fail(`step ${step}: slot ${slot} ends ${heap.endOf(slot)}, not ${end}`);
  }
  t.log(`seed ${seed}: ${JSON.stringify(ops)}`);
  t.true(ops.push > 1000 && ops.update > 1000 && ops.remove > 1000 && ops.grow > 0, JSON.stringify(ops));
});

test('draining by top() yields the end times in order; a held slot cannot be pushed twice; clear() empties', (t) => {
  const heap = new ExpiryHeap();
  heap.grow(5);
  for (const [slot, at] of [[0, 50], [1, 10], [2, 40], [3, 10], [4, 30]] as const) heap.push(slot, at);
  t.throws(() => heap.push(2, 5), { instanceOf: RangeError, message: 'expiry heap: slot 2 is held already' });
  heap.update(2, 5);
  const order: number[] = [];
  while (heap.length > 0) {
    const s = heap.top();
    order.push(heap.endOf(s));
    heap.remove(s);
  }
  t.deepEqual(order, [5, 10, 10, 30, 50]);
  heap.push(1, 7);
  heap.clear();
  t.is(heap.length, 0);
  t.is(heap.top(), -1);
  t.throws(() => heap.grow(-1), { instanceOf: RangeError });
});
