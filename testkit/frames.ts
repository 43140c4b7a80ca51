/**
 * Pure builders of Ethernet frames for tests and fuzzing: Ethernet with any
 * VLAN stack, IPv4 (options, fragments, lying lengths), IPv6 (extension
 * headers), TCP (options, payload), UDP, ICMP, ARP. Checksums are computed
 * (a receiver that checks them is satisfied), but every field, checksums and
 * lengths included, can be overridden to build broken frames on purpose.
 *
 * Self-contained on purpose: it does not use src/packet/*, so tests that
 * compare the product's checksums or parsing against these frames compare
 * two independent implementations.
 */

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
export const ETH_P_IPV6 = 0x86dd;

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_NONE = 59;
export const IPPROTO_DSTOPTS = 60;

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;
export const URG = 0x20;
export const ECE = 0x40;
export const CWR = 0x80;

/** A MAC or IP address as text ("02:00:00:00:00:01", "10.0.0.1", "fd00::1") or raw bytes. */
export type Addr = string | Uint8Array;

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

export function mac(a: Addr): Uint8Array {
  if (typeof a !== 'string') {
    if (a.byteLength !== 6) throw new RangeError(`MAC has ${a.byteLength} bytes`);
    return Uint8Array.from(a);
  }
  const parts = a.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) throw new RangeError(`bad MAC "${a}"`);
  return Uint8Array.from(parts.map((p) => Number.parseInt(p, 16)));
}

function ipv4Bytes(s: string): Uint8Array | null {
  const parts = s.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return null;
  return Uint8Array.from(parts.map(Number));
}

/** 4 bytes for IPv4, 16 for IPv6 (with "::" and a dotted IPv4 tail). */
export function ip(a: Addr): Uint8Array {
  if (typeof a !== 'string') {
    if (a.byteLength !== 4 && a.byteLength !== 16) throw new RangeError(`IP address has ${a.byteLength} bytes`);
    return Uint8Array.from(a);
  }
  if (!a.includes(':')) {
    const v4 = ipv4Bytes(a);
    if (!v4) throw new RangeError(`bad IPv4 address "${a}"`);
    return v4;
  }
  const words: number[] = [];
  const halves = a.split('::');
  if (halves.length > 2) throw new RangeError(`bad IPv6 address "${a}"`);
  const parseHalf = (h: string): number[] => {
    if (h === '') return [];
    const out: number[] = [];
    const groups = h.split(':');
    groups.forEach((g, i) => {
      if (i === groups.length - 1 && g.includes('.')) {
        const v4 = ipv4Bytes(g);
        if (!v4) throw new RangeError(`bad IPv6 address "${a}"`);
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new RangeError(`bad IPv6 address "${a}"`);
        out.push(Number.parseInt(g, 16));
      }
    });
    return out;
  };
  const head = parseHalf(halves[0]);
  const tail = halves.length === 2 ? parseHalf(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) throw new RangeError(`bad IPv6 address "${a}"`);
  words.push(...head, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...tail);
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** RFC 1071 internet checksum of data (plus a running 32-bit sum), as the 16-bit value to store. */
export function checksum(data: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < data.byteLength; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.byteLength & 1) sum += data[data.byteLength - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Unfolded sum of the TCP/UDP pseudo header (RFC 793 / RFC 8200 8.1). */
export function pseudoHeaderSum(src: Uint8Array, dst: Uint8Array, proto: number, length: number): number {
  let sum = 0;
  for (const a of [src, dst]) for (let i = 0; i < a.byteLength; i += 2) sum += (a[i] << 8) | a[i + 1];
  sum += proto;
  sum += (length >>> 16) + (length & 0xffff);
  return sum;
}

function u16(n: number): Uint8Array {
  return Uint8Array.of((n >> 8) & 0xff, n & 0xff);
}

// ---------------------------------------------------------------- Ethernet

export interface VlanTag {
  /** Default 0x8100 (802.1Q); 0x88a8 for an 802.1ad service tag. */
  tpid?: number;
  /** Whole TCI (PCP << 13 | DEI << 12 | VID). */
  tci: number;
}

/** Ethernet header with its VLAN stack (outermost first): 14 + 4 * vlans.length bytes. */
export function eth(dst: Addr, src: Addr, vlans: readonly VlanTag[], ethertype: number): Uint8Array {
  const parts: Uint8Array[] = [mac(dst), mac(src)];
  for (const v of vlans) parts.push(u16(v.tpid ?? ETH_P_8021Q), u16(v.tci));
  parts.push(u16(ethertype));
  return concat(...parts);
}

// ---------------------------------------------------------------- IPv4

export interface Ipv4Opts {
  src: Addr;
  dst: Addr;
  protocol?: number;
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in 8-byte units. */
  fragOffset?: number;
  /** Options; padded with zero (end-of-options) bytes to a multiple of 4. */
  options?: Uint8Array;
  /** Overrides: header length in 32-bit words, total length, header checksum. */
  ihl?: number;
  totalLen?: number;
  checksum?: number;
}

/** IPv4 header (with options) followed by payload. */
export function ipv4(o: Ipv4Opts, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const opts = o.options ?? new Uint8Array(0);
  const optLen = (opts.byteLength + 3) & ~3;
  const hlen = 20 + optLen;
  const h = new Uint8Array(hlen);
  const dv = new DataView(h.buffer);
  const ihl = o.ihl ?? hlen / 4;
  h[0] = 0x40 | (ihl & 0x0f);
  h[1] = o.tos ?? 0;
  dv.setUint16(2, o.totalLen ?? hlen + payload.byteLength);
  dv.setUint16(4, o.id ?? 0);
  dv.setUint16(6, (o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | ((o.fragOffset ?? 0) & 0x1fff));
  h[8] = o.ttl ?? 64;
  h[9] = o.protocol ?? IPPROTO_TCP;
  h.set(ip(o.src), 12);
  h.set(ip(o.dst), 16);
  h.set(opts, 20);
  dv.setUint16(10, o.checksum ?? checksum(h));
  return concat(h, payload);
}

// ---------------------------------------------------------------- IPv6

/**
 * One IPv6 extension header. Hop-by-hop (0), routing (43) and destination
 * options (60) take `body` (the bytes after next-header and length; padded
 * with zeros to 6 + 8k bytes, default 6 zero bytes = a PadN-free minimum).
 * Fragment (44) takes offset/mf/id.
 */
export interface Ipv6Ext {
  type: number;
  body?: Uint8Array;
  /** Override of the Hdr Ext Len byte (8-octet units beyond the first 8). */
  hdrLen?: number;
  fragOffset?: number;
  mf?: boolean;
  id?: number;
}

export interface Ipv6Opts {
  src: Addr;
  dst: Addr;
  /** Upper-layer protocol after the extension headers (default TCP). */
  nextHeader?: number;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  ext?: readonly Ipv6Ext[];
  /** Override of the payload length field. */
  payloadLen?: number;
}

/** Encode one extension header whose next header is `next`. */
export function ipv6Ext(e: Ipv6Ext, next: number): Uint8Array {
  if (e.type === IPPROTO_FRAGMENT) {
    const f = new Uint8Array(8);
    const dv = new DataView(f.buffer);
    f[0] = next;
    dv.setUint16(2, (((e.fragOffset ?? 0) & 0x1fff) << 3) | (e.mf ? 1 : 0));
    dv.setUint32(4, e.id ?? 0);
    return f;
  }
  const body = e.body ?? new Uint8Array(6);
  const len = body.byteLength <= 6 ? 8 : 8 + (((body.byteLength - 6 + 7) >> 3) << 3);
  const out = new Uint8Array(len);
  out[0] = next;
  out[1] = e.hdrLen ?? len / 8 - 1;
  out.set(body, 2);
  return out;
}

/** IPv6 header, extension headers, then payload. */
export function ipv6(o: Ipv6Opts, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const ext = o.ext ?? [];
  const upper = o.nextHeader ?? IPPROTO_TCP;
  const exts = ext.map((e, i) => ipv6Ext(e, i + 1 < ext.length ? ext[i + 1].type : upper));
  const rest = concat(...exts, payload);
  const h = new Uint8Array(40);
  const dv = new DataView(h.buffer);
  const tc = o.trafficClass ?? 0;
  dv.setUint32(0, ((6 << 28) | ((tc & 0xff) << 20) | ((o.flowLabel ?? 0) & 0xfffff)) >>> 0);
  dv.setUint16(4, o.payloadLen ?? rest.byteLength);
  h[6] = ext.length > 0 ? ext[0].type : upper;
  h[7] = o.hopLimit ?? 64;
  h.set(ip(o.src), 8);
  h.set(ip(o.dst), 24);
  return concat(h, rest);
}

// ---------------------------------------------------------------- TCP, UDP, ICMP, ARP

/** Addresses for the transport checksum's pseudo header. */
export interface Pseudo {
  src: Addr;
  dst: Addr;
}

export interface TcpOpts {
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** Low byte of the flags (FIN..CWR); default ACK. */
  flags?: number;
  window?: number;
  urgent?: number;
  /** Options; padded with zero (end-of-options) bytes to a multiple of 4. */
  options?: Uint8Array;
  payload?: Uint8Array;
  /** Overrides: data offset in 32-bit words, checksum. */
  doff?: number;
  checksum?: number;
}

/** TCP segment (header, options, payload). With pseudo, the checksum is computed; else 0 unless given. */
export function tcp(o: TcpOpts, pseudo?: Pseudo): Uint8Array {
  const opts = o.options ?? new Uint8Array(0);
  const hlen = 20 + ((opts.byteLength + 3) & ~3);
  const payload = o.payload ?? new Uint8Array(0);
  const seg = new Uint8Array(hlen + payload.byteLength);
  const dv = new DataView(seg.buffer);
  dv.setUint16(0, o.sport);
  dv.setUint16(2, o.dport);
  dv.setUint32(4, (o.seq ?? 0) >>> 0);
  dv.setUint32(8, (o.ack ?? 0) >>> 0);
  seg[12] = ((o.doff ?? hlen / 4) & 0x0f) << 4;
  seg[13] = (o.flags ?? ACK) & 0xff;
  dv.setUint16(14, o.window ?? 65535);
  dv.setUint16(18, o.urgent ?? 0);
  seg.set(opts, 20);
  seg.set(payload, hlen);
  let sum = o.checksum ?? 0;
  if (o.checksum === undefined && pseudo) {
    sum = checksum(seg, pseudoHeaderSum(ip(pseudo.src), ip(pseudo.dst), IPPROTO_TCP, seg.byteLength));
  }
  dv.setUint16(16, sum);
  return seg;
}

/** Common TCP options, for building realistic headers. */
export const tcpOption = {
  mss: (mss: number): Uint8Array => Uint8Array.of(2, 4, mss >> 8, mss & 0xff),
  windowScale: (shift: number): Uint8Array => Uint8Array.of(1, 3, 3, shift), // NOP + WS
  sackPermitted: (): Uint8Array => Uint8Array.of(1, 1, 4, 2), // NOP NOP + SACK-permitted
  timestamps: (val: number, ecr: number): Uint8Array => {
    const o = new Uint8Array(12);
    const dv = new DataView(o.buffer);
    o.set([1, 1, 8, 10]); // NOP NOP + TS
    dv.setUint32(4, val >>> 0);
    dv.setUint32(8, ecr >>> 0);
    return o;
  },
};

export interface UdpOpts {
  sport: number;
  dport: number;
  payload?: Uint8Array;
}

export function udp(o: UdpOpts, pseudo?: Pseudo): Uint8Array {
  const payload = o.payload ?? new Uint8Array(0);
  const d = new Uint8Array(8 + payload.byteLength);
  const dv = new DataView(d.buffer);
  dv.setUint16(0, o.sport);
  dv.setUint16(2, o.dport);
  dv.setUint16(4, d.byteLength);
  d.set(payload, 8);
  if (pseudo) {
    const c = checksum(d, pseudoHeaderSum(ip(pseudo.src), ip(pseudo.dst), IPPROTO_UDP, d.byteLength));
    dv.setUint16(6, c === 0 ? 0xffff : c);
  }
  return d;
}

/** ICMPv4 echo request. */
export function icmpEcho(o: { id?: number; seq?: number; payload?: Uint8Array } = {}): Uint8Array {
  const payload = o.payload ?? new Uint8Array(0);
  const d = new Uint8Array(8 + payload.byteLength);
  const dv = new DataView(d.buffer);
  d[0] = 8;
  dv.setUint16(4, o.id ?? 0);
  dv.setUint16(6, o.seq ?? 0);
  d.set(payload, 8);
  dv.setUint16(2, checksum(d));
  return d;
}

/** ARP request (Ethernet/IPv4) body, to follow eth(..., ETH_P_ARP). */
export function arpRequest(o: { smac: Addr; sip: Addr; tip: Addr }): Uint8Array {
  return concat(Uint8Array.of(0, 1, 0x08, 0, 6, 4, 0, 1), mac(o.smac), ip(o.sip), new Uint8Array(6), ip(o.tip));
}

// ---------------------------------------------------------------- whole frames

/** One header of a built frame: [start, end) byte offsets. */
export interface Layer {
  name: string;
  start: number;
  end: number;
}

export interface Frame {
  bytes: Uint8Array;
  /** Headers in order (empty option/extension layers are left out); the payload is last. */
  layers: Layer[];
}

export interface TcpFrameOpts {
  /** Addresses decide the family: IPv4 text/4 bytes or IPv6 text/16 bytes. */
  src: Addr;
  dst: Addr;
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  tcpOptions?: Uint8Array;
  payload?: Uint8Array;
  doff?: number;
  smac?: Addr;
  dmac?: Addr;
  vlans?: readonly VlanTag[];
  /** Overrides the EtherType after the VLAN stack. */
  ethertype?: number;
  /** IPv4 TTL or IPv6 hop limit. */
  ttl?: number;
  /** IPv4 TOS or IPv6 traffic class. */
  tos?: number;
  // IPv4 only
  ipId?: number;
  df?: boolean;
  mf?: boolean;
  fragOffset?: number;
  ipOptions?: Uint8Array;
  ihl?: number;
  totalLen?: number;
  // IPv6 only
  flowLabel?: number;
  ext?: readonly Ipv6Ext[];
  payloadLen?: number;
  /** Skip TCP checksum computation (leave 0), as offloaded mirrored frames often are. */
  noChecksum?: boolean;
}

export const DEFAULT_SMAC = '02:00:00:00:00:01';
export const DEFAULT_DMAC = '02:00:00:00:00:02';

/** A TCP segment in IPv4 or IPv6 in Ethernet (with VLANs), with the layer map for truncation. */
export function tcpFrame(o: TcpFrameOpts): Frame {
  const src = ip(o.src);
  const dst = ip(o.dst);
  if (src.byteLength !== dst.byteLength) throw new RangeError('source and destination of different families');
  const v6 = src.byteLength === 16;
  const vlans = o.vlans ?? [];
  const seg = tcp(
    {
      sport: o.sport, dport: o.dport, seq: o.seq, ack: o.ack, flags: o.flags, window: o.window,
      options: o.tcpOptions, payload: o.payload, doff: o.doff, checksum: o.noChecksum ? 0 : undefined,
    },
    { src, dst },
  );
  const l2 = eth(o.dmac ?? DEFAULT_DMAC, o.smac ?? DEFAULT_SMAC, vlans, o.ethertype ?? (v6 ? ETH_P_IPV6 : ETH_P_IP));
  const layers: Layer[] = [];
  let off = 0;
  const push = (name: string, len: number): void => {
    if (len > 0) layers.push({ name, start: off, end: off + len });
    off += len;
  };
  push('eth', 14);
  vlans.forEach((_, i) => push(`vlan${i}`, 4));
  let l3: Uint8Array;
  if (v6) {
    l3 = ipv6(
      { src, dst, hopLimit: o.ttl, trafficClass: o.tos, flowLabel: o.flowLabel, ext: o.ext, payloadLen: o.payloadLen },
      seg,
    );
    push('ipv6', 40);
    const ext = o.ext ?? [];
    ext.forEach((e, i) => push(`ext${i}:${e.type}`, ipv6Ext(e, 0).byteLength));
  } else {
    l3 = ipv4(
      {
        src, dst, ttl: o.ttl, tos: o.tos, id: o.ipId, df: o.df, mf: o.mf, fragOffset: o.fragOffset,
        options: o.ipOptions, ihl: o.ihl, totalLen: o.totalLen,
      },
      seg,
    );
    push('ipv4', 20);
    push('ipv4-options', (((o.ipOptions?.byteLength ?? 0) + 3) & ~3));
  }
  push('tcp', 20);
  push('tcp-options', ((o.tcpOptions?.byteLength ?? 0) + 3) & ~3);
  push('payload', o.payload?.byteLength ?? 0);
  return { bytes: concat(l2, l3), layers };
}

/** The first n bytes of a frame (a copy). */
export function truncate(frame: Uint8Array | Frame, n: number): Uint8Array {
  const b = frame instanceof Uint8Array ? frame : frame.bytes;
  return b.slice(0, Math.max(0, Math.min(n, b.byteLength)));
}

/**
 * Cut points inside the header stack: for every header (payload excluded),
 * the frame cut where it starts (header absent) and one byte before it ends
 * (header short by one byte).
 */
export function headerCuts(frame: Frame): { name: string; length: number }[] {
  const cuts: { name: string; length: number }[] = [];
  for (const l of frame.layers) {
    if (l.name === 'payload') continue;
    cuts.push({ name: `${l.name} absent`, length: l.start });
    cuts.push({ name: `${l.name} short by 1`, length: l.end - 1 });
  }
  return cuts;
}

/** Offset where the TCP payload starts (= length of all headers). */
export function headersEnd(frame: Frame): number {
  const p = frame.layers.find((l) => l.name === 'payload');
  return p ? p.start : frame.bytes.byteLength;
}

/** Bytes 0..n-1 (handy payloads). */
export function seqBytes(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => i & 0xff);
}

// ---------------------------------------------------------------- tunnels (one level around a frame)

export const IPPROTO_GRE = 47;
export const ETH_P_TEB = 0x6558;
export const ETH_P_ERSPAN = 0x88be;
export const ETH_P_ERSPAN3 = 0x22eb;
export const VXLAN_PORT = 4789;
export const GENEVE_PORT = 6081;

/** VXLAN header (RFC 7348 §5): flags (I = 0x08), VNI. */
export function vxlanHdr(o: { vni?: number; flags?: number } = {}): Uint8Array {
  const h = new Uint8Array(8);
  h[0] = o.flags ?? 0x08;
  const vni = o.vni ?? 42;
  h.set([(vni >> 16) & 0xff, (vni >> 8) & 0xff, vni & 0xff], 4);
  return h;
}

/** Geneve header (RFC 8926 §3.4) with `options` (a multiple of 4 bytes, at most 252). */
export function geneveHdr(o: { proto: number; options?: Uint8Array; vni?: number; version?: number; oam?: boolean; optLenWords?: number }): Uint8Array {
  const opts = o.options ?? new Uint8Array(0);
  const h = new Uint8Array(8 + opts.byteLength);
  const dv = new DataView(h.buffer);
  h[0] = ((o.version ?? 0) << 6) | ((o.optLenWords ?? opts.byteLength / 4) & 0x3f);
  h[1] = o.oam ? 0x80 : 0;
  dv.setUint16(2, o.proto);
  const vni = o.vni ?? 7;
  h.set([(vni >> 16) & 0xff, (vni >> 8) & 0xff, vni & 0xff], 4);
  h.set(opts, 8);
  return h;
}

/** GRE header (RFC 2784, RFC 2890): optional checksum, key and sequence words in that order. */
export function greHdr(o: { proto: number; csum?: boolean; key?: number; seq?: number; routing?: boolean; version?: number }): Uint8Array {
  const words: number[] = [];
  let flags = o.version ?? 0;
  if (o.csum) {
    flags |= 0x8000;
    words.push(0);
  }
  if (o.routing) flags |= 0x4000;
  if (o.key !== undefined) {
    flags |= 0x2000;
    words.push(o.key);
  }
  if (o.seq !== undefined) {
    flags |= 0x1000;
    words.push(o.seq);
  }
  const h = new Uint8Array(4 + 4 * words.length);
  const dv = new DataView(h.buffer);
  dv.setUint16(0, flags);
  dv.setUint16(2, o.proto);
  words.forEach((w, i) => dv.setUint32(4 + 4 * i, w >>> 0));
  return h;
}

/** ERSPAN type II header (draft-foschiano-erspan-03 §4.2): version 1, VLAN, session, index. */
export function erspan2Hdr(o: { session?: number; vlan?: number; index?: number; version?: number } = {}): Uint8Array {
  const h = new Uint8Array(8);
  const dv = new DataView(h.buffer);
  dv.setUint16(0, ((o.version ?? 1) << 12) | ((o.vlan ?? 0) & 0xfff));
  dv.setUint16(2, (o.session ?? 5) & 0x3ff);
  dv.setUint32(4, (o.index ?? 0) & 0xfffff);
  return h;
}

/**
 * ERSPAN type III header (draft-foschiano-erspan-03 §4.3): version 2; frame
 * type ft (0 Ethernet, 2 IP) in bits 6..2 of byte 10; with `subheader`, the
 * O bit and 8 platform-specific bytes.
 */
export function erspan3Hdr(o: { ft?: number; subheader?: boolean; session?: number; version?: number; timestamp?: number } = {}): Uint8Array {
  const h = new Uint8Array(o.subheader ? 20 : 12);
  const dv = new DataView(h.buffer);
  dv.setUint16(0, (o.version ?? 2) << 12);
  dv.setUint16(2, (o.session ?? 5) & 0x3ff);
  dv.setUint32(4, o.timestamp ?? 0x01020304);
  dv.setUint16(8, 0); // SGT
  h[10] = ((o.ft ?? 0) & 0x1f) << 2;
  h[11] = (7 << 2) | (o.subheader ? 1 : 0); // hardware id 7 in the low bits of the byte's top
  if (o.subheader) h.set([0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1], 12);
  return h;
}

export type TunnelKind = 'vxlan' | 'geneve' | 'gre' | 'erspan1' | 'erspan2' | 'erspan3';

export interface TunnelOpts {
  kind: TunnelKind;
  /** The mirrored frame; with bareIp, only its IP packet is carried (Geneve, ERSPAN III). */
  inner: Frame;
  bareIp?: boolean;
  /** Outer addresses decide the outer family. */
  outerSrc?: Addr;
  outerDst?: Addr;
  outerVlans?: readonly VlanTag[];
  /** UDP destination port (VXLAN/Geneve; default the IANA one). */
  udpPort?: number;
  /** GRE optional words. */
  greCsum?: boolean;
  greKey?: number;
  /** GRE sequence number; ERSPAN II/III need it, type I has none. Default 1 for ERSPAN II/III. */
  greSeq?: number;
  geneveOptions?: Uint8Array;
  erspan3Subheader?: boolean;
}

/** The mirrored frame inside one tunnel level, with the layer map of both (inner layers prefixed "inner-"). */
export function tunnelFrame(o: TunnelOpts): Frame {
  const outerSrc = ip(o.outerSrc ?? '192.0.2.200');
  const outerDst = ip(o.outerDst ?? '192.0.2.201');
  const v6 = outerSrc.byteLength === 16;
  const innerStart = o.bareIp ? o.inner.layers.find((l) => l.name.startsWith('ip'))!.start : 0;
  const inner = o.inner.bytes.subarray(innerStart);
  const layers: Layer[] = [];
  let off = 0;
  const push = (name: string, len: number): void => {
    if (len > 0) layers.push({ name, start: off, end: off + len });
    off += len;
  };
  const outerVlans = o.outerVlans ?? [];
  push('outer-eth', 14);
  outerVlans.forEach((_, i) => push(`outer-vlan${i}`, 4));
  push(v6 ? 'outer-ipv6' : 'outer-ipv4', v6 ? 40 : 20);
  let l4: Uint8Array;
  let proto: number;
  const ipProto = (p: number): number => (o.bareIp ? p : ETH_P_TEB);
  const innerProto = (inner[0] >> 4) === 6 ? ETH_P_IPV6 : ETH_P_IP;
  if (o.kind === 'vxlan' || o.kind === 'geneve') {
    const th = o.kind === 'vxlan' ? vxlanHdr() : geneveHdr({ proto: ipProto(innerProto), options: o.geneveOptions });
    l4 = udp({ sport: 54321, dport: o.udpPort ?? (o.kind === 'vxlan' ? VXLAN_PORT : GENEVE_PORT), payload: concat(th, inner) }, { src: outerSrc, dst: outerDst });
    proto = IPPROTO_UDP;
    push('udp', 8);
    push(o.kind, th.byteLength);
  } else {
    const greProto = o.kind === 'gre' ? ETH_P_TEB : o.kind === 'erspan3' ? ETH_P_ERSPAN3 : ETH_P_ERSPAN;
    const seq = o.greSeq ?? (o.kind === 'erspan2' || o.kind === 'erspan3' ? 1 : undefined);
    const gre = greHdr({ proto: greProto, csum: o.greCsum, key: o.greKey, seq });
    const eh = o.kind === 'erspan2' ? erspan2Hdr() : o.kind === 'erspan3' ? erspan3Hdr({ ft: o.bareIp ? 2 : 0, subheader: o.erspan3Subheader }) : new Uint8Array(0);
    l4 = concat(gre, eh, inner);
    proto = IPPROTO_GRE;
    push('gre', gre.byteLength);
    push(o.kind, eh.byteLength);
  }
  for (const l of o.inner.layers) {
    if (l.end <= innerStart) continue;
    layers.push({ name: l.name === 'payload' ? l.name : `inner-${l.name}`, start: off + l.start - innerStart, end: off + l.end - innerStart });
  }
  const l3 = v6 ? ipv6({ src: outerSrc, dst: outerDst, nextHeader: proto }, l4) : ipv4({ src: outerSrc, dst: outerDst, protocol: proto }, l4);
  const l2 = eth('02:00:00:00:0e:02', '02:00:00:00:0e:01', outerVlans, v6 ? ETH_P_IPV6 : ETH_P_IP);
  return { bytes: concat(l2, l3), layers };
}
