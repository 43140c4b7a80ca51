/**
 * Facts about the host (its addresses, its interfaces' state) read once per
 * turn of the event loop instead of once per request. A burst of requests
 * (a client pipelining job creations on several connections) is handled
 * within one turn; reading sysfs and getifaddrs(3) for each of them cost
 * ~2 ms per job creation, most of its time. A value is dropped when the turn
 * ends (setImmediate), so the next request after any I/O reads afresh:
 * nothing can be older than the turn that is handling the request.
 */
export function perTurn<T>(read: () => T): () => T {
  let have = false;
  let value: T | undefined;
  return () => {
    if (!have) {
      value = read();
      have = true;
      setImmediate(() => {
        have = false;
        value = undefined;
      });
    }
    return value as T;
  };
}

/**
 * Remembers, for the rest of the turn, which keys passed a check that
 * throws on failure. Failures are not remembered: each is checked (and
 * reported) again.
 */
export function passedThisTurn(): (key: string, check: () => void) => void {
  let passed: Set<string> | null = null;
  return (key, check) => {
    if (passed?.has(key)) return;
    check();
    if (!passed) {
      passed = new Set();
      setImmediate(() => (passed = null));
    }
    passed.add(key);
  };
}
