/**
 * The reset sockets, refcounted per (interface, mode). The main thread
 * opens and closes them; every event thread sends on them with send slots
 * of its own (EventPool.addSender), and reports its totals after each
 * send. Sockets are closed only once every thread has released them.
 */
import { closeSenderSockets, openSenderSockets, type SenderSockets } from '../net/sender.js';
import type { EventPool } from './event-pool.js';
import type { SenderReport } from './event-wire.js';
import type { InjectMode } from '../core/model.js';

interface Totals { sent: number; errors: number; lastError?: string }

/** What the create-time sweeps and their re-probes (flow-sweep.ts) sent on a sender's sockets. */
interface SweepTotals {
  /** RSTs handed to the sockets (as the job's rstsSent counts them). */
  rsts: number;
  /** Out-of-window ACK probes (first probes and re-probes). */
  probes: number;
  /** Packets of either kind the kernel refused (sendmmsg errors). */
  errors: number;
}

/**
 * Everything sent on one (interface, mode) since the daemon started: the
 * event threads' RSTs (sent, errors) and the sweeps'. Kept when the last
 * job using it ends and its sockets close, so the counters built on it
 * (metrics.ts) only ever go up, as Prometheus counters must.
 */
export interface SenderLifetime extends SweepTotals {
  ifname: string;
  mode: InjectMode;
  /** RSTs the event threads sent. */
  sent: number;
  /** Their sendmmsg errors. */
  errors: number;
  sweepErrors: number;
}

export interface SenderRef {
  key: string;
  ifname: string;
  mode: InjectMode;
  /** Null while the interface is away. */
  sockets: SenderSockets | null;
  refs: number;
  /** Totals of the live sockets per event thread, as each last reported them. */
  live: Totals[];
  /** Totals of sockets retired when their interface went away. */
  retired: Totals;
  /** The sweeps' packets on these sockets (sweeper.ts: a sweep's turns and its re-probes), kept across retire/reopen. */
  sweep: SweepTotals;
}

export interface SenderStatus {
  ifname: string;
  mode: InjectMode;
  sent: number;
  errors: number;
  lastError?: string;
}

export class ResetSenders {
  private readonly byKey = new Map<string, SenderRef>();
  /**
   * Released, until every event thread has let go of the sockets: a thread's
   * report of its last sends can arrive after the release and still counts.
   */
  private readonly closing = new Map<string, SenderRef>();
  /** Totals of closed senders, per key (interface/mode), for the daemon's life. */
  private readonly closed = new Map<string, SenderLifetime>();

  constructor(
    private readonly events: EventPool,
    private readonly threads: number,
  ) {}

  /** Open (or take one more reference); returns the key the slots name. Throws NativeError naming the interface. */
  acquire(ifname: string, mode: InjectMode): string {
    const key = `${ifname}/${mode}`;
    const have = this.byKey.get(key);
    if (have) {
      have.refs++;
      return key;
    }
    const sockets = openSenderSockets(ifname, mode);
    this.byKey.set(key, { key, ifname, mode, sockets, refs: 1, live: this.noLive(), retired: { sent: 0, errors: 0 }, sweep: { rsts: 0, probes: 0, errors: 0 } });
    this.events.addSender(key, sockets);
    return key;
  }

  /** Drop a reference; true when it was the last (the sockets close once the threads let go). */
  release(key: string): boolean {
    const have = this.byKey.get(key);
    if (!have || --have.refs > 0) return false;
    this.byKey.delete(key);
    const sockets = have.sockets;
    if (!sockets) {
      this.keep(have);
      return true;
    }
    this.closing.set(key, have);
    this.events.removeSender(key, () => {
      closeSenderSockets(sockets);
      if (this.closing.get(key) === have) this.closing.delete(key);
      this.keep(have);
    });
    return true;
  }

  /** Add a closed sender's totals to its key's lifetime ones. */
  private keep(ref: SenderRef): void {
    const t = this.totalsOf(ref);
    const have = this.closed.get(ref.key);
    if (!have) {
      this.closed.set(ref.key, t);
      return;
    }
    have.sent += t.sent;
    have.errors += t.errors;
    have.rsts += t.rsts;
    have.probes += t.probes;
    have.sweepErrors += t.sweepErrors;
  }

  private totalsOf(ref: SenderRef): SenderLifetime {
    let { sent, errors } = ref.retired;
    for (const l of ref.live) {
      sent += l.sent;
      errors += l.errors;
    }
    return { ifname: ref.ifname, mode: ref.mode, sent, errors, rsts: ref.sweep.rsts, probes: ref.sweep.probes, sweepErrors: ref.sweep.errors };
  }

  /**
   * Per (interface, mode) ever used, what was sent since the daemon started
   * (closed senders included): never decreases. At most one row per
   * interface and mode a job named, so its size is bounded by the config.
   */
  lifetime(): SenderLifetime[] {
    const out = new Map<string, SenderLifetime>();
    for (const [k, t] of this.closed) out.set(k, { ...t });
    for (const ref of [...this.closing.values(), ...this.byKey.values()]) {
      const t = this.totalsOf(ref);
      const have = out.get(ref.key);
      if (!have) out.set(ref.key, t);
      else {
        have.sent += t.sent;
        have.errors += t.errors;
        have.rsts += t.rsts;
        have.probes += t.probes;
        have.sweepErrors += t.sweepErrors;
      }
    }
    return [...out.values()];
  }

  has(ifname: string): boolean {
    for (const ref of this.byKey.values()) if (ref.ifname === ifname) return true;
    return false;
  }

  get(key: string): SenderRef | undefined {
    return this.byKey.get(key);
  }

  values(): IterableIterator<SenderRef> {
    return this.byKey.values();
  }

  /** An event thread's totals after a send. */
  report(thread: number, reports: SenderReport[]): void {
    for (const s of reports) {
      const ref = this.byKey.get(s.key) ?? this.closing.get(s.key);
      if (ref) ref.live[thread] = { sent: s.sent, errors: s.errors, lastError: s.lastError };
    }
  }

  status(): SenderStatus[] {
    return [...this.byKey.values()].map((ref) => {
      let { sent, errors, lastError } = ref.retired;
      for (const l of ref.live) {
        sent += l.sent;
        errors += l.errors;
        lastError = l.lastError ?? lastError;
      }
      return { ifname: ref.ifname, mode: ref.mode, sent, errors, ...(lastError ? { lastError } : {}) };
    });
  }

  /** The interface went away: keep the totals, give the sockets back. */
  retire(ref: SenderRef): void {
    const sockets = ref.sockets;
    if (!sockets) return;
    for (const l of ref.live) {
      ref.retired.sent += l.sent;
      ref.retired.errors += l.errors;
      ref.retired.lastError = l.lastError ?? ref.retired.lastError;
    }
    ref.live = this.noLive();
    ref.sockets = null;
    this.events.removeSender(ref.key, () => closeSenderSockets(sockets));
  }

  /** Open the sockets again on the re-created interface. Throws NativeError. */
  reopen(ref: SenderRef): void {
    if (ref.sockets) this.retire(ref);
    ref.sockets = openSenderSockets(ref.ifname, ref.mode);
    ref.live = this.noLive();
    this.events.addSender(ref.key, ref.sockets);
  }

  /** After the event threads stopped: close what is left. */
  closeAll(): void {
    for (const ref of this.byKey.values()) if (ref.sockets) closeSenderSockets(ref.sockets);
    this.byKey.clear();
    this.closing.clear();
  }

  private noLive(): Totals[] {
    return Array.from({ length: this.threads }, () => ({ sent: 0, errors: 0 }));
  }
}
