/**
 * src/dataplane/mptcp.ts: the token of a key (RFC 8684 §3.2), checked
 * against coreutils' sha256sum, and how MptcpDirectory ties subflows to
 * their connection from flow memory entries (MP_CAPABLE keys, MP_JOIN
 * tokens), with an unrelated connection as the control.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { MP_CAPABLE, MP_JOIN, MP_KEY0, MP_KEY1, MP_SEEN, MP_TOKEN0, MP_TOKEN1, TCP_ACK, type FlowEntry } from '../src/bpf/contract.js';
import { HIT_MP_FASTCLOSE, HIT_MP_NONE, HIT_MP_NO_KEYS, MptcpDirectory, hitMptcp, mptcpToken } from '../src/dataplane/mptcp.js';

function sha256Token(key: bigint): number {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(key);
  const hex = execFileSync('sha256sum', { input: b, encoding: 'utf8' }).slice(0, 8);
  return parseInt(hex, 16);
}

test('mptcpToken: upper 32 bits of SHA-256 over the key in network order (sha256sum agrees)', (t) => {
  for (const k of [0n, 1n, 0x0102030405060708n, 0xffffffffffffffffn, 0xc06457e439e414f2n]) t.is(mptcpToken(k), sha256Token(k), k.toString(16));
});

test('hitMptcp: not MPTCP, MP_FASTCLOSE possible (a key known), keys not seen', (t) => {
  t.is(hitMptcp(0), HIT_MP_NONE);
  t.is(hitMptcp(MP_SEEN), HIT_MP_NO_KEYS);
  t.is(hitMptcp(MP_SEEN | MP_JOIN | MP_TOKEN1), HIT_MP_NO_KEYS);
  t.is(hitMptcp(MP_SEEN | MP_CAPABLE | MP_KEY1), HIT_MP_FASTCLOSE);
});

function entry(portA: number, mp: FlowEntry['mp']): FlowEntry {
  const dir = { lastNs: 1n, seq: 1, ack: 1, payloadLen: 0, flowLabel: 0, vlans: [], smac: new Uint8Array(6), dmac: new Uint8Array(6), tcpFlags: TCP_ACK, ttl: 64, tos: 0, encap: 0, encapFlags: 0 };
  return { key: { ifindex: 1, family: 4, addrA: Uint8Array.of(10, 0, 0, 1), portA, addrB: Uint8Array.of(10, 0, 0, 2), portB: 80 }, dirs: [dir, dir], firstNs: 1n, state: 0, mp };
}

test('MptcpDirectory: a join is tied by token to its MP_CAPABLE subflow from either side and gets both keys; another connection is not', (t) => {
  const kc = 0x1111111111111111n; // client (A)
  const ks = 0x2222222222222222n; // server (B)
  const first = entry(1000, { flags: MP_SEEN | MP_CAPABLE | MP_KEY0 | MP_KEY1, keys: [kc, ks], token: 0 });
  // The client joins the server: the SYN names the server's (B's) token.
  const join = entry(1001, { flags: MP_SEEN | MP_JOIN | MP_TOKEN1, keys: [0n, 0n], token: mptcpToken(ks) });
  const other = entry(2000, { flags: MP_SEEN | MP_CAPABLE | MP_KEY0 | MP_KEY1, keys: [0x33n, 0x44n], token: 0 });
  const otherJoin = entry(2001, { flags: MP_SEEN | MP_JOIN | MP_TOKEN1, keys: [0n, 0n], token: mptcpToken(0x44n) });
  const all = [first, join, other, otherJoin];
  const d = new MptcpDirectory();
  for (const from of [first, join]) {
    const c = d.connection(from, all);
    t.truthy(c);
    t.deepEqual(c!.subflows.map((e) => e.key.portA), [1000, 1001], 'the two subflows of the connection, not the other one');
    const j = c!.subflows[1]!;
    t.deepEqual(j.mp!.keys, [kc, ks], 'the join has the keys of its ends: the token owner (B) the server\'s');
    t.is(j.mp!.flags & (MP_KEY0 | MP_KEY1), MP_KEY0 | MP_KEY1);
  }
  // Keys never seen: a join whose token matches nothing, a subflow with no MP_CAPABLE keys.
  t.is(d.connection(entry(3001, { flags: MP_SEEN | MP_JOIN | MP_TOKEN0, keys: [0n, 0n], token: 12345 }), all), null);
  t.is(d.connection(entry(3002, { flags: MP_SEEN, keys: [0n, 0n], token: 0 }), all), null);
});
