import test from 'ava';

export const isRoot = process.getuid?.() === 0;

/** ava's test.skip, with the `.serial` (and `.skip`) that `test.skip` itself lacks. */
function skipping(): typeof test {
  const skip = ((...args: unknown[]) => (test.skip as (...a: unknown[]) => void)(...args)) as unknown as typeof test;
  const serialSkip = ((...args: unknown[]) => (test.serial.skip as (...a: unknown[]) => void)(...args)) as unknown as typeof test.serial;
  Object.assign(serialSkip, { skip: test.serial.skip });
  Object.assign(skip, { serial: serialSkip, skip: test.skip });
  return skip;
}

/**
 * Register a test that needs root (BPF, netns, raw sockets). As root, or in
 * CI (CI is root; lacking it there must fail, not skip), it runs; elsewhere
 * it is registered as skipped so a developer without root sees it listed.
 * Only `ptest(...)` and `ptest.serial(...)` are meant to be used.
 */
export const ptest: typeof test = isRoot || process.env.CI ? test : skipping();
