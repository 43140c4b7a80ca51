/**
 * Minimal reader for the classic pcap files tcpdump writes, enough to pair
 * forged RSTs with the segments that triggered them: per-packet kernel
 * timestamp (nanosecond files from --time-stamp-precision=nano, microsecond
 * otherwise), Ethernet with up to two 802.1Q/802.1ad tags, IPv4/IPv6 without
 * extension headers, and the TCP header fields the RST rules use.
 */
import { readFileSync } from 'node:fs';

export interface TcpSegment {
  /** Capture timestamp, ns since the epoch (CLOCK_REALTIME). */
  tNs: bigint;
  family: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  win: number;
  /** TCP payload length from the IP length fields (not the captured length). */
  len: number;
}

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_LINUX_SLL = 113;

export function readPcap(path: string): TcpSegment[] {
  return parsePcap(readFileSync(path));
}

export function parsePcap(buf: Uint8Array): TcpSegment[] {
  if (buf.length < 24) return [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magicLe = dv.getUint32(0, true);
  let le: boolean;
  let nano: boolean;
  if (magicLe === 0xa1b2c3d4 || magicLe === 0xa1b23c4d) {
    le = true;
    nano = magicLe === 0xa1b23c4d;
  } else {
    const magicBe = dv.getUint32(0, false);
    if (magicBe !== 0xa1b2c3d4 && magicBe !== 0xa1b23c4d) throw new Error('not a pcap file');
    le = false;
    nano = magicBe === 0xa1b23c4d;
  }
  const linktype = dv.getUint32(20, le) & 0x0fffffff;
  const out: TcpSegment[] = [];
  let off = 24;
  // A capture stopped by a signal may end in a partial record: stop there.
  while (off + 16 <= buf.length) {
    const sec = dv.getUint32(off, le);
    const frac = dv.getUint32(off + 4, le);
    const incl = dv.getUint32(off + 8, le);
    const start = off + 16;
    if (start + incl > buf.length) break;
    const tNs = BigInt(sec) * 1_000_000_000n + BigInt(nano ? frac : frac * 1000);
    const seg = parseFrame(dv, start, incl, linktype, tNs);
    if (seg) out.push(seg);
    off = start + incl;
  }
  return out;
}

function parseFrame(dv: DataView, start: number, len: number, linktype: number, tNs: bigint): TcpSegment | null {
  const end = start + len;
  let p: number;
  let etype: number;
  if (linktype === LINKTYPE_ETHERNET) {
    if (len < 14) return null;
    etype = dv.getUint16(start + 12);
    p = start + 14;
    for (let i = 0; i < 2 && (etype === 0x8100 || etype === 0x88a8) && p + 4 <= end; i++) {
      etype = dv.getUint16(p + 2);
      p += 4;
    }
  } else if (linktype === LINKTYPE_LINUX_SLL) {
    if (len < 16) return null;
    etype = dv.getUint16(start + 14);
    p = start + 16;
  } else {
    return null;
  }
  let family: 4 | 6;
  let src: string;
  let dst: string;
  let tcp: number;
  let tcpTotal: number;
  if (etype === 0x0800) {
    if (p + 20 > end) return null;
    const ihl = (dv.getUint8(p) & 0x0f) * 4;
    if (dv.getUint8(p + 9) !== 6) return null;
    // Fragments other than the first carry no TCP header.
    if ((dv.getUint16(p + 6) & 0x1fff) !== 0) return null;
    family = 4;
    src = ipv4(dv, p + 12);
    dst = ipv4(dv, p + 16);
    tcp = p + ihl;
    tcpTotal = dv.getUint16(p + 2) - ihl;
  } else if (etype === 0x86dd) {
    if (p + 40 > end) return null;
    if (dv.getUint8(p + 6) !== 6) return null;
    family = 6;
    src = ipv6(dv, p + 8);
    dst = ipv6(dv, p + 24);
    tcp = p + 40;
    tcpTotal = dv.getUint16(p + 4);
  } else {
    return null;
  }
  if (tcp + 20 > end) return null;
  const doff = (dv.getUint8(tcp + 12) >> 4) * 4;
  return {
    tNs,
    family,
    src,
    dst,
    sport: dv.getUint16(tcp),
    dport: dv.getUint16(tcp + 2),
    seq: dv.getUint32(tcp + 4),
    ack: dv.getUint32(tcp + 8),
    flags: dv.getUint8(tcp + 13),
    win: dv.getUint16(tcp + 14),
    len: Math.max(0, tcpTotal - doff),
  };
}

function ipv4(dv: DataView, p: number): string {
  return `${dv.getUint8(p)}.${dv.getUint8(p + 1)}.${dv.getUint8(p + 2)}.${dv.getUint8(p + 3)}`;
}

function ipv6(dv: DataView, p: number): string {
  const parts: string[] = [];
  for (let i = 0; i < 8; i++) parts.push(dv.getUint16(p + 2 * i).toString(16));
  return parts.join(':');
}
