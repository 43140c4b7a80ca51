/**
 * src/dataplane/mptcp-resets.ts on its own (no kernel): which flow memory
 * entry a hit names (hitSubflow, either direction of its 4-tuple and no
 * other), and the MPTCP_NO_KEYS bookkeeping: a subflow reset without keys
 * counts on its job, makes one status fault per sniff interface, and the
 * fault goes once no job there carries it. Resetting the other subflows
 * with MP_FASTCLOSE needs real sockets: e2e/mptcp.test.ts.
 */
import test from 'ava';
import type { FlowEntry } from '../src/bpf/contract.js';
import { parseIp } from '../src/core/addr.js';
import type { LogSink } from '../src/core/model.js';
import type { DeliveryFaults } from '../src/dataplane/delivery-faults.js';
import { HIT, HIT_BYTES } from '../src/dataplane/event-wire.js';
import type { FlowMemoryView } from '../src/dataplane/flow-memory.js';
import { HIT_MP_FASTCLOSE, HIT_MP_NO_KEYS, MPTCP_FASTCLOSE_SENT, MPTCP_NO_KEYS } from '../src/dataplane/mptcp.js';
import { MptcpResets, hitSubflow } from '../src/dataplane/mptcp-resets.js';
import type { ResetSenders } from '../src/dataplane/senders.js';
import type { Slot } from '../src/dataplane/slots.js';
import { Target } from '../src/dataplane/targets.js';

const quiet: LogSink = { info() {}, warn() {}, error() {}, debug() {} };

function hit(src: string, sport: number, dst: string, dport: number): Uint8Array {
  const b = new Uint8Array(HIT_BYTES);
  const dv = new DataView(b.buffer);
  b[HIT.family] = 4;
  dv.setUint16(HIT.sport, sport, true);
  dv.setUint16(HIT.dport, dport, true);
  b.set(parseIp(src).bytes, HIT.saddr);
  b.set(parseIp(dst).bytes, HIT.daddr);
  return b;
}

function entry(a: string, pa: number, b: string, pb: number): FlowEntry {
  return { key: { ifindex: 3, family: 4, addrA: parseIp(a).bytes, portA: pa, addrB: parseIp(b).bytes, portB: pb }, dirs: [null, null], firstNs: 0n, state: 0 };
}

function target(id: number, sniffIf: string): Target {
  const slot = { id, sniffIf, key: '', targets: [], expiresAt: 0 } as Slot<Target>;
  return new Target(id, sniffIf, 'reset0', '192.0.2.7', 0, 'l3', 4, Date.now() + 60_000, `t${id}`, slot, 'reset0/l3');
}

/** No MPTCP subflow remembered, no sockets: only the bookkeeping runs. */
function resets(): MptcpResets {
  return new MptcpResets({
    flowMemory: { mptcpSubflows: () => [] } as unknown as FlowMemoryView,
    senders: { get: () => undefined } as unknown as ResetSenders,
    undeliverable: {} as DeliveryFaults,
    log: quiet,
  });
}

test('hitSubflow: the entry of the hit\'s 4-tuple in either key order, not one that differs by a port or an address', (t) => {
  const is = hitSubflow(hit('192.0.2.7', 443, '198.51.100.1', 50000), 0, 4);
  t.true(is(entry('192.0.2.7', 443, '198.51.100.1', 50000)));
  t.true(is(entry('198.51.100.1', 50000, '192.0.2.7', 443)));
  t.false(is(entry('192.0.2.7', 443, '198.51.100.1', 50001)));
  t.false(is(entry('192.0.2.7', 50000, '198.51.100.1', 443)), 'ports swapped between the addresses');
  t.false(is(entry('192.0.2.8', 443, '198.51.100.1', 50000)));
});

test('a subflow reset without keys: its note, counted on its job, one fault per sniff interface while a job there has it', (t) => {
  const m = resets();
  const a = target(1, 'sniff0');
  const b = target(2, 'sniff0');
  const c = target(3, 'sniff1');
  t.deepEqual(m.connection(a, HIT_MP_NO_KEYS, () => false), { mptcp: MPTCP_NO_KEYS });
  t.deepEqual(m.connection(b, HIT_MP_NO_KEYS, () => false), { mptcp: MPTCP_NO_KEYS });
  t.deepEqual(m.connection(c, HIT_MP_FASTCLOSE, () => false), { mptcp: MPTCP_FASTCLOSE_SENT }, 'with keys: a note, no fault');
  t.deepEqual([a.counters().mptcpNoKeys, b.counters().mptcpNoKeys, c.counters().mptcpNoKeys], [1, 1, undefined]);
  t.is(a.mptcpFault, MPTCP_NO_KEYS);
  const faults = m.faults([a, b, c]);
  t.deepEqual(faults.map((f) => [f.ifname, f.role, f.kind, f.fault]), [
    ['sniff0', 'sniff', 'mptcp', `${MPTCP_NO_KEYS}: 2 MPTCP subflows reset without the connection's keys`],
  ]);
  // The jobs that had it ended: the fault goes, and stays gone.
  t.deepEqual(m.faults([c]), []);
  t.deepEqual(m.faults([a, b, c]), []);
});
