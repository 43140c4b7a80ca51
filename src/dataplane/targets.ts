/**
 * One Enforcer target as one flat record: a daemon may hold 100,000 of
 * them. Before, a target was six objects (the target, its TargetInfo, its
 * counters, its slot's entry, its sweep outcome and a setTimeout) and about
 * a dozen arrays and strings; the heap snapshot of 20,000 created jobs held
 * ~2.5 KB of main-thread heap per job. Now: this record, its label, and
 * what only a few targets have (RSTs refused, sweep counts, a delivery
 * fault, the set of flows it reset) in one sparse `extra` object made on
 * first need. No timer: the job manager's deadline heap owns expiry in user
 * space, and the kernel ignores the map entry past its deadline (the
 * backstop); the event path ignores hits past expiresAt.
 *
 * TargetInfo (the public shape, types.ts) is built on demand (info()).
 */
import type { Family, InjectMode } from '../core/model.js';
import { slotKey, type Slot } from './slots.js';
import type { TargetInfo } from './types.js';

/** Distinct flows remembered per target; past this the count saturates rather than grow without bound. */
export const MAX_FLOWS_PER_TARGET = 65536;

/** What few targets have. */
interface TargetExtra {
  undeliverable: number;
  known: number;
  verified: number;
  deliveryFault: string | undefined;
  /** MPTCP subflows reset without the connection's keys (mptcp.ts). */
  mptcpNoKeys: number;
  mptcpFault: string | undefined;
  /** Direction-free keys of the flows it reset (flowKeyOf). */
  flowSet: Set<string> | undefined;
}

export class Target {
  matched = 0;
  rstsSent = 0;
  flows = 0;
  /** Epoch ms; 0 = none yet (0 is no real hit time, and a number field needs no box for null). */
  firstHitAt = 0;
  lastHitAt = 0;
  /** Its last sweep found nothing (Sweeper, an empty sweep): no verification is kept for it. */
  swept = false;
  private extra: TargetExtra | null = null;

  constructor(
    readonly id: number,
    readonly sniffIf: string,
    readonly resetIf: string,
    /** Canonical text. */
    readonly host: string,
    /** 0 = every port. */
    readonly port: number,
    readonly mode: InjectMode,
    readonly family: Family,
    /** Wall-clock end, epoch ms. */
    public expiresAt: number,
    readonly label: string,
    /** The BPF map entry it shares with the targets of the same key (slots.ts). */
    readonly slot: Slot<Target>,
    /** Its reset sender ("ifname/mode", senders.ts). */
    readonly senderKey: string,
  ) {}

  /** The host's address bytes (4 or 16, network order), from its slot's key: the text `host` is not parsed again. */
  get addr(): Uint8Array {
    return slotKey(this.slot).addr;
  }

  private more(): TargetExtra {
    return (this.extra ??= { undeliverable: 0, known: 0, verified: 0, deliveryFault: undefined, mptcpNoKeys: 0, mptcpFault: undefined, flowSet: undefined });
  }

  /** A segment of it was seen at `now` (epoch ms). */
  hit(now: number): void {
    this.matched++;
    if (this.firstHitAt === 0) this.firstHitAt = now;
    this.lastHitAt = now;
  }

  addUndeliverable(n: number): void {
    this.more().undeliverable += n;
  }

  addKnown(n: number): void {
    this.more().known += n;
  }

  addVerified(n: number): void {
    this.more().verified += n;
  }

  get deliveryFault(): string | undefined {
    return this.extra?.deliveryFault;
  }

  set deliveryFault(reason: string | undefined) {
    if (reason === undefined && !this.extra) return;
    this.more().deliveryFault = reason;
  }

  /** An MPTCP subflow of it was reset without the keys: counted, and its fault from now on. */
  noteMptcpNoKeys(fault: string): void {
    const x = this.more();
    x.mptcpNoKeys++;
    x.mptcpFault = fault;
  }

  get mptcpFault(): string | undefined {
    return this.extra?.mptcpFault;
  }

  /**
   * Count a flow it reset, once (by its direction-free key); true when it is
   * new. Past MAX_FLOWS_PER_TARGET flows the count saturates.
   */
  noteFlow(key: string): boolean {
    const x = this.more();
    const set = (x.flowSet ??= new Set());
    if (set.has(key) || set.size >= MAX_FLOWS_PER_TARGET) return false;
    set.add(key);
    this.flows++;
    return true;
  }

  /** The public shape, made now (a copy: later hits do not change it). */
  info(): TargetInfo {
    const x = this.extra;
    return {
      id: this.id, sniffIf: this.sniffIf, resetIf: this.resetIf, host: this.host, port: this.port, mode: this.mode,
      expiresAt: this.expiresAt, label: this.label, family: this.family,
      counters: this.counters(),
      ...(x?.deliveryFault !== undefined ? { deliveryFault: x.deliveryFault } : {}),
      ...(x?.mptcpFault !== undefined ? { mptcpFault: x.mptcpFault } : {}),
    };
  }

  /** Its counters, made now. */
  counters(): TargetInfo['counters'] {
    const x = this.extra;
    return {
      matched: this.matched, rstsSent: this.rstsSent, flows: this.flows,
      firstHitAt: this.firstHitAt === 0 ? null : this.firstHitAt, lastHitAt: this.lastHitAt === 0 ? null : this.lastHitAt,
      ...(x?.undeliverable ? { undeliverable: x.undeliverable } : {}),
      ...(x?.known ? { known: x.known } : {}),
      ...(x?.verified ? { verified: x.verified } : {}),
      ...(x?.mptcpNoKeys ? { mptcpNoKeys: x.mptcpNoKeys } : {}),
    };
  }
}

/**
 * Address bytes as a short string, for map keys on the per-event path:
 * formatting the text form (RFC 5952 for IPv6) per event cost more than
 * the rest of the event's handling. The length tells v4 from v6.
 */
export function binaryKey(bytes: Uint8Array, off: number, len: number): string {
  let s = '';
  for (let i = off; i < off + len; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/** Direction-free flow identity (Target.noteFlow's key): both directions of a connection are one flow. */
export function flowKeyOf(src: string, sport: number, dst: string, dport: number): string {
  const a = src + String.fromCharCode(sport);
  const b = dst + String.fromCharCode(dport);
  return a < b ? a + b : b + a;
}
