/**
 * src/dataplane/delivery-faults.ts on its own (no kernel): each job's
 * delivery fault names the reason found for its destination (event path)
 * or its interface (sweep), its refused RSTs are counted, and an interface
 * going down or coming back voids what was found about it, in the event
 * threads too. The grouping of the destinations and their log lines is
 * undeliverable.test.ts's; the route check itself delivery.test.ts's; the
 * path through the real daemon e2e/routed.test.ts's.
 */
import test from 'ava';
import { parseIp } from '../src/core/addr.js';
import type { LogSink } from '../src/core/model.js';
import { HIT, HIT_BYTES } from '../src/dataplane/event-wire.js';
import type { Slot } from '../src/dataplane/slots.js';
import { Target } from '../src/dataplane/targets.js';
import { DeliveryFaults } from '../src/dataplane/delivery-faults.js';

function recorder(): { log: LogSink; lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = [];
  const at = (level: string) => (_o: object, msg: string): void => { lines.push({ level, msg }); };
  return { log: { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') }, lines };
}

function target(id: number, resetIf: string): Target {
  const slot = { id, sniffIf: 'sniff0', key: '', targets: [], expiresAt: 0 } as Slot<Target>;
  return new Target(id, 'sniff0', resetIf, '192.0.2.7', 0, 'l3', 4, Date.now() + 60_000, `t${id}`, slot, `${resetIf}/l3`);
}

/** One HIT record with `refused` of its RSTs undeliverable, from `src` to `dst` (IPv4). */
function hit(src: string, dst: string, refused: number): Uint8Array {
  const b = new Uint8Array(HIT_BYTES);
  b[HIT.family] = 4;
  b[HIT.rsts] = 2;
  b[HIT.undeliverable] = refused;
  b.set(parseIp(src).bytes, HIT.saddr);
  b.set(parseIp(dst).bytes, HIT.daddr);
  return b;
}

test('verdicts reach the grouped destinations: one status fault per interface, deliverable again clears it', (t) => {
  const u = new DeliveryFaults(recorder().log, () => {});
  u.onVerdict('reset0', '198.51.100.1', 'no route from reset0 to 198.51.100.1');
  u.onVerdict('reset1', '203.0.113.9', 'no neighbour for 203.0.113.9 on reset1');
  t.deepEqual(u.faults().map((f) => [f.ifname, f.role, f.kind, f.fault]), [
    ['reset0', 'reset', 'undeliverable', 'no route from reset0 to 198.51.100.1'],
    ['reset1', 'reset', 'undeliverable', 'no neighbour for 203.0.113.9 on reset1'],
  ]);
  u.onVerdict('reset1', '203.0.113.9', null);
  t.deepEqual(u.faults().map((f) => f.ifname), ['reset0']);
  u.close();
});

test('event path: a job\'s fault is the reason for the hit\'s own destination, its refused RSTs are counted, and a hit whose RSTs all went clears it', (t) => {
  const u = new DeliveryFaults(recorder().log, () => {});
  u.onVerdict('reset0', '198.51.100.1', 'reason for .1');
  u.onVerdict('reset0', '198.51.100.2', 'reason for .2');
  const tg = target(1, 'reset0');
  u.noteHit(tg, 1, hit('192.0.2.7', '198.51.100.2', 1), 0);
  t.is(tg.deliveryFault, 'reason for .2');
  t.is(tg.counters().undeliverable, 1);
  // Either end of the hit may be the one refused (the RST to the source goes there).
  u.noteHit(tg, 2, hit('198.51.100.1', '192.0.2.7', 2), 0);
  t.is(tg.deliveryFault, 'reason for .1');
  t.is(tg.counters().undeliverable, 3);
  u.noteHit(tg, 0, hit('192.0.2.7', '198.51.100.1', 0), 0);
  t.is(tg.deliveryFault, undefined);
  t.is(tg.counters().undeliverable, 3);
});

test('sweep: refused RSTs of many destinations take the interface\'s first reason; with none known, a generic one naming the interface', (t) => {
  const u = new DeliveryFaults(recorder().log, () => {});
  const a = target(1, 'reset0');
  const b = target(2, 'reset1');
  u.onVerdict('reset0', '198.51.100.1', 'reason on reset0');
  u.noteRefused(a, 4);
  u.noteRefused(b, 2);
  t.is(a.deliveryFault, 'reason on reset0');
  t.is(b.deliveryFault, 'RSTs undeliverable from reset1');
  t.deepEqual([a.counters().undeliverable, b.counters().undeliverable], [4, 2]);
});

test('an interface going down, away or back voids what was found about it: its verdicts, its jobs\' faults and the event threads\' verdicts; other interfaces keep theirs', (t) => {
  const told: string[] = [];
  const u = new DeliveryFaults(recorder().log, (ifname) => told.push(ifname));
  u.onVerdict('reset0', '198.51.100.1', 'reason on reset0');
  u.onVerdict('reset1', '198.51.100.1', 'reason on reset1');
  const a = target(1, 'reset0');
  const b = target(2, 'reset1');
  u.noteRefused(a, 1);
  u.noteRefused(b, 1);
  u.forget('reset0', [a, b]);
  t.deepEqual(told, ['reset0']);
  t.is(a.deliveryFault, undefined);
  t.is(b.deliveryFault, 'reason on reset1');
  t.deepEqual(u.faults().map((f) => f.ifname), ['reset1']);
});
