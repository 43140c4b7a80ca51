import test from 'ava';

export const isRoot = process.getuid?.() === 0;

/**
 * Register a test that needs root (BPF, netns, raw sockets). As root, or in
 * CI (CI is root; lacking it there must fail, not skip), it runs; elsewhere
 * it is registered as skipped so a developer without root sees it listed.
 */
export const ptest: typeof test = isRoot || process.env.CI ? test : (test.skip as unknown as typeof test);
