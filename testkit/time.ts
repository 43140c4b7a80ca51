/** Time in the harness: one sleep and one wall clock for tests, bench and demo. */

/** Resolves after `ms` milliseconds (setTimeout; late by however busy the loop is). */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Wall-clock epoch ms with a sub-ms fraction (performance.timeOrigin + now()):
 * the clock the lab peers stamp their events with, so their times and ours compare.
 */
export const wallMs = (): number => performance.timeOrigin + performance.now();
