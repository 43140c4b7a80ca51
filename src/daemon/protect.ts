/**
 * Addresses that are never reset: networks from the configuration plus
 * every address of the sensor itself (resetting our own sessions would cut
 * the management path the reset order came in on). Both sides go through
 * the strict parser and IPv4-mapped unmapping of src/core/addr.ts, so
 * "::ffff:10.0.0.1" cannot dodge a protected 10.0.0.0/8.
 */
import { cidrContains, parseCidr, parseIp, type ParsedCidr, type ParsedIp } from '../core/addr.js';
import { allLocalAddresses } from '../net/ifaces.js';
import type { ProtectHit } from './jobs.js';

export interface ProtectedEntry {
  /** As written in the configuration. */
  text: string;
  cidr: ParsedCidr;
}

/** Parse the configuration's protected list; throws ValidationError naming the bad entry. */
export function parseProtected(entries: readonly string[], field = 'protected'): ProtectedEntry[] {
  return entries.map((text, i) => ({ text, cidr: parseCidr(text, `${field}[${i}]`) }));
}

/** An address of this host, and the interface that holds it (net/ifaces.ts's LocalAddress without the family). */
export interface OwnAddress {
  /** null when the source does not say (an address from the local routing table). */
  ifname: string | null;
  address: string;
}

/** Every address of this host in the daemon's network namespace, read afresh. */
export function localAddresses(): OwnAddress[] {
  return allLocalAddresses().map((a) => ({ ifname: a.ifname, address: a.address }));
}

export class ProtectList {
  /** Replaced whole by a configuration reload. */
  entries: readonly ProtectedEntry[];
  private readonly locals: () => OwnAddress[];
  private lastLocals: OwnAddress[] | undefined;
  private lastParsed: { l: OwnAddress; cidr: ParsedCidr }[] = [];

  constructor(entries: readonly ProtectedEntry[], locals: () => OwnAddress[] = localAddresses) {
    this.entries = entries;
    this.locals = locals;
  }

  /**
   * The entry protecting `host`, or null. A parsed host (a create's, from
   * parseRequest) is used as it is; text (a job's kept canonical text at a
   * reload) is parsed, any spelling of one address.
   */
  check(hostOrText: string | ParsedIp): ProtectHit | null {
    const ip = typeof hostOrText === 'string' ? parseIp(hostOrText, 'host') : hostOrText;
    const host = typeof hostOrText === 'string' ? hostOrText : hostOrText.canonical;
    for (const e of this.entries) {
      if (cidrContains(e.cidr, ip)) return { address: host, entry: e.text === e.cidr.canonical ? e.text : `${e.text} (${e.cidr.canonical})`, source: 'config' };
    }
    // Local addresses are asked for on every check: they change (DHCP, operators).
    for (const { l, cidr } of this.parsedLocals()) {
      if (cidrContains(cidr, ip)) return { address: host, entry: l.ifname ? `${l.address} on ${l.ifname}` : l.address, source: 'local' };
    }
    return null;
  }

  /** The local addresses parsed, parsed again only when the source hands out a new list (it may cache one). */
  private parsedLocals(): { l: OwnAddress; cidr: ParsedCidr }[] {
    const locals = this.locals();
    if (locals !== this.lastLocals) {
      this.lastLocals = locals;
      this.lastParsed = locals.flatMap((l) => {
        try {
          return [{ l, cidr: parseCidr(l.address) }];
        } catch {
          return []; // an address the strict parser refuses cannot equal a strictly parsed host
        }
      });
    }
    return this.lastParsed;
  }
}
