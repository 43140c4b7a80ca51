/**
 * src/dataplane/flow-sweep.ts on flow memory entries built by hand: which
 * connections are swept, the RST pair's exact values from the most recent
 * segment, the probes' out-of-window seq and SND.NXT ack, checksums (ours
 * and tshark's), and l2 frames with the remembered MACs and tags.
 */
import test from 'ava';
import { FM_FIN_A, FM_FIN_B, FM_RST, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, type FlowDir, type FlowEntry } from '../src/bpf/contract.js';
import { planSweep } from '../src/dataplane/flow-sweep.js';
import { ipv4HeaderChecksum, tcpChecksumV4, tcpChecksumV6 } from '../src/packet/checksum.js';
import { LINKTYPE_RAW, hasTshark, tsharkDecode } from '../testkit/tshark.js';

const A4 = Uint8Array.of(192, 0, 2, 10);
const B4 = Uint8Array.of(198, 51, 100, 20);
const A6 = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 0x10]);
const B6 = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 1, ...Array(9).fill(0), 0x20]);
const MAC_A = Uint8Array.of(2, 0, 0, 0, 0, 0xa);
const MAC_B = Uint8Array.of(2, 0, 0, 0, 0, 0xb);
const OUR_MAC = Uint8Array.of(2, 0, 0, 0, 0, 0xee);

function dir(o: Partial<FlowDir> & { seq: number; ack: number; lastNs: bigint }): FlowDir {
  return { payloadLen: 0, flowLabel: 0, vlans: [], smac: MAC_A, dmac: MAC_B, tcpFlags: TCP_ACK, ttl: 64, tos: 0, encap: 0, encapFlags: 0, ...o };
}

function entry(v6: boolean, a: FlowDir | null, b: FlowDir | null, state = 0): FlowEntry {
  return {
    key: { ifindex: 3, family: v6 ? 6 : 4, addrA: v6 ? A6 : A4, portA: 40000, addrB: v6 ? B6 : B4, portB: 22 },
    dirs: [a, b], firstNs: 1n, state,
  };
}

interface Tcp { src: string; dst: string; sport: number; dport: number; seq: number; ack: number; flags: number; ttl: number; sumOk: boolean }

function parse(p: Uint8Array): Tcp {
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const v4 = p[0] >> 4 === 4;
  const t = v4 ? 20 : 40;
  const src = v4 ? p.subarray(12, 16) : p.subarray(8, 24);
  const dst = v4 ? p.subarray(16, 20) : p.subarray(24, 40);
  const sum = v4 ? tcpChecksumV4(src, dst, p, t) : tcpChecksumV6(src, dst, p, t);
  return {
    src: [...src].join('.'), dst: [...dst].join('.'), sport: dv.getUint16(t), dport: dv.getUint16(t + 2),
    seq: dv.getUint32(t + 4), ack: dv.getUint32(t + 8), flags: p[t + 13], ttl: v4 ? p[8] : p[7],
    sumOk: sum === dv.getUint16(t + 16) && (!v4 || ipv4HeaderChecksum(p) === dv.getUint16(10)),
  };
}

const s = (a: Uint8Array): string => [...a].join('.');

test('from the most recent segment: the exact RST pair, then a probe to each end (seq 2^30 behind its RCV.NXT, ack its SND.NXT + 1), TTLs as last seen from each end', (t) => {
  // A sent 100 bytes at seq 1000 (acking 5000); B's later ACK acks them: B's is the most recent.
  const e = entry(false, dir({ seq: 1000, ack: 5000, payloadLen: 100, lastNs: 10n, ttl: 61, tcpFlags: TCP_ACK | TCP_PSH }), dir({ seq: 5000, ack: 1100, lastNs: 20n, ttl: 57, smac: MAC_B, dmac: MAC_A }));
  const plan = planSweep([e], null);
  t.is(plan.flows, 1);
  const got = plan.packets.map((p) => ({ kind: p.kind, to: p.to, ...parse(p.packet) }));
  // B's segment B->A: seq 5000, ack 1100. RST to B (spoofed from A): seq = B's RCV.NXT = 1100; RST to A: seq = A's RCV.NXT = 5000.
  const rstToA = got.find((p) => p.kind === 'rst' && p.to === 'a')!;
  const rstToB = got.find((p) => p.kind === 'rst' && p.to === 'b')!;
  t.like(rstToA, { src: s(B4), dst: s(A4), sport: 22, dport: 40000, seq: 5000, ack: 1100, flags: TCP_RST | TCP_ACK, ttl: 57, sumOk: true });
  t.like(rstToB, { src: s(A4), dst: s(B4), sport: 40000, dport: 22, seq: 1100, ack: 5000, flags: TCP_RST | TCP_ACK, ttl: 61, sumOk: true });
  const probeToA = got.find((p) => p.kind === 'probe' && p.to === 'a')!;
  const probeToB = got.find((p) => p.kind === 'probe' && p.to === 'b')!;
  // A: RCV.NXT 5000, SND.NXT 1100. B: RCV.NXT 1100, SND.NXT 5000.
  t.like(probeToA, { src: s(B4), dst: s(A4), seq: (5000 - 0x40000000) >>> 0, ack: 1101, flags: TCP_ACK, ttl: 57, sumOk: true });
  t.like(probeToB, { src: s(A4), dst: s(B4), seq: (1100 - 0x40000000) >>> 0, ack: 5001, flags: TCP_ACK, ttl: 61, sumOk: true });
  t.deepEqual(got.map((p) => p.kind), ['rst', 'rst', 'probe', 'probe'], 'the RSTs go first');
  // A dead end answers a probe with seq = its ack (SND.NXT + 1), not our RST's SND.NXT.
  t.deepEqual(plan.probes, [{ entry: 0, answerSeq: [1101, 5001] }]);
});

test('IPv6 and sequence wrap-around: values mod 2^32, checksums good', (t) => {
  const e = entry(true, dir({ seq: 0xfffffff0, ack: 7, payloadLen: 32, lastNs: 30n, ttl: 50 }), null);
  const plan = planSweep([e], null);
  const got = plan.packets.map((p) => ({ kind: p.kind, to: p.to, ...parse(p.packet) }));
  t.like(got.find((p) => p.kind === 'rst' && p.to === 'b')!, { seq: 16, ack: 7, sumOk: true, ttl: 50 });
  t.like(got.find((p) => p.kind === 'rst' && p.to === 'a')!, { seq: 7, ack: 16, sumOk: true, ttl: 64 }, 'B never seen: default TTL');
  t.like(got.find((p) => p.kind === 'probe' && p.to === 'b')!, { seq: (16 - 0x40000000) >>> 0, ack: 8, sumOk: true });
  t.like(got.find((p) => p.kind === 'probe' && p.to === 'a')!, { seq: (7 - 0x40000000) >>> 0, ack: 17, sumOk: true });
});

test('closed connections (RST, FIN both ways) are not swept; half-closed ones are; a lone SYN gets its RST and no probe', (t) => {
  const d = dir({ seq: 1, ack: 2, lastNs: 1n });
  t.is(planSweep([entry(false, d, d, FM_RST)], null).flows, 0);
  t.is(planSweep([entry(false, d, d, FM_FIN_A | FM_FIN_B)], null).flows, 0);
  t.is(planSweep([entry(false, d, d, FM_FIN_A)], null).flows, 1);
  const syn = planSweep([entry(false, dir({ seq: 99, ack: 0, lastNs: 1n, tcpFlags: TCP_SYN }), null)], null);
  t.is(syn.flows, 1);
  t.deepEqual(syn.packets.map((p) => [p.kind, p.to, parse(p.packet).seq, parse(p.packet).ack]), [['rst', 'a', 0, 100]]);
  t.deepEqual(planSweep([], null), { flows: 0, packets: [], probes: [] });
});

test('l2: each frame goes to the MAC its end was seen with, from ours, with the remembered tags', (t) => {
  const vlans = [{ tpid: 0x8100, tci: 100 }];
  const e = entry(false, dir({ seq: 1, ack: 2, lastNs: 5n, vlans, smac: MAC_A, dmac: MAC_B }), null);
  const plan = planSweep([e], OUR_MAC);
  t.is(plan.packets.length, 4);
  for (const p of plan.packets) {
    const f = p.frame!;
    t.deepEqual([...f.subarray(0, 6)], [...(p.to === 'a' ? MAC_A : MAC_B)], `${p.kind} to ${p.to}: destination MAC`);
    t.deepEqual([...f.subarray(6, 12)], [...OUR_MAC]);
    t.deepEqual([...f.subarray(12, 16)], [0x81, 0x00, 0, 100]);
    t.deepEqual([...f.subarray(18)], [...p.packet]);
  }
});

test('tshark decodes the probes as plain ACKs with good checksums (v4 and v6)', (t) => {
  if (!hasTshark()) return void t.fail('tshark is missing: `make` installs it');
  const probes = [
    ...planSweep([entry(false, dir({ seq: 1000, ack: 5000, lastNs: 1n }), null)], null).packets,
    ...planSweep([entry(true, dir({ seq: 1000, ack: 5000, lastNs: 1n }), null)], null).packets,
  ].filter((p) => p.kind === 'probe');
  t.is(probes.length, 4);
  const decoded = tsharkDecode(probes.map((p) => p.packet), LINKTYPE_RAW);
  for (const d of decoded) {
    t.is(String(d['tcp.flags']), '0x0010');
    t.is(String(d['tcp.checksum.status']), '1');
  }
});
