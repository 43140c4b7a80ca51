/**
 * Per-packet cost of the XDP program with 1 target against 100,000 (issue
 * 13, "per-packet cost"): kernel time per packet (BPF_PROG_TEST_RUN's own
 * timing, ns) on the non-matching traffic of make bench §3 (random
 * addresses of 10.99.0.0/16 -> 10.98.0.0/16, never targeted), the same
 * object loaded once per configuration with its targets map and prefilter
 * filled the way the daemon fills them (src/dataplane/slots.ts: one
 * all-ports key per host, the prefilter bit of each address).
 *
 * Run alone with bench/targets.bench.ts; make bench's "prefilter" section
 * runs runTargets() (this tree's object and two larger prefilters).
 *
 * Two kinds of packet, both non-matching:
 *   new flow      every frame a connection not seen before (one call each,
 *                 so the call's own timing overhead is in both
 *                 configurations; the flow memory, on and full as in a
 *                 daemon that has watched a while, displaces an entry):
 *                 what §3's traffic is;
 *   known flows   64 fixed address pairs, each frame repeated 20,000 times
 *                 in one call (caches warm: the lower bound of a lookup).
 * Each configuration also reports the share of frames whose source or
 * destination passes the prefilter (a false positive: the program then
 * looks the address up in the targets map, twice: all ports, then the
 * segment's port). The two configurations alternate within each round, chunk
 * by chunk (500 new-flow frames, or one known frame), the order flipping.
 *
 * Root (BPF_PROG_TEST_RUN). The program sees ifindex 1 (the loopback of
 * the caller's namespace, the kernel's rxq for a test run), so the targets
 * are keyed on ifindex 1; a matching frame is run first as the positive
 * control (its `matched` counter must move).
 */
import { BpfObject, defaultObjectPath } from '../src/bpf/object.js';
import {
  FAMILY_V4, FLOWMEM_DEFAULT, MAP_COUNTERS, MAP_PREFILTER, MAP_TARGETS, PORT_ANY, PREFILTER_BITS, encodeTargetKey, encodeTargetValue, prefilterHash, sumCounters,
} from '../src/bpf/contract.js';
import { median } from '../testkit/stats.js';
import { targetHost } from '../testkit/control.js';
import { DEFAULT_DMAC, DEFAULT_SMAC, mac, tcpFrame } from '../testkit/frames.js';
import { xorshift32 } from '../testkit/rng.js';
import { cpus } from 'node:os';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchContext } from './context.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url)); // from dist/bench/

const IFINDEX = 1;
/** testkit/frames.ts's default MACs, as bytes (parsing the text for each of the fills' million frames doubles their cost). */
const SMAC = mac(DEFAULT_SMAC);
const DMAC = mac(DEFAULT_DMAC);

function v4(a: string): Uint8Array {
  return Uint8Array.from(a.split('.').map(Number));
}

/**
 * A 54-byte IPv4 TCP ACK frame src:sport -> dst:443, seq 1000, ack 2000.
 * Window 0 and no TCP checksum, as this bench's frames always were: the
 * program checks neither, and the checksum would only slow the fills.
 */
function frame(src: Uint8Array, dst: Uint8Array, sport: number): Uint8Array {
  return tcpFrame({ src, dst, sport, dport: 443, seq: 1000, ack: 2000, window: 0, noChecksum: true, smac: SMAC, dmac: DMAC }).bytes;
}

interface Config {
  name: string;
  obj: BpfObject;
  bits: number;
  hashes: number;
  set: Set<number>;
}

/**
 * The prefilter bits of an address: the hash's low bits, and for a
 * two-hash variant also the hash rotated by 16 (the variant runTargets
 * builds tests both; this tree's program tests the first only).
 */
function bitsOf(addr: Uint8Array, bits: number, hashes: number): number[] {
  const h = prefilterHash(IFINDEX, FAMILY_V4, addr);
  const out = [h & (bits - 1)];
  if (hashes === 2) out.push((((h >>> 16) | (h << 16)) >>> 0) & (bits - 1));
  return out;
}

function load(path: string, targets: number, bitsLog2: number, hashes: number): Config {
  const bits = 2 ** bitsLog2;
  const obj = BpfObject.load(path, {});
  // The flow memory full, as on a sensor that has watched a while: new flows displace entries
  // (and the first rounds do not pay for the array's first touch).
  const fill = new Uint8Array(54);
  for (let i = 0; i < FLOWMEM_DEFAULT; i++) {
    fill.set(frame(Uint8Array.of(10, 97, (i >> 8) & 0xff, i & 0xff), Uint8Array.of(10, 96, 0, 1), 1024 + ((i >> 16) & 0x3fff)));
    obj.testRun(fill);
  }
  const tmap = obj.map(MAP_TARGETS);
  const pmap = obj.map(MAP_PREFILTER);
  const words = new Map<number, bigint>();
  const set = new Set<number>();
  const far = BigInt(Date.now() + 3600_000) * 1_000_000n + process.hrtime.bigint(); // far in the future
  for (let i = 0; i < targets; i++) {
    const addr = v4(targetHost(i));
    tmap.update(encodeTargetKey({ ifindex: IFINDEX, family: FAMILY_V4, addr, port: PORT_ANY }), encodeTargetValue({ targetId: i + 1, expiresNs: far }));
    for (const b of bitsOf(addr, bits, hashes)) {
      set.add(b);
      words.set(b >>> 6, (words.get(b >>> 6) ?? 0n) | (1n << BigInt(b & 63)));
    }
  }
  const k = new Uint8Array(4);
  const v = new Uint8Array(8);
  for (const [w, val] of words) {
    new DataView(k.buffer).setUint32(0, w, true);
    new DataView(v.buffer).setBigUint64(0, val, true);
    pmap.update(k, v);
  }
  return { name: `${targets} target${targets === 1 ? '' : 's'}`, obj, bits, hashes, set };
}

function matched(c: Config): bigint {
  const m = c.obj.map(MAP_COUNTERS);
  const buf = m.lookup(new Uint8Array(4));
  return buf ? sumCounters(buf, cpus().length).matched : 0n;
}

export interface TargetsCost {
  /** ns per packet with 1 target, with `targets`, their ratio and difference (medians over rounds of the per-round figures). */
  oneNs: number;
  bigNs: number;
  ratio: number;
  deltaNs: number;
}

export interface TargetsObjectResult {
  object: string;
  /** Bits of the prefilter the object was built with (TR_PREFILTER_BITS). */
  prefilterBits: number;
  /** Bits tested per address (1: this tree; 2: a variant built by runTargets). Absent = 1. */
  hashes?: number;
  targets: number;
  rounds: number;
  newFlow: TargetsCost;
  knownFlows: TargetsCost;
  /** Share of frames whose source or destination bit is set with `targets` (false positives: each costs two targets-map lookups). */
  prefilterPass: { newFlow: number; knownFlows: number; bitsSet: number };
}

export interface TargetsResult {
  /** The tree's object first, then any variants (another prefilter size). */
  objects: TargetsObjectResult[];
}

/** Measures each object with 1 target and with `targets`. Root (BPF_PROG_TEST_RUN). */
export function measureTargets(opts: { objects?: { path: string; bits: number; hashes?: number }[]; rounds?: number; targets?: number; log?: (m: string) => void } = {}): TargetsResult {
  const objects = opts.objects ?? [{ path: defaultObjectPath(), bits: Math.log2(PREFILTER_BITS) }];
  const rounds = opts.rounds ?? 9;
  const targets = opts.targets ?? 100_000;
  const results: TargetsObjectResult[] = [];
  const NEW = 20_000;
  const KNOWN = 64;
  const REPEAT = 20_000;
  for (const o of objects) {
    const one = load(o.path, 1, o.bits, o.hashes ?? 1);
    const big = load(o.path, targets, o.bits, o.hashes ?? 1);
    try {
      // Positive control: a segment from target 0 matches in both.
      const hit = frame(v4(targetHost(0)), v4('10.98.0.1'), 1234);
      for (const c of [one, big]) {
        const m0 = matched(c);
        c.obj.testRun(hit);
        if (matched(c) !== m0 + 1n) throw new Error(`${c.name}: the positive control did not match (ifindex ${IFINDEX}?)`);
      }
      // xorshift32, not Rng: BENCHMARKS.md's "known" pass shares were measured on this sequence.
      const r = xorshift32(0x13);
      const addr = (net: number): Uint8Array => Uint8Array.from([10, net, r() & 0xff, r() & 0xff]);
      const known = Array.from({ length: KNOWN }, (_, i) => frame(addr(99), addr(98), 1024 + i));
      const fp = (c: Config, f: Uint8Array): boolean =>
        bitsOf(f.subarray(26, 30), c.bits, c.hashes).every((b) => c.set.has(b)) || bitsOf(f.subarray(30, 34), c.bits, c.hashes).every((b) => c.set.has(b));
      const per: { one: { n: number; k: number }; big: { n: number; k: number } }[] = [];
      let fpNew = 0;
      let fpTotal = 0;
      for (let round = 0; round < rounds; round++) {
        const fresh = Array.from({ length: NEW }, (_, i) => frame(addr(99), addr(98), 1024 + (i & 0x7fff)));
        for (const f of fresh) if (fp(big, f)) fpNew++;
        fpTotal += NEW;
        // Side by side at a fine grain: chunks of 500 frames (and each known frame) alternate between the
        // two configurations, the order flipping each time, so a burst of other work on the shared
        // machine lands on both alike (whole-round alternation left per-round ratios of 0.8-1.2).
        const a = { n: 0, k: 0 };
        const b = { n: 0, k: 0 };
        const CHUNK = 500;
        for (let i = 0, turn = round; i < NEW; i += CHUNK, turn++) {
          const chunk = fresh.slice(i, i + CHUNK);
          for (const [c, acc] of turn % 2 === 0 ? [[one, a], [big, b]] as const : [[big, b], [one, a]] as const) {
            for (const f of chunk) acc.n += c.obj.testRun(f).durationNs;
          }
        }
        known.forEach((f, i) => {
          for (const [c, acc] of (i + round) % 2 === 0 ? [[one, a], [big, b]] as const : [[big, b], [one, a]] as const) {
            acc.k += c.obj.testRun(f, { repeat: REPEAT }).durationNs;
          }
        });
        a.n /= NEW;
        b.n /= NEW;
        a.k /= KNOWN;
        b.k /= KNOWN;
        per.push({ one: a, big: b });
        opts.log?.(`targets ${o.path.split('/').pop()} (prefilter 2^${Math.log2(big.bits)} bits) round ${round + 1}/${rounds}: new flow ${a.n.toFixed(1)} -> ${b.n.toFixed(1)} ns (${(b.n / a.n).toFixed(3)}x), known ${a.k.toFixed(1)} -> ${b.k.toFixed(1)} ns (${(b.k / a.k).toFixed(3)}x)`);
      }
      const knownFp = known.filter((f) => fp(big, f)).length;
      const med = (f: (x: (typeof per)[number]) => number): number => Math.round(median(per.map(f)) * 1000) / 1000;
      results.push({
        object: o.path,
        prefilterBits: big.bits,
        hashes: big.hashes,
        targets,
        rounds,
        newFlow: { oneNs: med((x) => x.one.n), bigNs: med((x) => x.big.n), ratio: med((x) => x.big.n / x.one.n), deltaNs: med((x) => x.big.n - x.one.n) },
        knownFlows: { oneNs: med((x) => x.one.k), bigNs: med((x) => x.big.k), ratio: med((x) => x.big.k / x.one.k), deltaNs: med((x) => x.big.k - x.one.k) },
        prefilterPass: { newFlow: fpNew / fpTotal, knownFlows: knownFp / KNOWN, bitsSet: big.set.size },
      });
    } finally {
      one.obj.close();
      big.obj.close();
    }
  }
  return { objects: results };
}

/**
 * make bench's "prefilter" section (in §3 of the report): this tree's
 * object, and the same sources built with the other prefilter sizes of
 * 2^21, 2^23 and 2^24 bits (TR_PREFILTER_BITS) and with two hashes at 2^21,
 * for the shape's effect on the ratio.
 */
export function runTargets(ctx: BenchContext): TargetsResult {
  const tree = Math.log2(PREFILTER_BITS);
  const objects: { path: string; bits: number; hashes?: number }[] = [{ path: defaultObjectPath(), bits: tree }];
  const src = join(REPO, 'bpf');
  const variants = [...[21, 23, 24].filter((b) => b !== tree).map((bits) => ({ bits, hashes: 1 })), { bits: 21, hashes: 2 }];
  for (const { bits, hashes } of variants) {
    const dir = join(ctx.tmp, `bpf-prefilter-${bits}-${hashes}`);
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(src)) copyFileSync(join(src, f), join(dir, f));
    const h = join(dir, 'tcpreset.h');
    const text = readFileSync(h, 'utf8');
    const changed = text.replace(/#define TR_PREFILTER_BITS\s+\(1u << \d+\)/, `#define TR_PREFILTER_BITS  (1u << ${bits})`);
    if (changed === text) throw new Error('bpf/tcpreset.h: TR_PREFILTER_BITS not found');
    writeFileSync(h, changed);
    if (hashes === 2) {
      const c = join(dir, 'tcpreset.bpf.c');
      const prog = readFileSync(c, 'utf8');
      const two = prog.replace(TREE_PREFILTER_HIT, TWO_HASH_PREFILTER_HIT);
      if (two === prog) {
        ctx.log('targets: prefilter_hit() of bpf/tcpreset.bpf.c is not the one the two-hash variant replaces; variant skipped');
        continue;
      }
      writeFileSync(c, two);
    }
    const out = join(dir, 'tcpreset.bpf.o');
    execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-Wall', '-Werror', '-Wno-unused-function', '-I', dir, '-idirafter', '/usr/include/x86_64-linux-gnu', '-c', join(dir, 'tcpreset.bpf.c'), '-o', out]);
    objects.push({ path: out, bits, hashes });
  }
  return measureTargets({ objects, rounds: ctx.quick ? 3 : 9, log: ctx.log });
}

/** This tree's prefilter test (bpf/tcpreset.bpf.c), which the two-hash variant replaces. */
const TREE_PREFILTER_HIT = `	__u32 bit = tr_prefilter_hash(pi->flow.ifindex, pi->flow.family, addr) & (TR_PREFILTER_BITS - 1);
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&prefilter, &word);

	return w && (*w & (1ull << (bit & 63)));`;

/** Two bits per address: the hash's low bits and the hash rotated by 16 (bitsOf() sets the same). */
const TWO_HASH_PREFILTER_HIT = `	__u32 h = tr_prefilter_hash(pi->flow.ifindex, pi->flow.family, addr);
	__u32 bit = h & (TR_PREFILTER_BITS - 1);
	__u32 bit2 = ((h >> 16) | (h << 16)) & (TR_PREFILTER_BITS - 1);
	__u32 word = bit >> 6, word2 = bit2 >> 6;
	__u64 *w = bpf_map_lookup_elem(&prefilter, &word);
	__u64 *w2;

	if (!w || !(*w & (1ull << (bit & 63))))
		return 0;
	w2 = bpf_map_lookup_elem(&prefilter, &word2);
	return w2 && (*w2 & (1ull << (bit2 & 63)));`;
