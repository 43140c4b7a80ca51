/**
 * Tunnelled mirrors, user-space side: the extra VXLAN/Geneve UDP ports of
 * the configuration go into the program's udp_tunnels map, and a watch on
 * the per-interface counters (if_counters) tells "this mirror carries no
 * TCP" apart from "this mirror carries TCP the program cannot read" (e.g. a
 * tunnel on a port nobody configured): a sniff interface that received
 * traffic during a whole window without one parsable TCP segment gets a
 * warning and a fault until it shows one again.
 */
import { ENCAP_GENEVE, ENCAP_VXLAN, MAP_IF_COUNTERS, MAP_UDP_TUNNELS, ifSlot, sumIfCounters, type IfCounters } from '../bpf/contract.js';
import { ValidationError } from '../core/errors.js';
import type { BpfMap, BpfObject } from '../bpf/object.js';
import type { SniffTraffic } from '../core/model.js';

/** Extra UDP ports to read as VXLAN or Geneve (4789 and 6081 always are). */
export interface TunnelPorts {
  vxlan?: readonly number[];
  geneve?: readonly number[];
}

/** Write `ports` into udp_tunnels. Throws ValidationError naming a bad port or one given for both kinds. */
export function setTunnelPorts(obj: BpfObject, ports: TunnelPorts): void {
  const seen = new Map<number, string>();
  const m = obj.map(MAP_UDP_TUNNELS);
  const key = new Uint8Array(4);
  const value = new Uint8Array(4);
  for (const [name, kind] of [['vxlan', ENCAP_VXLAN], ['geneve', ENCAP_GENEVE]] as const) {
    for (const port of ports[name] ?? []) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ValidationError(`tunnelPorts.${name}`, port, 'must be a UDP port 1..65535');
      const other = seen.get(port);
      if (other && other !== name) throw new ValidationError(`tunnelPorts.${name}`, port, `is also listed under ${other}`);
      seen.set(port, name);
      new DataView(key.buffer).setUint32(0, port, true);
      new DataView(value.buffer).setUint32(0, kind, true);
      m.update(key, value);
    }
  }
}

/** A sniff interface whose last window had traffic and no parsable TCP. */
export interface ParseFault {
  ifname: string;
  role: 'sniff';
  kind: 'parse';
  fault: string;
  since: number;
}

export interface ParseWatchOptions {
  /** Length of a window (ms). Default 10 s. */
  windowMs?: number;
  /** Packets a window needs before "no TCP" means anything. Default 100. */
  minPackets?: number;
  warn: (obj: object, msg: string) => void;
  info: (obj: object, msg: string) => void;
}

interface Watched {
  ifindex: number;
  startedAt: number;
  base: IfCounters | null;
  last: IfCounters;
  unparsableWindows: number;
  fault: ParseFault | null;
}

export class ParseWatch {
  private readonly map: BpfMap;
  private readonly watched = new Map<string, Watched>();
  private readonly windowMs: number;
  private readonly minPackets: number;
  /** Warnings logged since start (one per interface per episode). */
  warnings = 0;

  constructor(
    obj: BpfObject,
    private readonly ncpu: number,
    private readonly o: ParseWatchOptions,
  ) {
    this.map = obj.map(MAP_IF_COUNTERS);
    this.windowMs = o.windowMs ?? 10_000;
    this.minPackets = o.minPackets ?? 100;
  }

  /** Called on every health tick with the interfaces XDP is attached to. */
  check(attached: readonly { ifname: string; ifindex: number }[], now = Date.now()): void {
    const names = new Set(attached.map((a) => a.ifname));
    for (const name of this.watched.keys()) if (!names.has(name)) this.watched.delete(name);
    const slots = new Map<number, number>();
    for (const a of attached) slots.set(ifSlot(a.ifindex), (slots.get(ifSlot(a.ifindex)) ?? 0) + 1);
    for (const a of attached) {
      const cur = this.read(a.ifindex);
      let w = this.watched.get(a.ifname);
      if (!w || w.ifindex !== a.ifindex) {
        w = { ifindex: a.ifindex, startedAt: now, base: cur, last: cur, unparsableWindows: 0, fault: w?.fault ?? null };
        this.watched.set(a.ifname, w);
        continue;
      }
      w.last = cur;
      if ((slots.get(ifSlot(a.ifindex)) ?? 0) > 1 || cur.foreignCpus > 0) {
        w.base = null; // counts mix with another interface's: no verdict
        continue;
      }
      if (!w.base || cur.packets < w.base.packets) {
        w.base = cur;
        w.startedAt = now;
        continue;
      }
      if (now - w.startedAt < this.windowMs) continue;
      const packets = cur.packets - w.base.packets;
      const tcp = cur.tcp - w.base.tcp;
      const decap = cur.decap - w.base.decap;
      const secs = Math.round((now - w.startedAt) / 1000);
      w.base = cur;
      w.startedAt = now;
      if (tcp === 0n && packets >= BigInt(this.minPackets)) {
        w.unparsableWindows++;
        if (!w.fault) {
          const text = `${a.ifname}: 0 parsable TCP segments of ${Number(packets).toLocaleString('en-US')} packets in ${secs} s: ` +
            'is the mirror encapsulated in a protocol tcpreset does not read?';
          w.fault = { ifname: a.ifname, role: 'sniff', kind: 'parse', fault: text, since: now };
          this.warnings++;
          this.o.warn({ ifname: a.ifname, packets: Number(packets), tcp: 0, seconds: secs, decapsulated: Number(decap) }, text);
        }
      } else if (tcp > 0n && w.fault) {
        this.o.info({ ifname: a.ifname, tcp: Number(tcp), packets: Number(packets), seconds: secs }, `${a.ifname}: parsable TCP segments seen again`);
        w.fault = null;
      }
    }
  }

  faults(): ParseFault[] {
    return [...this.watched.values()].flatMap((w) => (w.fault ? [{ ...w.fault }] : []));
  }

  traffic(attached: readonly { ifname: string; ifindex: number }[]): SniffTraffic[] {
    const slots = new Map<number, number>();
    for (const a of attached) slots.set(ifSlot(a.ifindex), (slots.get(ifSlot(a.ifindex)) ?? 0) + 1);
    return attached.map((a) => {
      const c = this.read(a.ifindex);
      const shared = (slots.get(ifSlot(a.ifindex)) ?? 0) > 1 || c.foreignCpus > 0;
      return {
        ifname: a.ifname, ifindex: a.ifindex, packets: Number(c.packets), tcp: Number(c.tcp), decap: Number(c.decap),
        unparsableWindows: this.watched.get(a.ifname)?.unparsableWindows ?? 0, ...(shared ? { sharedSlot: true } : {}),
      };
    });
  }

  private read(ifindex: number): IfCounters {
    const key = new Uint8Array(4);
    new DataView(key.buffer).setUint32(0, ifSlot(ifindex), true);
    const v = this.map.lookup(key);
    return v ? sumIfCounters(v, this.ncpu, ifindex) : { packets: 0n, tcp: 0n, decap: 0n, foreignCpus: 0 };
  }
}
