/**
 * N event threads, one per ring buffer, driven as one (issue 13, floods):
 * the XDP program spreads events over the rings by a symmetric flow hash
 * (bpf/tcpreset.bpf.c ring_slot), so each thread sees its flows in order
 * and a flood of many flows is answered on N cores. Every thread knows
 * every slot and sends on the same reset sockets with its own send slots
 * (sendmmsg on one socket from several threads is safe: each call is one
 * pass through the socket's send path).
 */
import { EventPath } from './event-path.js';
import type { SenderSockets } from '../net/sender.js';
import { LATENCY_BOUNDS_US, LATENCY_INF, LATENCY_SUM, type EventReport } from './event-wire.js';
import type { LatencyHistogram } from './types.js';

export interface EventPoolOptions {
  /** One ring buffer fd per thread. */
  ringFds: number[];
  ringBytes: number;
  spinUs?: number;
  keepWarmMs?: number;
  nice?: number | null;
  rtPriority?: number;
  onNiceError?: (message: string) => void;
  onFifoError?: (message: string) => void;
  onReport: (r: EventReport, thread: number) => void;
  onCrash: (err: Error, restarts: number, thread: number) => void;
}

export class EventPool {
  private readonly paths: EventPath[];

  constructor(o: EventPoolOptions) {
    let niceWarned = false;
    let fifoTold = false;
    this.paths = o.ringFds.map((ringFd, i) => new EventPath({
      ringFd, ringBytes: o.ringBytes, spinUs: o.spinUs, keepWarmMs: o.keepWarmMs, nice: o.nice, rtPriority: o.rtPriority,
      // The same cause for every thread: say it once.
      onNiceError: (m) => {
        if (!niceWarned) o.onNiceError?.(m);
        niceWarned = true;
      },
      onFifoError: (m) => {
        if (!fifoTold) o.onFifoError?.(m);
        fifoTold = true;
      },
      onReport: (r) => o.onReport(r, i),
      onCrash: (err, restarts) => o.onCrash(err, restarts, i),
    }));
  }

  get size(): number {
    return this.paths.length;
  }

  async ready(): Promise<void> {
    await Promise.all(this.paths.map((p) => p.ready()));
  }

  setSlot(id: number, senderKeys: string[], host?: Uint8Array): void {
    for (const p of this.paths) p.setSlot(id, senderKeys, host);
  }

  deleteSlot(id: number): void {
    for (const p of this.paths) p.deleteSlot(id);
  }

  addSender(key: string, s: SenderSockets): void {
    for (const p of this.paths) p.addSender(key, s);
  }

  /** Drop every thread's deliverability verdicts for `ifname` (it went down, away or came back). */
  forgetDelivery(ifname: string): void {
    for (const p of this.paths) p.forgetDelivery(ifname);
  }

  /** `done` runs once no thread uses the sockets any more. */
  removeSender(key: string, done: () => void): void {
    let left = this.paths.length;
    for (const p of this.paths) {
      p.removeSender(key, () => {
        if (--left === 0) done();
      });
    }
  }

  /** Every thread's reaction latency histogram added up, read now (event-wire.ts LATENCY_*). */
  latency(): LatencyHistogram {
    const counts = new Array<number>(LATENCY_INF + 1).fill(0);
    let sumUs = 0;
    for (const p of this.paths) {
      for (let i = 0; i <= LATENCY_INF; i++) counts[i] += p.latency[i];
      sumUs += p.latency[LATENCY_SUM];
    }
    return { boundsUs: LATENCY_BOUNDS_US, counts, sumUs };
  }

  async stop(): Promise<void> {
    await Promise.all(this.paths.map((p) => p.stop()));
  }
}
