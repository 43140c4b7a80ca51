// Passes ava's TAP through and ends with the one line CI reads:
// "N passed, N failed, N skipped". Exits non-zero on any failure or when
// ava did not finish (no plan line), so a crashed run is never green.
// Under CI (root, by the project's rule) a skipped or todo test fails the
// run too: the only skips are privileged tests, and in CI one that did not
// run proved nothing.
import { createInterface } from 'node:readline';
import { writeFileSync } from 'node:fs';

const out = process.argv[2];
const ci = Boolean(process.env.CI);
let pass = 0, fail = 0, skip = 0, todo = 0, sawPlan = false;
const skipped = [];
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  process.stdout.write(line + '\n');
  let m;
  if ((m = /^# pass (\d+)/.exec(line))) pass = +m[1];
  else if ((m = /^# fail (\d+)/.exec(line))) fail = +m[1];
  else if ((m = /^# skip (\d+)/.exec(line))) skip = +m[1];
  else if ((m = /^# todo (\d+)/.exec(line))) todo = +m[1];
  else if (/^1\.\.\d+/.test(line)) sawPlan = true;
  else if ((m = /^(?:not )?ok \d+ - (.*) # (SKIP|TODO)\b/.exec(line))) skipped.push(m[1]);
});
rl.on('close', () => {
  if (!sawPlan) fail += 1;
  if (ci && skip + todo > 0) {
    process.stdout.write(`CI: ${skip + todo} test(s) did not run, which fails the run:\n${skipped.map((s) => `  - ${s}\n`).join('')}`);
    fail += skip + todo;
  }
  const summary = `${pass} passed, ${fail} failed, ${skip + todo} skipped`;
  if (out) writeFileSync(out, summary + '\n');
  process.stdout.write(summary + '\n');
  process.exitCode = fail > 0 ? 1 : 0;
});
