/**
 * Facts about the host (its addresses, its interfaces' state) read at most
 * every `maxAgeMs` instead of once per request. A burst of requests (a
 * client pipelining job creations on several connections) shares one read:
 * reading getifaddrs(3), /proc and sysfs for each creation cost ~2.6 ms of
 * it on a loaded machine, and even once per event-loop turn it was a quarter
 * of the daemon's CPU per creation. The age bound keeps the answers as
 * fresh as it matters: addresses change at human speed (DHCP, operators),
 * and an interface that goes down after its check is caught by the data
 * plane's own health check (every 500 ms) either way.
 */
export const HOST_FACTS_MAX_AGE_MS = 100;

export type Now = () => number;
const monotonic: Now = () => performance.now();

/** `read()`'s value, read again once it is older than `maxAgeMs`. */
export function recent<T>(read: () => T, maxAgeMs = HOST_FACTS_MAX_AGE_MS, now: Now = monotonic): () => T {
  let at = -Infinity;
  let value: T | undefined;
  return () => {
    const t = now();
    if (t - at >= maxAgeMs) {
      value = read();
      at = t;
    }
    return value as T;
  };
}

/**
 * Remembers for `maxAgeMs` which keys passed a check that throws on
 * failure. Failures are never remembered: each is checked (and reported)
 * again.
 */
export function passedRecently(maxAgeMs = HOST_FACTS_MAX_AGE_MS, now: Now = monotonic): (key: string, check: () => void) => void {
  const passed = new Map<string, number>();
  return (key, check) => {
    const t = now();
    const at = passed.get(key);
    if (at !== undefined && t - at < maxAgeMs) return;
    passed.delete(key);
    check();
    // Keys are interface names and modes: few. Dropping expired ones keeps it so.
    if (passed.size >= 1024) for (const [k, a] of passed) if (t - a >= maxAgeMs) passed.delete(k);
    passed.set(key, t);
  };
}
