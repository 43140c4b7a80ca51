/**
 * A minimal rtnetlink client (RFC 3549; linux/rtnetlink.h) for two
 * questions the l3 sender must ask the kernel before trusting a raw socket
 * bound to the reset interface:
 *
 *  - routeVia: is there a route to DST through this interface? Asked as
 *    `ip route get fibmatch DST oif IF` (RTM_GETROUTE, RTM_F_FIB_MATCH,
 *    RTA_OIF): the FIB entry that matched, with nexthops on other
 *    interfaces skipped. Without fibmatch the kernel answers a device-bound
 *    lookup that matched nothing with a made-up on-link route
 *    (net/ipv4/route.c, "Apparently, routing tables are wrong. Assume, that
 *    the destination is on link."), which is how RSTs to a peer behind a
 *    router went out as ARP requests nobody answered.
 *  - neighbour: the state of the next hop's neighbour entry (RTM_GETNEIGH
 *    for one address, Linux >= 5.0).
 *
 * Requests are answered synchronously within sendto(2) (rtnetlink runs in
 * the sender's context), so the reply is read without blocking; no dumps.
 */
import { AF_INET, AF_INET6, E, MSG_DONTWAIT, SOCK_CLOEXEC, SOCK_RAW, close, recv, sendto, socket } from '../native/libc.js';

const AF_NETLINK = 16;
const NETLINK_ROUTE = 0;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const RTM_NEWROUTE = 24;
const RTM_GETROUTE = 26;
const RTM_NEWNEIGH = 28;
const RTM_GETNEIGH = 30;
const RTM_F_FIB_MATCH = 0x2000;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_MULTIPATH = 9;
const RTA_VIA = 18;
const NDA_DST = 1;
const RTN_UNICAST = 1;

/** Neighbour states (linux/neighbour.h NUD_*). */
export const NUD = {
  INCOMPLETE: 0x01, REACHABLE: 0x02, STALE: 0x04, DELAY: 0x08, PROBE: 0x10, FAILED: 0x20, NOARP: 0x40, PERMANENT: 0x80,
} as const;

export type RouteAnswer =
  | { ok: true; /** Next hop when the route has a gateway on the interface; absent when the destination is on link. */ gateway?: Uint8Array }
  | { ok: false; errno: number };

export class Netlink {
  private readonly fd: number;
  private readonly buf = new Uint8Array(16384);
  private seq = 1;
  private closed = false;

  constructor() {
    this.fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE, 'rtnetlink');
  }

  /** Is there a route to `dst` (4 or 16 bytes) through interface `oif`? */
  routeVia(dst: Uint8Array, oif: number): RouteAnswer {
    const family = dst.byteLength === 4 ? AF_INET : AF_INET6;
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
    const rtm = new Uint8Array(12);
    rtm[0] = family;
    rtm[1] = dst.byteLength * 8;
    new DataView(rtm.buffer).setUint32(8, RTM_F_FIB_MATCH, true);
    const oifBytes = new Uint8Array(4);
    new DataView(oifBytes.buffer).setUint32(0, oif, true);
    const reply = this.request(RTM_GETROUTE, rtm, [[RTA_DST, dst], [RTA_OIF, oifBytes]]);
    if (reply.errno) return { ok: false, errno: reply.errno };
    if (reply.type !== RTM_NEWROUTE || !reply.body || reply.body.byteLength < 12) return { ok: false, errno: E.EINVAL };
    const body = reply.body;
    if (body[7] !== RTN_UNICAST) return { ok: false, errno: E.EHOSTUNREACH };
    const attrs = parseAttrs(body.subarray(12));
    const routeOif = attrs.get(RTA_OIF);
    if (routeOif && new DataView(routeOif.buffer, routeOif.byteOffset).getUint32(0, true) !== oif) return { ok: false, errno: E.EHOSTUNREACH };
    const gw = attrs.get(RTA_GATEWAY);
    if (gw) return { ok: true, gateway: gw.slice() };
    const mp = attrs.get(RTA_MULTIPATH);
    if (mp) return multipathVia(mp, oif);
    return { ok: true };
  }

  /** The NUD_* state of `addr`'s neighbour entry on `ifindex`, or null when there is none. */
  neighbour(addr: Uint8Array, ifindex: number): number | null {
    const family = addr.byteLength === 4 ? AF_INET : AF_INET6;
    // struct ndmsg: family, pad1, pad2 (u16), ifindex (s32), state (u16), flags, type
    const ndm = new Uint8Array(12);
    const dv = new DataView(ndm.buffer);
    ndm[0] = family;
    dv.setInt32(4, ifindex, true);
    const reply = this.request(RTM_GETNEIGH, ndm, [[NDA_DST, addr]]);
    if (reply.errno || reply.type !== RTM_NEWNEIGH || !reply.body || reply.body.byteLength < 12) return null;
    return new DataView(reply.body.buffer, reply.body.byteOffset).getUint16(8, true);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd, 'rtnetlink');
  }

  private request(type: number, header: Uint8Array, attrs: [number, Uint8Array][]): { type?: number; body?: Uint8Array; errno?: number } {
    const parts: Uint8Array[] = [header];
    for (const [t, v] of attrs) {
      const a = new Uint8Array(align4(4 + v.byteLength));
      const adv = new DataView(a.buffer);
      adv.setUint16(0, 4 + v.byteLength, true);
      adv.setUint16(2, t, true);
      a.set(v, 4);
      parts.push(a);
    }
    const len = 16 + parts.reduce((n, p) => n + p.byteLength, 0);
    const msg = new Uint8Array(len);
    const dv = new DataView(msg.buffer);
    const seq = this.seq++ >>> 0;
    dv.setUint32(0, len, true);
    dv.setUint16(4, type, true);
    dv.setUint16(6, NLM_F_REQUEST, true);
    dv.setUint32(8, seq, true);
    let off = 16;
    for (const p of parts) {
      msg.set(p, off);
      off += p.byteLength;
    }
    sendto(this.fd, msg, 0, null, 'rtnetlink');
    // The answer is already queued; anything else queued (a late answer to an older request) is skipped.
    for (let tries = 0; tries < 8; tries++) {
      const n = recv(this.fd, this.buf, MSG_DONTWAIT);
      if (n < 0) return { errno: -n };
      const rdv = new DataView(this.buf.buffer, 0, n);
      for (let o = 0; o + 16 <= n; ) {
        const mlen = rdv.getUint32(o, true);
        if (mlen < 16 || o + mlen > n) break;
        const mtype = rdv.getUint16(o + 4, true);
        if (rdv.getUint32(o + 8, true) === seq) {
          if (mtype === NLMSG_ERROR) {
            const err = -rdv.getInt32(o + 16, true);
            return err ? { errno: err } : { type: mtype };
          }
          return { type: mtype, body: this.buf.slice(o + 16, o + mlen) };
        }
        o += align4(mlen);
      }
    }
    return { errno: E.EAGAIN };
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function parseAttrs(b: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let o = 0; o + 4 <= b.byteLength; ) {
    const len = dv.getUint16(o, true);
    if (len < 4 || o + len > b.byteLength) break;
    out.set(dv.getUint16(o + 2, true) & 0x3fff, b.subarray(o + 4, o + len));
    o += align4(len);
  }
  return out;
}

/** RTA_MULTIPATH: struct rtnexthop (len u16, flags u8, hops u8, ifindex s32) + attributes, per hop. */
function multipathVia(mp: Uint8Array, oif: number): RouteAnswer {
  const dv = new DataView(mp.buffer, mp.byteOffset, mp.byteLength);
  for (let o = 0; o + 8 <= mp.byteLength; ) {
    const len = dv.getUint16(o, true);
    if (len < 8 || o + len > mp.byteLength) break;
    if (dv.getInt32(o + 4, true) === oif) {
      const attrs = parseAttrs(mp.subarray(o + 8, o + len));
      const gw = attrs.get(RTA_GATEWAY);
      // RTA_VIA (an IPv6 next hop of an IPv4 route) starts with its family: the address follows.
      const via = attrs.get(RTA_VIA);
      return gw ? { ok: true, gateway: gw.slice() } : via ? { ok: true, gateway: via.slice(2) } : { ok: true };
    }
    o += align4(len);
  }
  return { ok: false, errno: E.EHOSTUNREACH };
}
