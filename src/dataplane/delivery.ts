/**
 * Can a RST leave the reset interface toward its destination? In l3 mode
 * the raw socket is bound to RESET_IF, and the kernel then treats a
 * destination no route through RESET_IF covers as on link: it sends ARP or
 * ND for it, nobody answers, and the RST is dropped after sendmmsg already
 * reported success. So each destination is checked (at most once a second)
 * with a routing lookup restricted to RESET_IF, and its next hop's
 * neighbour state; an RST that cannot leave is counted as undeliverable
 * instead of sent, with one warning per destination that names the fix.
 *
 * Also here: an l2 job whose event came from a tunnel carrying bare IP has
 * no MACs to address its frames to.
 *
 * The verdicts are taken where the RSTs are sent (the event thread); each
 * change of a destination's verdict is handed to `onChange`, which the
 * event thread posts to the main thread for the log, the counters and the
 * faults.
 */
import { formatIp } from '../packet/addr.js';
import { NUD, Netlink } from '../net/netlink.js';

/** A destination is undeliverable (reason; repeated at most once a second while it stays so) or deliverable again (null). */
export type DeliveryChange = (ifname: string, dst: string, reason: string | null) => void;

/** How long a verdict is reused (ms): a route added by the operator is picked up within this. */
const TTL_MS = 1000;
const MAX_ENTRIES = 65536;

interface Entry {
  checkedAt: number;
  reason: string | null;
}

export class Delivery {
  private readonly cache = new Map<string, Entry>();
  private nl: Netlink | null = null;
  private nlError: string | undefined;

  constructor(private readonly onChange: DeliveryChange = () => {}) {}

  /**
   * null when an RST to `dst` (4 or 16 bytes) can leave `ifname` (index
   * `ifindex`), else the reason, which names the fix.
   */
  verdict(ifname: string, ifindex: number, dst: Uint8Array, now = Date.now()): string | null {
    const key = `${ifindex}|${String.fromCharCode(...dst)}`;
    const have = this.cache.get(key);
    if (have && now - have.checkedAt < TTL_MS) return have.reason;
    const text = formatIp(dst);
    const reason = this.check(ifname, ifindex, dst, text, true);
    if (this.cache.size >= MAX_ENTRIES && !have) this.cache.clear();
    this.cache.set(key, { checkedAt: now, reason });
    // Refusals are re-confirmed on every check (once a second at most), so the receiver can age out stale ones.
    if (reason !== null || have?.reason) this.onChange(ifname, text, reason);
    return reason;
  }

  /** Only the route: for the warning at job creation (no RST has been sent, so no neighbour is known yet). */
  routeProblem(ifname: string, ifindex: number, dst: Uint8Array): string | null {
    return this.check(ifname, ifindex, dst, formatIp(dst), false);
  }

  /** A reason found without a lookup (noL2Reason): reported on change like a verdict. */
  note(ifname: string, dst: string, reason: string, now = Date.now()): void {
    const key = `note|${ifname}|${dst}`;
    const have = this.cache.get(key);
    if (have && now - have.checkedAt < TTL_MS) return;
    if (this.cache.size >= MAX_ENTRIES && !have) this.cache.clear();
    this.cache.set(key, { checkedAt: now, reason });
    this.onChange(ifname, dst, reason);
  }

  /** Set when rtnetlink could not be opened (nothing is checked then). */
  get unavailable(): string | undefined {
    return this.nlError;
  }

  close(): void {
    this.nl?.close();
    this.nl = null;
  }

  private check(ifname: string, ifindex: number, dst: Uint8Array, text: string, neighbour: boolean): string | null {
    let nl: Netlink;
    try {
      nl = this.nl ??= new Netlink();
    } catch (err) {
      // Without rtnetlink nothing can be said either way: send as before.
      this.nlError = (err as Error).message;
      return null;
    }
    const route = nl.routeVia(dst, ifindex);
    if (!route.ok) return `no route from ${ifname} to ${text}: add a route through your gateway on ${ifname}, or use --l2`;
    if (!neighbour) return null;
    const hop = route.gateway ?? dst;
    const state = nl.neighbour(hop, ifindex);
    if (state !== null && state & NUD.FAILED) {
      const hopText = formatIp(hop);
      return route.gateway
        ? `gateway ${hopText} on ${ifname} does not answer address resolution: RSTs to ${text} are dropped; check the route, or use --l2`
        : `${text} does not answer address resolution on ${ifname}: it is not on that segment; add a route through your gateway on ${ifname}, or use --l2`;
    }
    return null;
  }
}

/** The reason an l2 job cannot answer an event whose inner packet had no Ethernet header. */
export function noL2Reason(encap: string, dst: string): string {
  return `the mirror carries bare IP in ${encap} (no Ethernet header): an l2 job has no MACs to send its RST to ${dst}; use l3`;
}
