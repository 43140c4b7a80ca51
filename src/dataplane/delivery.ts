/**
 * Can a RST leave the reset interface toward its destination? In l3 mode
 * the raw socket is bound to RESET_IF, and the kernel then treats a
 * destination no route through RESET_IF covers as on link: it sends ARP or
 * ND for it, nobody answers, and the RST is dropped after sendmmsg already
 * reported success. So each destination is checked with a routing lookup
 * restricted to RESET_IF, and its next hop's neighbour state: synchronously
 * the first time it is seen and when a refusal is older than a second;
 * a deliverable one again at most once a second, after the batch that
 * found it stale was sent, once the event thread has been idle for a few
 * milliseconds (refresh()), so a working destination never waits for
 * rtnetlink. An RST that cannot leave is counted as undeliverable
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
import { networkInterfaces } from 'node:os';
import { formatIp, parseIp } from '../core/addr.js';
import { NUD, Netlink } from '../net/netlink.js';
import type { InjectMode } from '../core/model.js';

/** A destination is undeliverable (reason; repeated at most once a second while it stays so) or deliverable again (null). */
export type DeliveryChange = (ifname: string, dst: string, reason: string | null) => void;

/** How long a verdict is reused (ms): a route added by the operator is picked up within this. */
const TTL_MS = 1000;
const MAX_ENTRIES = 65536;

/** A class: every verdict has one map, whichever path made it (two literals made verdict() meet a second map on a real link's first refusal). */
class Entry {
  constructor(
    public checkedAt: number,
    public reason: string | null,
    readonly ifname: string,
    readonly ifindex: number,
    /** Its cache key, `IFINDEX|` + the destination's bytes as char codes: the bytes are read back from it (dstOf) rather than kept as a copy, ~150 B per host. */
    readonly key: string,
    /** Queued for refresh(). */
    public due: boolean,
  ) {}
}

/** The destination bytes of a verdict's cache key (`IFINDEX|` + one char per byte). Only for verdicts: a note's key holds no address and is never checked again. */
function dstOf(key: string): Uint8Array {
  const at = key.indexOf('|') + 1;
  const out = new Uint8Array(key.length - at);
  for (let i = 0; i < out.length; i++) out[i] = key.charCodeAt(at + i);
  return out;
}

export class Delivery {
  private readonly cache = new Map<string, Entry>();
  /**
   * Verdicts waiting for refresh(), oldest first. A Set, not an array: an array's map follows its
   * elements kind and history (push, pop, length = 0), and the real one met verdict()'s push with
   * another map than the warm-up's had trained it on (--trace-deopt: "wrong map").
   */
  private readonly stale = new Set<Entry>();
  /** The networks of each reset interface's addresses (for first sight without rtnetlink). */
  private readonly nets = new Map<string, { addr: Uint8Array; bits: number }[]>();
  /** A double from the start: a Smi here turned Double at the first refresh(), which deprecated the map of every Delivery (verdict() then met a "wrong map" on the real one). */
  private netsAt = -Infinity;
  /** When prime() last read each interface's networks. */
  private readonly primedAt = new Map<string, number>();
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
    if (have) {
      if (now - have.checkedAt >= TTL_MS) {
        // A stale refusal is checked now (the operator may just have added the route, and this
        // may be the flow's last segment); a stale "fine" only after the batch went out.
        if (have.reason !== null) this.recheck(have, now);
        else if (!have.due) {
          have.due = true;
          this.stale.add(have);
        }
      }
      return have.reason;
    }
    if (this.cache.size >= MAX_ENTRIES) {
      this.cache.clear();
      this.stale.clear();
    }
    // First sight: a destination on one of the interface's own networks has a connected route,
    // known without asking; otherwise the route only (one rtnetlink round trip). The neighbour,
    // which no RST has made the kernel resolve yet, after the batch went out.
    const e = new Entry(now, null, ifname, ifindex, key, true);
    this.cache.set(key, e);
    if (!this.onLink(ifname, dst)) this.recheck(e, now, false);
    this.stale.add(e);
    return e.reason;
  }

  /** Is `dst` inside a network of one of `ifname`'s addresses (as last read: prime() and refresh() read them)? */
  private onLink(ifname: string, dst: Uint8Array): boolean {
    for (const n of this.nets.get(ifname) ?? []) {
      if (n.addr.byteLength !== dst.byteLength) continue;
      let bits = n.bits;
      let i = 0;
      for (; bits >= 8; bits -= 8, i++) if (n.addr[i] !== dst[i]) break;
      if (bits >= 8) continue;
      if (bits === 0 || ((n.addr[i] ^ dst[i]) & (0xff << (8 - bits)) & 0xff) === 0) return true;
    }
    return false;
  }

  private readNets(ifname: string): void {
    const out: { addr: Uint8Array; bits: number }[] = [];
    for (const a of networkInterfaces()[ifname] ?? []) {
      if (!a.cidr || a.internal) continue;
      try {
        const ip = parseIp(a.address.replace(/%.*$/, ''), 'address');
        out.push({ addr: ip.bytes, bits: Number(a.cidr.split('/')[1]) });
      } catch {
        // An address the strict parser refuses (link-local with a zone...) only costs a lookup.
      }
    }
    this.nets.set(ifname, out);
  }

  /** Check `dst` ahead of its first RST (a job's HOST, when the job is set up): off the segment path. */
  prime(ifname: string, ifindex: number, dst: Uint8Array, now = Date.now()): void {
    // At most once per TTL_MS per interface: a restore of 100,000 jobs primes 100,000 hosts, and
    // reading every address of the machine (getifaddrs) for each kept the event thread busy for
    // seconds after the daemon said it was ready. A network added since is found by the route lookup.
    if (now - (this.primedAt.get(ifname) ?? -Infinity) >= TTL_MS) {
      this.primedAt.set(ifname, now);
      this.readNets(ifname);
    }
    if (this.cache.has(`${ifindex}|${String.fromCharCode(...dst)}`)) return;
    this.verdict(ifname, ifindex, dst, now);
    // No neighbour check queued: before any RST the kernel has not tried to resolve it, and a
    // refresh right after a restart could hold up the first segment of the restored job.
    const e = this.cache.get(`${ifindex}|${String.fromCharCode(...dst)}`);
    if (e && this.stale.delete(e)) e.due = false;
  }

  /** Verdicts waiting for refresh(). */
  get pending(): boolean {
    return this.stale.size > 0;
  }

  /**
   * Check again the destinations verdict() found stale, at most `max` of
   * them; called when the event thread is idle. Returns whether it did any.
   */
  refresh(max = 32, now = Date.now()): boolean {
    if (this.stale.size === 0) return false;
    if (now - this.netsAt >= TTL_MS) {
      this.netsAt = now;
      for (const ifname of this.nets.keys()) this.readNets(ifname);
    }
    let n = 0;
    for (const e of this.stale) {
      if (n++ >= max) break;
      this.stale.delete(e);
      e.due = false;
      this.recheck(e, now);
    }
    return true;
  }

  private recheck(e: Entry, now: number, neighbour = true): void {
    const was = e.reason;
    const dst = dstOf(e.key);
    const text = formatIp(dst);
    e.reason = this.check(e.ifname, e.ifindex, dst, text, neighbour);
    e.checkedAt = now;
    // Refusals are re-confirmed on every check (once a second at most), so the receiver can age out stale ones.
    if (e.reason !== null || was !== null) this.onChange(e.ifname, text, e.reason);
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
    if (this.cache.size >= MAX_ENTRIES && !have) {
      this.cache.clear();
      this.stale.clear();
    }
    this.cache.set(key, new Entry(now, reason, ifname, 0, key, false));
    this.onChange(ifname, dst, reason);
  }

  /**
   * Drop every verdict about `ifname`: taken while it was down or away (a
   * down interface has no routes, so every destination looked unroutable),
   * they say nothing about it once it is back. The next RST re-checks.
   */
  forget(ifname: string): void {
    for (const [key, e] of this.cache) if (e.ifname === ifname) this.cache.delete(key);
    for (const e of this.stale) if (e.ifname === ifname) this.stale.delete(e);
    this.nets.delete(ifname);
    this.primedAt.delete(ifname);
  }

  /**
   * Take every destination as on `ifname`'s link (a connected route, no
   * rtnetlink): only for the event thread's warm-up, whose synthetic
   * destinations through its pretend interface had no route, so its l3
   * RSTs were all refused and the l3 send path was never run before the
   * first real segment.
   */
  assumeOnLink(ifname: string, nets: { addr: Uint8Array; bits: number }[]): void {
    this.nets.set(ifname, nets);
  }

  /**
   * Make every verdict look older than TTL_MS and already refreshed, so the
   * next verdict() takes its stale branch and queues it for refresh(). Only for the event thread's warm-up, on its throwaway
   * Delivery: a real one's first segment after a start otherwise ran that
   * branch untrained (the HOST primed at job set-up is a second old by then).
   */
  age(): void {
    // As if refresh() had run since: due cleared, so a stale "fine" is queued again (its store too).
    for (const e of this.cache.values()) {
      e.checkedAt -= TTL_MS;
      e.due = false;
    }
    this.stale.clear();
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

const NO_L2 = 'the mirror carries bare IP in ';

/** The reason an l2 job cannot answer an event whose inner packet had no Ethernet header. */
export function noL2Reason(encap: string, dst: string): string {
  return `${NO_L2}${encap} (no Ethernet header): an l2 job has no MACs to send its RST to ${dst}; use l3`;
}

/**
 * Which sender a reason of this file is about: noL2Reason's only l2 ones,
 * the route check's (no route, address resolution) only l3 ones. The
 * verdicts are reported per interface, so status needs this to show an l3
 * fault ("... or use --l2") on the l3 row only, not on an l2 sender of the
 * same interface.
 */
export function reasonMode(reason: string): InjectMode {
  return reason.startsWith(NO_L2) ? 'l2' : 'l3';
}
