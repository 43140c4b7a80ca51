/**
 * The root rule of the suite: privileged tests (test/helpers/privileged.ts)
 * run as root, are listed as skipped for a user who is not root (serial ones
 * too, with no crash at load), and under CI a test that did not run fails
 * the run (test/tap-summary.mjs).
 */
import test from 'ava';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_ROOT } from '../testkit/daemon.js';
import { ptest } from './helpers/privileged.js';

const SUMMARY = join(REPO_ROOT, 'test/tap-summary.mjs');

function summarize(tap: string, ci: boolean): { code: number | null; last: string; out: string } {
  const env = { ...process.env };
  delete env.CI;
  if (ci) env.CI = 'true';
  const r = spawnSync(process.execPath, [SUMMARY], { input: tap, encoding: 'utf8', env });
  return { code: r.status, last: r.stdout.trim().split('\n').at(-1) ?? '', out: r.stdout };
}

const TAP_WITH_SKIP = 'TAP version 13\nok 1 - lab › a privileged one # SKIP\nok 2 - plain\n\n1..2\n# tests 2\n# pass 1\n# skip 1\n# fail 0\n';
const TAP_ALL_RAN = 'TAP version 13\nok 1 - lab › a privileged one\nok 2 - plain\n\n1..2\n# tests 2\n# pass 2\n# fail 0\n';

test('summary: under CI a skipped test fails the run and is named; outside CI it is only counted', (t) => {
  const ci = summarize(TAP_WITH_SKIP, true);
  t.is(ci.code, 1);
  t.is(ci.last, '1 passed, 1 failed, 1 skipped');
  t.regex(ci.out, /^CI: 1 test\(s\) did not run, which fails the run:\n {2}- lab › a privileged one$/m);
  const dev = summarize(TAP_WITH_SKIP, false);
  t.is(dev.code, 0);
  t.is(dev.last, '1 passed, 0 failed, 1 skipped');
  // The control: under CI a run where everything ran is green.
  const all = summarize(TAP_ALL_RAN, true);
  t.is(all.code, 0);
  t.is(all.last, '2 passed, 0 failed, 0 skipped');
  // And a run that never finished (no plan line) is not.
  t.is(summarize('TAP version 13\nok 1 - plain\n', false).code, 1);
});

ptest('as a user who is not root, privileged tests are listed as skipped, serial ones too, and nothing crashes', async (t) => {
  // ava, the helper and a fixture in a world-readable directory, run by ava as nobody.
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-nonroot-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'), { recursive: true });
  cpSync(fileURLToPath(new URL('./helpers/privileged.js', import.meta.url)), join(dir, 'privileged.js'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', ava: { files: ['fixture.test.js'], cache: false } }));
  writeFileSync(
    join(dir, 'fixture.test.js'),
    [
      "import test from 'ava';",
      "import { ptest } from './privileged.js';",
      "ptest('privileged', (t) => t.pass());",
      "ptest.serial('privileged serial', (t) => t.pass());",
      "test('plain', (t) => t.pass());",
    ].join('\n'),
  );
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir };
  const ava = (uid: number): Promise<{ status: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, ['node_modules/ava/entrypoints/cli.mjs', '--tap'], { cwd: dir, env, uid, gid: uid, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });
  const [nobody, root] = await Promise.all([ava(65534), ava(0)]);
  const out = nobody.stdout;
  t.is(nobody.status, 0, `${out}\n${nobody.stderr}`);
  t.regex(out, /^ok \d+ - privileged # SKIP$/m);
  t.regex(out, /^ok \d+ - privileged serial # SKIP$/m);
  t.regex(out, /^ok \d+ - plain$/m);
  t.regex(out, /^# skip 2$/m);
  // The control: as root the same file runs all three.
  t.is(root.status, 0, root.stderr);
  t.regex(root.stdout, /^# pass 3$/m);
  t.notRegex(root.stdout, /# SKIP/);
});
