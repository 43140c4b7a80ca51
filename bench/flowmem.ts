/**
 * The per-packet cost of watching (issue 9, make bench §3): kernel time per
 * packet of the XDP program (BPF_PROG_TEST_RUN's own timing, ns) on
 * non-matching TCP, the same object loaded twice: with the flow memory on
 * (the daemon's default `flowMemory`, what a watched sniff interface runs)
 * and off (`flowMemory` 0: the program's mask is the constant 0 and the
 * verifier drops the flow-memory code, i.e. the program as it was before
 * issue 9). Three kinds of packet:
 *
 *   known flow   the same established connection over and over: lookup hit,
 *                one direction's record rewritten in place (a mirror port's
 *                common case: many segments per connection)
 *   new flow     every packet a connection not seen before, the table full:
 *                an open connection displaced (the worst case; §3's
 *                random-address traffic is all of this kind). One
 *                BPF_PROG_TEST_RUN call per frame (it repeats one frame), so
 *                this figure carries the call's own timing overhead, the
 *                same in both configurations: compare them, not the kinds
 *   RST          a flow first seen with a RST (no entry is made)
 *
 * The two configurations take turns within each round (order alternating);
 * medians over the rounds, and the median of the per-round differences.
 * Also: the flow memory's kernel memory, read from the map's fdinfo
 * (`memlock`, what `bpftool map show` prints), per slot.
 */
import { readFileSync } from 'node:fs';
import { BpfObject, defaultObjectPath } from '../src/bpf/object.js';
import { FLOWMEM_DEFAULT, LAYOUT, MAP_FLOWMEM } from '../src/bpf/contract.js';
import { median } from '../testkit/stats.js';
import { DEFAULT_DMAC, DEFAULT_SMAC, mac, tcpFrame } from '../testkit/frames.js';
import type { BenchContext } from './context.js';

/** testkit/frames.ts's default MACs, as bytes (parsing the text for each frame would double the fills' cost). */
const SMAC = mac(DEFAULT_SMAC);
const DMAC = mac(DEFAULT_DMAC);
const DST = Uint8Array.of(10, 98, 0, 1);

/**
 * A 54-byte IPv4 TCP frame 10.99.x.x:sport -> 10.98.0.1:443 (x.x: the low 16
 * bits of `src`), seq 1000, ack 2000, ACK unless `flags` says otherwise.
 * Window 0 and no TCP checksum, as this bench's frames always were: the
 * program checks neither.
 */
export function flowFrame(src: number, sport: number, flags = 0x10): Uint8Array {
  const from = Uint8Array.of(10, 99, (src >> 8) & 0xff, src & 0xff);
  return tcpFrame({ src: from, dst: DST, sport, dport: 443, seq: 1000, ack: 2000, flags, window: 0, noChecksum: true, smac: SMAC, dmac: DMAC }).bytes;
}

/** ns per packet, one configuration. */
export interface FlowmemCosts {
  knownNs: number;
  newNs: number;
  rstNs: number;
}

export interface FlowmemResult {
  object: string;
  rounds: number;
  /** Repetitions per BPF_PROG_TEST_RUN for the known-flow and RST cases. */
  repeat: number;
  /** Distinct new-flow frames per round (one call each). */
  newFrames: number;
  /** Slots of the flow memory when on (the daemon's default). */
  slots: number;
  off: FlowmemCosts;
  on: FlowmemCosts;
  /** Median over rounds of (on - off) within the round, ns per packet. */
  delta: FlowmemCosts;
  /** Per round, for the spread: [off, on] of each kind. */
  perRound: { off: FlowmemCosts; on: FlowmemCosts }[];
  memory: {
    /** sizeof(struct tr_fm_entry): key + state + both directions' records (+ MPTCP, where the tree has it). */
    entryBytes: number;
    /** Sizes of its parts (src/bpf/contract.ts LAYOUT), bytes; mptcp 0 where the tree has none. */
    layout?: { key: number; dir: number; mptcp: number };
    /** The map's memlock as the kernel accounts it (fdinfo), bytes. */
    memlockBytes: number;
    perSlotBytes: number;
  };
}

function fdinfo(fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n')) {
    const m = /^([a-z_]+):\s*(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/**
 * Measures one object (default: this tree's build) with the flow memory off
 * and on. Root (BPF_PROG_TEST_RUN). Throws when the object has no flow memory.
 */
export function measureFlowmem(opts: { path?: string; slots?: number; rounds?: number; log?: (m: string) => void } = {}): FlowmemResult {
  const path = opts.path ?? defaultObjectPath();
  const slots = opts.slots ?? FLOWMEM_DEFAULT;
  const rounds = opts.rounds ?? 7;
  const repeat = 200_000;
  const newFrames = 20_000;
  const off = BpfObject.load(path, { flowMemory: 0 });
  const on = BpfObject.load(path, { flowMemory: slots });
  try {
    const map = on.map(MAP_FLOWMEM);
    const info = fdinfo(map.fd);
    const memlockBytes = Number(info.memlock);
    // Fill the table first, so that new flows displace open ones.
    for (let i = 0; i < 2 * slots; i++) on.testRun(flowFrame(i, 2000 + (i >> 16)));
    const f0 = flowFrame(1, 1000);
    const rst = flowFrame(7, 9, 0x04);
    let n = 0;
    const one = (o: BpfObject): FlowmemCosts => {
      const knownNs = o.testRun(f0, { repeat }).durationNs;
      let sum = 0;
      // The same new-flow frames for both configurations of a round (n restarts), never seen before by `on`.
      for (let i = 0; i < newFrames; i++) sum += o.testRun(flowFrame((n + i) & 0xffff, 3000 + (((n + i) >> 16) & 0x3fff))).durationNs;
      const rstNs = o.testRun(rst, { repeat }).durationNs;
      return { knownNs, newNs: sum / newFrames, rstNs };
    };
    const perRound: { off: FlowmemCosts; on: FlowmemCosts }[] = [];
    for (let r = 0; r < rounds; r++) {
      let a: FlowmemCosts, b: FlowmemCosts;
      if (r % 2 === 0) {
        a = one(off);
        b = one(on);
      } else {
        b = one(on);
        a = one(off);
      }
      n += newFrames;
      perRound.push({ off: a, on: b });
      opts.log?.(`flowmem round ${r + 1}/${rounds}: known ${a.knownNs.toFixed(1)} -> ${b.knownNs.toFixed(1)} ns, new ${a.newNs.toFixed(1)} -> ${b.newNs.toFixed(1)} ns, RST ${a.rstNs.toFixed(1)} -> ${b.rstNs.toFixed(1)} ns`);
    }
    const med = (f: (x: { off: FlowmemCosts; on: FlowmemCosts }) => number): number => Math.round(median(perRound.map(f)) * 10) / 10;
    const kinds = ['knownNs', 'newNs', 'rstNs'] as const;
    const pick = (g: (x: { off: FlowmemCosts; on: FlowmemCosts }, k: (typeof kinds)[number]) => number): FlowmemCosts =>
      Object.fromEntries(kinds.map((k) => [k, med((x) => g(x, k))])) as unknown as FlowmemCosts;
    return {
      object: path,
      rounds,
      repeat,
      newFrames,
      slots,
      off: pick((x, k) => x.off[k]),
      on: pick((x, k) => x.on[k]),
      delta: pick((x, k) => x.on[k] - x.off[k]),
      perRound,
      memory: {
        entryBytes: map.valueSize,
        layout: { key: LAYOUT.tr_fm_key.size, dir: LAYOUT.tr_fm_dir.size, mptcp: (LAYOUT as unknown as Record<string, { size: number } | undefined>).tr_fm_mptcp?.size ?? 0 },
        memlockBytes,
        perSlotBytes: Math.round((memlockBytes / slots) * 100) / 100,
      },
    };
  } finally {
    on.close();
    off.close();
  }
}

/** make bench's "flowmem" section (in §3 of the report). */
export async function runFlowmem(ctx: BenchContext): Promise<FlowmemResult> {
  return measureFlowmem({ rounds: ctx.quick ? 3 : 9, log: ctx.log });
}
