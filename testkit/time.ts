/** Time in the harness: one sleep and one wall clock for tests, bench and demo. */

/** Resolves after `ms` milliseconds (setTimeout; late by however busy the loop is). */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Wall-clock epoch ms with a sub-ms fraction (performance.timeOrigin + now()):
 * the clock the lab peers stamp their events with, so their times and ours compare.
 */
export const wallMs = (): number => performance.timeOrigin + performance.now();

/**
 * Resolves once `cond()` holds, checked every `everyMs`; rejects naming
 * `what` after `timeoutMs`. For waiting on an event with a deadline instead
 * of sleeping a fixed time and then counting (on two shared cores a fixed
 * sleep measures the neighbours).
 */
export async function until(cond: () => boolean, timeoutMs: number, what: string, everyMs = 10): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}
