/**
 * TypeScript mirror of bpf/tcpreset.h: names, capacities, struct layouts,
 * and the pure encoders/decoders for what crosses the kernel/user boundary.
 * test/contract.test.ts checks every size and offset here against the BTF
 * of the built object, so a change to the header that is not made here too
 * fails the tests.
 */
import type { Family } from '../core/model.js';

export const PROG_NAME = 'tcpreset_xdp';
export const MAP_TARGETS = 'targets';
export const MAP_FLOWS = 'flows';
export const MAP_EVENTS = 'events';
/** ARRAY_OF_MAPS: slot i holds the ring of consumer i % N (empty: the "events" ring). */
export const MAP_EVENT_RINGS = 'event_rings';
export const MAP_COUNTERS = 'counters';
export const MAP_PREFILTER = 'prefilter';
export const MAP_UDP_TUNNELS = 'udp_tunnels';
export const MAP_IF_COUNTERS = 'if_counters';
export const MAP_FLOWMEM = 'flowmem';

export const MAX_TARGETS = 131072;
export const MAX_FLOWS = 65536;
export const RINGBUF_BYTES = 8 << 20;
export const RING_SLOTS = 8;
export const MAX_VLANS = 2;
/** Default slots of the flow memory (connections, a power of two); the daemon's `flowMemory` config overrides it. */
export const FLOWMEM_DEFAULT = 262144;
/** Kernel memory per flow memory slot, bytes: one tr_fm_entry in an array map (checked against its memlock by test/flowmem.test.ts). */
export const FLOWMEM_BYTES_PER_ENTRY = 192;
/** The global-data section holding tr_fm_mask (slots - 1), set before load. */
export const FLOWMEM_MASK_SECTION = '.rodata.flowmem';
export const PREFILTER_BITS = 1 << 23;
export const PREFILTER_WORDS = PREFILTER_BITS / 64;
export const DUP_INTERVAL_NS = 10_000_000n;

/** Tunnel kinds of tr_event.encap (bpf/encap.h removes one level). */
export const ENCAP_NONE = 0;
export const ENCAP_VXLAN = 1;
export const ENCAP_GENEVE = 2;
export const ENCAP_GRE = 3;
export const ENCAP_ERSPAN1 = 4;
export const ENCAP_ERSPAN2 = 5;
export const ENCAP_ERSPAN3 = 6;
export const VXLAN_PORT = 4789;
export const GENEVE_PORT = 6081;
export const UDP_PORTS = 65536;
/** The inner packet had no Ethernet header: its MACs and VLAN tags are unknown. */
export const ENCAP_F_NO_L2 = 0x01;
export const IF_SLOTS = 1024;

/** Names of the tunnel kinds, for logs and status (index = TR_ENCAP_*). */
export const ENCAP_NAMES = ['none', 'vxlan', 'geneve', 'gre', 'erspan1', 'erspan2', 'erspan3'] as const;
export type EncapName = (typeof ENCAP_NAMES)[number];

export function encapName(kind: number): EncapName | `encap-${number}` {
  return ENCAP_NAMES[kind] ?? `encap-${kind}`;
}

export const FAMILY_V4 = 4;
export const FAMILY_V6 = 6;
export const PORT_ANY = 0;

/** MPTCP (RFC 8684 §3): TCP option kind 30 and the subtypes the program reads or the forger writes. */
export const TCPOPT_MPTCP = 30;
export const MPTCP_CAPABLE = 0;
export const MPTCP_JOIN = 1;
export const MPTCP_FASTCLOSE = 7;
/** TCP options walked per segment at most by the program's MPTCP parser. */
export const MAX_TCP_OPTS = 10;
/**
 * tr_fm_mptcp.flags / tr_event.mp_flags. Endpoint 0/1: A/B of the flow
 * memory key; source/destination of an event.
 */
export const MP_SEEN = 0x01;
export const MP_CAPABLE = 0x02;
export const MP_JOIN = 0x04;
export const MP_KEY0 = 0x08;
export const MP_KEY1 = 0x10;
export const MP_TOKEN0 = 0x20;
export const MP_TOKEN1 = 0x40;

export const MATCH_SRC = 1;
export const MATCH_DST = 2;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

/** tr_fm_entry.state bits; closed = RST, or FIN from both ends. */
export const FM_FIN_A = 0x01;
export const FM_FIN_B = 0x02;
export const FM_RST = 0x04;

/** Struct layouts: size and byte offset of every field, as in the header. */
export const LAYOUT = {
  tr_target_key: { size: 24, fields: { ifindex: 0, port: 4, family: 6, pad: 7, addr: 8 } },
  tr_target_value: { size: 16, fields: { target_id: 0, pad: 4, expires_ns: 8 } },
  tr_event: {
    size: 120,
    fields: {
      ts_ns: 0, target_id: 8, ifindex: 12, seq: 16, ack: 20, payload_len: 24, flow_label: 28,
      sport: 32, dport: 34, vlan_tpid: 36, vlan_tci: 40, family: 44, vlan_count: 45,
      tcp_flags: 46, ttl: 47, tos: 48, match: 49, smac: 50, dmac: 56, encap: 62, encap_flags: 63, saddr: 64, daddr: 80,
      mp_key_src: 96, mp_key_dst: 104, mp_token: 112, mp_flags: 116, mp_pad: 117,
    },
  },
  tr_flow_key: { size: 44, fields: { ifindex: 0, sport: 4, dport: 6, family: 8, pad: 9, saddr: 12, daddr: 28 } },
  tr_flow_state: { size: 24, fields: { last_ns: 0, seq: 8, ack: 12, flags: 16, pad: 17 } },
  tr_fm_key: { size: 44, fields: { ifindex: 0, port_a: 4, port_b: 6, family: 8, pad: 9, addr_a: 12, addr_b: 28 } },
  tr_fm_dir: {
    size: 56,
    fields: {
      last_ns: 0, seq: 8, ack: 12, payload_len: 16, flow_label: 20, vlan_tpid: 24, vlan_tci: 28,
      smac: 32, dmac: 38, tcp_flags: 44, ttl: 45, tos: 46, vlan_count: 47, key_hash: 48, encap: 52, encap_flags: 53, pad: 54,
    },
  },
  tr_fm_mptcp: { size: 24, fields: { key: 0, token: 16, flags: 20, pad: 21 } },
  tr_fm_entry: { size: 192, fields: { key: 0, state: 44, pad: 45, first_ns: 48, dir: 56, mp: 168 } },
  tr_counters: {
    size: 80,
    fields: { packets: 0, tcp: 8, matched: 16, events: 24, lost: 32, suppressed: 40, rst_seen: 48, expired: 56, fm_new: 64, fm_evicted: 72 },
  },
  tr_if_counters: { size: 32, fields: { ifindex: 0, pad: 4, packets: 8, tcp: 16, decap: 24 } },
} as const;

const EV = LAYOUT.tr_event.fields;

export interface TargetKey {
  ifindex: number;
  family: Family;
  /** 4 or 16 bytes, network order. */
  addr: Uint8Array;
  /** Remote TCP port, or PORT_ANY. */
  port: number;
}

export interface TargetValue {
  targetId: number;
  /** bpf_ktime_get_ns() deadline (CLOCK_MONOTONIC ns); 0n = none. */
  expiresNs: bigint;
}

export interface Vlan {
  tpid: number;
  tci: number;
}

/** One matching TCP segment (struct tr_event). */
export interface TcpEvent {
  tsNs: bigint;
  targetId: number;
  ifindex: number;
  seq: number;
  ack: number;
  payloadLen: number;
  flowLabel: number;
  sport: number;
  dport: number;
  vlans: Vlan[];
  family: Family;
  tcpFlags: number;
  ttl: number;
  tos: number;
  match: number;
  smac: Uint8Array;
  dmac: Uint8Array;
  /** 4 bytes for IPv4, 16 for IPv6, network order. */
  saddr: Uint8Array;
  daddr: Uint8Array;
  /**
   * ENCAP_*: the tunnel the segment arrived in (decodeEvent always sets it;
   * optional so events built by hand for forging may leave it out = none).
   * Addresses, ports, MACs and VLAN tags above are the inner frame's.
   */
  encap?: number;
  /** ENCAP_F_*. */
  encapFlags?: number;
  /**
   * MPTCP, as the subflow's flow memory entry remembered it (optional: a
   * hand-built event is plain TCP). MP_* bits, endpoint 0 = the source.
   */
  mpFlags?: number;
  /** The source's MPTCP key (with MP_KEY0). */
  mpKeySrc?: bigint;
  /** The destination's MPTCP key (with MP_KEY1). */
  mpKeyDst?: bigint;
  /** MP_JOIN token (MP_TOKEN0: the source's; MP_TOKEN1: the destination's). */
  mpToken?: number;
}

export interface Counters {
  packets: bigint;
  tcp: bigint;
  matched: bigint;
  events: bigint;
  lost: bigint;
  suppressed: bigint;
  rstSeen: bigint;
  expired: bigint;
  /** Flow memory entries made (connections not in the table). */
  fmNew: bigint;
  /** Open connections displaced from the flow memory by new ones. */
  fmEvicted: bigint;
}

export const COUNTER_NAMES = ['packets', 'tcp', 'matched', 'events', 'lost', 'suppressed', 'rstSeen', 'expired', 'fmNew', 'fmEvicted'] as const;

export function encodeTargetKey(k: TargetKey, out: Uint8Array = new Uint8Array(LAYOUT.tr_target_key.size)): Uint8Array {
  if (k.family === FAMILY_V4 ? k.addr.length !== 4 : k.addr.length !== 16) {
    throw new RangeError(`target address has ${k.addr.length} bytes, family ${k.family} needs ${k.family === 4 ? 4 : 16}`);
  }
  out.fill(0);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(0, k.ifindex, true);
  dv.setUint16(4, k.port, true);
  dv.setUint8(6, k.family);
  out.set(k.addr, 8);
  return out;
}

export function decodeTargetKey(buf: Uint8Array): TargetKey {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const family = dv.getUint8(6) as Family;
  return {
    ifindex: dv.getUint32(0, true),
    port: dv.getUint16(4, true),
    family,
    addr: buf.slice(8, family === FAMILY_V4 ? 12 : 24),
  };
}

export function encodeTargetValue(v: TargetValue, out: Uint8Array = new Uint8Array(LAYOUT.tr_target_value.size)): Uint8Array {
  out.fill(0);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(0, v.targetId, true);
  dv.setBigUint64(8, v.expiresNs, true);
  return out;
}

/** Decode the tr_event at byte offset `off` of `dv`. Copies everything it returns. */
export function decodeEvent(dv: DataView, off = 0): TcpEvent {
  const family = dv.getUint8(off + EV.family) as Family;
  const alen = family === FAMILY_V4 ? 4 : 16;
  const base = dv.byteOffset + off;
  const bytes = new Uint8Array(dv.buffer, base, LAYOUT.tr_event.size);
  const vlanCount = Math.min(dv.getUint8(off + EV.vlan_count), MAX_VLANS);
  const vlans: Vlan[] = [];
  for (let i = 0; i < vlanCount; i++) {
    vlans.push({ tpid: dv.getUint16(off + EV.vlan_tpid + 2 * i, true), tci: dv.getUint16(off + EV.vlan_tci + 2 * i, true) });
  }
  return {
    tsNs: dv.getBigUint64(off + EV.ts_ns, true),
    targetId: dv.getUint32(off + EV.target_id, true),
    ifindex: dv.getUint32(off + EV.ifindex, true),
    seq: dv.getUint32(off + EV.seq, true),
    ack: dv.getUint32(off + EV.ack, true),
    payloadLen: dv.getUint32(off + EV.payload_len, true),
    flowLabel: dv.getUint32(off + EV.flow_label, true),
    sport: dv.getUint16(off + EV.sport, true),
    dport: dv.getUint16(off + EV.dport, true),
    vlans,
    family,
    tcpFlags: dv.getUint8(off + EV.tcp_flags),
    ttl: dv.getUint8(off + EV.ttl),
    tos: dv.getUint8(off + EV.tos),
    match: dv.getUint8(off + EV.match),
    smac: bytes.slice(EV.smac, EV.smac + 6),
    dmac: bytes.slice(EV.dmac, EV.dmac + 6),
    saddr: bytes.slice(EV.saddr, EV.saddr + alen),
    daddr: bytes.slice(EV.daddr, EV.daddr + alen),
    encap: dv.getUint8(off + EV.encap),
    encapFlags: dv.getUint8(off + EV.encap_flags),
    mpFlags: dv.getUint8(off + EV.mp_flags),
    mpKeySrc: dv.getBigUint64(off + EV.mp_key_src, true),
    mpKeyDst: dv.getBigUint64(off + EV.mp_key_dst, true),
    mpToken: dv.getUint32(off + EV.mp_token, true),
  };
}

function mix32(h: number, w: number): number {
  h = Math.imul(h ^ w, 0x9e3779b1);
  return (h ^ (h >>> 15)) >>> 0;
}

/**
 * tr_prefilter_hash of bpf/tcpreset.h: (ifindex, family, address as four
 * host-order words; IPv4 in the first four bytes, the rest zero).
 */
export function prefilterHash(ifindex: number, family: Family, addr: Uint8Array): number {
  const a = new Uint8Array(16);
  a.set(addr);
  const dv = new DataView(a.buffer);
  let h = mix32((0x74727374 ^ family) >>> 0, ifindex >>> 0);
  for (let i = 0; i < 16; i += 4) h = mix32(h, dv.getUint32(i, true));
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The prefilter bit of a target's address: word index into the map and bit within the word. */
export function prefilterBit(k: Pick<TargetKey, 'ifindex' | 'family' | 'addr'>): { word: number; bit: number } {
  const b = prefilterHash(k.ifindex, k.family, k.addr) & (PREFILTER_BITS - 1);
  return { word: b >>> 6, bit: b & 63 };
}

/** Sum a per-CPU counters value (ncpu slots of tr_counters, each 8-byte aligned). */
export function sumCounters(buf: Uint8Array, ncpu: number): Counters {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const size = LAYOUT.tr_counters.size;
  const sums = new Array<bigint>(COUNTER_NAMES.length).fill(0n);
  for (let c = 0; c < ncpu; c++) {
    for (let i = 0; i < COUNTER_NAMES.length; i++) sums[i] += dv.getBigUint64(c * size + i * 8, true);
  }
  const out = {} as Counters;
  COUNTER_NAMES.forEach((n, i) => (out[n] = sums[i]));
  return out;
}

/** One interface's traffic as the program counted it (struct tr_if_counters, summed over CPUs). */
export interface IfCounters {
  packets: bigint;
  tcp: bigint;
  decap: bigint;
  /** CPUs whose slot belongs to another interface (ifindex mod IF_SLOTS collides): the sums miss their share. */
  foreignCpus: number;
}

/** The if_counters slot of an interface. */
export function ifSlot(ifindex: number): number {
  return ifindex & (IF_SLOTS - 1);
}

/** Sum a per-CPU if_counters value for `ifindex`, skipping CPU slots another interface owns. */
export function sumIfCounters(buf: Uint8Array, ncpu: number, ifindex: number): IfCounters {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const size = LAYOUT.tr_if_counters.size;
  const F = LAYOUT.tr_if_counters.fields;
  const out: IfCounters = { packets: 0n, tcp: 0n, decap: 0n, foreignCpus: 0 };
  for (let c = 0; c < ncpu; c++) {
    const base = c * size;
    const owner = dv.getUint32(base + F.ifindex, true);
    if (owner !== ifindex) {
      // 0 with zero counts: this CPU never saw a frame of any interface in the slot.
      if (owner !== 0) out.foreignCpus++;
      continue;
    }
    out.packets += dv.getBigUint64(base + F.packets, true);
    out.tcp += dv.getBigUint64(base + F.tcp, true);
    out.decap += dv.getBigUint64(base + F.decap, true);
  }
  return out;
}
/** struct tr_fm_key, decoded: the connection's endpoints in canonical order (A sorts first). */
export interface FlowKey {
  ifindex: number;
  family: Family;
  /** 4 bytes for IPv4, 16 for IPv6, network order. */
  addrA: Uint8Array;
  portA: number;
  addrB: Uint8Array;
  portB: number;
}

/** struct tr_fm_dir: the last segment one endpoint sent (a RST included: verification reads its seq). */
export interface FlowDir {
  /** bpf_ktime_get_ns() (CLOCK_MONOTONIC ns) when seen. */
  lastNs: bigint;
  seq: number;
  ack: number;
  payloadLen: number;
  flowLabel: number;
  vlans: Vlan[];
  smac: Uint8Array;
  dmac: Uint8Array;
  tcpFlags: number;
  ttl: number;
  tos: number;
  /** ENCAP_*: the tunnel the segment arrived in. */
  encap: number;
  /** ENCAP_F_* (ENCAP_F_NO_L2: no inner Ethernet, MACs zero). */
  encapFlags: number;
}

/** struct tr_fm_entry, decoded: [0] = what A last sent, [1] = what B last sent (null = nothing yet). */
export interface FlowEntry {
  key: FlowKey;
  dirs: [FlowDir | null, FlowDir | null];
  /** bpf_ktime_get_coarse_ns() when made. */
  firstNs: bigint;
  /** FM_* bits. */
  state: number;
  /** What the subflow showed of MPTCP (struct tr_fm_mptcp; decodeFlowEntry always sets it; flags 0 = nothing). */
  mp?: FlowMptcp;
}

/** struct tr_fm_mptcp, decoded. Endpoint 0 = A of the key. */
export interface FlowMptcp {
  /** MP_* bits. */
  flags: number;
  /** [A's key, B's key]; valid with MP_KEY0 / MP_KEY1. */
  keys: [bigint, bigint];
  /** MP_JOIN token of the endpoint MP_TOKEN0 (A) or MP_TOKEN1 (B) names. */
  token: number;
}

/** Closed: a RST was seen, or a FIN from each end. */
export function flowClosed(state: number): boolean {
  return (state & FM_RST) !== 0 || (state & (FM_FIN_A | FM_FIN_B)) === (FM_FIN_A | FM_FIN_B);
}

/** tr_fm_src_is_a of bpf/tcpreset.h: is (saddr, sport) endpoint A of the canonical key? */
export function srcIsA(saddr: Uint8Array, sport: number, daddr: Uint8Array, dport: number): boolean {
  const s = new Uint8Array(16);
  const d = new Uint8Array(16);
  s.set(saddr);
  d.set(daddr);
  const sv = new DataView(s.buffer);
  const dv = new DataView(d.buffer);
  for (let i = 0; i < 16; i += 4) {
    const a = sv.getUint32(i, true);
    const b = dv.getUint32(i, true);
    if (a !== b) return a < b;
  }
  return sport <= dport;
}

/** The canonical key of the connection a segment (saddr:sport -> daddr:dport) belongs to. */
export function canonicalFlow(ifindex: number, family: Family, saddr: Uint8Array, sport: number, daddr: Uint8Array, dport: number): FlowKey {
  return srcIsA(saddr, sport, daddr, dport)
    ? { ifindex, family, addrA: saddr.slice(), portA: sport, addrB: daddr.slice(), portB: dport }
    : { ifindex, family, addrA: daddr.slice(), portA: dport, addrB: saddr.slice(), portB: sport };
}

const FK = LAYOUT.tr_fm_key.fields;
const FD = LAYOUT.tr_fm_dir.fields;
const FE = LAYOUT.tr_fm_entry.fields;
const FM = LAYOUT.tr_fm_mptcp.fields;

/** Words of an IPv4 tr_fm_key that tr_fm_hash mixes (the rest are zero): ifindex, ports, family, addr_a[0..3], addr_b[0..3]. */
const FM_HASH_V4_WORDS = [0, 1, 2, 3, 7] as const;

/**
 * tr_fm_hash of bpf/tcpreset.h over an encoded tr_fm_key at byte offset `off` of `buf`: all 11
 * little-endian words for IPv6, FM_HASH_V4_WORDS for IPv4.
 */
export function fmHash(buf: Uint8Array, off = 0): number {
  const dv = new DataView(buf.buffer, buf.byteOffset + off, LAYOUT.tr_fm_key.size);
  let h = 0x666c6f77;
  if (dv.getUint8(FK.family) === FAMILY_V4) for (const i of FM_HASH_V4_WORDS) h = mix32(h, dv.getUint32(4 * i, true));
  else for (let i = 0; i < LAYOUT.tr_fm_key.size; i += 4) h = mix32(h, dv.getUint32(i, true));
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

export function encodeFlowKey(k: FlowKey, out: Uint8Array = new Uint8Array(LAYOUT.tr_fm_key.size)): Uint8Array {
  const alen = k.family === FAMILY_V4 ? 4 : 16;
  if (k.addrA.length !== alen || k.addrB.length !== alen) throw new RangeError(`flow key addresses of ${k.addrA.length} and ${k.addrB.length} bytes, family ${k.family} needs ${alen}`);
  out.fill(0);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(FK.ifindex, k.ifindex, true);
  dv.setUint16(FK.port_a, k.portA, true);
  dv.setUint16(FK.port_b, k.portB, true);
  dv.setUint8(FK.family, k.family);
  out.set(k.addrA, FK.addr_a);
  out.set(k.addrB, FK.addr_b);
  return out;
}

/** Decode a tr_fm_key at byte offset `off` of `buf`. Copies. */
export function decodeFlowKey(buf: Uint8Array, off = 0): FlowKey {
  const dv = new DataView(buf.buffer, buf.byteOffset + off, LAYOUT.tr_fm_key.size);
  const family = dv.getUint8(FK.family) as Family;
  const alen = family === FAMILY_V4 ? 4 : 16;
  const b = buf.byteOffset + off;
  return {
    ifindex: dv.getUint32(FK.ifindex, true),
    family,
    addrA: new Uint8Array(buf.buffer, b + FK.addr_a, alen).slice(),
    portA: dv.getUint16(FK.port_a, true),
    addrB: new Uint8Array(buf.buffer, b + FK.addr_b, alen).slice(),
    portB: dv.getUint16(FK.port_b, true),
  };
}

function decodeFlowDir(dv: DataView, off: number, bytes: Uint8Array): FlowDir | null {
  const lastNs = dv.getBigUint64(off + FD.last_ns, true);
  if (lastNs === 0n) return null;
  const vlanCount = Math.min(dv.getUint8(off + FD.vlan_count), MAX_VLANS);
  const vlans: Vlan[] = [];
  for (let i = 0; i < vlanCount; i++) vlans.push({ tpid: dv.getUint16(off + FD.vlan_tpid + 2 * i, true), tci: dv.getUint16(off + FD.vlan_tci + 2 * i, true) });
  return {
    lastNs,
    seq: dv.getUint32(off + FD.seq, true),
    ack: dv.getUint32(off + FD.ack, true),
    payloadLen: dv.getUint32(off + FD.payload_len, true),
    flowLabel: dv.getUint32(off + FD.flow_label, true),
    vlans,
    smac: bytes.slice(off + FD.smac, off + FD.smac + 6),
    dmac: bytes.slice(off + FD.dmac, off + FD.dmac + 6),
    tcpFlags: dv.getUint8(off + FD.tcp_flags),
    ttl: dv.getUint8(off + FD.ttl),
    tos: dv.getUint8(off + FD.tos),
    encap: dv.getUint8(off + FD.encap),
    encapFlags: dv.getUint8(off + FD.encap_flags),
  };
}

/**
 * Decode the tr_fm_entry at byte offset `off` of `buf` (copies), or null
 * when the slot is empty or torn: a direction written for another key
 * (two CPUs took the slot at once) must not be replayed.
 */
export function decodeFlowEntry(buf: Uint8Array, off = 0): FlowEntry | null {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const family = dv.getUint8(off + FE.key + FK.family);
  if (family !== FAMILY_V4 && family !== FAMILY_V6) return null;
  const h = fmHash(buf, off + FE.key);
  const d0 = off + FE.dir;
  const d1 = d0 + LAYOUT.tr_fm_dir.size;
  for (const d of [d0, d1]) {
    if (dv.getBigUint64(d + FD.last_ns, true) !== 0n && dv.getUint32(d + FD.key_hash, true) !== h) return null;
  }
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    key: decodeFlowKey(buf, off + FE.key),
    dirs: [decodeFlowDir(dv, d0, bytes), decodeFlowDir(dv, d1, bytes)],
    firstNs: dv.getBigUint64(off + FE.first_ns, true),
    state: dv.getUint8(off + FE.state),
    mp: {
      flags: dv.getUint8(off + FE.mp + FM.flags),
      keys: [dv.getBigUint64(off + FE.mp + FM.key, true), dv.getBigUint64(off + FE.mp + FM.key + 8, true)],
      token: dv.getUint32(off + FE.mp + FM.token, true),
    },
  };
}
