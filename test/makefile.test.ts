/**
 * The Makefile's promises about what each target may do to the machine:
 * the default `make` builds and installs nothing system-wide (no apt-get);
 * `make deps`, and the targets the README starts with (`make demo`,
 * `make test`), install the Debian packages that are missing first.
 * Checked on make's own plan (`make -n -B`: every recipe printed, none run).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { REPO_ROOT } from '../testkit/daemon.js';

function plan(...targets: string[]): string {
  return execFileSync('make', ['-n', '-B', ...targets], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

test('the default make runs no apt-get; deps, test and demo do', (t) => {
  const byDefault = plan();
  t.regex(byDefault, /npx tsc -p tsconfig\.json/, 'the default goal builds');
  t.notRegex(byDefault, /apt-get/);
  t.notRegex(plan('build'), /apt-get/);
  for (const target of ['deps', 'test', 'demo']) t.regex(plan(target), /apt-get install/, `make ${target}`);
});
