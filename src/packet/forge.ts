/**
 * RST forging: from one observed TCP segment, the 0..2 resets that kill the
 * connection at both ends (docs/design.md, "RST forging rules"). Pure: builds
 * bytes, sends nothing.
 *
 * Naming: the observed segment goes A -> B, A = (ev.saddr, ev.sport) = the
 * 'src' endpoint, B = (ev.daddr, ev.dport) = the 'dst' endpoint. A RST
 * `toward: 'src'` is addressed to A and spoofed from B; `toward: 'dst'` is
 * addressed to B and spoofed from A. S = ev.seq, K = ev.ack, L = payload,
 * N = S + L + SYN + FIN (mod 2^32): the sequence number B expects next
 * once it has taken this segment.
 *
 * Linux (RFC 5961) resets a synchronized socket only for seq == RCV.NXT
 * exactly and ignores the ACK field, so the seq values below are the
 * receiver's exact RCV.NXT:
 *
 * | observed            | toward 'src' (A)        | toward 'dst' (B)         |
 * |---------------------|-------------------------|--------------------------|
 * | RST                 | none                    | none                     |
 * | SYN (no ACK)        | RST|ACK seq=0 ack=S+1   | none (B has no state)    |
 * | SYN-ACK             | RST|ACK seq=K ack=S+1   | RST|ACK seq=N ack=K      |
 * | ACK set, no SYN     | RST|ACK seq=K ack=N     | RST|ACK seq=N ack=K      |
 * | no ACK, no SYN      | none (no K to trust)    | RST seq=N ack=0          |
 *
 * SYN-ACK: the observed sender A is the server, the receiver B the client.
 * Toward 'dst' (the client: in SYN-SENT it checks only that ack = its
 * ISN+1 = K; once it took the SYN-ACK its RCV.NXT is S+1+L = N, equal to
 * S+1 when the SYN-ACK carries no data). Toward 'src' (the server: its
 * SYN-RECV request expects seq K, and Linux's tcp_check_req drops any
 * segment with ACK set whose ack is not exactly its ISN+1 = S+1, so that
 * ack must not be N).
 *
 * RST|ACK, not bare RST, wherever a K is known: the ACK field is what a
 * socket in SYN-SENT checks (it refuses a RST that does not ack its SYN),
 * and a SYN-RECV request on Linux ignores a segment with a wrong ack, so
 * carrying the exact value helps there and costs nothing in synchronized
 * states, where stacks ignore it (this is also what Snort and Suricata send).
 * Without an ACK flag on the observed segment (a bare FIN, a scan) its ack
 * field is garbage, so nothing goes to A and the RST to B carries no ACK.
 *
 * A SYN with data (TCP Fast Open) is still answered with ack=S+1: the client
 * accepts any ack in (ISN, SND.NXT], and S+1 is always inside it.
 *
 * MPTCP (docs/design.md, "MPTCP"): where the event carries the receiver's
 * MPTCP key (ev.mpFlags MP_KEY0 for 'src', MP_KEY1 for 'dst'), its RST also
 * carries MP_FASTCLOSE with that key (RFC 8684 §3.5.1, "Option R": RST with
 * MP_FASTCLOSE on the subflow). Linux parses the options of a RST it accepts
 * (tcp_reset -> mptcp_incoming_options, net/mptcp/options.c) and, when the
 * key equals the connection's local_key, sets rcv_fastclose: the MPTCP
 * worker then resets every subflow and the application's socket gets
 * ECONNRESET (mptcp_check_fastclose, net/mptcp/protocol.c). A plain RST only
 * ends the subflow, and the MPTCP socket stays established without one.
 */
import { MP_KEY0, MP_KEY1, MPTCP_FASTCLOSE, TCPOPT_MPTCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, type TcpEvent } from '../bpf/contract.js';
import { fold, onesSum } from './checksum.js';
import type { Family } from '../core/model.js';

export interface RstPacket {
  family: Family;
  /** Which endpoint of the observed segment receives this RST. */
  toward: 'src' | 'dst';
  seq: number;
  ack: number;
  flags: number;
  /** The full IPv4 or IPv6 packet, checksums included; a view (mind byteOffset), not shared with any other packet. */
  packet: Uint8Array;
}

export const IPV4_RST_LEN = 40;
export const IPV6_RST_LEN = 60;
/** MP_FASTCLOSE (RFC 8684 §3.5): kind 30, length 12, subtype 7 and 12 reserved bits, the receiver's 64-bit key. */
export const MP_FASTCLOSE_LEN = 12;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_IPV6 = 0x86dd;

/**
 * TTL / hop limit for a RST spoofed from a host whose TTL we have not seen:
 * the common initial value (Linux, macOS). Also used when the observed
 * value is 0, which no router would forward.
 */
export const DEFAULT_TTL = 64;

/*
 * Packets and frames are views carved from 64 KiB slabs instead of one
 * ArrayBuffer each: V8 allocates a typed array over 64 bytes off-heap at
 * ~350 ns apiece (a 78-byte IPv6 frame), a view on a slab costs ~45 ns
 * (bench/forge.bench.ts). Regions are never reused, so each starts zeroed
 * and stays owned by the one packet it was given to; a slab is freed when
 * its last view is. Consumers must honour byteOffset (Uint8Array.set does).
 */
const SLAB_BYTES = 64 * 1024;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabOff = 0;

function alloc(len: number): Uint8Array {
  if (slabOff + len > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    slabOff = 0;
  }
  const view = new Uint8Array(slab, slabOff, len);
  slabOff += (len + 7) & ~7;
  return view;
}

/** Random 16-bit IPv4 ID: V8's Math.random (xorshift128+) is fast and unpredictable enough for IDs. */
export function randomIpId(): number {
  return (Math.random() * 0x10000) | 0;
}

/**
 * The RSTs answering one observed segment (see the table above).
 * `ipId` supplies IPv4 IDs (default random). `ttlFromDst` is the TTL / hop
 * limit last seen from the 'dst' endpoint, for RSTs spoofed from it; the
 * RST spoofed from 'src' copies ev.ttl. TOS / traffic class: the observed
 * DSCP is copied onto both, ECN bits cleared (a RST is not ECN-capable
 * transport; Linux also strips them when it reflects a TOS into a RST).
 * IPv6: the observed flow label is copied onto both (the 'dst' one is
 * exactly A's label; the reflected one follows Linux's flowlabel_reflect).
 */
export function forgeResets(ev: TcpEvent, ipId: () => number = randomIpId, ttlFromDst?: number): RstPacket[] {
  // The kernel writes only 4 or 6; anything else is a corrupt record, and
  // forging from it would send IPv6-shaped packets built from garbage.
  if (ev.family !== 4 && ev.family !== 6) throw new RangeError(`event family ${ev.family} is neither 4 nor 6: malformed event, no RST forged`);
  const f = ev.tcpFlags;
  if (f & TCP_RST) return []; // the flow is dead, and this may be our own RST
  const alen = ev.family === 4 ? 4 : 16;
  if (ev.saddr.length !== alen || ev.daddr.length !== alen) {
    throw new RangeError(`IPv${ev.family} event with ${ev.saddr.length}- and ${ev.daddr.length}-byte addresses`);
  }
  // One's-complement sums are commutative, so the part of both checksums
  // that covers addresses and ports is the same for either direction.
  const common = onesSum(ev.saddr, 0, alen) + onesSum(ev.daddr, 0, alen) + ev.sport + ev.dport;
  const s = ev.seq >>> 0;
  const k = ev.ack >>> 0;
  const n = (s + ev.payloadLen + (f & TCP_SYN ? 1 : 0) + (f & TCP_FIN ? 1 : 0)) >>> 0;
  const rstAck = TCP_RST | TCP_ACK;
  // The receiver's MPTCP key, when known: A's for the RST toward 'src', B's toward 'dst'.
  const mp = ev.mpFlags ?? 0;
  const keySrc = mp & MP_KEY0 ? ev.mpKeySrc : undefined;
  const keyDst = mp & MP_KEY1 ? ev.mpKeyDst : undefined;
  if (f & TCP_SYN) {
    const s1 = (s + 1) >>> 0;
    if (!(f & TCP_ACK)) return [build(ev, common, false, 0, s1, rstAck, ipId, ttlFromDst, keySrc)];
    return [build(ev, common, false, k, s1, rstAck, ipId, ttlFromDst, keySrc), build(ev, common, true, n, k, rstAck, ipId, ttlFromDst, keyDst)];
  }
  if (!(f & TCP_ACK)) return [build(ev, common, true, n, 0, TCP_RST, ipId, ttlFromDst, keyDst)];
  return [build(ev, common, false, k, n, rstAck, ipId, ttlFromDst, keySrc), build(ev, common, true, n, k, rstAck, ipId, ttlFromDst, keyDst)];
}

/**
 * One RST. Checksums are summed from the field values rather than re-read
 * from the bytes (the hot path); the tests check them against checksum.ts
 * and tshark. `common` = addresses + ports, see forgeResets.
 */
function build(
  ev: TcpEvent,
  common: number,
  toDst: boolean,
  seq: number,
  ack: number,
  flags: number,
  ipId: () => number,
  ttlFromDst: number | undefined,
  mpKey?: bigint,
): RstPacket {
  // Spoofed from the other endpoint: toward 'dst' we speak as A (ev.s*).
  const src = toDst ? ev.saddr : ev.daddr;
  const dst = toDst ? ev.daddr : ev.saddr;
  const sport = toDst ? ev.sport : ev.dport;
  const dport = toDst ? ev.dport : ev.sport;
  let ttl = toDst ? ev.ttl : (ttlFromDst ?? DEFAULT_TTL);
  if (!(ttl > 0 && ttl <= 255)) ttl = DEFAULT_TTL;
  const dscp = ev.tos & 0xfc;
  const optLen = mpKey === undefined ? 0 : MP_FASTCLOSE_LEN;
  const tcpLen = 20 + optLen;

  let packet: Uint8Array;
  let t: number; // offset of the TCP header
  if (ev.family === 4) {
    const ipLen = IPV4_RST_LEN + optLen;
    packet = alloc(ipLen);
    const id = ipId() & 0xffff;
    packet[0] = 0x45; // version 4, IHL 5
    packet[1] = dscp;
    packet[3] = ipLen; // total length (high byte 0)
    packet[4] = id >>> 8;
    packet[5] = id & 0xff;
    packet[6] = 0x40; // DF, fragment offset 0
    packet[8] = ttl;
    packet[9] = 6; // TCP
    for (let i = 0; i < 4; i++) {
      packet[12 + i] = src[i];
      packet[16 + i] = dst[i];
    }
    // Header words: 45|dscp, length, id, DF, ttl|proto, (checksum), addresses.
    const ipSum = ~fold(0x4500 + dscp + ipLen + id + 0x4000 + (ttl << 8) + 6 + common - ev.sport - ev.dport) & 0xffff;
    packet[10] = ipSum >>> 8;
    packet[11] = ipSum & 0xff;
    t = 20;
  } else {
    packet = alloc(IPV6_RST_LEN + optLen);
    const fl = ev.flowLabel & 0xfffff;
    packet[0] = 0x60 | (dscp >>> 4);
    packet[1] = ((dscp & 0x0f) << 4) | (fl >>> 16);
    packet[2] = (fl >>> 8) & 0xff;
    packet[3] = fl & 0xff;
    packet[5] = tcpLen; // payload length (high byte 0)
    packet[6] = 6; // next header TCP
    packet[7] = ttl;
    for (let i = 0; i < 16; i++) {
      packet[8 + i] = src[i];
      packet[24 + i] = dst[i];
    }
    t = 40;
  }
  packet[t] = sport >>> 8;
  packet[t + 1] = sport & 0xff;
  packet[t + 2] = dport >>> 8;
  packet[t + 3] = dport & 0xff;
  packet[t + 4] = seq >>> 24;
  packet[t + 5] = (seq >>> 16) & 0xff;
  packet[t + 6] = (seq >>> 8) & 0xff;
  packet[t + 7] = seq & 0xff;
  packet[t + 8] = ack >>> 24;
  packet[t + 9] = (ack >>> 16) & 0xff;
  packet[t + 10] = (ack >>> 8) & 0xff;
  packet[t + 11] = ack & 0xff;
  // Data offset 5, no options (no timestamps: PAWS cannot drop it); 8 with MP_FASTCLOSE.
  const offFlags = ((tcpLen / 4) << 12) | flags;
  packet[t + 12] = offFlags >>> 8;
  packet[t + 13] = flags;
  // window 0, urgent pointer 0: already zero.
  let optSum = 0;
  if (mpKey !== undefined) {
    const o = t + 20;
    packet[o] = TCPOPT_MPTCP;
    packet[o + 1] = MP_FASTCLOSE_LEN;
    packet[o + 2] = MPTCP_FASTCLOSE << 4; // subtype, then 12 reserved bits (zero)
    const hi = Number((mpKey >> 32n) & 0xffffffffn);
    const lo = Number(mpKey & 0xffffffffn);
    for (let i = 0; i < 4; i++) {
      packet[o + 4 + i] = (hi >>> (24 - 8 * i)) & 0xff;
      packet[o + 8 + i] = (lo >>> (24 - 8 * i)) & 0xff;
    }
    optSum = ((TCPOPT_MPTCP << 8) | MP_FASTCLOSE_LEN) + (MPTCP_FASTCLOSE << 12) + (hi >>> 16) + (hi & 0xffff) + (lo >>> 16) + (lo & 0xffff);
  }
  // Pseudo-header (addresses, protocol 6, TCP length; the IPv6 one sums
  // the same) + ports + seq + ack + offset|flags (+ the option's words).
  const tcpSum = ~fold(common + 6 + tcpLen + (seq >>> 16) + (seq & 0xffff) + (ack >>> 16) + (ack & 0xffff) + offFlags + optSum) & 0xffff;
  packet[t + 16] = tcpSum >>> 8;
  packet[t + 17] = tcpSum & 0xff;
  return { family: ev.family, toward: toDst ? 'dst' : 'src', seq, ack, flags, packet };
}

/**
 * Layer-2 frame for a RST: destination MAC = the victim's MAC as seen in the
 * observed frame (toward 'src' -> ev.smac, toward 'dst' -> ev.dmac), source
 * MAC = `srcMac`, the reset interface's own (spoofing the peer's MAC would
 * teach the switch to send the peer's traffic to the sensor), then the
 * observed VLAN tag stack, outermost first, then the packet.
 */
export function l2Frame(rst: RstPacket, ev: TcpEvent, srcMac: Uint8Array): Uint8Array {
  if (srcMac.length !== 6) throw new RangeError(`source MAC has ${srcMac.length} bytes, not 6`);
  const vlans = ev.vlans;
  // The program records only 802.1Q/802.1ad tags; another TPID means a corrupt event.
  for (const v of vlans) {
    if (v.tpid !== 0x8100 && v.tpid !== 0x88a8) throw new RangeError(`VLAN TPID 0x${v.tpid.toString(16)} is neither 802.1Q nor 802.1ad: malformed event, no frame built`);
  }
  const hdr = 14 + 4 * vlans.length;
  const frame = alloc(hdr + rst.packet.length);
  frame.set(rst.toward === 'src' ? ev.smac : ev.dmac, 0);
  frame.set(srcMac, 6);
  let o = 12;
  for (let i = 0; i < vlans.length; i++) {
    const { tpid, tci } = vlans[i];
    frame[o] = tpid >>> 8;
    frame[o + 1] = tpid & 0xff;
    frame[o + 2] = tci >>> 8;
    frame[o + 3] = tci & 0xff;
    o += 4;
  }
  const etype = rst.family === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6;
  frame[o] = etype >>> 8;
  frame[o + 1] = etype & 0xff;
  frame.set(rst.packet, hdr);
  return frame;
}
