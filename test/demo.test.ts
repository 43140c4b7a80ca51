/**
 * `make demo`, end to end, as root: it must exit 0, show every step, see
 * both ends of each session reset with ECONNRESET, and leave no namespace
 * behind. Beside the demo's own tick marks, the daemon's account in the
 * transcript (the `tcpreset list` the demo runs) must agree: the job
 * charged with both sessions and the new connection, RSTs sent, and gone
 * after its end.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ptest } from './helpers/privileged.js';
import { labPrefix, listNetns } from '../testkit/lab/netns.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

ptest('make demo: every step happens, exit status 0, nothing left behind', async (t) => {
  t.timeout(110_000);
  let pid = 0;
  const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, [`${ROOT}dist/testkit/demo/demo.js`], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    pid = child.pid ?? 0;
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.once('close', (c) => resolve({ code: c, out }));
  });
  t.is(code, 0, out);
  for (const step of [
    'job created',
    'interactive session, client end reset',
    'interactive session, server end reset',
    'download, client end reset',
    'download, server end reset',
    'new connection reset before any data',
    'job expired',
    'new connection succeeds',
    'the bystander session was never touched',
    'everything the demo created is removed',
  ]) {
    t.regex(out, new RegExp(`✓ ${step}`), step);
  }
  // A reset is the endpoint's own kernel saying ECONNRESET, not any socket error.
  for (const end of ['interactive session, client end', 'interactive session, server end', 'download, client end', 'download, server end']) {
    t.regex(out, new RegExp(`✓ ${end} reset .*\\(ECONNRESET\\)`), end);
  }
  t.notRegex(out, /✗/);
  t.regex(out, /✓ new connection reset before any data .*the server read 0 bytes \(ECONNRESET\)/);
  // The daemon's own counters, not the demo's judgement: the first `tcpreset list` (during the job).
  // (KNOWN and VERIFIED follow FLOWS when the job's creation swept remembered sessions.)
  const row = /\$ tcpreset list\n\s+ID\s+ENGID\s[^\n]*\bFLOWS\b[^\n]*\n\s+[0-9a-f]{12}\s+ids-sig-2024\s+\S+\s+any\s+sniff0\s+reset0\s+l3\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)\b/.exec(out);
  t.truthy(row, `the list during the job shows it:\n${out}`);
  const [matched, rsts, flows] = row!.slice(1).map(Number);
  t.true(flows! >= 3, `the daemon reset the interactive session, the download and the new connection: ${flows} flows`);
  t.true(rsts! >= 2 * flows! && matched! >= flows!, `RSTs to both ends of each: matched ${matched}, RSTs ${rsts}, flows ${flows}`);
  t.regex(out, /\$ tcpreset list\n\s+no jobs\n/, 'and none listed after its end');
  t.regex(out, /\$ tcpreset ids-sig-2024 -i sniff0 -o reset0 -h \S+ -d 8/);
  // The demo's namespaces are named after its pid (testkit/lab/netns.ts).
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(`${labPrefix()}${pid}-`)), []);
});
