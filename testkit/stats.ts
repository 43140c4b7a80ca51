/**
 * Order statistics for benchmark samples. Quantiles use linear
 * interpolation between closest ranks (the "R-7" definition, as numpy's
 * default), so p50 of an even count is the mean of the two middle values.
 */

export interface Summary {
  n: number;
  min: number;
  p25: number;
  p50: number;
  p75: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (n === 1) return sorted[0];
  const pos = (n - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function sortNumbers(xs: Iterable<number>): Float64Array {
  const a = Float64Array.from(xs);
  a.sort();
  return a;
}

export function summarize(xs: Iterable<number>): Summary {
  const s = sortNumbers(xs);
  const n = s.length;
  let sum = 0;
  for (const x of s) sum += x;
  return {
    n,
    min: n ? s[0] : NaN,
    p25: quantileSorted(s, 0.25),
    p50: quantileSorted(s, 0.5),
    p75: quantileSorted(s, 0.75),
    p90: quantileSorted(s, 0.9),
    p99: quantileSorted(s, 0.99),
    max: n ? s[n - 1] : NaN,
    mean: n ? sum / n : NaN,
  };
}

export function median(xs: Iterable<number>): number {
  return quantileSorted(sortNumbers(xs), 0.5);
}

/** Round for JSON: keeps 4 significant digits, NaN/Infinity become null. */
export function sig(x: number, digits = 4): number | null {
  if (!Number.isFinite(x)) return null;
  if (x === 0) return 0;
  return Number(x.toPrecision(digits));
}

export function roundSummary(s: Summary, digits = 4): Record<keyof Summary, number | null> {
  const out = {} as Record<keyof Summary, number | null>;
  for (const k of Object.keys(s) as (keyof Summary)[]) out[k] = k === 'n' ? s.n : sig(s[k], digits);
  return out;
}
