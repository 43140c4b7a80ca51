/**
 * The XDP program's flow memory (bpf/flowmem.h) on crafted frames through
 * BPF_PROG_TEST_RUN: one entry per connection in canonical order, each
 * direction's last segment field by field, closed marking (FIN both ways,
 * RST), a new SYN reusing the tuple, IPv6 with tags, displacement when full,
 * and the kernel memory an entry costs.
 *
 * No targets are set: the flow memory remembers every TCP connection of a
 * watched interface, matching or not. The table is read the way the daemon
 * reads it (FlowMemoryView, mmap). BPF_PROG_TEST_RUN runs on loopback's
 * rx queue, so ifindex is 1. Test bodies are synchronous (no interleaving);
 * each starts from an empty map.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { BpfObject, defaultObjectPath, numPossibleCpus, type BpfMap } from '../src/bpf/object.js';
import * as C from '../src/bpf/contract.js';
import { FlowMemoryView } from '../src/dataplane/flow-memory.js';
import * as F from '../testkit/frames.js';
import { ptest } from './helpers/privileged.js';

const IFINDEX = 1;
const OBJ = defaultObjectPath();
// A sorts first: 192.0.2.10 < 198.51.100.20 as host-order words? Compared in the test, not assumed.
const H4 = '192.0.2.10';
const P4 = '198.51.100.20';
const H6 = '2001:db8::10';
const P6 = '2001:db8:1::20';
const SMAC = '02:11:22:33:44:55';
const DMAC = '02:66:77:88:99:aa';

interface Lab {
  obj: BpfObject;
  fm: BpfMap;
  view: FlowMemoryView;
  counters: BpfMap;
  ncpu: number;
}

const labs = new Map<number, Lab>();

function getLab(flowMemory = C.FLOWMEM_DEFAULT): Lab {
  let l = labs.get(flowMemory);
  if (l) return l;
  const obj = BpfObject.load(OBJ, { flowMemory });
  const fm = obj.map(C.MAP_FLOWMEM);
  l = { obj, fm, view: new FlowMemoryView(fm), counters: obj.map(C.MAP_COUNTERS), ncpu: numPossibleCpus() };
  labs.set(flowMemory, l);
  if (labs.size === 1) process.on('exit', () => labs.forEach((x) => x.obj.close()));
  return l;
}

const EMPTY = new Uint8Array(C.LAYOUT.tr_fm_entry.size);

/** Zero the slots in use (array entries cannot be deleted). */
function fresh(flowMemory?: number): Lab {
  const l = getLab(flowMemory);
  const key = new Uint8Array(4);
  for (const e of l.view.all()) {
    new DataView(key.buffer).setUint32(0, e.slot, true);
    l.fm.update(key, EMPTY);
  }
  if (l.view.used() !== 0) throw new Error('flow memory not empty after clearing');
  return l;
}

function counters(l: Lab): C.Counters {
  return C.sumCounters(l.counters.lookup(new Uint8Array(4))!, l.ncpu);
}

interface Entry {
  key: C.FlowKey;
  value: C.FlowEntry;
  slot: number;
}

function entries(l: Lab): Entry[] {
  return l.view.all().map((e) => ({ key: e.key, value: e, slot: e.slot }));
}

/** CLOCK_MONOTONIC_COARSE lags CLOCK_MONOTONIC by up to a tick (HZ 100: 10 ms). */
const TICK_NS = 10_000_000n;

/** Run one frame; returns the monotonic window it ran in (widened by a tick before) and the counter deltas. */
function run(l: Lab, o: F.TcpFrameOpts): { before: bigint; after: bigint; fmNew: bigint; fmEvicted: bigint } {
  const c0 = counters(l);
  const before = process.hrtime.bigint() - TICK_NS;
  const { retval } = l.obj.testRun(F.tcpFrame(o).bytes);
  const after = process.hrtime.bigint();
  if (retval !== 2) throw new Error(`verdict ${retval}, not XDP_PASS`);
  const c1 = counters(l);
  return { before, after, fmNew: c1.fmNew - c0.fmNew, fmEvicted: c1.fmEvicted - c0.fmEvicted };
}

/** What a frame built from `o` must leave in its direction's tr_fm_dir (lastNs checked separately). */
function dirOf(o: F.TcpFrameOpts): Omit<C.FlowDir, 'lastNs'> {
  const v6 = F.ip(o.src).byteLength === 16;
  return {
    seq: o.seq ?? 0,
    ack: o.ack ?? 0,
    payloadLen: o.payload?.byteLength ?? 0,
    flowLabel: v6 ? (o.flowLabel ?? 0) : 0,
    vlans: (o.vlans ?? []).map((v) => ({ tpid: v.tpid ?? F.ETH_P_8021Q, tci: v.tci })),
    smac: F.mac(o.smac ?? F.DEFAULT_SMAC),
    dmac: F.mac(o.dmac ?? F.DEFAULT_DMAC),
    tcpFlags: o.flags ?? F.ACK,
    ttl: o.ttl ?? 64,
    tos: o.tos ?? 0,
    encap: 0,
    encapFlags: 0,
  };
}

function assertDir(t: ExecutionContext, d: C.FlowDir | null, o: F.TcpFrameOpts, w: { before: bigint; after: bigint }, what: string): void {
  if (!d) return void t.fail(`${what}: direction empty`);
  const { lastNs, ...rest } = d;
  t.deepEqual(rest, dirOf(o), what);
  t.true(lastNs >= w.before && lastNs <= w.after, `${what}: last_ns ${lastNs} within [${w.before}, ${w.after}]`);
}

/** Index of the direction a segment from (src, sport) lands in. */
function dirIndex(src: string, sport: number, dst: string, dport: number): 0 | 1 {
  return C.srcIsA(F.ip(src), sport, F.ip(dst), dport) ? 0 : 1;
}

ptest('one entry per connection: both directions, every field, canonical key, fm_new once', (t) => {
  const l = fresh();
  const a: F.TcpFrameOpts = {
    src: H4, dst: P4, sport: 40000, dport: 22, seq: 0xfffffff0, ack: 0x80000001, flags: F.PSH | F.ACK,
    payload: F.seqBytes(100), ttl: 61, tos: 0x28, smac: SMAC, dmac: DMAC, vlans: [{ tci: (5 << 13) | 100 }],
  };
  const w1 = run(l, a);
  t.is(w1.fmNew, 1n, 'first segment makes the entry');
  const b: F.TcpFrameOpts = { src: P4, dst: H4, sport: 22, dport: 40000, seq: 0x80000001, ack: (0xfffffff0 + 100) >>> 0, flags: F.ACK, ttl: 57, smac: DMAC, dmac: SMAC, vlans: [{ tci: (5 << 13) | 100 }] };
  const w2 = run(l, b);
  t.is(w2.fmNew, 0n, 'the reply finds it');
  const es = entries(l);
  t.is(es.length, 1, 'one entry for both directions');
  const [{ key, value }] = es;
  const ia = dirIndex(H4, 40000, P4, 22);
  t.deepEqual(key, C.canonicalFlow(IFINDEX, 4, F.ip(H4), 40000, F.ip(P4), 22));
  t.deepEqual(key, C.canonicalFlow(IFINDEX, 4, F.ip(P4), 22, F.ip(H4), 40000), 'same key from either side');
  assertDir(t, value.dirs[ia], a, w1, 'H4 -> P4');
  assertDir(t, value.dirs[1 - ia], b, w2, 'P4 -> H4');
  t.true(value.firstNs >= w1.before && value.firstNs <= w1.after, 'first_ns from the first segment');
  t.is(value.state, 0);
  t.false(C.flowClosed(value.state));
  // The raw key's padding and unused address bytes are zero (the hash covers every byte), and the slot is the hash's set.
  const sk = new Uint8Array(4);
  new DataView(sk.buffer).setUint32(0, es[0].slot, true);
  const raw = l.fm.lookup(sk)!;
  const K = C.LAYOUT.tr_fm_key.fields;
  t.is(es[0].slot & ~1, C.fmHash(raw) & (C.FLOWMEM_DEFAULT - 1) & ~1, 'slot in the set of its hash');
  t.deepEqual([...raw.subarray(K.pad, K.pad + 3)], [0, 0, 0]);
  t.true(raw.subarray(K.addr_a + 4, K.addr_a + 16).every((x) => x === 0) && raw.subarray(K.addr_b + 4, K.addr_b + 16).every((x) => x === 0));
  // A later segment of one direction replaces that direction only.
  const a2 = { ...a, seq: 5, ack: 6, payload: F.seqBytes(3), vlans: [] };
  const w3 = run(l, a2);
  const v2 = entries(l)[0].value;
  assertDir(t, v2.dirs[ia], a2, w3, 'H4 -> P4 again');
  assertDir(t, v2.dirs[1 - ia], b, w2, 'P4 -> H4 untouched');
});

ptest('direction index follows the canonical order, not who spoke first (both orders, v4 and v6)', (t) => {
  for (const [x, y] of [[H4, P4], [P4, H4], [H6, P6], [P6, H6]] as const) {
    const l = fresh();
    const o: F.TcpFrameOpts = { src: x, dst: y, sport: 1000, dport: 2000, seq: 7, ack: 8 };
    run(l, o);
    const [{ key, value }] = entries(l);
    const first = dirIndex(x, 1000, y, 2000);
    t.not(value.dirs[first], null, `${x} -> ${y} stored in dir[${first}]`);
    t.is(value.dirs[1 - first], null, 'the other direction not yet seen');
    const srcIsA = first === 0;
    t.deepEqual([...(srcIsA ? key.addrA : key.addrB)], [...F.ip(x)]);
    t.is(srcIsA ? key.portA : key.portB, 1000);
  }
  // Same address both ends (a host talking to itself): ports decide.
  const l = fresh();
  run(l, { src: H4, dst: H4, sport: 9000, dport: 80 });
  const [{ key, value }] = entries(l);
  t.deepEqual([key.portA, key.portB], [80, 9000]);
  t.is(value.dirs[0], null);
  t.not(value.dirs[1], null);
});

ptest('closed: FIN from one end is open, FIN from both ends is closed; RST closes; data after RST reopens; a new SYN starts afresh', (t) => {
  const l = fresh();
  const ia = dirIndex(H4, 40000, P4, 443);
  const finA = ia === 0 ? C.FM_FIN_A : C.FM_FIN_B;
  const finB = ia === 0 ? C.FM_FIN_B : C.FM_FIN_A;
  run(l, { src: H4, dst: P4, sport: 40000, dport: 443, seq: 10, ack: 20, flags: F.FIN | F.ACK });
  let v = entries(l)[0].value;
  t.is(v.state, finA, 'one FIN');
  t.false(C.flowClosed(v.state), 'half-closed is still open');
  run(l, { src: P4, dst: H4, sport: 443, dport: 40000, seq: 20, ack: 11, flags: F.FIN | F.ACK });
  v = entries(l)[0].value;
  t.is(v.state, finA | finB);
  t.true(C.flowClosed(v.state), 'FIN both ways: closed');

  // RST: closes, and is its sender's last segment (seq, flags): verification tells a dead end's answer by its seq.
  const l2 = fresh();
  const d = { src: H4, dst: P4, sport: 40001, dport: 443, seq: 100, ack: 200, payload: F.seqBytes(10) };
  const w = run(l2, d);
  run(l2, { src: P4, dst: H4, sport: 443, dport: 40001, seq: 200, flags: F.RST });
  v = entries(l2)[0].value;
  t.is(v.state, C.FM_RST);
  t.true(C.flowClosed(v.state));
  assertDir(t, v.dirs[dirIndex(H4, 40001, P4, 443)], d, w, 'last data segment kept');
  t.is(v.dirs[dirIndex(P4, 443, H4, 40001)]?.seq, 200, 'the RST is its sender\'s last segment: seq');
  t.is(v.dirs[dirIndex(P4, 443, H4, 40001)]?.tcpFlags, F.RST, 'the RST is its sender\'s last segment: flags');
  // A bare ACK after the RST (e.g. the last ACK in flight) does not reopen; data does.
  run(l2, { src: H4, dst: P4, sport: 40001, dport: 443, seq: 110, ack: 200 });
  t.is(entries(l2)[0].value.state, C.FM_RST, 'bare ACK after RST: still closed');
  run(l2, { src: H4, dst: P4, sport: 40001, dport: 443, seq: 110, ack: 200, payload: F.seqBytes(5) });
  t.is(entries(l2)[0].value.state, 0, 'data after RST: the RST was refused, open again');

  // A SYN (no ACK) on a closed tuple: a new connection, the old one forgotten.
  run(l2, { src: P4, dst: H4, sport: 443, dport: 40001, seq: 1, flags: F.RST });
  const c0 = counters(l2);
  const ws = run(l2, { src: H4, dst: P4, sport: 40001, dport: 443, seq: 5000, flags: F.SYN });
  v = entries(l2)[0].value;
  t.is(v.state, 0, 'state cleared');
  t.true(v.firstNs >= ws.before && v.firstNs <= ws.after, 'first_ns restarts');
  t.is(v.dirs[dirIndex(H4, 40001, P4, 443)]?.seq, 5000);
  t.is(v.dirs[dirIndex(P4, 443, H4, 40001)], null, 'the peer direction of the old connection forgotten');
  t.is(counters(l2).fmNew - c0.fmNew, 0n, 'reused in place, not a new entry');
});

ptest('a flow first seen with a RST makes no entry (an RST flood costs no memory)', (t) => {
  const l = fresh();
  const w = run(l, { src: H4, dst: P4, sport: 1, dport: 2, seq: 3, flags: F.RST | F.ACK });
  t.is(w.fmNew, 0n);
  t.is(w.fmEvicted, 0n);
  t.deepEqual(entries(l), []);
  // Positive control: the same tuple with an ACK is remembered.
  t.is(run(l, { src: H4, dst: P4, sport: 1, dport: 2, seq: 3 }).fmNew, 1n);
  t.is(entries(l).length, 1);
});

ptest('IPv6 with QinQ tags: addresses, flow label, traffic class, hop limit and both tags per direction', (t) => {
  const l = fresh();
  const vlans = [{ tpid: F.ETH_P_8021AD, tci: 0x10c8 }, { tpid: F.ETH_P_8021Q, tci: 0x0064 }];
  const a: F.TcpFrameOpts = { src: H6, dst: P6, sport: 50000, dport: 443, seq: 1, ack: 2, flowLabel: 0xabcde, tos: 0xb8, ttl: 63, vlans, smac: SMAC, dmac: DMAC, payload: F.seqBytes(20) };
  const b: F.TcpFrameOpts = { src: P6, dst: H6, sport: 443, dport: 50000, seq: 2, ack: 21, flowLabel: 0x12345, ttl: 58, vlans: [vlans[0]], smac: DMAC, dmac: SMAC };
  const w1 = run(l, a);
  const w2 = run(l, b);
  const [{ key, value }] = entries(l);
  t.is(key.family, 6);
  t.deepEqual(key, C.canonicalFlow(IFINDEX, 6, F.ip(H6), 50000, F.ip(P6), 443));
  assertDir(t, value.dirs[dirIndex(H6, 50000, P6, 443)], a, w1, 'H6 -> P6');
  assertDir(t, value.dirs[dirIndex(P6, 443, H6, 50000)], b, w2, 'P6 -> H6');
  // v4 and v6 flows with the same ports are distinct entries.
  run(l, { src: H4, dst: P4, sport: 50000, dport: 443 });
  t.is(entries(l).length, 2);
});

ptest('non-TCP and unparsable frames leave the flow memory alone', (t) => {
  const l = fresh();
  const c0 = counters(l);
  l.obj.testRun(F.concat(F.eth(DMAC, SMAC, [], F.ETH_P_IP), F.ipv4({ src: H4, dst: P4, protocol: F.IPPROTO_UDP }, F.udp({ sport: 1, dport: 2 }))));
  const three = F.tcpFrame({ src: H4, dst: P4, sport: 1, dport: 2, vlans: [{ tci: 1 }, { tci: 2 }, { tci: 3 }] });
  l.obj.testRun(three.bytes);
  t.deepEqual(entries(l), []);
  t.is(counters(l).fmNew - c0.fmNew, 0n);
});

/** Busy-wait past a coarse clock tick, so last-seen times differ. */
function nextTick(): void {
  const until = process.hrtime.bigint() + 2n * TICK_NS;
  while (process.hrtime.bigint() < until) {
    /* spin: test bodies stay synchronous */
  }
}

/** n connections (H4:port -> P4:80) whose keys fall in the same 2-slot set of a table of `slots`. */
function sameSet(slots: number, n: number): number[] {
  const want = new Map<number, number[]>();
  for (let port = 1024; ; port++) {
    const k = C.encodeFlowKey(C.canonicalFlow(IFINDEX, 4, F.ip(H4), port, F.ip(P4), 80));
    const set = C.fmHash(k) & (slots - 1) & ~1;
    const ps = want.get(set) ?? [];
    ps.push(port);
    want.set(set, ps);
    if (ps.length === n) return ps;
  }
}

ptest('full set: the least recently seen connection is displaced and counted; a closed one goes first and is not counted', (t) => {
  const l = fresh(64);
  t.is(l.fm.maxEntries, 64);
  const [pa, pb, pc, pd] = sameSet(64, 4);
  const seg = (port: number, o: Partial<F.TcpFrameOpts> = {}): F.TcpFrameOpts => ({ src: H4, dst: P4, sport: port, dport: 80, seq: port, ack: 1, ...o });
  const ports = (): number[] => entries(l).map((e) => (e.key.portA === 80 ? e.key.portB : e.key.portA)).sort((x, y) => x - y);
  t.deepEqual([run(l, seg(pa)).fmNew, run(l, seg(pb)).fmNew], [1n, 1n]);
  nextTick();
  run(l, seg(pa, { seq: pa + 1 })); // a is now the more recent
  nextTick();
  const rc = run(l, seg(pc));
  t.deepEqual([rc.fmNew, rc.fmEvicted], [1n, 1n], 'c displaced an open connection');
  t.deepEqual(ports(), [pa, pc].sort((x, y) => x - y), 'b, least recently seen, went');
  run(l, { src: P4, dst: H4, sport: 80, dport: pc, seq: 9, flags: F.RST });
  nextTick();
  run(l, seg(pa, { seq: pa + 2 }));
  const rd = run(l, seg(pd));
  t.deepEqual([rd.fmNew, rd.fmEvicted], [1n, 0n], 'the closed connection made room, not counted as evicted');
  t.deepEqual(ports(), [pa, pd].sort((x, y) => x - y));
});

ptest('full table (64 slots, 1,000 connections): evicted = made - present, exactly; nothing fails', (t) => {
  const l = fresh(64);
  const c0 = counters(l);
  const n = 1000;
  for (let i = 0; i < n; i++) run(l, { src: `10.1.${i >> 8}.${i & 255}`, dst: P4, sport: 1024 + i, dport: 80 });
  const made = counters(l).fmNew - c0.fmNew;
  const evicted = counters(l).fmEvicted - c0.fmEvicted;
  const present = entries(l).length;
  t.is(made, BigInt(n), 'every new connection made an entry');
  t.true(present > 48 && present <= 64, `${present} of 64 slots used`);
  t.is(evicted, made - BigInt(present), 'each displaced open connection counted once');
  t.is(l.view.used(), present, 'no torn entries');
  t.true(entries(l).some((e) => e.key.portA === 1024 + n - 1 || e.key.portB === 1024 + n - 1), 'the newest connection is present');
});

ptest('kernel memory per slot: the map\'s memlock is FLOWMEM_BYTES_PER_ENTRY x slots (+10 %)', (t) => {
  const l = getLab();
  const info = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'id', String(mapId(l.fm.fd))], { encoding: 'utf8' })) as { bytes_memlock: number; max_entries: number };
  t.is(info.max_entries, C.FLOWMEM_DEFAULT);
  const per = info.bytes_memlock / info.max_entries;
  t.log(`flowmem: ${info.bytes_memlock} bytes for ${info.max_entries} slots = ${per.toFixed(1)} bytes per slot (${(info.bytes_memlock / 1048576).toFixed(1)} MiB)`);
  t.true(per <= C.FLOWMEM_BYTES_PER_ENTRY * 1.1 && per >= C.FLOWMEM_BYTES_PER_ENTRY, `${per.toFixed(1)} bytes per slot vs ${C.FLOWMEM_BYTES_PER_ENTRY} stated`);
});

/** The map id behind one of our fds (/proc/self/fdinfo). */
function mapId(fd: number): number {
  const info = execFileSync('cat', [`/proc/${process.pid}/fdinfo/${fd}`], { encoding: 'utf8' });
  const m = /map_id:\s+(\d+)/.exec(info);
  if (!m) throw new Error(`no map_id in fdinfo of fd ${fd}`);
  return Number(m[1]);
}

test('srcIsA / canonicalFlow: either side of a connection gives one key', (t) => {
  const a = F.ip(H4);
  const b = F.ip(P4);
  t.deepEqual(C.canonicalFlow(1, 4, a, 1, b, 2), C.canonicalFlow(1, 4, b, 2, a, 1));
  t.not(C.srcIsA(a, 1, b, 2), C.srcIsA(b, 2, a, 1));
  t.true(C.srcIsA(a, 1, a, 2) && !C.srcIsA(a, 2, a, 1), 'same address: lower port is A');
});

ptest('flowMemory 0: the memory is off, the program remembers nothing and counts nothing; the matching path is unchanged', (t) => {
  const obj = BpfObject.load(OBJ, { flowMemory: 0 });
  t.teardown(() => obj.close());
  const fm = obj.map(C.MAP_FLOWMEM);
  t.is(fm.maxEntries, 1);
  const counters = obj.map(C.MAP_COUNTERS);
  const read = (): C.Counters => C.sumCounters(counters.lookup(new Uint8Array(4))!, numPossibleCpus());
  const c0 = read();
  for (let i = 0; i < 10; i++) obj.testRun(F.tcpFrame({ src: H4, dst: P4, sport: 1000 + i, dport: 80 }).bytes);
  const c1 = read();
  t.is(c1.tcp - c0.tcp, 10n, 'parsed');
  t.is(c1.fmNew - c0.fmNew, 0n, 'nothing remembered');
  t.true(fm.lookup(new Uint8Array(4))!.every((b) => b === 0), 'the one slot untouched');
  t.throws(() => BpfObject.load(OBJ, { flowMemory: 3 }), { message: /flowMemory.*power of two/ });
});

ptest('findSlots/match/rstSeq: the sweep reads slots without decoding; match re-checks the query; rstSeq sees only that end\'s RST of that connection', (t) => {
  const l = fresh();
  const open: F.TcpFrameOpts = { src: H4, dst: P4, sport: 40001, dport: 443, seq: 1000, ack: 2000, flags: F.ACK };
  run(l, open);
  run(l, { src: H4, dst: P4, sport: 40002, dport: 80, seq: 1, ack: 2, flags: F.ACK }); // another port
  run(l, { src: P4, dst: '203.0.113.9', sport: 5555, dport: 443, seq: 1, ack: 2, flags: F.ACK }); // another host
  const q = { ifindex: IFINDEX, family: 4 as const, addr: F.ip(H4) };
  const slots = l.view.findSlots(q);
  t.deepEqual(slots.map((s) => l.view.match(s, q)), l.view.find(q), 'find() = findSlots + match');
  t.is(slots.length, 2);
  const withPort = l.view.findSlots({ ...q, port: 443 });
  t.is(withPort.length, 1);
  const m = l.view.match(withPort[0]!, { ...q, port: 443 })!;
  t.is(m.key.portA === 40001 || m.key.portB === 40001, true);
  t.is(l.view.match(withPort[0]!, { ...q, port: 80 }), null, 'match re-checks the port');
  t.is(l.view.match(withPort[0]!, { ...q, addr: F.ip('203.0.113.9') }), null, 'and the host');
  const bytes = C.encodeFlowKey(m.key);
  const key = { bytes, hash: C.fmHash(bytes) };
  const hostEnd = m.hostEnd;
  const peerEnd = (1 - hostEnd) as 0 | 1;
  t.is(l.view.rstSeq(m.slot, key, hostEnd), null, 'no RST yet');
  // The peer answers with a RST (seq 7777): that end's last segment; the connection is closed from now.
  run(l, { src: P4, dst: H4, sport: 443, dport: 40001, seq: 7777, ack: 0, flags: F.RST });
  t.is(l.view.rstSeq(m.slot, key, peerEnd), 7777);
  t.is(l.view.rstSeq(m.slot, key, peerEnd, F.mac(SMAC)), 7777, 'from another MAC than ours: its answer');
  t.is(l.view.rstSeq(m.slot, key, peerEnd, F.mac(F.DEFAULT_SMAC)), null, 'from our MAC (the reset interface\'s): a RST we sent, not its answer');
  t.is(l.view.rstSeq(m.slot, key, hostEnd), null, 'the other end sent no RST');
  const other = C.encodeFlowKey({ ...m.key, portB: m.key.portB + 1, portA: m.key.portA });
  t.is(l.view.rstSeq(m.slot, { bytes: other, hash: C.fmHash(other) }, peerEnd), null, 'another connection\'s key: nothing');
  t.is(l.view.findSlots({ ...q, port: 443 }).length, 0, 'closed: not found');
  t.is(l.view.findSlots({ ...q, port: 443, closed: true }).length, 1, 'unless asked for');
  t.is(l.view.match(m.slot, { ...q, port: 443 }), null, 'match says closed too');
});
