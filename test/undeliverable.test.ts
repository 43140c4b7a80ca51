/**
 * Undeliverable destinations grouped per reset interface
 * (src/dataplane/undeliverable.ts): the first of an episode is warned at
 * once with its own reason, the rest in one counted summary; each keeps
 * its exact reason for its jobs; status shows one fault per interface.
 */
import test from 'ava';
import { UndeliverableDestinations, SUMMARY_MS } from '../src/dataplane/undeliverable.js';
import { memLog } from './helpers/job-fixtures.js';
import { sleep } from '../testkit/time.js';
import { noL2Reason } from '../src/dataplane/delivery.js';

const noRoute = (ifname: string, dst: string): string => `no route from ${ifname} to ${dst}: add a route through your gateway on ${ifname}, or use --l2`;
const gateway = (ifname: string, dst: string): string => `gateway 10.79.1.25 on ${ifname} does not answer address resolution: RSTs to ${dst} are dropped; check the route, or use --l2`;

test('one destination: one warning with its reason, its fault, and the recovery line (the form of one warning per destination)', (t) => {
  const log = memLog();
  const u = new UndeliverableDestinations(log);
  u.verdict('r0', '10.9.9.9', noRoute('r0', '10.9.9.9'), 1000);
  t.deepEqual(log.lines, [{ level: 'warn', obj: { ifname: 'r0', dst: '10.9.9.9', reason: noRoute('r0', '10.9.9.9') }, msg: noRoute('r0', '10.9.9.9') }]);
  t.is(u.reasonFor('r0', '10.9.9.9'), noRoute('r0', '10.9.9.9'));
  t.is(u.reasonFor('r0', '10.9.9.8'), undefined, 'control: another destination has no reason');
  t.is(u.reasonFor('r1', '10.9.9.9'), undefined, 'control: nor the same one on another interface');
  // Re-confirmed with the same reason: no new line.
  u.verdict('r0', '10.9.9.9', noRoute('r0', '10.9.9.9'), 1500);
  t.is(log.lines.length, 1);
  t.deepEqual(u.faults(2000), [{ ifname: 'r0', role: 'reset', kind: 'undeliverable', since: 1000, mode: 'l3', fault: noRoute('r0', '10.9.9.9') }]);
  u.verdict('r0', '10.9.9.9', null, 7000);
  t.deepEqual(log.lines[1], { level: 'info', obj: { ifname: 'r0', dst: '10.9.9.9' }, msg: 'RSTs from r0 to 10.9.9.9 can be delivered again' });
  t.is(u.reasonFor('r0', '10.9.9.9'), undefined);
  t.deepEqual(u.faults(7000), []);
  u.close();
});

test('an l3 reason and an l2 one on one interface: one fault per mode, each on its own sender (status shows it on that row only)', (t) => {
  const u = new UndeliverableDestinations(memLog());
  u.verdict('r0', '10.9.9.9', noRoute('r0', '10.9.9.9'), 1000);
  u.verdict('r0', '10.9.9.7', noRoute('r0', '10.9.9.7'), 1000);
  u.verdict('r0', '10.9.9.8', noL2Reason('GRE', '10.9.9.8'), 1000);
  t.deepEqual(u.faults(2000).map((f) => [f.mode, f.fault]), [
    ['l3', `${noRoute('r0', '10.9.9.9')} (and 1 more undeliverable destinations)`],
    ['l2', noL2Reason('GRE', '10.9.9.8')],
  ]);
  u.close();
});

test('many destinations: the first warned at once, the rest in one summary with their count; each keeps its exact reason; one fault with the count', async (t) => {
  const log = memLog();
  const u = new UndeliverableDestinations(log);
  const dsts = Array.from({ length: 1000 }, (_, i) => `10.128.${i >> 8}.${i & 255}`);
  const now = Date.now();
  for (const d of dsts) u.verdict('r0', d, noRoute('r0', d), now);
  // The reason holds its address more than once and next to a longer one (10.79.1.2 inside 10.79.1.25): rebuilt exactly.
  u.verdict('r0', '10.79.1.2', gateway('r0', '10.79.1.2'), now);
  t.is(log.lines.length, 1, 'one line at once');
  t.is(log.lines[0].msg, noRoute('r0', dsts[0]));
  for (const d of dsts) if (u.reasonFor('r0', d) !== noRoute('r0', d)) t.fail(`reason of ${d}: ${u.reasonFor('r0', d)}`);
  t.is(u.reasonFor('r0', '10.79.1.2'), gateway('r0', '10.79.1.2'));
  t.is(u.firstReason('r0'), noRoute('r0', dsts[0]));
  t.is(u.count('r0'), 1001);
  const [f] = u.faults(now);
  t.is(f.fault, `${noRoute('r0', dsts[0])} (and 1000 more undeliverable destinations)`);
  await sleep(SUMMARY_MS + 300);
  t.is(log.lines.length, 2, 'the summary came by itself');
  t.deepEqual(log.lines[1], {
    level: 'warn',
    obj: { ifname: 'r0', dst: dsts[1], reason: noRoute('r0', dsts[1]), destinations: 1000 },
    msg: `RSTs from r0 cannot reach 1000 more destinations, first ${dsts[1]}: ${noRoute('r0', dsts[1])}`,
  });
  // A changed reason is news again (held for the next summary, written at close here).
  u.verdict('r0', dsts[5], gateway('r0', dsts[5]), Date.now());
  t.is(u.reasonFor('r0', dsts[5]), gateway('r0', dsts[5]));
  u.close();
  t.is(log.lines.length, 3);
  t.is(log.lines[2].msg, gateway('r0', dsts[5]), 'a summary of one is that destination\'s own warning');
});

test('forget voids an interface and writes what it held; unconfirmed destinations age out of the fault', (t) => {
  const log = memLog();
  const u = new UndeliverableDestinations(log);
  u.verdict('r0', '10.0.0.1', noRoute('r0', '10.0.0.1'), 1000);
  u.verdict('r0', '10.0.0.2', noRoute('r0', '10.0.0.2'), 1000);
  u.verdict('r1', '10.0.0.3', noRoute('r1', '10.0.0.3'), 1000);
  t.is(log.lines.length, 2, 'the first of each interface at once');
  u.forget('r0');
  t.is(log.lines.length, 3, 'the held one is written, not lost');
  t.is(log.lines[2].msg, noRoute('r0', '10.0.0.2'));
  t.is(u.reasonFor('r0', '10.0.0.1'), undefined);
  t.is(u.count('r1'), 1, 'control: the other interface is kept');
  t.deepEqual(u.faults(1000 + 60_001), [], 'not confirmed for a minute: gone');
  u.close();
});
