// Passes ava's TAP through and ends with the one line CI reads:
// "N passed, N failed, N skipped". Exits non-zero on any failure or when
// ava did not finish (no plan line), so a crashed run is never green.
import { createInterface } from 'node:readline';
import { writeFileSync } from 'node:fs';

const out = process.argv[2];
let pass = 0, fail = 0, skip = 0, todo = 0, sawPlan = false;
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  process.stdout.write(line + '\n');
  let m;
  if ((m = /^# pass (\d+)/.exec(line))) pass = +m[1];
  else if ((m = /^# fail (\d+)/.exec(line))) fail = +m[1];
  else if ((m = /^# skip (\d+)/.exec(line))) skip = +m[1];
  else if ((m = /^# todo (\d+)/.exec(line))) todo = +m[1];
  else if (/^1\.\.\d+/.test(line)) sawPlan = true;
});
rl.on('close', () => {
  if (!sawPlan) fail += 1;
  const summary = `${pass} passed, ${fail} failed, ${skip + todo} skipped`;
  if (out) writeFileSync(out, summary + '\n');
  process.stdout.write(summary + '\n');
  process.exitCode = fail > 0 ? 1 : 0;
});
