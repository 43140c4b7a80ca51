/**
 * The main thread's handle on the event thread (event-worker.ts): starts it,
 * keeps it told which slots fire which senders, hands it the reset sockets
 * and takes them back, and restarts it (replaying that state) if it dies.
 *
 * Ordering the Enforcer relies on: a slot is posted before its map entry is
 * written (the thread also re-reads its commands when it meets an unknown
 * slot), and sockets are closed only after the thread has released them.
 */
import { Worker, MessageChannel, type MessagePort } from 'node:worker_threads';
import { EventFd } from '../native/libc.js';
import type { SenderSockets } from '../net/sender.js';
import { LATENCY_SLOTS, type EventCommand, type EventReport, type EventThreadData } from './event-wire.js';

export interface EventPathOptions {
  ringFd: number;
  ringBytes: number;
  /** Busy-poll after the last record before sleeping (µs). Default 200. */
  spinUs?: number;
  /** Idle wake-up period to keep the path warm (ms); 0 = off. Default 0. */
  keepWarmMs?: number;
  batch?: number;
  /** Nice value of the event thread; null = inherited. Default -10. */
  nice?: number | null;
  /** SCHED_FIFO priority of the event thread; 0 = off. Default 0. */
  rtPriority?: number;
  /** The thread's priority could not be set (once per start). */
  onNiceError?: (message: string) => void;
  /** SCHED_FIFO was refused (once per start); the thread runs at `nice`. */
  onFifoError?: (message: string) => void;
  onReport: (r: EventReport) => void;
  /** The thread died (an exception or exit): it is restarted; this tells the owner. */
  onCrash: (err: Error, restarts: number) => void;
}

export class EventPath {
  private readonly doorbell = new EventFd();
  private readonly slots = new Map<number, string[]>();
  private readonly senders = new Map<string, SenderSockets>();
  /** Sockets the thread was asked to release, closed when it says so. */
  private readonly releasing = new Map<string, Array<() => void>>();
  private worker!: Worker;
  private port!: MessagePort;
  private readyPromise!: Promise<void>;
  private stopping = false;
  private exited: Promise<void> = Promise.resolve();
  restarts = 0;
  private readySince = 0;
  private alive = false;
  private quickDeaths = 0;
  private respawnTimer: NodeJS.Timeout | undefined;
  /** A doorbell ring is queued for the end of this turn (post). */
  private ringDue = false;
  /**
   * The thread's reaction latency histogram (event-wire.ts LATENCY_*), which
   * it writes and the metrics read; kept across restarts of the thread.
   */
  readonly latency = new Float64Array(new SharedArrayBuffer(LATENCY_SLOTS * 8));

  constructor(private readonly o: EventPathOptions) {
    this.spawn();
  }

  /** Resolves once the thread is waiting on the ring. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  setSlot(id: number, senderKeys: string[], host?: Uint8Array): void {
    this.slots.set(id, senderKeys);
    this.post({ type: 'slot', id, senders: senderKeys, ...(host ? { host } : {}) });
  }

  deleteSlot(id: number): void {
    if (this.slots.delete(id)) this.post({ type: 'slot-del', id });
  }

  addSender(key: string, s: SenderSockets): void {
    this.senders.set(key, s);
    this.post({ type: 'sender', key, ifname: s.ifname, ifindex: s.ifindex, mode: s.mode, mac: s.mac, fds: s.fds });
  }

  forgetDelivery(ifname: string): void {
    this.post({ type: 'delivery-forget', ifname });
  }

  /** Take the sockets back from the thread; `done` runs once it no longer uses them (then close them). */
  removeSender(key: string, done: () => void): void {
    // A dead thread (between a crash and its restart) uses no sockets.
    if (!this.senders.delete(key) || !this.alive) return done();
    const waiting = this.releasing.get(key);
    if (waiting) waiting.push(done);
    else this.releasing.set(key, [done]);
    this.post({ type: 'sender-del', key });
  }

  async stop(): Promise<void> {
    if (this.stopping) return this.exited;
    this.stopping = true;
    clearTimeout(this.respawnTimer);
    this.port.postMessage({ type: 'stop' } satisfies EventCommand);
    this.doorbell.ring();
    await this.exited;
    this.releaseAll();
    this.doorbell.close();
  }

  private post(cmd: EventCommand): void {
    if (this.stopping || !this.alive) return; // a restarted thread is sent the whole state
    this.port.postMessage(cmd);
    // One ring (an eventfd write, and a wake-up of the thread) for every command of this turn of
    // the event loop: at one per command it was 14 % of a job creation's main-thread time. The
    // command is on the port already, so a thread that meets a slot before the ring finds it there.
    if (this.ringDue) return;
    this.ringDue = true;
    setImmediate(() => {
      this.ringDue = false;
      if (!this.stopping) this.doorbell.ring();
    });
  }

  private spawn(): void {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const data: EventThreadData = {
      ringFd: this.o.ringFd, ringBytes: this.o.ringBytes, doorbellFd: this.doorbell.fd,
      spinUs: this.o.spinUs ?? 200, keepWarmMs: this.o.keepWarmMs ?? 0, batch: this.o.batch ?? 4096, nice: this.o.nice === undefined ? -10 : this.o.nice, rtPriority: this.o.rtPriority ?? 0,
      latency: this.latency.buffer as SharedArrayBuffer,
    };
    const worker = new Worker(new URL('./event-worker.js', import.meta.url), {
      workerData: { data, port: port2 }, transferList: [port2], name: 'tcpreset-event',
    });
    this.worker = worker;
    this.alive = true;
    let resolveReady!: () => void;
    let rejectReady!: (e: Error) => void;
    this.readyPromise = new Promise<void>((res, rej) => ((resolveReady = res), (rejectReady = rej)));
    this.readyPromise.catch(() => {}); // a caller that never awaits must not see an unhandled rejection
    let failure: Error | undefined;
    worker.on('message', (r: EventReport) => {
      if (r.type === 'ready') {
        if (r.niceError) this.o.onNiceError?.(r.niceError);
        if (r.fifoError) this.o.onFifoError?.(r.fifoError);
        this.readySince = Date.now();
        return resolveReady();
      }
      if (r.type === 'released') return this.released(r.key);
      this.o.onReport(r);
    });
    worker.on('error', (err) => (failure = err));
    this.exited = new Promise<void>((resolve) => {
      worker.once('exit', (code) => {
        this.alive = false;
        resolve();
        if (this.stopping) return;
        const err = failure ?? new Error(`event thread exited with code ${code}`);
        rejectReady(err);
        // Sockets it was releasing are no longer in use.
        this.releaseAll();
        this.restarts++;
        this.o.onCrash(err, this.restarts);
        this.port.close();
        // A thread that dies at once would otherwise be restarted in a tight loop.
        const delay = this.readySince > 0 && Date.now() - this.readySince > 10_000 ? 0 : Math.min(5000, 50 * 2 ** Math.min(this.quickDeaths++, 7));
        this.readySince = 0;
        const respawn = (): void => {
          if (this.stopping) return;
          this.spawn();
          for (const [key, s] of this.senders) this.addSender(key, s);
          for (const [id, keys] of this.slots) this.setSlot(id, keys);
        };
        if (delay === 0) {
          this.quickDeaths = 0;
          respawn();
        } else {
          this.respawnTimer = setTimeout(respawn, delay);
        }
      });
    });
  }

  private released(key: string): void {
    const waiting = this.releasing.get(key);
    if (!waiting) return;
    this.releasing.delete(key);
    for (const done of waiting) done();
  }

  private releaseAll(): void {
    for (const key of [...this.releasing.keys()]) this.released(key);
  }
}
