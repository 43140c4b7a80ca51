/** Order statistics of the bench (testkit/stats.ts): quantiles as numpy computes them. */
import test from 'ava';
import { quantileSorted, summarize } from '../testkit/stats.js';

test('quantiles interpolate between closest ranks', (t) => {
  t.is(quantileSorted([1, 2, 3, 4], 0.5), 2.5);
  t.is(quantileSorted([10], 0.99), 10);
  t.true(Number.isNaN(quantileSorted([], 0.5)));
  const s = summarize([5, 1, 4, 2, 3]);
  t.deepEqual([s.min, s.p25, s.p50, s.p75, s.max, s.n], [1, 2, 3, 4, 5, 5]);
});
