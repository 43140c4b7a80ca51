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
    this.byKey.set(key, { key, ifname, mode, sockets, refs: 1, live: this.noLive(), retired: { sent: 0, errors: 0 } });
    this.events.addSender(key, sockets);
    return key;
  }

  /** Drop a reference; true when it was the last (the sockets close once the threads let go). */
  release(key: string): boolean {
    const have = this.byKey.get(key);
    if (!have || --have.refs > 0) return false;
    this.byKey.delete(key);
    const sockets = have.sockets;
    if (sockets) this.events.removeSender(key, () => closeSenderSockets(sockets));
    return true;
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
      const ref = this.byKey.get(s.key);
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
  }

  private noLive(): Totals[] {
    return Array.from({ length: this.threads }, () => ({ sent: 0, errors: 0 }));
  }
}
