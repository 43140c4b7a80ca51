/**
 * The XDP program on crafted frames through BPF_PROG_TEST_RUN: verdict,
 * ring-buffer event field by field (raw bytes included), and counters.
 *
 * One loaded object for the file. Every test body is synchronous, so tests
 * never interleave even though ava starts them concurrently; each begins by
 * emptying the maps it relies on and draining the ring.
 *
 * BPF_PROG_TEST_RUN without a context runs on the loopback device's rx
 * queue: ingress_ifindex is 1, so targets are keyed on ifindex 1. It also
 * refuses frames shorter than an Ethernet header (EINVAL), so truncation
 * starts at 14 bytes.
 */
import test, { type ExecutionContext } from 'ava';
import { BpfObject, defaultObjectPath, numPossibleCpus, type BpfMap } from '../src/bpf/object.js';
import { RingReader } from '../src/bpf/ringbuf.js';
import * as C from '../src/bpf/contract.js';
import type { Counters, TcpEvent } from '../src/bpf/contract.js';
import * as F from '../testkit/frames.js';
import { ptest } from './helpers/privileged.js';

const XDP_PASS = 2;
const IFINDEX = 1;
// build/tcpreset.bpf.o of this tree; TCPRESET_BPF_OBJ points elsewhere (e.g. a mutant under test).
const OBJ = defaultObjectPath();

// Addresses from documentation ranges.
const HOST4 = '192.0.2.10';
const PEER4 = '198.51.100.20';
const OTHER4 = '203.0.113.30';
const HOST6 = '2001:db8::10';
const PEER6 = '2001:db8:1::20';
const SMAC = '02:11:22:33:44:55';
const DMAC = '02:66:77:88:99:aa';

interface Lab {
  obj: BpfObject;
  targets: BpfMap;
  flows: BpfMap;
  counters: BpfMap;
  prefilter: BpfMap;
  ring: RingReader;
  ncpu: number;
}

let lab: Lab | undefined;

/** Loaded on first use, so that a non-root run (all tests skipped) never touches BPF. */
function getLab(): Lab {
  if (lab) return lab;
  const obj = BpfObject.load(OBJ);
  const events = obj.map(C.MAP_EVENTS);
  lab = {
    obj,
    targets: obj.map(C.MAP_TARGETS),
    flows: obj.map(C.MAP_FLOWS),
    counters: obj.map(C.MAP_COUNTERS),
    prefilter: obj.map(C.MAP_PREFILTER),
    ring: new RingReader(events.fd, C.RINGBUF_BYTES),
    ncpu: numPossibleCpus(),
  };
  process.on('exit', () => {
    lab?.ring.close();
    lab?.obj.close();
  });
  return lab;
}

function clearMap(m: BpfMap): void {
  for (const k of m.keys()) m.delete(k);
}

/** Prefilter words this file set bits in, so fresh() can zero just those. */
const touchedWords = new Set<number>();

/** Set (or clear) the prefilter bit of an address, as the Enforcer does for each target. */
function setPrefilterBit(l: Lab, k: Pick<C.TargetKey, 'ifindex' | 'family' | 'addr'>, on = true): void {
  const { word, bit } = C.prefilterBit(k);
  const wk = new Uint8Array(4);
  new DataView(wk.buffer).setUint32(0, word, true);
  const cur = new DataView(l.prefilter.lookup(wk)!.buffer).getBigUint64(0, true);
  const v = new Uint8Array(8);
  new DataView(v.buffer).setBigUint64(0, on ? cur | (1n << BigInt(bit)) : cur & ~(1n << BigInt(bit)), true);
  l.prefilter.update(wk, v);
  touchedWords.add(word);
}

function clearPrefilter(l: Lab): void {
  const wk = new Uint8Array(4);
  for (const word of touchedWords) {
    new DataView(wk.buffer).setUint32(0, word, true);
    l.prefilter.update(wk, new Uint8Array(8));
  }
  touchedWords.clear();
}

/** Empty targets, prefilter and flows, drain the ring: every test starts from nothing. */
function fresh(): Lab {
  const l = getLab();
  clearPrefilter(l);
  clearMap(l.targets);
  clearMap(l.flows);
  l.ring.drain(() => {});
  return l;
}

function readCounters(l: Lab): Counters {
  const zero = new Uint8Array(4);
  const v = l.counters.lookup(zero);
  if (!v) throw new Error('counters slot 0 missing');
  return C.sumCounters(v, l.ncpu);
}

/*
 * The matching path's counters. The flow memory's (fmNew, fmFailed) move on
 * every TCP segment whatever matches; the flow memory tests assert them.
 */
const MATCH_COUNTERS = C.COUNTER_NAMES.filter((n) => !n.startsWith('fm'));
type MatchCounters = Pick<Counters, (typeof MATCH_COUNTERS)[number]>;

function delta(a: Counters, b: Counters): MatchCounters {
  const out = {} as MatchCounters;
  for (const n of MATCH_COUNTERS) out[n] = b[n] - a[n];
  return out;
}

function counters(partial: Partial<MatchCounters>): MatchCounters {
  const out = {} as MatchCounters;
  for (const n of MATCH_COUNTERS) out[n] = partial[n] ?? 0n;
  return out;
}

function addTarget(
  l: Lab,
  addr: string,
  opts: { port?: number; id?: number; expiresNs?: bigint; ifindex?: number } = {},
): void {
  const bytes = F.ip(addr);
  const k: C.TargetKey = { ifindex: opts.ifindex ?? IFINDEX, family: bytes.byteLength === 4 ? 4 : 6, addr: bytes, port: opts.port ?? C.PORT_ANY };
  const key = C.encodeTargetKey(k);
  setPrefilterBit(l, k);
  l.targets.update(key, C.encodeTargetValue({ targetId: opts.id ?? 7, expiresNs: opts.expiresNs ?? 0n }));
}

interface RawEvent {
  ev: TcpEvent;
  raw: Uint8Array;
}

interface RunResult {
  retval: number;
  events: RawEvent[];
  delta: MatchCounters;
  before: bigint;
  after: bigint;
}

function run(l: Lab, frame: Uint8Array | F.Frame): RunResult {
  const bytes = frame instanceof Uint8Array ? frame : frame.bytes;
  const c0 = readCounters(l);
  const before = process.hrtime.bigint();
  const { retval } = l.obj.testRun(bytes);
  const after = process.hrtime.bigint();
  const events: RawEvent[] = [];
  l.ring.drain((dv, off, len) => {
    const raw = new Uint8Array(dv.buffer, dv.byteOffset + off, len).slice();
    events.push({ raw, ev: C.decodeEvent(new DataView(raw.buffer)) });
  });
  return { retval, events, delta: delta(c0, readCounters(l)), before, after };
}

type Expected = Omit<TcpEvent, 'tsNs'>;

/** The event a frame built from these options must produce (independent of the program). */
function expectedFor(o: F.TcpFrameOpts, targetId: number, match: number): Expected {
  const saddr = F.ip(o.src);
  const v6 = saddr.byteLength === 16;
  return {
    targetId,
    ifindex: IFINDEX,
    seq: o.seq ?? 0,
    ack: o.ack ?? 0,
    payloadLen: o.payload?.byteLength ?? 0,
    flowLabel: v6 ? (o.flowLabel ?? 0) : 0,
    sport: o.sport,
    dport: o.dport,
    vlans: (o.vlans ?? []).map((v) => ({ tpid: v.tpid ?? F.ETH_P_8021Q, tci: v.tci })),
    family: v6 ? 6 : 4,
    tcpFlags: o.flags ?? F.ACK,
    ttl: o.ttl ?? 64,
    tos: o.tos ?? 0,
    match,
    smac: F.mac(o.smac ?? F.DEFAULT_SMAC),
    dmac: F.mac(o.dmac ?? F.DEFAULT_DMAC),
    saddr,
    daddr: F.ip(o.dst),
  };
}

/** Exactly one event equal to exp, its padding and unused bytes zero, timestamp within the run. */
function assertOneEvent(t: ExecutionContext, r: RunResult, exp: Expected): void {
  t.is(r.retval, XDP_PASS);
  t.is(r.events.length, 1, 'one event');
  if (r.events.length !== 1) return;
  const { ev, raw } = r.events[0];
  t.is(raw.byteLength, C.LAYOUT.tr_event.size);
  const { tsNs, ...rest } = ev;
  t.deepEqual(rest, { ...exp, encap: exp.encap ?? 0, encapFlags: exp.encapFlags ?? 0, mpFlags: exp.mpFlags ?? 0, mpKeySrc: exp.mpKeySrc ?? 0n, mpKeyDst: exp.mpKeyDst ?? 0n, mpToken: exp.mpToken ?? 0 });
  t.true(tsNs >= r.before && tsNs <= r.after, `ts_ns ${tsNs} within [${r.before}, ${r.after}] (CLOCK_MONOTONIC)`);
  const E = C.LAYOUT.tr_event.fields;
  const vlanCount = raw[E.vlan_count];
  t.is(vlanCount, exp.vlans.length, 'vlan_count');
  for (let i = vlanCount; i < C.MAX_VLANS; i++) {
    t.is(raw[E.vlan_tpid + 2 * i] | raw[E.vlan_tpid + 2 * i + 1] | raw[E.vlan_tci + 2 * i] | raw[E.vlan_tci + 2 * i + 1], 0, `unused vlan ${i} zero`);
  }
  if (exp.family === 4) {
    t.true(raw.subarray(E.saddr + 4, E.saddr + 16).every((b) => b === 0), 'unused saddr bytes zero');
    t.true(raw.subarray(E.daddr + 4, E.daddr + 16).every((b) => b === 0), 'unused daddr bytes zero');
  }
}

function assertNoEvent(t: ExecutionContext, r: RunResult, exp: Partial<MatchCounters>, what = ''): void {
  t.is(r.retval, XDP_PASS, `verdict ${what}`);
  t.is(r.events.length, 0, `no event ${what}`);
  t.deepEqual(r.delta, counters({ packets: 1n, ...exp }), `counters ${what}`);
}

const EMITTED = counters({ packets: 1n, tcp: 1n, matched: 1n, events: 1n });

// ---------------------------------------------------------------- the frame builders themselves (no root)

test('frames: checksums verify, layers add up, addresses parse', (t) => {
  const v4 = F.tcpFrame({ src: HOST4, dst: PEER4, sport: 1, dport: 2, ipOptions: Uint8Array.of(1, 0), tcpOptions: F.tcpOption.mss(1460), payload: F.seqBytes(9), vlans: [{ tci: 1 }] });
  const ip4 = v4.bytes.subarray(18);
  t.is(F.checksum(ip4.subarray(0, 24)), 0, 'IPv4 header checksum');
  const seg4 = ip4.subarray(24);
  t.is(F.checksum(seg4, F.pseudoHeaderSum(F.ip(HOST4), F.ip(PEER4), F.IPPROTO_TCP, seg4.byteLength)), 0, 'TCP/IPv4 checksum');
  t.is(v4.layers.at(-1)!.end, v4.bytes.byteLength);
  t.deepEqual(v4.layers.map((x) => x.name), ['eth', 'vlan0', 'ipv4', 'ipv4-options', 'tcp', 'tcp-options', 'payload']);
  const v6 = F.tcpFrame({ src: HOST6, dst: PEER6, sport: 1, dport: 2, ext: [{ type: F.IPPROTO_DSTOPTS }], payload: F.seqBytes(7) });
  const seg6 = v6.bytes.subarray(14 + 40 + 8);
  t.is(F.checksum(seg6, F.pseudoHeaderSum(F.ip(HOST6), F.ip(PEER6), F.IPPROTO_TCP, seg6.byteLength)), 0, 'TCP/IPv6 checksum');
  t.deepEqual([...F.ip('::ffff:192.0.2.1')], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
  t.deepEqual([...F.ip('2001:db8::1').subarray(0, 4)], [0x20, 0x01, 0x0d, 0xb8]);
  t.throws(() => F.ip('1.2.3.256'));
  t.throws(() => F.ip('1::2::3'));
});

// ---------------------------------------------------------------- IPv4

ptest('IPv4 data segment, target is the source: event with every field', (t) => {
  const l = fresh();
  addTarget(l, HOST4, { id: 0x01020304 });
  const o: F.TcpFrameOpts = {
    src: HOST4, dst: PEER4, sport: 40000, dport: 443, seq: 0xfffffff0, ack: 0x80000001,
    flags: F.PSH | F.ACK, payload: F.seqBytes(100), ttl: 61, tos: 0x28, smac: SMAC, dmac: DMAC, ipId: 0x1234, df: true,
  };
  const r = run(l, F.tcpFrame(o));
  assertOneEvent(t, r, {
    targetId: 0x01020304, ifindex: 1, seq: 0xfffffff0, ack: 0x80000001, payloadLen: 100, flowLabel: 0,
    sport: 40000, dport: 443, vlans: [], family: 4, tcpFlags: 0x18, ttl: 61, tos: 0x28, match: C.MATCH_SRC,
    smac: F.mac(SMAC), dmac: F.mac(DMAC), saddr: Uint8Array.of(192, 0, 2, 10), daddr: Uint8Array.of(198, 51, 100, 20),
  });
  t.deepEqual(r.delta, EMITTED);
});

ptest('IPv4 data segment, target is the destination: match = DST', (t) => {
  const l = fresh();
  addTarget(l, HOST4, { id: 99 });
  const o: F.TcpFrameOpts = { src: PEER4, dst: HOST4, sport: 443, dport: 40000, seq: 5, ack: 6, payload: F.seqBytes(3) };
  const r = run(l, F.tcpFrame(o));
  assertOneEvent(t, r, expectedFor(o, 99, C.MATCH_DST));
  t.deepEqual(r.delta, EMITTED);
});

ptest('IPv4 with IP options (IHL 6, 8 and 15): payload length excludes them', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const options = [
    Uint8Array.of(1, 1, 1, 0), // NOP NOP NOP EOL -> IHL 6
    Uint8Array.of(7, 11, 4, ...new Array<number>(8).fill(0)), // record route, 2 slots -> 12 bytes -> IHL 8
    new Uint8Array(40).fill(1), // 40 NOPs -> IHL 15
  ];
  for (const [i, ipOptions] of options.entries()) {
    const o: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 1000 + i, dport: 80, seq: 10, ack: 20, payload: F.seqBytes(17), ipOptions };
    const f = F.tcpFrame(o);
    t.is(f.bytes[14] & 0x0f, 5 + ((ipOptions.byteLength + 3) >> 2));
    const r = run(l, f);
    assertOneEvent(t, r, expectedFor(o, 7, C.MATCH_SRC));
  }
});

ptest('IPv4 IHL below 5 and IP lengths that lie: no event', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const base: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 1, dport: 2, payload: F.seqBytes(8) };
  const cases: [string, F.TcpFrameOpts][] = [
    ['ihl 4', { ...base, ihl: 4 }],
    ['ihl 0', { ...base, ihl: 0 }],
    ['tot_len below IP header', { ...base, totalLen: 19 }],
    ['tot_len below IP + TCP headers', { ...base, totalLen: 39 }],
    ['tot_len below IP + TCP headers with TCP options', { ...base, tcpOptions: F.tcpOption.mss(1460), totalLen: 43 }],
    ['tot_len 0', { ...base, totalLen: 0 }],
  ];
  for (const [name, o] of cases) assertNoEvent(t, run(l, F.tcpFrame(o)), {}, name);
  // Exactly the headers: a valid empty segment still counts.
  const exact = run(l, F.tcpFrame({ ...base, payload: undefined, totalLen: 40 }));
  assertOneEvent(t, exact, expectedFor({ ...base, payload: undefined }, 7, C.MATCH_SRC));
});

ptest('IPv4 length beyond the frame (GSO super-packet in generic XDP): payload length from the IP header', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const o: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 5555, dport: 6666, seq: 1, ack: 2, payload: F.seqBytes(200), totalLen: 65000 };
  const r = run(l, F.tcpFrame(o));
  assertOneEvent(t, r, { ...expectedFor(o, 7, C.MATCH_SRC), payloadLen: 65000 - 40 });
  // A frame cut inside the payload is also reported with the IP length.
  const cut = F.tcpFrame({ ...o, totalLen: undefined, seq: 3 });
  const r2 = run(l, F.truncate(cut, F.headersEnd(cut) + 10));
  assertOneEvent(t, r2, { ...expectedFor(o, 7, C.MATCH_SRC), seq: 3, payloadLen: 200 });
});

ptest('IPv4 fragments: first fragment (MF, offset 0) is parsed; later fragments are not', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const first: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 7, dport: 8, seq: 77, ack: 88, mf: true, ipId: 9, payload: F.seqBytes(64) };
  assertOneEvent(t, run(l, F.tcpFrame(first)), expectedFor(first, 7, C.MATCH_SRC));
  for (const [fragOffset, mf] of [[8, true], [8, false], [1, false], [0x1fff, false]] as const) {
    // The bytes after the IP header look like a TCP header: only the offset says they are not.
    const r = run(l, F.tcpFrame({ ...first, seq: 1000 + fragOffset, fragOffset, mf }));
    assertNoEvent(t, r, {}, `offset ${fragOffset} mf ${mf}`);
  }
});

// ---------------------------------------------------------------- IPv6

ptest('IPv6 data segment: flow label, traffic class, hop limit, addresses', (t) => {
  const l = fresh();
  addTarget(l, HOST6, { id: 600 });
  const o: F.TcpFrameOpts = {
    src: PEER6, dst: HOST6, sport: 22, dport: 51000, seq: 123456789, ack: 987654321, flags: F.ACK,
    payload: F.seqBytes(1200), ttl: 255, tos: 0xb8, flowLabel: 0xabcde, smac: SMAC, dmac: DMAC,
  };
  const r = run(l, F.tcpFrame(o));
  assertOneEvent(t, r, {
    targetId: 600, ifindex: 1, seq: 123456789, ack: 987654321, payloadLen: 1200, flowLabel: 0xabcde,
    sport: 22, dport: 51000, vlans: [], family: 6, tcpFlags: F.ACK, ttl: 255, tos: 0xb8, match: C.MATCH_DST,
    smac: F.mac(SMAC), dmac: F.mac(DMAC), saddr: F.ip(PEER6), daddr: F.ip(HOST6),
  });
  t.deepEqual(r.delta, EMITTED);
});

ptest('IPv6 after hop-by-hop, routing and destination-options headers', (t) => {
  const l = fresh();
  addTarget(l, HOST6);
  const ext: F.Ipv6Ext[] = [
    { type: F.IPPROTO_HOPOPTS, body: Uint8Array.of(5, 2, 0, 0, 1, 0) }, // router alert + PadN
    { type: F.IPPROTO_ROUTING, body: new Uint8Array(6 + 16) }, // 24 bytes
    { type: F.IPPROTO_DSTOPTS, body: new Uint8Array(6 + 8) }, // 16 bytes
  ];
  const o: F.TcpFrameOpts = { src: HOST6, dst: PEER6, sport: 1234, dport: 443, seq: 1, ack: 2, payload: F.seqBytes(33), ext, tcpOptions: F.tcpOption.timestamps(1, 2) };
  const f = F.tcpFrame(o);
  t.deepEqual(f.layers.map((x) => x.end - x.start), [14, 40, 8, 24, 16, 20, 12, 33]);
  assertOneEvent(t, run(l, f), expectedFor(o, 7, C.MATCH_SRC));
  // Each one alone, and dest-options twice (before and after routing, as RFC 8200 allows).
  for (const [i, e] of [[ext[0]], [ext[1]], [ext[2]], [ext[2], ext[1], ext[2]]].entries()) {
    const oi = { ...o, ext: e, seq: 100 + i }; // distinct seq: no suppression between cases
    assertOneEvent(t, run(l, F.tcpFrame(oi)), expectedFor(oi, 7, C.MATCH_SRC));
  }
});

ptest('IPv6: fragment header, more than 3 extension headers, lying payload length: no event', (t) => {
  const l = fresh();
  addTarget(l, HOST6);
  const base: F.TcpFrameOpts = { src: HOST6, dst: PEER6, sport: 1, dport: 2, payload: F.seqBytes(10) };
  const dst = { type: F.IPPROTO_DSTOPTS };
  const cases: [string, F.TcpFrameOpts][] = [
    ['fragment header, first fragment', { ...base, ext: [{ type: F.IPPROTO_FRAGMENT, mf: true, id: 1 }] }],
    ['fragment header, later fragment', { ...base, ext: [{ type: F.IPPROTO_FRAGMENT, fragOffset: 100, id: 1 }] }],
    ['fragment after hop-by-hop', { ...base, ext: [{ type: F.IPPROTO_HOPOPTS }, { type: F.IPPROTO_FRAGMENT, mf: true }] }],
    ['4 extension headers', { ...base, ext: [{ type: F.IPPROTO_HOPOPTS }, dst, { type: F.IPPROTO_ROUTING }, dst] }],
    ['payload_len 0 (jumbogram)', { ...base, payloadLen: 0 }],
    ['payload_len below TCP header', { ...base, payloadLen: 19 }],
    ['payload_len below ext + TCP headers', { ...base, ext: [dst], payloadLen: 27 }],
    ['payload_len below TCP header with options', { ...base, tcpOptions: F.tcpOption.mss(1400), payloadLen: 23 }],
  ];
  for (const [name, o] of cases) assertNoEvent(t, run(l, F.tcpFrame(o)), {}, name);
  // The boundary: exactly the headers is a valid empty segment.
  const exact = { ...base, ext: [dst], payload: undefined };
  assertOneEvent(t, run(l, F.tcpFrame({ ...exact, payloadLen: 28 })), expectedFor(exact, 7, C.MATCH_SRC));
});

// ---------------------------------------------------------------- VLANs

ptest('802.1Q tag: tpid and tci recorded', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const o: F.TcpFrameOpts = { src: PEER4, dst: HOST4, sport: 80, dport: 33333, seq: 3, ack: 4, vlans: [{ tci: (5 << 13) | 100 }], payload: F.seqBytes(1) };
  const r = run(l, F.tcpFrame(o));
  assertOneEvent(t, r, expectedFor(o, 7, C.MATCH_DST));
  t.deepEqual(r.events[0]?.ev.vlans, [{ tpid: 0x8100, tci: 0xa064 }]);
});

ptest('QinQ (802.1ad outer, 802.1Q inner), IPv6 inside: both tags, outermost first', (t) => {
  const l = fresh();
  addTarget(l, HOST6);
  const vlans = [{ tpid: F.ETH_P_8021AD, tci: 0x10c8 }, { tpid: F.ETH_P_8021Q, tci: 0x0064 }];
  const o: F.TcpFrameOpts = { src: HOST6, dst: PEER6, sport: 9, dport: 10, seq: 11, ack: 12, vlans, flowLabel: 1 };
  const r = run(l, F.tcpFrame(o));
  assertOneEvent(t, r, expectedFor(o, 7, C.MATCH_SRC));
  t.deepEqual(r.events[0]?.ev.vlans, [{ tpid: 0x88a8, tci: 0x10c8 }, { tpid: 0x8100, tci: 0x0064 }]);
  // Two 802.1Q tags are accepted as well.
  const o2 = { ...o, seq: 13, vlans: [{ tci: 1 }, { tci: 2 }] };
  assertOneEvent(t, run(l, F.tcpFrame(o2)), expectedFor(o2, 7, C.MATCH_SRC));
});

ptest('three VLAN tags (more than TR_MAX_VLANS): no event', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const r = run(l, F.tcpFrame({ src: HOST4, dst: PEER4, sport: 1, dport: 2, vlans: [{ tpid: F.ETH_P_8021AD, tci: 1 }, { tci: 2 }, { tci: 3 }] }));
  assertNoEvent(t, r, {});
});

// ---------------------------------------------------------------- truncation

/**
 * `f` cut at each header boundary and at every byte inside its headers
 * (from 14 bytes: the test run refuses shorter frames): no event, each cut
 * counted as a packet and not as TCP; then its headers whole, without
 * payload: one event (the lengths come from IP).
 */
function expectCutsSilent(t: ExecutionContext, l: Lab, name: string, f: F.Frame): void {
  const end = F.headersEnd(f);
  // Named boundaries first (readable failures), then every length (complete coverage).
  for (const cut of F.headerCuts(f)) {
    if (cut.length < 14) continue;
    assertNoEvent(t, run(l, F.truncate(f, cut.length)), {}, `${name}: ${cut.name} (${cut.length} bytes)`);
  }
  let silent = 0;
  for (let n = 14; n < end; n++) {
    const r = run(l, F.truncate(f, n));
    if (r.retval === XDP_PASS && r.events.length === 0 && r.delta.tcp === 0n && r.delta.packets === 1n) silent++;
    else t.fail(`${name}: ${n} bytes gave retval ${r.retval}, ${r.events.length} events, tcp ${r.delta.tcp}`);
  }
  t.is(silent, end - 14, `${name}: every cut silent`);
  const r = run(l, F.truncate(f, end));
  t.is(r.events.length, 1, `${name}: headers complete -> event`);
}

ptest('truncated at every header boundary and every byte inside the headers: no event', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, HOST6);
  const frames: [string, F.Frame][] = [
    ['v4 QinQ + IP options + TCP options', F.tcpFrame({
      src: HOST4, dst: PEER4, sport: 1, dport: 2, vlans: [{ tpid: F.ETH_P_8021AD, tci: 1 }, { tci: 2 }],
      ipOptions: Uint8Array.of(1, 1, 1, 1, 1, 1, 1, 0), tcpOptions: F.tcpOption.timestamps(3, 4), payload: F.seqBytes(20),
    })],
    ['v6 802.1Q + 3 ext headers + TCP options', F.tcpFrame({
      src: PEER6, dst: HOST6, sport: 1, dport: 2, vlans: [{ tci: 7 }],
      ext: [{ type: F.IPPROTO_HOPOPTS }, { type: F.IPPROTO_ROUTING, body: new Uint8Array(14) }, { type: F.IPPROTO_DSTOPTS }],
      tcpOptions: F.tcpOption.mss(1220), payload: F.seqBytes(20),
    })],
  ];
  for (const [name, f] of frames) expectCutsSilent(t, l, name, f);
});

ptest('TCP data offset below 5, or beyond the frame: no event', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const base: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 1, dport: 2, payload: F.seqBytes(10) };
  assertNoEvent(t, run(l, F.tcpFrame({ ...base, doff: 4 })), {}, 'doff 4');
  assertNoEvent(t, run(l, F.tcpFrame({ ...base, doff: 0 })), {}, 'doff 0');
  // doff 15 = 60 bytes, but only 20 + 10 are in the frame.
  assertNoEvent(t, run(l, F.tcpFrame({ ...base, doff: 15 })), {}, 'doff 15');
});

// ---------------------------------------------------------------- not ours

ptest('non-TCP (UDP, ICMP, ICMPv6, ARP) involving a target: no event', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, HOST6);
  const e4 = F.eth(DMAC, SMAC, [], F.ETH_P_IP);
  const e6 = F.eth(DMAC, SMAC, [], F.ETH_P_IPV6);
  const frames: [string, Uint8Array][] = [
    ['udp4', F.concat(e4, F.ipv4({ src: HOST4, dst: PEER4, protocol: F.IPPROTO_UDP }, F.udp({ sport: 53, dport: 53, payload: F.seqBytes(30) }, { src: HOST4, dst: PEER4 })))],
    ['icmp4', F.concat(e4, F.ipv4({ src: PEER4, dst: HOST4, protocol: F.IPPROTO_ICMP }, F.icmpEcho({ id: 1, seq: 1, payload: F.seqBytes(56) })))],
    ['udp6', F.concat(e6, F.ipv6({ src: HOST6, dst: PEER6, nextHeader: F.IPPROTO_UDP }, F.udp({ sport: 53, dport: 53 }, { src: HOST6, dst: PEER6 })))],
    ['icmp6', F.concat(e6, F.ipv6({ src: PEER6, dst: HOST6, nextHeader: F.IPPROTO_ICMPV6 }, Uint8Array.of(128, 0, 0, 0, 0, 1, 0, 1)))],
    ['no next header', F.concat(e6, F.ipv6({ src: PEER6, dst: HOST6, nextHeader: F.IPPROTO_NONE, ext: [{ type: F.IPPROTO_HOPOPTS }] }))],
    ['arp', F.concat(F.eth('ff:ff:ff:ff:ff:ff', SMAC, [], F.ETH_P_ARP), F.arpRequest({ smac: SMAC, sip: HOST4, tip: PEER4 }), new Uint8Array(18))],
    ['arp in vlan', F.concat(F.eth('ff:ff:ff:ff:ff:ff', SMAC, [{ tci: 5 }], F.ETH_P_ARP), F.arpRequest({ smac: SMAC, sip: HOST4, tip: PEER4 }))],
  ];
  for (const [name, f] of frames) assertNoEvent(t, run(l, f), {}, name);
});

ptest('TCP between hosts that are not targets: parsed, no event', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, HOST6);
  assertNoEvent(t, run(l, F.tcpFrame({ src: PEER4, dst: OTHER4, sport: 1, dport: 2 })), { tcp: 1n }, 'v4');
  assertNoEvent(t, run(l, F.tcpFrame({ src: PEER6, dst: '2001:db8::11', sport: 1, dport: 2 })), { tcp: 1n }, 'v6');
  // Same address bytes in the other family do not match: 192.0.2.10 as the first 4 bytes of an IPv6 address.
  assertNoEvent(t, run(l, F.tcpFrame({ src: Uint8Array.of(192, 0, 2, 10, ...new Array<number>(12).fill(0)), dst: PEER6, sport: 1, dport: 2 })), { tcp: 1n }, 'family');
  // A target on another interface does not match packets of this one.
  clearMap(l.targets);
  addTarget(l, HOST4, { ifindex: 2 });
  assertNoEvent(t, run(l, F.tcpFrame({ src: HOST4, dst: PEER4, sport: 1, dport: 2 })), { tcp: 1n }, 'ifindex');
});

// ---------------------------------------------------------------- ports, expiry, RST

ptest('port target: the remote port in either direction matches; other ports do not', (t) => {
  const l = fresh();
  addTarget(l, HOST4, { port: 8443, id: 44 });
  const out: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 50000, dport: 8443, seq: 1, ack: 2 };
  assertOneEvent(t, run(l, F.tcpFrame(out)), expectedFor(out, 44, C.MATCH_SRC));
  const back: F.TcpFrameOpts = { src: PEER4, dst: HOST4, sport: 8443, dport: 50000, seq: 2, ack: 3 };
  assertOneEvent(t, run(l, F.tcpFrame(back)), expectedFor(back, 44, C.MATCH_DST));
  assertNoEvent(t, run(l, F.tcpFrame({ ...out, dport: 8080 })), { tcp: 1n }, 'other remote port');
  assertNoEvent(t, run(l, F.tcpFrame({ ...back, sport: 8080 })), { tcp: 1n }, 'other remote port, inbound');
  // The port is the REMOTE port: the host's own port 8443 talking to remote 50000 is not it.
  assertNoEvent(t, run(l, F.tcpFrame({ src: HOST4, dst: PEER4, sport: 8443, dport: 50000 })), { tcp: 1n }, 'host-side port');
  assertNoEvent(t, run(l, F.tcpFrame({ src: PEER4, dst: HOST4, sport: 50000, dport: 8443 })), { tcp: 1n }, 'host-side port, inbound');

  // v6 too, and a whole-host target of another host coexists.
  addTarget(l, HOST6, { port: 22, id: 45 });
  const v6: F.TcpFrameOpts = { src: PEER6, dst: HOST6, sport: 22, dport: 60000, seq: 9 };
  assertOneEvent(t, run(l, F.tcpFrame(v6)), expectedFor(v6, 45, C.MATCH_DST));
});

ptest('both addresses are targets: the source wins; the first live one wins', (t) => {
  const l = fresh();
  addTarget(l, HOST4, { id: 1 });
  addTarget(l, PEER4, { id: 2 });
  const o: F.TcpFrameOpts = { src: PEER4, dst: HOST4, sport: 1, dport: 2, seq: 1 };
  assertOneEvent(t, run(l, F.tcpFrame(o)), expectedFor(o, 2, C.MATCH_SRC));
  // The source's target expired: the destination's live one answers, and nothing counts as expired.
  addTarget(l, PEER4, { id: 2, expiresNs: process.hrtime.bigint() - 1n });
  const o2 = { ...o, seq: 2 };
  const r = run(l, F.tcpFrame(o2));
  assertOneEvent(t, r, expectedFor(o2, 1, C.MATCH_DST));
  t.deepEqual(r.delta, EMITTED);
});

ptest('expired target: no event, counted as expired; a future deadline is live', (t) => {
  const l = fresh();
  addTarget(l, HOST4, { expiresNs: process.hrtime.bigint() - 1_000_000n });
  const o: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 1, dport: 2, seq: 1 };
  assertNoEvent(t, run(l, F.tcpFrame(o)), { tcp: 1n, expired: 1n });
  addTarget(l, HOST4, { id: 8, expiresNs: process.hrtime.bigint() + 60_000_000_000n });
  const r = run(l, F.tcpFrame(o));
  assertOneEvent(t, r, expectedFor(o, 8, C.MATCH_SRC));
  t.deepEqual(r.delta, EMITTED);
  // Port target expired, host target absent.
  clearMap(l.targets);
  addTarget(l, HOST4, { port: 2, expiresNs: 1n });
  assertNoEvent(t, run(l, F.tcpFrame(o)), { tcp: 1n, expired: 1n }, 'port target');
});

ptest('RST on a matched flow: no event, counted in rst_seen', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, HOST6);
  for (const flags of [F.RST, F.RST | F.ACK]) {
    assertNoEvent(t, run(l, F.tcpFrame({ src: PEER4, dst: HOST4, sport: 1, dport: 2, flags, seq: 5 })), { tcp: 1n, matched: 1n, rstSeen: 1n }, `v4 ${flags}`);
    assertNoEvent(t, run(l, F.tcpFrame({ src: HOST6, dst: PEER6, sport: 1, dport: 2, flags, seq: 5 })), { tcp: 1n, matched: 1n, rstSeen: 1n }, `v6 ${flags}`);
  }
  // A RST between non-targets is not counted.
  assertNoEvent(t, run(l, F.tcpFrame({ src: PEER4, dst: OTHER4, sport: 1, dport: 2, flags: F.RST })), { tcp: 1n }, 'non-target RST');
});

ptest('flags: SYN, SYN-ACK, FIN and the high bits are reported as they are', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  for (const [i, flags] of [F.SYN, F.SYN | F.ACK, F.FIN | F.ACK, F.URG | F.ECE | F.CWR | F.PSH | F.ACK | F.FIN, F.SYN | F.ECE | F.CWR].entries()) {
    const o: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 100 + i, dport: 80, seq: 1000 * i, ack: flags & F.ACK ? 1 : 0, flags, tcpOptions: flags & F.SYN ? F.concat(F.tcpOption.mss(1460), F.tcpOption.sackPermitted(), F.tcpOption.windowScale(7)) : undefined };
    assertOneEvent(t, run(l, F.tcpFrame(o)), expectedFor(o, 7, C.MATCH_SRC));
  }
});

// ---------------------------------------------------------------- suppression

function busyWaitNs(ns: bigint): void {
  const end = process.hrtime.bigint() + ns;
  while (process.hrtime.bigint() < end);
}

/**
 * Run `first` (must emit) and then `again` right after. The interval is 10 ms,
 * and a loaded machine can take longer than that between two runs: then the
 * pair proves nothing and is retried. Returns the run of `again`.
 */
function pairWithinInterval(t: ExecutionContext, l: Lab, first: Uint8Array, again: Uint8Array): RunResult | undefined {
  for (let attempt = 0; attempt < 20; attempt++) {
    clearMap(l.flows);
    const r1 = run(l, first);
    if (r1.events.length !== 1) {
      t.fail(`first packet gave ${r1.events.length} events`);
      return undefined;
    }
    const r2 = run(l, again);
    if (r2.after - r1.events[0].ev.tsNs < C.DUP_INTERVAL_NS) return r2;
    t.log(`attempt ${attempt}: the repeat ran ${r2.after - r1.events[0].ev.tsNs} ns after the event, retrying`);
  }
  t.fail('could not run two packets within the suppression interval');
  return undefined;
}

ptest('suppression: a repeat within the interval is suppressed; moved seq, ack or flags are not', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const o: F.TcpFrameOpts = { src: PEER4, dst: HOST4, sport: 443, dport: 40000, seq: 100, ack: 200, payload: F.seqBytes(10) };
  const f = F.tcpFrame(o).bytes;
  assertOneEvent(t, run(l, f), expectedFor(o, 7, C.MATCH_DST));

  const same = pairWithinInterval(t, l, f, f);
  if (same) assertNoEvent(t, same, { tcp: 1n, matched: 1n, suppressed: 1n }, 'same segment again');
  // Same seq, ack and flags with another payload carries no new sequence information either.
  const other = pairWithinInterval(t, l, f, F.tcpFrame({ ...o, payload: F.seqBytes(5) }).bytes);
  if (other) assertNoEvent(t, other, { tcp: 1n, matched: 1n, suppressed: 1n }, 'same seq/ack/flags, other payload');

  // Whatever the timing, anything that moved is emitted.
  for (const moved of [{ seq: 110 }, { ack: 300 }, { flags: F.ACK | F.PSH }, { seq: 100, ack: 200, flags: F.ACK }] as const) {
    const m = { ...o, ...moved };
    const r = run(l, F.tcpFrame(m));
    assertOneEvent(t, r, expectedFor(m, 7, C.MATCH_DST));
    t.deepEqual(r.delta, EMITTED, `moved ${JSON.stringify(moved)}`);
  }
  // The flow is directional: the reverse direction with the same numbers has its own state.
  const rev: F.TcpFrameOpts = { ...o, src: HOST4, dst: PEER4, sport: 40000, dport: 443 };
  assertOneEvent(t, run(l, F.tcpFrame(rev)), expectedFor(rev, 7, C.MATCH_SRC));

  // After the interval the same segment fires again (a lost RST gets a second chance).
  busyWaitNs(C.DUP_INTERVAL_NS + 2_000_000n);
  const r3 = run(l, f);
  assertOneEvent(t, r3, expectedFor(o, 7, C.MATCH_DST));
  t.deepEqual(r3.delta, EMITTED);
});

ptest('full ring: events are lost, never blocked; a lost event does not feed suppression', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  // Fill the ring with distinct segments (no suppression) without draining it.
  const recordBytes = 8 + C.LAYOUT.tr_event.size;
  // A record is taken only while producer - consumer stays below the ring's size (kernel/bpf/ringbuf.c:
  // new_prod_pos - cons_pos > rb->mask fails), so records that divide it exactly fill it but one.
  const capacity = Math.floor((C.RINGBUF_BYTES - 1) / recordBytes);
  const c0 = readCounters(l);
  const base: F.TcpFrameOpts = { src: HOST4, dst: PEER4, sport: 1, dport: 2, ack: 1 };
  const frame = F.tcpFrame(base).bytes;
  const seqView = new DataView(frame.buffer, frame.byteOffset + 14 + 20 + 4, 4);
  let passed = 0;
  for (let n = 0; n < capacity; n++) {
    seqView.setUint32(0, n);
    if (l.obj.testRun(frame).retval === XDP_PASS) passed++;
  }
  t.is(passed, capacity);
  t.deepEqual(delta(c0, readCounters(l)), counters({ packets: BigInt(capacity), tcp: BigInt(capacity), matched: BigInt(capacity), events: BigInt(capacity) }));
  // Full: a new segment is lost, and its immediate repeat is lost again rather than suppressed
  // (suppression remembers only what reached user space).
  seqView.setUint32(0, 0xdead);
  for (const attempt of ['first', 'repeat']) {
    const c1 = readCounters(l);
    t.is(l.obj.testRun(frame).retval, XDP_PASS);
    t.deepEqual(delta(c1, readCounters(l)), counters({ packets: 1n, tcp: 1n, matched: 1n, lost: 1n }), attempt);
  }
  let drained = 0;
  l.ring.drain(() => drained++);
  t.is(drained, capacity, 'the ring held every event that was counted');
  // The ring has room now: the same segment is emitted.
  const r = run(l, frame);
  assertOneEvent(t, r, expectedFor({ ...base, seq: 0xdead }, 7, C.MATCH_SRC));
  t.deepEqual(r.delta, EMITTED);
});

// ---------------------------------------------------------------- scale

ptest('100,000 targets: the program still matches, first, middle and last', (t) => {
  const l = fresh();
  const value = C.encodeTargetValue({ targetId: 0, expiresNs: 0n });
  const vdv = new DataView(value.buffer);
  const key = new Uint8Array(C.LAYOUT.tr_target_key.size);
  const addrOf = (i: number): Uint8Array => Uint8Array.of(10, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
  const N = 100_000;
  for (let i = 0; i < N; i++) {
    const k: C.TargetKey = { ifindex: IFINDEX, family: 4, addr: addrOf(i), port: i % 3 === 0 ? C.PORT_ANY : 1 + (i % 65535) };
    C.encodeTargetKey(k, key);
    setPrefilterBit(l, k);
    vdv.setUint32(0, i + 1, true);
    l.targets.update(key, value);
  }
  t.is(l.targets.keys().length, N);
  for (const i of [0, 1, 3, N / 2, N - 1]) {
    const port = i % 3 === 0 ? 9999 : 1 + (i % 65535);
    const o: F.TcpFrameOpts = { src: PEER4, dst: addrOf(i), sport: port, dport: 5, seq: i };
    const r = run(l, F.tcpFrame(o));
    assertOneEvent(t, r, expectedFor(o, i + 1, C.MATCH_DST));
  }
  assertNoEvent(t, run(l, F.tcpFrame({ src: PEER4, dst: addrOf(N + 1), sport: 1, dport: 2 })), { tcp: 1n }, 'absent');
  clearMap(l.targets);
  clearPrefilter(l);
});

// ---------------------------------------------------------------- prefilter

ptest('prefilter: a target whose address bit is clear is not looked up; setting the bit makes it match', (t) => {
  const l = fresh();
  addTarget(l, '192.0.2.77');
  const k = { ifindex: IFINDEX, family: 4 as const, addr: F.ip('192.0.2.77') };
  setPrefilterBit(l, k, false);
  const o: F.TcpFrameOpts = { src: PEER4, dst: '192.0.2.77', sport: 443, dport: 40000, seq: 1 };
  assertNoEvent(t, run(l, F.tcpFrame(o)), { tcp: 1n }, 'bit clear: the map entry is never consulted');
  setPrefilterBit(l, k, true);
  assertOneEvent(t, run(l, F.tcpFrame({ ...o, seq: 2 })), expectedFor({ ...o, seq: 2 }, 7, C.MATCH_DST));
});

ptest('prefilter: a set bit without a target (a hash collision) costs lookups but never an event', (t) => {
  const l = fresh();
  setPrefilterBit(l, { ifindex: IFINDEX, family: 6, addr: F.ip('2001:db8::99') });
  setPrefilterBit(l, { ifindex: IFINDEX, family: 4, addr: F.ip(PEER4) });
  assertNoEvent(t, run(l, F.tcpFrame({ src: PEER4, dst: '192.0.2.1', sport: 1, dport: 2 })), { tcp: 1n }, 'v4');
  assertNoEvent(t, run(l, F.tcpFrame({ src: '2001:db8::99', dst: '2001:db8::1', sport: 1, dport: 2 })), { tcp: 1n }, 'v6');
});

ptest('an IP header whose version disagrees with its EtherType gets no event (no host would take it)', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, '2001:db8::7');
  const v4 = F.tcpFrame({ src: HOST4, dst: PEER4, sport: 1, dport: 2 });
  v4.bytes[14] = (6 << 4) | 5; // EtherType IPv4, version 6
  assertNoEvent(t, run(l, v4), {}, 'v4 frame saying version 6');
  const v6 = F.tcpFrame({ src: '2001:db8::7', dst: '2001:db8::8', sport: 1, dport: 2 });
  v6.bytes[14] = (4 << 4) | (v6.bytes[14] & 0x0f); // EtherType IPv6, version 4
  assertNoEvent(t, run(l, v6), {}, 'v6 frame saying version 4');
});

// ---------------------------------------------------------------- tunnelled mirrors (bpf/encap.h)

const ENCAP_OF: Record<F.TunnelKind, number> = {
  vxlan: C.ENCAP_VXLAN, geneve: C.ENCAP_GENEVE, gre: C.ENCAP_GRE, erspan1: C.ENCAP_ERSPAN1, erspan2: C.ENCAP_ERSPAN2, erspan3: C.ENCAP_ERSPAN3,
};
const KINDS = Object.keys(ENCAP_OF) as F.TunnelKind[];

function readIf(l: Lab, ifindex = IFINDEX): C.IfCounters {
  const m = l.obj.map(C.MAP_IF_COUNTERS);
  const k = new Uint8Array(4);
  new DataView(k.buffer).setUint32(0, C.ifSlot(ifindex), true);
  return C.sumIfCounters(m.lookup(k)!, l.ncpu, ifindex);
}

function setUdpTunnel(l: Lab, port: number, kind: number): void {
  const k = new Uint8Array(4);
  const v = new Uint8Array(4);
  new DataView(k.buffer).setUint32(0, port, true);
  new DataView(v.buffer).setUint32(0, kind, true);
  l.obj.map(C.MAP_UDP_TUNNELS).update(k, v);
}

/** The event of the inner frame, marked with its tunnel; bare IP: no MACs, no tags. */
function expectedInner(o: F.TcpFrameOpts, kind: F.TunnelKind, bareIp = false): Expected {
  const e = expectedFor(o, 7, C.MATCH_SRC);
  return bareIp
    ? { ...e, smac: new Uint8Array(6), dmac: new Uint8Array(6), vlans: [], encap: ENCAP_OF[kind], encapFlags: C.ENCAP_F_NO_L2 }
    : { ...e, encap: ENCAP_OF[kind], encapFlags: 0 };
}

const INNER4: F.TcpFrameOpts = {
  src: HOST4, dst: PEER4, sport: 40001, dport: 443, seq: 0x10203040, ack: 0x50607080, flags: F.PSH | F.ACK,
  payload: F.seqBytes(33), ttl: 60, tos: 0x10, smac: SMAC, dmac: DMAC, vlans: [{ tci: 100 }],
};
const INNER6: F.TcpFrameOpts = {
  src: HOST6, dst: PEER6, sport: 40002, dport: 22, seq: 11, ack: 12, payload: F.seqBytes(5), flowLabel: 0x12345, ttl: 7,
  smac: DMAC, dmac: SMAC, vlans: [{ tpid: F.ETH_P_8021AD, tci: 10 }, { tci: 20 }],
  ext: [{ type: F.IPPROTO_DSTOPTS }],
};

ptest('tunnels: VXLAN, Geneve, GRE, ERSPAN I/II/III, outer IPv4 and IPv6, inner IPv4 and IPv6 with tags: the inner segment, marked with its tunnel', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, HOST6);
  for (const kind of KINDS) {
    for (const outer of [['192.0.2.200', '192.0.2.201'], ['2001:db8:ff::1', '2001:db8:ff::2']] as const) {
      for (const inner of [INNER4, INNER6]) {
        const what = `${kind} over IPv${outer[0].includes(':') ? 6 : 4}, inner IPv${inner === INNER4 ? 4 : 6}`;
        const f = F.tunnelFrame({ kind, inner: F.tcpFrame(inner), outerSrc: outer[0], outerDst: outer[1] });
        const if0 = readIf(l);
        const r = run(l, f);
        assertOneEvent(t, r, expectedInner(inner, kind));
        t.deepEqual(r.delta, EMITTED, what);
        const if1 = readIf(l);
        t.deepEqual([if1.packets - if0.packets, if1.tcp - if0.tcp, if1.decap - if0.decap], [1n, 1n, 1n], `${what}: per-interface packets, tcp, decap`);
        l.flows.keys().forEach((k) => l.flows.delete(k)); // the same inner flow again: not a duplicate
      }
    }
  }
});

ptest('tunnels: bare IP inside Geneve (IPv4, IPv6) and ERSPAN III (frame type 2): event flagged NO_L2, no MACs or tags', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, HOST6);
  for (const kind of ['geneve', 'erspan3'] as const) {
    for (const inner of [INNER4, INNER6]) {
      const r = run(l, F.tunnelFrame({ kind, inner: F.tcpFrame(inner), bareIp: true }));
      assertOneEvent(t, r, expectedInner(inner, kind, true));
      l.flows.keys().forEach((k) => l.flows.delete(k));
    }
  }
});

ptest('tunnels: every optional part at its largest (GRE checksum+key+sequence, 252 bytes of Geneve options, ERSPAN III subheader, outer QinQ, outer IP options)', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const inner = F.tcpFrame(INNER4);
  const outerVlans = [{ tpid: F.ETH_P_8021AD, tci: 5 }, { tci: 6 }];
  const cases: [string, F.Frame][] = [
    ['gre c+k+s', F.tunnelFrame({ kind: 'gre', inner, greCsum: true, greKey: 0xabcdef01, greSeq: 9, outerVlans })],
    ['erspan2 c+k+s', F.tunnelFrame({ kind: 'erspan2', inner, greCsum: true, greKey: 3, greSeq: 4 })],
    ['erspan3 subheader', F.tunnelFrame({ kind: 'erspan3', inner, erspan3Subheader: true, outerVlans })],
    ['erspan3 subheader, bare IP', F.tunnelFrame({ kind: 'erspan3', inner, erspan3Subheader: true, bareIp: true })],
    ['geneve 252 option bytes', F.tunnelFrame({ kind: 'geneve', inner, geneveOptions: F.seqBytes(252), outerVlans })],
    ['vxlan, outer v6', F.tunnelFrame({ kind: 'vxlan', inner, outerSrc: '2001:db8:ff::1', outerDst: '2001:db8:ff::2', outerVlans })],
  ];
  for (const [name, f] of cases) {
    const r = run(l, f);
    t.is(r.events.length, 1, name);
    if (r.events.length) {
      t.deepEqual([...r.events[0].ev.saddr], [...F.ip(HOST4)], `${name}: inner source`);
      t.is(r.events[0].ev.seq, 0x10203040, `${name}: inner seq`);
      t.is(r.events[0].ev.payloadLen, 33, `${name}: inner payload length`);
    }
    l.flows.keys().forEach((k) => l.flows.delete(k));
  }
  // Outer IPv4 with options before the UDP header.
  const plain = F.tunnelFrame({ kind: 'vxlan', inner });
  const udpAt = plain.layers.find((x) => x.name === 'udp')!.start;
  const l4 = plain.bytes.subarray(udpAt);
  const withOpts = F.concat(F.eth(DMAC, SMAC, [], F.ETH_P_IP), F.ipv4({ src: '192.0.2.200', dst: '192.0.2.201', protocol: F.IPPROTO_UDP, options: new Uint8Array(40).fill(1) }, l4));
  t.is(run(l, withOpts).events.length, 1, 'outer IPv4 with 40 bytes of options');
});

ptest('tunnels: extra VXLAN and Geneve UDP ports only once udp_tunnels names them', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  const inner = F.tcpFrame(INNER4);
  const vx = F.tunnelFrame({ kind: 'vxlan', inner, udpPort: 8472 });
  const gn = F.tunnelFrame({ kind: 'geneve', inner, udpPort: 6082 });
  try {
    assertNoEvent(t, run(l, vx), {}, 'vxlan on 8472, not configured');
    assertNoEvent(t, run(l, gn), {}, 'geneve on 6082, not configured');
    setUdpTunnel(l, 8472, C.ENCAP_VXLAN);
    setUdpTunnel(l, 6082, C.ENCAP_GENEVE);
    assertOneEvent(t, run(l, vx), expectedInner(INNER4, 'vxlan'));
    l.flows.keys().forEach((k) => l.flows.delete(k));
    assertOneEvent(t, run(l, gn), expectedInner(INNER4, 'geneve'));
    // A kind that is not a UDP tunnel is ignored, as is a port whose entry was cleared.
    setUdpTunnel(l, 8472, C.ENCAP_GRE);
    assertNoEvent(t, run(l, vx), {}, 'port marked with a non-UDP kind');
  } finally {
    setUdpTunnel(l, 8472, 0);
    setUdpTunnel(l, 6082, 0);
  }
});

ptest('tunnels: malformed headers, a second level and unread protocols give no event; the decap counter says which were removed', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, '192.0.2.200'); // the outer source: a tunnel endpoint is not the session
  const inner = F.tcpFrame(INNER4);
  const patch = (f: F.Frame, layer: string, at: number, value: number): Uint8Array => {
    const b = f.bytes.slice();
    b[f.layers.find((x) => x.name === layer)!.start + at] = value;
    return b;
  };
  const vx = F.tunnelFrame({ kind: 'vxlan', inner });
  const gn = F.tunnelFrame({ kind: 'geneve', inner });
  const gnIp = F.tunnelFrame({ kind: 'geneve', inner, bareIp: true });
  const gre = F.tunnelFrame({ kind: 'gre', inner });
  const e2 = F.tunnelFrame({ kind: 'erspan2', inner });
  const e3 = F.tunnelFrame({ kind: 'erspan3', inner });
  const cases: [string, Uint8Array, bigint][] = [
    // [what, frame, decap count expected: 1 when the tunnel header itself was accepted]
    ['vxlan without the I flag', patch(vx, 'vxlan', 0, 0x00), 0n],
    ['geneve version 1', patch(gn, 'geneve', 0, 0x40), 0n],
    ['geneve control (O) message', patch(gn, 'geneve', 1, 0x80), 0n],
    ['geneve protocol ARP', patch(gn, 'geneve', 3, 0x06), 0n],
    ['geneve says IPv6, carries IPv4', patch(gnIp, 'geneve', 2, 0x86), 0n],
    ['geneve options longer than the frame', patch(gn, 'geneve', 0, 0x3f), 0n],
    ['gre version 1', patch(gre, 'gre', 1, 0x01), 0n],
    ['gre routing bit', patch(gre, 'gre', 0, 0x40), 0n],
    ['gre carrying plain IPv4 (a routed tunnel, not a mirror)', new Uint8Array(0), 0n], // built below
    ['erspan II version 2', patch(e2, 'erspan2', 0, 0x20), 0n],
    ['erspan III version 1', patch(e3, 'erspan3', 0, 0x10), 0n],
    ['erspan III frame type 1', patch(e3, 'erspan3', 10, 1 << 2), 0n],
    ['inner frame with three VLAN tags', F.tunnelFrame({ kind: 'vxlan', inner: F.tcpFrame({ ...INNER4, vlans: [{ tci: 1 }, { tci: 2 }, { tci: 3 }] }) }).bytes, 1n],
    ['inner frame not IP (ARP)', F.tunnelFrame({ kind: 'gre', inner: { bytes: F.concat(F.eth(DMAC, SMAC, [], F.ETH_P_ARP), F.arpRequest({ smac: SMAC, sip: HOST4, tip: PEER4 })), layers: [] } }).bytes, 1n],
    ['VXLAN inside VXLAN (one level only)', F.tunnelFrame({ kind: 'vxlan', inner: F.tunnelFrame({ kind: 'vxlan', inner }) }).bytes, 1n],
    ['UDP to another port', F.tunnelFrame({ kind: 'vxlan', inner, udpPort: 4790 }).bytes, 0n],
  ];
  // The GRE-IPv4 case: protocol 0x0800 in the GRE header.
  const greIp = gre.bytes.slice();
  const gp = gre.layers.find((x) => x.name === 'gre')!.start;
  greIp[gp + 2] = 0x08;
  greIp[gp + 3] = 0x00;
  cases[8] = ['gre carrying plain IPv4 (a routed tunnel, not a mirror)', greIp, 0n];
  for (const [name, bytes, decap] of cases) {
    const if0 = readIf(l);
    assertNoEvent(t, run(l, bytes), {}, name);
    t.is(readIf(l).decap - if0.decap, decap, `${name}: decap`);
  }
  // Positive control: the unpatched frames do give events.
  for (const f of [vx, gn, gre, e2, e3]) {
    t.is(run(l, f).events.length, 1);
    l.flows.keys().forEach((k) => l.flows.delete(k));
  }
});

ptest('tunnels: truncated at every header boundary and every byte of both header stacks: no event, every frame counted', (t) => {
  const l = fresh();
  addTarget(l, HOST4);
  addTarget(l, HOST6);
  const inner = F.tcpFrame({ ...INNER4, ipOptions: Uint8Array.of(1, 1, 1, 0), tcpOptions: F.tcpOption.mss(1400) });
  const frames: [string, F.Frame][] = [
    ...KINDS.map((kind): [string, F.Frame] => [kind, F.tunnelFrame({ kind, inner, outerVlans: [{ tci: 3 }] })]),
    ['geneve options, outer v6', F.tunnelFrame({ kind: 'geneve', inner: F.tcpFrame(INNER6), geneveOptions: F.seqBytes(8), outerSrc: '2001:db8:ff::1', outerDst: '2001:db8:ff::2' })],
    ['geneve bare IPv6', F.tunnelFrame({ kind: 'geneve', inner: F.tcpFrame(INNER6), bareIp: true })],
    ['erspan3 subheader, bare IP', F.tunnelFrame({ kind: 'erspan3', inner, bareIp: true, erspan3Subheader: true })],
    ['gre c+k+s', F.tunnelFrame({ kind: 'gre', inner, greCsum: true, greKey: 1, greSeq: 2 })],
  ];
  for (const [name, f] of frames) {
    expectCutsSilent(t, l, name, f);
    l.flows.keys().forEach((k) => l.flows.delete(k));
  }
});

ptest('per-interface counters: plain TCP, non-TCP and tunnelled frames counted on their interface', (t) => {
  const l = fresh();
  const if0 = readIf(l);
  run(l, F.tcpFrame({ src: OTHER4, dst: PEER4, sport: 1, dport: 2 }));
  run(l, F.concat(F.eth(DMAC, SMAC, [], F.ETH_P_IP), F.ipv4({ src: OTHER4, dst: PEER4, protocol: F.IPPROTO_UDP }, F.udp({ sport: 53, dport: 53 }))));
  run(l, F.tunnelFrame({ kind: 'gre', inner: F.tcpFrame({ src: OTHER4, dst: PEER4, sport: 3, dport: 4 }) }));
  const if1 = readIf(l);
  t.deepEqual(
    { packets: if1.packets - if0.packets, tcp: if1.tcp - if0.tcp, decap: if1.decap - if0.decap, foreignCpus: if1.foreignCpus },
    { packets: 3n, tcp: 2n, decap: 1n, foreignCpus: 0 },
  );
});
