/**
 * Bad packets: random and mutated frames through the real XDP program
 * (BPF_PROG_TEST_RUN), then every event through the user-space decoder and
 * forger; random ring records through the decoder and forger.
 *
 * The oracle is a reference parser written here from the header formats and
 * the matching rules of bpf/tcpreset.h (independent of the program): for
 * every frame it says whether the program must see a TCP segment, which
 * target (if any) it matches, and the exact event it must emit. Each frame
 * is checked against it: verdict XDP_PASS, counters moved exactly as the
 * reference says, and an event only for a frame that matches a live target,
 * carrying that frame's fields. RSTs forged from events are parsed back and
 * checked (checksums, addresses, sequence rule); malformed records must not
 * yield any RST.
 *
 * STRESS_SCALE=full: >= 100,000 frames. STRESS_SEED replays a run.
 */
import { Prefilter } from '../../src/dataplane/prefilter.js';
import test from 'ava';
import { BpfObject, numPossibleCpus, type BpfMap } from '../../src/bpf/object.js';
import { RingReader } from '../../src/bpf/ringbuf.js';
import * as C from '../../src/bpf/contract.js';
import type { Counters, TcpEvent } from '../../src/bpf/contract.js';
import { forgeResets, l2Frame, type RstPacket } from '../../src/packet/forge.js';
import * as F from '../../testkit/frames.js';
import { ptest } from '../helpers/privileged.js';
import { SCALE, scaled } from './scale.js';
import { Rng, seedFromEnv } from '../../testkit/rng.js';

const XDP_PASS = 2;
/** BPF_PROG_TEST_RUN without a context runs as if received on lo (ifindex 1). */
const IFINDEX = 1;
const FRAMES = scaled(25_000, 250_000);
const RECORDS = scaled(50_000, 500_000);

// ---------------------------------------------------------------- targets

interface RefTarget {
  family: 4 | 6;
  text: string;
  addr: Uint8Array;
  port: number;
  id: number;
  expired: boolean;
}

const T = {
  host4: { family: 4, text: '192.0.2.10', port: 0, id: 11, expired: false },
  port4: { family: 4, text: '192.0.2.20', port: 443, id: 12, expired: false },
  old4: { family: 4, text: '192.0.2.30', port: 0, id: 13, expired: true },
  host6: { family: 6, text: '2001:db8::10', port: 0, id: 21, expired: false },
  port6: { family: 6, text: '2001:db8::20', port: 8443, id: 22, expired: false },
  old6: { family: 6, text: '2001:db8::30', port: 0, id: 23, expired: true },
  // Same address as host6's bytes 0..3 would be, but IPv4: keys carry the family.
  v4InV6: { family: 4, text: '32.1.13.184', port: 0, id: 31, expired: false },
} as const;
const TARGETS: RefTarget[] = Object.values(T).map((x) => ({ ...x, family: x.family as 4 | 6, addr: F.ip(x.text) }));

const V4_POOL = ['192.0.2.10', '192.0.2.20', '192.0.2.30', '192.0.2.11', '192.0.2.21', '198.51.100.1', '198.51.100.2', '32.1.13.184', '0.0.0.0', '255.255.255.255'];
const V6_POOL = ['2001:db8::10', '2001:db8::20', '2001:db8::30', '2001:db8::11', '2001:db8:1::1', '2001:db8:1::2', '::ffff:192.0.2.10', '::', 'ff02::1', 'fe80::1'];
const PORT_POOL = [443, 8443, 80, 22, 0, 1, 65535, 444, 8442];

// ---------------------------------------------------------------- reference parser (independent of the program)

interface RefSegment {
  family: 4 | 6;
  saddr: Uint8Array;
  daddr: Uint8Array;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  payloadLen: number;
  ttl: number;
  tos: number;
  flowLabel: number;
  vlans: { tpid: number; tci: number }[];
  smac: Uint8Array;
  dmac: Uint8Array;
}

const u16 = (f: Uint8Array, o: number): number => (f[o] << 8) | f[o + 1];
const u32 = (f: Uint8Array, o: number): number => ((f[o] << 24) | (f[o + 1] << 16) | (f[o + 2] << 8) | f[o + 3]) >>> 0;

/**
 * What the program is specified to parse (bpf/tcpreset.h and the program's
 * header comment): Ethernet, up to two 802.1Q/802.1ad tags, IPv4 (IHL >= 5,
 * header in the frame, not a later fragment, protocol TCP, total length >=
 * header) or IPv6 (up to three hop-by-hop/routing/destination-options
 * headers, each in the frame, then TCP), TCP header with options in the
 * frame and within the IP length. Payload length from the IP length field.
 */
function refParse(f: Uint8Array): RefSegment | null {
  const n = f.byteLength;
  if (n < 14) return null;
  let off = 12;
  let type = u16(f, off);
  off += 2;
  const vlans: { tpid: number; tci: number }[] = [];
  while (vlans.length < 2 && (type === 0x8100 || type === 0x88a8)) {
    if (off + 4 > n) return null;
    vlans.push({ tpid: type, tci: u16(f, off) });
    type = u16(f, off + 2);
    off += 4;
  }
  let family: 4 | 6;
  let saddr: Uint8Array;
  let daddr: Uint8Array;
  let ttl: number;
  let tos: number;
  let flowLabel = 0;
  let ipLeft: number;
  if (type === 0x0800) {
    if (off + 20 > n) return null;
    if (f[off] >> 4 !== 4) return null; // the receiving stack drops another version: so does the program
    const hl = (f[off] & 0x0f) * 4;
    if (hl < 20 || off + hl > n) return null;
    if ((u16(f, off + 6) & 0x1fff) !== 0) return null;
    if (f[off + 9] !== 6) return null;
    const total = u16(f, off + 2);
    if (total < hl) return null;
    family = 4;
    tos = f[off + 1];
    ttl = f[off + 8];
    saddr = f.slice(off + 12, off + 16);
    daddr = f.slice(off + 16, off + 20);
    ipLeft = total - hl;
    off += hl;
  } else if (type === 0x86dd) {
    if (off + 40 > n) return null;
    if (f[off] >> 4 !== 6) return null;
    family = 6;
    tos = ((f[off] & 0x0f) << 4) | (f[off + 1] >> 4);
    flowLabel = ((f[off + 1] & 0x0f) << 16) | (f[off + 2] << 8) | f[off + 3];
    ipLeft = u16(f, off + 4);
    let next = f[off + 6];
    ttl = f[off + 7];
    saddr = f.slice(off + 8, off + 24);
    daddr = f.slice(off + 24, off + 40);
    off += 40;
    for (let i = 0; i < 3 && (next === 0 || next === 43 || next === 60); i++) {
      if (off + 2 > n) return null;
      const len = (f[off + 1] + 1) * 8;
      if (off + len > n) return null;
      next = f[off];
      off += len;
      ipLeft -= len;
    }
    if (next !== 6 || ipLeft < 0) return null;
  } else {
    return null;
  }
  if (off + 20 > n) return null;
  const th = (f[off + 12] >> 4) * 4;
  if (th < 20 || off + th > n || ipLeft < th) return null;
  return {
    family, saddr, daddr, ttl, tos, flowLabel, vlans,
    sport: u16(f, off), dport: u16(f, off + 2), seq: u32(f, off + 4), ack: u32(f, off + 8),
    flags: f[off + 13], payloadLen: ipLeft - th, smac: f.slice(6, 12), dmac: f.slice(0, 6),
  };
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * The four lookups in the contract's order: (src, any), (src, dport),
 * (dst, any), (dst, sport). Expired entries are skipped (noted); the first
 * live one wins.
 */
function refMatch(s: RefSegment): { live: RefTarget | null; match: number; expiredSeen: boolean } {
  const keys: [Uint8Array, number, number][] = [
    [s.saddr, 0, C.MATCH_SRC], [s.saddr, s.dport, C.MATCH_SRC], [s.daddr, 0, C.MATCH_DST], [s.daddr, s.sport, C.MATCH_DST],
  ];
  let expiredSeen = false;
  for (const [addr, port, match] of keys) {
    const hit = TARGETS.find((t) => t.family === s.family && t.port === port && sameBytes(t.addr, addr));
    if (!hit) continue;
    if (hit.expired) {
      expiredSeen = true;
      continue;
    }
    return { live: hit, match, expiredSeen };
  }
  return { live: null, match: 0, expiredSeen };
}

// ---------------------------------------------------------------- RST checks (independent of forge.ts)

/** RSTs checkRsts found carrying MP_FASTCLOSE (so the fuzz shows that branch was exercised). */
let fastcloseChecked = 0;

/** Why these RSTs are not what the docs/design.md table says for `ev`, or null. */
function checkRsts(ev: TcpEvent, rsts: RstPacket[], srcMac: Uint8Array): string | null {
  const f = ev.tcpFlags;
  const S = ev.seq >>> 0;
  const K = ev.ack >>> 0;
  const N = (S + ev.payloadLen + (f & C.TCP_SYN ? 1 : 0) + (f & C.TCP_FIN ? 1 : 0)) >>> 0;
  const RA = C.TCP_RST | C.TCP_ACK;
  type Want = { toward: 'src' | 'dst'; seq: number; ack: number; flags: number };
  let want: Want[];
  if (f & C.TCP_RST) want = [];
  else if (f & C.TCP_SYN) {
    want = f & C.TCP_ACK
      ? [{ toward: 'src', seq: K, ack: (S + 1) >>> 0, flags: RA }, { toward: 'dst', seq: N, ack: K, flags: RA }]
      : [{ toward: 'src', seq: 0, ack: (S + 1) >>> 0, flags: RA }];
  } else if (f & C.TCP_ACK) want = [{ toward: 'src', seq: K, ack: N, flags: RA }, { toward: 'dst', seq: N, ack: K, flags: RA }];
  else want = [{ toward: 'dst', seq: N, ack: 0, flags: C.TCP_RST }];
  if (rsts.length !== want.length) return `${rsts.length} RSTs for flags 0x${f.toString(16)}, want ${want.length}`;
  for (let i = 0; i < want.length; i++) {
    const w = want[i];
    const r = rsts[i];
    const p = r.packet;
    const toSrc = w.toward === 'src';
    const dst = toSrc ? ev.saddr : ev.daddr;
    const src = toSrc ? ev.daddr : ev.saddr;
    const sport = toSrc ? ev.dport : ev.sport;
    const dport = toSrc ? ev.sport : ev.dport;
    if (r.toward !== w.toward || r.family !== ev.family) return `RST ${i}: toward ${r.toward} family ${r.family}`;
    // RFC 8684 §3.5.1: where the event carries the receiver's MPTCP key, its RST carries
    // MP_FASTCLOSE (kind 30, length 12, subtype 7, 12 reserved bits, the key big-endian).
    const mp = ev.mpFlags ?? 0;
    const key = toSrc ? (mp & C.MP_KEY0 ? ev.mpKeySrc : undefined) : (mp & C.MP_KEY1 ? ev.mpKeyDst : undefined);
    const opt = key === undefined ? 0 : 12;
    let t: number;
    if (ev.family === 4) {
      if (p.byteLength !== 40 + opt || p[0] !== 0x45 || u16(p, 2) !== 40 + opt || p[9] !== 6) return `RST ${i}: bad IPv4 header`;
      if (F.checksum(p.subarray(0, 20)) !== 0) return `RST ${i}: IPv4 header checksum`;
      if (!sameBytes(p.subarray(12, 16), src) || !sameBytes(p.subarray(16, 20), dst)) return `RST ${i}: IPv4 addresses`;
      if (p[8] === 0) return `RST ${i}: TTL 0`;
      t = 20;
    } else {
      if (p.byteLength !== 60 + opt || p[0] >> 4 !== 6 || u16(p, 4) !== 20 + opt || p[6] !== 6) return `RST ${i}: bad IPv6 header`;
      if (!sameBytes(p.subarray(8, 24), src) || !sameBytes(p.subarray(24, 40), dst)) return `RST ${i}: IPv6 addresses`;
      if (p[7] === 0) return `RST ${i}: hop limit 0`;
      t = 40;
    }
    if (u16(p, t) !== sport || u16(p, t + 2) !== dport) return `RST ${i}: ports`;
    if (u32(p, t + 4) !== w.seq || u32(p, t + 8) !== w.ack) return `RST ${i}: seq/ack ${u32(p, t + 4)}/${u32(p, t + 8)}, want ${w.seq}/${w.ack}`;
    if (p[t + 12] !== (5 + opt / 4) << 4 || p[t + 13] !== w.flags) return `RST ${i}: offset/flags 0x${p[t + 12].toString(16)}/0x${p[t + 13].toString(16)}`;
    if (key !== undefined) {
      const o = t + 20;
      if (p[o] !== C.TCPOPT_MPTCP || p[o + 1] !== 12 || p[o + 2] !== C.MPTCP_FASTCLOSE << 4 || p[o + 3] !== 0) return `RST ${i}: MP_FASTCLOSE header`;
      if (new DataView(p.buffer, p.byteOffset + o + 4, 8).getBigUint64(0) !== key) return `RST ${i}: MP_FASTCLOSE key`;
      fastcloseChecked++;
    }
    if (F.checksum(p.subarray(t, t + 20 + opt), F.pseudoHeaderSum(src, dst, 6, 20 + opt)) !== 0) return `RST ${i}: TCP checksum`;
    // Layer 2: victim's MAC, our MAC, the observed VLAN stack, then the packet.
    const fr = l2Frame(r, ev, srcMac);
    const hdr = 14 + 4 * ev.vlans.length;
    if (fr.byteLength !== hdr + p.byteLength) return `RST ${i}: frame length`;
    if (!sameBytes(fr.subarray(0, 6), toSrc ? ev.smac : ev.dmac) || !sameBytes(fr.subarray(6, 12), srcMac)) return `RST ${i}: frame MACs`;
    for (let v = 0; v < ev.vlans.length; v++) {
      if (u16(fr, 12 + 4 * v) !== ev.vlans[v].tpid || u16(fr, 14 + 4 * v) !== ev.vlans[v].tci) return `RST ${i}: VLAN ${v}`;
    }
    if (u16(fr, hdr - 2) !== (ev.family === 4 ? 0x0800 : 0x86dd) || !sameBytes(fr.subarray(hdr), p)) return `RST ${i}: frame payload`;
  }
  return null;
}

/** An event as the program would write it for a segment (for the forger-only path). */
function eventOf(s: RefSegment, match: number, targetId: number): TcpEvent {
  return {
    tsNs: 0n, targetId, ifindex: IFINDEX, seq: s.seq, ack: s.ack, payloadLen: s.payloadLen, flowLabel: s.flowLabel,
    sport: s.sport, dport: s.dport, vlans: s.vlans, family: s.family, tcpFlags: s.flags, ttl: s.ttl, tos: s.tos, match,
    smac: s.smac, dmac: s.dmac, saddr: s.saddr, daddr: s.daddr,
  };
}

/** Field-by-field difference between an event and the reference's expectation, or null. */
function diffEvent(ev: TcpEvent, want: TcpEvent): string | null {
  const scalar = ['targetId', 'ifindex', 'seq', 'ack', 'payloadLen', 'flowLabel', 'sport', 'dport', 'family', 'tcpFlags', 'ttl', 'tos', 'match'] as const;
  for (const k of scalar) if (ev[k] !== want[k]) return `${k} ${ev[k]} != ${want[k]}`;
  for (const k of ['smac', 'dmac', 'saddr', 'daddr'] as const) if (!sameBytes(ev[k], want[k])) return `${k} differs`;
  if (JSON.stringify(ev.vlans) !== JSON.stringify(want.vlans)) return `vlans ${JSON.stringify(ev.vlans)} != ${JSON.stringify(want.vlans)}`;
  return null;
}

// ---------------------------------------------------------------- frame generation and mutation

interface Built {
  bytes: Uint8Array;
  layers: F.Layer[];
}

const FLAG_SETS = [F.SYN, F.SYN | F.ACK, F.ACK, F.PSH | F.ACK, F.FIN | F.ACK, F.RST, F.RST | F.ACK, F.FIN, 0, F.URG | F.ACK, 0xff];

function tcpOptions(r: Rng): Uint8Array | undefined {
  switch (r.int(5)) {
    case 0: return undefined;
    case 1: return F.concat(F.tcpOption.mss(1460), F.tcpOption.sackPermitted(), F.tcpOption.timestamps(r.u32(), r.u32()), F.tcpOption.windowScale(7));
    case 2: return F.tcpOption.timestamps(r.u32(), r.u32());
    case 3: return r.bytes(r.range(1, 40)); // garbage options (kinds, lengths that lie)
    default: return Uint8Array.of(r.int(256), r.int(256), ...r.bytes(r.int(6)));
  }
}

function baseFrame(r: Rng): Built {
  const v6 = r.chance(0.5);
  const pool = v6 ? V6_POOL : V4_POOL;
  // Mostly a target on one side, so matches are common enough to test both ways.
  const a = r.chance(0.75) ? pool[r.int(4)] : r.pick(pool);
  const b = r.pick(pool);
  const [src, dst] = r.chance(0.5) ? [a, b] : [b, a];
  const vlans: F.VlanTag[] = [];
  for (let i = r.pick([0, 0, 0, 1, 1, 2]); i > 0; i--) vlans.push({ tpid: r.pick([F.ETH_P_8021Q, F.ETH_P_8021AD]), tci: r.int(0x10000) });
  const o: F.TcpFrameOpts = {
    src, dst, sport: r.pick(PORT_POOL.concat([r.int(0x10000)])), dport: r.pick(PORT_POOL.concat([r.int(0x10000)])),
    seq: r.u32(), ack: r.u32(), flags: r.chance(0.9) ? r.pick(FLAG_SETS) : r.int(256), window: r.int(0x10000),
    tcpOptions: tcpOptions(r), payload: r.bytes(r.pick([0, 0, 1, 7, 64, 300, 1200])),
    smac: r.bytes(6), dmac: r.bytes(6), vlans, ttl: r.int(256), tos: r.int(256), noChecksum: r.chance(0.3),
  };
  if (!v6) {
    if (r.chance(0.2)) o.ipOptions = r.bytes(r.range(1, 40));
    if (r.chance(0.1)) o.mf = true;
    if (r.chance(0.05)) o.fragOffset = r.int(0x2000);
    o.ipId = r.int(0x10000);
    o.df = r.chance(0.5);
  } else {
    o.flowLabel = r.int(1 << 20);
    if (r.chance(0.3)) {
      const ext: F.Ipv6Ext[] = [];
      for (let i = r.range(1, 4); i > 0; i--) {
        const type = r.pick([F.IPPROTO_HOPOPTS, F.IPPROTO_ROUTING, F.IPPROTO_DSTOPTS, F.IPPROTO_DSTOPTS, F.IPPROTO_FRAGMENT]);
        ext.push(type === F.IPPROTO_FRAGMENT ? { type, fragOffset: r.int(0x2000), mf: r.chance(0.5), id: r.u32() } : { type, body: r.bytes(r.pick([6, 6, 14, 30])) });
      }
      o.ext = ext;
    }
  }
  const fr = F.tcpFrame(o);
  return { bytes: fr.bytes, layers: fr.layers };
}

const INTERESTING = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x05, 0x06, 0x0f, 0x10, 0x11, 0x2b, 0x2c, 0x3b, 0x3c, 0x45, 0x50, 0x60, 0x81, 0x86, 0x88, 0xa8, 0xdd];
const LEN_VALUES = (actual: number): number[] => [0, 1, 19, 20, 39, 40, actual - 1, actual, actual + 1, 0x7fff, 0xffff];

type MutationName = 'bitflip' | 'byte' | 'truncate' | 'length-lie' | 'option-garbage' | 'ethertype' | 'insert' | 'delete' | 'append' | 'address' | 'port';
const MUTATIONS: MutationName[] = ['bitflip', 'bitflip', 'byte', 'truncate', 'length-lie', 'length-lie', 'option-garbage', 'ethertype', 'insert', 'delete', 'append', 'address', 'port'];

function layer(b: Built, prefix: string): F.Layer | undefined {
  return b.layers.find((l) => l.name.startsWith(prefix));
}

/** Apply one mutation in place (or return a new array when the length changes). */
function mutate(r: Rng, b: Built, name: MutationName): Uint8Array {
  let f = b.bytes;
  const headerEnd = layer(b, 'payload')?.start ?? f.byteLength;
  const pos = (): number => (r.chance(0.8) ? r.int(Math.max(1, Math.min(headerEnd + 4, f.byteLength))) : r.int(f.byteLength));
  switch (name) {
    case 'bitflip': {
      for (let k = r.range(1, 4); k > 0; k--) {
        const i = pos();
        f[i] ^= 1 << r.int(8);
      }
      return f;
    }
    case 'byte':
      f[pos()] = r.pick(INTERESTING);
      return f;
    case 'truncate': {
      const cuts = b.layers.flatMap((l) => [l.start, l.end - 1, l.start + 1]).filter((x) => x >= 14 && x < f.byteLength);
      const n = cuts.length && r.chance(0.6) ? r.pick(cuts) : r.range(14, f.byteLength);
      return f.slice(0, n);
    }
    case 'length-lie': {
      const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
      const ip4 = layer(b, 'ipv4');
      const ip6 = layer(b, 'ipv6');
      const tcp = b.layers.find((l) => l.name === 'tcp');
      const ext = b.layers.filter((l) => l.name.startsWith('ext'));
      const choice = r.int(4);
      if (choice === 0 && ip4 && ip4.start + 4 <= f.byteLength) dv.setUint16(ip4.start + 2, r.pick(LEN_VALUES(f.byteLength - ip4.start)));
      else if (choice === 0 && ip6 && ip6.start + 6 <= f.byteLength) dv.setUint16(ip6.start + 4, r.pick(LEN_VALUES(f.byteLength - ip6.start - 40)));
      else if (choice === 1 && ip4 && ip4.start < f.byteLength) f[ip4.start] = (f[ip4.start] & 0xf0) | r.int(16);
      else if (choice === 2 && tcp && tcp.start + 12 < f.byteLength) f[tcp.start + 12] = (r.int(16) << 4) | (f[tcp.start + 12] & 0x0f);
      else if (ext.length && r.chance(0.8)) {
        const e = r.pick(ext);
        if (e.start + 1 < f.byteLength) f[e.start + 1] = r.pick([0, 1, 2, 0x7f, 0xff]);
      } else if (ip4 && ip4.start + 8 <= f.byteLength) dv.setUint16(ip4.start + 6, r.int(0x10000)); // flags + fragment offset
      return f;
    }
    case 'option-garbage': {
      const opts = b.layers.filter((l) => l.name === 'tcp-options' || l.name === 'ipv4-options' || l.name.startsWith('ext'));
      const l = opts.length ? r.pick(opts) : undefined;
      if (!l) return f;
      for (let i = l.start + (l.name.startsWith('ext') ? 2 : 0); i < Math.min(l.end, f.byteLength); i++) f[i] = r.int(256);
      return f;
    }
    case 'ethertype': {
      const at = 12 + 4 * r.int(3);
      if (at + 2 <= f.byteLength) {
        const v = r.pick([0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x9100, 0x0000, r.int(0x10000)]);
        f[at] = v >> 8;
        f[at + 1] = v & 0xff;
      }
      return f;
    }
    case 'insert': {
      const at = r.range(12, Math.min(f.byteLength, headerEnd));
      const ins = r.chance(0.5) ? Uint8Array.of(0x81, 0x00, r.int(256), r.int(256)) : r.bytes(r.range(1, 8));
      return F.concat(f.subarray(0, at), ins, f.subarray(at));
    }
    case 'delete': {
      if (f.byteLength <= 16) return f;
      const at = r.range(12, Math.min(f.byteLength - 1, headerEnd));
      const n = r.range(1, Math.min(8, f.byteLength - at));
      return F.concat(f.subarray(0, at), f.subarray(at + n));
    }
    case 'append':
      return F.concat(f, r.bytes(r.range(1, 64)));
    case 'address': {
      // Rewrite an address to a target's (or one bit off a target's): near misses must not match.
      const ip4 = layer(b, 'ipv4');
      const ip6 = layer(b, 'ipv6');
      const l = ip4 ?? ip6;
      if (!l) return f;
      const alen = ip4 ? 4 : 16;
      const at = l.start + (ip4 ? 12 : 8) + (r.chance(0.5) ? alen : 0);
      const tgt = r.pick(TARGETS.filter((x) => x.addr.byteLength === alen));
      if (at + alen > f.byteLength) return f;
      f.set(tgt.addr, at);
      if (r.chance(0.5)) f[at + r.int(alen)] ^= 1 << r.int(8);
      return f;
    }
    case 'port': {
      const tcp = b.layers.find((l) => l.name === 'tcp');
      if (!tcp || tcp.start + 4 > f.byteLength) return f;
      const at = tcp.start + (r.chance(0.5) ? 0 : 2);
      const v = r.pick([443, 8443, 0, 442, 444, 8442, 8444, r.int(0x10000)]);
      f[at] = v >> 8;
      f[at + 1] = v & 0xff;
      return f;
    }
  }
}

let lastFrame: Uint8Array | undefined;

function fuzzFrame(r: Rng, tally: Map<string, number>): Uint8Array {
  lastFrame = nextFrame(r, tally, lastFrame);
  return lastFrame;
}

function nextFrame(r: Rng, tally: Map<string, number>, previous: Uint8Array | undefined): Uint8Array {
  const bump = (k: string): void => void tally.set(k, (tally.get(k) ?? 0) + 1);
  const roll = r.int(100);
  if (roll < 3 && previous) {
    // The same segment again at once (a mirror duplicating, a retransmission): suppressed unless the interval passed.
    bump('repeat');
    return previous.slice();
  }
  if (roll < 6) {
    bump('random');
    return r.bytes(r.range(14, 200));
  }
  if (roll < 10) {
    // Random bytes behind a plausible Ethernet + EtherType.
    bump('random-after-ethertype');
    const et = r.pick([0x0800, 0x86dd, 0x8100, 0x88a8]);
    return F.concat(r.bytes(12), Uint8Array.of(et >> 8, et & 0xff), r.bytes(r.range(0, 120)));
  }
  const b = baseFrame(r);
  if (roll < 18) {
    bump('unmutated');
    return b.bytes;
  }
  for (let k = r.pick([1, 1, 1, 2, 2, 3, 4]); k > 0; k--) {
    const m = r.pick(MUTATIONS);
    bump(m);
    b.bytes = mutate(r, b, m);
  }
  return b.bytes;
}

// ---------------------------------------------------------------- the program under test

interface Prog {
  obj: BpfObject;
  counters: BpfMap;
  ring: RingReader;
  ncpu: number;
}

function loadProg(): Prog {
  const obj = BpfObject.load();
  const targets = obj.map(C.MAP_TARGETS);
  const prefilter = new Prefilter(obj);
  for (const tg of TARGETS) {
    prefilter.add({ ifindex: IFINDEX, family: tg.family, addr: tg.addr });
    targets.update(
      C.encodeTargetKey({ ifindex: IFINDEX, family: tg.family, addr: tg.addr, port: tg.port }),
      // Expired: a deadline 1 ns after boot. Live: none (0).
      C.encodeTargetValue({ targetId: tg.id, expiresNs: tg.expired ? 1n : 0n }),
    );
  }
  return { obj, counters: obj.map(C.MAP_COUNTERS), ring: new RingReader(obj.map(C.MAP_EVENTS).fd, C.RINGBUF_BYTES), ncpu: numPossibleCpus() };
}

function readCounters(p: Prog): Counters {
  return C.sumCounters(p.counters.lookup(new Uint8Array(4))!, p.ncpu);
}

const SRC_MAC = Uint8Array.of(0x02, 0x5e, 0x5e, 0x5e, 0x5e, 0x01);

ptest(`XDP program on ${FRAMES} random and mutated frames: always XDP_PASS, counters and events exactly as the reference parser says, RSTs well formed`, (t) => {
  const seed = seedFromEnv();
  t.log(`seed ${seed} (STRESS_SEED=${seed} replays), scale ${SCALE}`);
  const r = new Rng(seed);
  const p = loadProg();
  t.teardown(() => {
    p.ring.close();
    p.obj.close();
  });
  const tally = new Map<string, number>();
  const problems: string[] = [];
  const fail = (i: number, frame: Uint8Array, what: string): void => {
    if (problems.length < 10) problems.push(`frame ${i} (${Buffer.from(frame).toString('hex')}): ${what}`);
    else problems.push('');
  };
  const figures = { frames: 0, tiny: 0, tcp: 0, unmatchedTcp: 0, matched: 0, events: 0, suppressed: 0, rstSeen: 0, expired: 0, rsts: 0, forgedOffline: 0, rstsOffline: 0 };
  // Last emitted (seq, ack, flags, ts) per directional flow, to judge suppression exactly.
  const flows = new Map<string, { seq: number; ack: number; flags: number; ts: bigint }>();
  let prev = readCounters(p);
  const t0 = performance.now();

  for (let i = 0; i < FRAMES; i++) {
    let frame = fuzzFrame(r, tally);
    if (i % 997 === 0) frame = r.bytes(r.int(14));
    if (frame.byteLength < 14) {
      // The kernel refuses XDP test frames shorter than Ethernet: an error, never a crash.
      figures.tiny++;
      const err = t.throws(() => p.obj.testRun(frame));
      if (!/errno 22/.test(err?.message ?? '')) fail(i, frame, `short frame: ${err?.message}`);
      continue;
    }
    figures.frames++;
    const before = process.hrtime.bigint();
    let retval: number;
    try {
      retval = p.obj.testRun(frame).retval;
    } catch (err) {
      fail(i, frame, `test run failed: ${(err as Error).message}`);
      continue;
    }
    const events: { ev: TcpEvent; raw: Uint8Array }[] = [];
    p.ring.drain((dv, off, len) => {
      const raw = new Uint8Array(dv.buffer, dv.byteOffset + off, len).slice();
      events.push({ raw, ev: C.decodeEvent(new DataView(raw.buffer)) });
    });
    const now = readCounters(p);
    const d = {} as Record<keyof Counters, number>;
    for (const k of C.COUNTER_NAMES) d[k] = Number(now[k] - prev[k]);
    prev = now;
    if (retval !== XDP_PASS) fail(i, frame, `verdict ${retval}`);
    if (d.packets !== 1) fail(i, frame, `packets +${d.packets}`);

    const seg = refParse(frame);
    if (!seg) {
      if (d.tcp !== 0 || events.length !== 0) fail(i, frame, `not a parsable TCP segment, yet tcp +${d.tcp}, ${events.length} events`);
      continue;
    }
    figures.tcp++;
    if (d.tcp !== 1) fail(i, frame, `reference parses TCP, program counted tcp +${d.tcp}`);
    const m = refMatch(seg);
    // The forger on every parsed segment, matched or not: no throw, RSTs per the table.
    const offline = eventOf(seg, m.match || C.MATCH_SRC, m.live?.id ?? 0);
    const offRsts = forgeResets(offline);
    figures.forgedOffline++;
    figures.rstsOffline += offRsts.length;
    const offBad = checkRsts(offline, offRsts, SRC_MAC);
    if (offBad) fail(i, frame, `offline forge: ${offBad}`);

    if (!m.live) {
      figures.unmatchedTcp++;
      if (m.expiredSeen) figures.expired++;
      if (events.length !== 0) fail(i, frame, `event for a frame that matches no live target: ${JSON.stringify(events[0].ev, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`);
      if (d.matched !== 0 || d.expired !== (m.expiredSeen ? 1 : 0)) fail(i, frame, `no live match, counters matched +${d.matched} expired +${d.expired}`);
      continue;
    }
    figures.matched++;
    if (d.matched !== 1 || d.expired !== 0) fail(i, frame, `live match, counters matched +${d.matched} expired +${d.expired}`);
    if (seg.flags & C.TCP_RST) {
      figures.rstSeen++;
      if (events.length !== 0 || d.rstSeen !== 1) fail(i, frame, `RST segment: ${events.length} events, rst_seen +${d.rstSeen}`);
      continue;
    }
    const key = `${seg.family}|${Buffer.from(seg.saddr).toString('hex')}|${Buffer.from(seg.daddr).toString('hex')}|${seg.sport}|${seg.dport}`;
    const last = flows.get(key);
    const sameInfo = last !== undefined && last.seq === seg.seq && last.ack === seg.ack && last.flags === seg.flags;
    if (events.length === 0) {
      figures.suppressed++;
      // Suppression only for a repeat of the last emitted seq/ack/flags within the interval.
      if (d.suppressed !== 1 || !sameInfo || before - last.ts >= C.DUP_INTERVAL_NS) {
        fail(i, frame, `expected an event (new sequence information or interval over), got none; suppressed +${d.suppressed}`);
      }
      continue;
    }
    if (events.length !== 1 || d.events !== 1) {
      fail(i, frame, `${events.length} events, events +${d.events}`);
      continue;
    }
    figures.events++;
    const { ev, raw } = events[0];
    const diff = diffEvent(ev, eventOf(seg, m.match, m.live.id));
    if (diff) fail(i, frame, `event differs from the frame: ${diff}`);
    const E = C.LAYOUT.tr_event.fields;
    if (raw[E.encap] !== 0 || raw[E.encap_flags] !== 0) fail(i, frame, 'plain frame: event encap bytes not zero');
    if (seg.family === 4 && !raw.subarray(E.saddr + 4, E.saddr + 16).every((x) => x === 0)) fail(i, frame, 'IPv4 event: unused address bytes not zero');
    flows.set(key, { seq: seg.seq, ack: seg.ack, flags: seg.flags, ts: ev.tsNs });
    // The user-space path of a real event: decoded record -> RSTs -> frames.
    const rsts = forgeResets(ev);
    figures.rsts += rsts.length;
    const bad = checkRsts(ev, rsts, SRC_MAC);
    if (bad) fail(i, frame, `forged from the event: ${bad}`);
  }
  const secs = (performance.now() - t0) / 1000;
  const c = readCounters(p);
  t.log(`frames ${figures.frames} (+${figures.tiny} shorter than Ethernet, refused with EINVAL) in ${secs.toFixed(1)} s: ` +
    `TCP parsed ${figures.tcp}, matching no live target ${figures.unmatchedTcp} (${figures.expired} only an expired one), ` +
    `matched ${figures.matched} -> events ${figures.events}, suppressed repeats ${figures.suppressed}, RST segments ${figures.rstSeen}`);
  t.log(`RSTs forged from ring events ${figures.rsts}; forger run offline on all ${figures.forgedOffline} parsed segments -> ${figures.rstsOffline} RSTs, all checked`);
  t.log(`kernel counters: ${C.COUNTER_NAMES.map((k) => `${k}=${c[k]}`).join(' ')}`);
  t.log(`generators/mutations: ${[...tally].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  t.deepEqual(problems.filter(Boolean), [], `${problems.length} frames disagree with the reference`);
  t.is(problems.length, 0);
  // The run means something only if every outcome happened often.
  t.true(figures.events > FRAMES / 50, `events ${figures.events}`);
  t.true(figures.unmatchedTcp > FRAMES / 50, `unmatched ${figures.unmatchedTcp}`);
  t.true(figures.tcp < figures.frames * 0.9 && figures.frames - figures.tcp > FRAMES / 10, 'many frames are not parsable TCP');
  t.true(figures.rstSeen > 0 && figures.expired > 0 && figures.suppressed > 0);
  t.is(Number(c.lost), 0, 'no event lost');
  t.is(Number(c.events), figures.events);
});

// ---------------------------------------------------------------- decoder and forger on raw records (no root)

test(`decodeEvent + forgeResets + l2Frame on ${RECORDS} random 96-byte records: never a crash, RSTs only from well-formed records`, (t) => {
  const seed = seedFromEnv();
  t.log(`seed ${seed}, scale ${SCALE}`);
  const r = new Rng(seed);
  const E = C.LAYOUT.tr_event.fields;
  const buf = new Uint8Array(C.LAYOUT.tr_event.size + 16);
  const problems: string[] = [];
  let wellFormed = 0, malformed = 0, refused = 0, rsts = 0, frames = 0;
  for (let i = 0; i < RECORDS; i++) {
    buf.set(r.bytes(buf.byteLength));
    // Half the records look like the kernel's (family 4/6, known TPIDs, <= 2 tags); the rest are anything.
    const plausible = r.chance(0.5);
    const off = r.int(16);
    if (plausible) {
      buf[off + E.family] = r.pick([4, 6]);
      buf[off + E.vlan_count] = r.int(3);
      for (let v = 0; v < 2; v++) {
        const tpid = r.pick([0x8100, 0x88a8]);
        buf[off + E.vlan_tpid + 2 * v] = tpid & 0xff; // host order (little-endian)
        buf[off + E.vlan_tpid + 2 * v + 1] = tpid >> 8;
      }
    }
    let ev: TcpEvent;
    try {
      ev = C.decodeEvent(new DataView(buf.buffer, 0, buf.byteLength), off);
    } catch (err) {
      problems.push(`record ${i}: decodeEvent threw ${(err as Error).message}`);
      continue;
    }
    const ok = (ev.family === 4 || ev.family === 6) && ev.vlans.every((v) => v.tpid === 0x8100 || v.tpid === 0x88a8);
    if (ok) wellFormed++;
    else malformed++;
    let out: RstPacket[] = [];
    let fr: Uint8Array[] = [];
    try {
      out = forgeResets(ev);
      fr = out.map((x) => l2Frame(x, ev, SRC_MAC));
    } catch (err) {
      if (!(err instanceof RangeError)) problems.push(`record ${i}: ${(err as Error).constructor.name} ${(err as Error).message}`);
      if (ok) problems.push(`record ${i}: well-formed event refused: ${(err as Error).message}`);
      refused++;
      continue;
    }
    if (!ok && (out.length > 0 || fr.length > 0)) {
      problems.push(`record ${i}: ${out.length} RSTs forged from a malformed event (family ${ev.family}, TPIDs ${ev.vlans.map((v) => v.tpid.toString(16))})`);
      continue;
    }
    if (ok) {
      const bad = checkRsts(ev, out, SRC_MAC);
      if (bad) problems.push(`record ${i}: ${bad}`);
    }
    rsts += out.length;
    frames += fr.length;
  }
  t.log(`records ${RECORDS}: well-formed ${wellFormed} -> ${rsts} RSTs (${frames} L2 frames), all checked (${fastcloseChecked} with MP_FASTCLOSE); malformed ${malformed}, refused ${refused}`);
  t.deepEqual(problems.slice(0, 10), []);
  // Random mp_flags set MP_KEY0/MP_KEY1 in about half the records: the MPTCP branch was checked too.
  t.true(fastcloseChecked > rsts / 10, `${fastcloseChecked} of ${rsts} RSTs with MP_FASTCLOSE`);
  t.true(wellFormed > RECORDS / 3 && malformed > RECORDS / 3);
  t.true(refused > RECORDS / 3, 'malformed records are refused with a RangeError');
});
