/**
 * TypeScript mirror of bpf/tcpreset.h: names, capacities, struct layouts,
 * and the pure encoders/decoders for what crosses the kernel/user boundary.
 * test/contract.test.ts checks every size and offset here against the BTF
 * of the built object, so a change to the header that is not made here too
 * fails the tests.
 */

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

export const MAX_TARGETS = 131072;
export const MAX_FLOWS = 65536;
export const RINGBUF_BYTES = 8 << 20;
export const RING_SLOTS = 8;
export const MAX_VLANS = 2;
export const PREFILTER_BITS = 1 << 21;
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
export type Family = 4 | 6;
export const PORT_ANY = 0;

export const MATCH_SRC = 1;
export const MATCH_DST = 2;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

/** Struct layouts: size and byte offset of every field, as in the header. */
export const LAYOUT = {
  tr_target_key: { size: 24, fields: { ifindex: 0, port: 4, family: 6, pad: 7, addr: 8 } },
  tr_target_value: { size: 16, fields: { target_id: 0, pad: 4, expires_ns: 8 } },
  tr_event: {
    size: 96,
    fields: {
      ts_ns: 0, target_id: 8, ifindex: 12, seq: 16, ack: 20, payload_len: 24, flow_label: 28,
      sport: 32, dport: 34, vlan_tpid: 36, vlan_tci: 40, family: 44, vlan_count: 45,
      tcp_flags: 46, ttl: 47, tos: 48, match: 49, smac: 50, dmac: 56, encap: 62, encap_flags: 63, saddr: 64, daddr: 80,
    },
  },
  tr_flow_key: { size: 44, fields: { ifindex: 0, sport: 4, dport: 6, family: 8, pad: 9, saddr: 12, daddr: 28 } },
  tr_flow_state: { size: 24, fields: { last_ns: 0, seq: 8, ack: 12, flags: 16, pad: 17 } },
  tr_counters: {
    size: 64,
    fields: { packets: 0, tcp: 8, matched: 16, events: 24, lost: 32, suppressed: 40, rst_seen: 48, expired: 56 },
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
}

export const COUNTER_NAMES = ['packets', 'tcp', 'matched', 'events', 'lost', 'suppressed', 'rstSeen', 'expired'] as const;

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
