/**
 * Zero-copy reader of a BPF_MAP_TYPE_RINGBUF map.
 *
 * The map fd is mmapped the way libbpf does it: the consumer page read-write
 * at offset 0, the producer page plus the data area read-only at offset
 * pagesize. The kernel maps the data area twice in a row, so a record that
 * starts near the end continues contiguously and never wraps. Records are
 * parsed in place with a DataView: no copy, no native call per record
 * (bench/ringbuf: ~20-30 ns/event to drain, against ~200 ns for libbpf's
 * ring_buffer__consume calling a koffi callback).
 *
 * Waiting: the kernel wakes pollers (default adaptive wake-up) only for a
 * record committed while the consumer had caught up with it; the fd polls
 * readable whenever producer_pos != consumer_pos. Two waiters (start()):
 * libuv's level-triggered poll of the ring fd on the event loop (default),
 * or a hybrid loop that drains and, once the ring is empty, waits in
 * epoll_wait on a worker thread.
 *
 * One consumer per ring: the reader keeps its consumer position in JS.
 */
import {
  EPOLL_CTL_ADD, EPOLLIN, EpollEvents, PROT_READ, PROT_WRITE, canWatchFds, close as closeFd, epollCreate, epollCtl, epollWaitAsync,
  MAP_POPULATE, mmap, munmap, pageSize, strerror, watchReadable, type Pointer,
} from '../native/libc.js';
import { NativeError, TcpresetError } from '../core/errors.js';

/** Header bits of a record's length word (include/uapi/linux/bpf.h). */
export const BPF_RINGBUF_BUSY_BIT = 1 << 31;
export const BPF_RINGBUF_DISCARD_BIT = 1 << 30;
export const BPF_RINGBUF_HDR_SZ = 8;

/** Called once per record: the record's data is `length` bytes at `offset` of `dv` (valid only during the call). */
export type OnRecord = (dv: DataView, offset: number, length: number) => void;

export interface RingStartOptions {
  /**
   * How to wait for records. 'poll' (default where koffi has it): libuv
   * watches the ring fd on the event loop, no extra thread. 'epoll':
   * epoll_wait on a libuv worker thread. Measured on 2 vCPUs (bench/ringbuf):
   * wake-up p50 ~11 us (poll) vs ~30-55 us (epoll).
   */
  wait?: 'poll' | 'epoll';
  /** 'epoll' only: wait timeout (ms), the longest stop() waits for a pending wait. Default 100. */
  waitMs?: number;
  /** Most records per drain before the event loop gets a turn. Default 4096. */
  batch?: number;
  /** After every drain that delivered records (e.g. flush a send batch). */
  onDrained?: (count: number) => void;
  /**
   * An exception from onRecord/onDrained. The record is consumed either way.
   * Without it the exception is rethrown outside the loop (an uncaught
   * exception: a bug must not pass silently), and the loop ends.
   */
  onError?: (err: unknown) => void;
}

export class RingReader {
  readonly byteSize: number;
  /** Records delivered to onRecord (discarded ones are not counted). */
  records = 0;
  /** Times the waiter reported the ring readable. */
  wakeups = 0;
  /** Drains run by the loop (each is one pass over what was available). */
  drains = 0;

  private readonly mapFd: number;
  private readonly page: number;
  private readonly mask: number;
  private consumerMap: { ptr: Pointer; buffer: ArrayBuffer } | null;
  private producerMap: { ptr: Pointer; buffer: ArrayBuffer } | null;
  /** consumer_pos as a 64-bit store (x86/arm64 aligned 64-bit stores are single-copy atomic). */
  private readonly consPos: BigUint64Array;
  /** producer_pos as two 32-bit words (positions fit a double for centuries of traffic). */
  private readonly prodWords: Uint32Array;
  /** The producer mapping as 32-bit words, for the atomic read of record headers. */
  private readonly words: Int32Array;
  private readonly dv: DataView;
  /** Our consumer position (mirrors what we last stored). */
  private consumer: number;

  private epfd = -1;
  private events: EpollEvents | null = null;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  private stopWaiting: (() => void) | null = null;
  /** Bytes the last drain consumed (discarded records included). */
  private lastAdvance = 0;
  private closed = false;

  /**
   * `memory`: ordinary buffers laid out as the kernel maps the ring (the
   * consumer page; the producer page and the data area) instead of mmap of
   * `mapFd`; see synthetic().
   */
  constructor(mapFd: number, byteSize: number, memory?: { consumer: ArrayBuffer; producer: ArrayBuffer }) {
    const page = pageSize();
    if (!Number.isInteger(byteSize) || byteSize < page || (byteSize & (byteSize - 1)) !== 0) {
      throw new TcpresetError('E_INTERNAL', `ring buffer size ${byteSize} is not a power of two of at least a page`);
    }
    this.mapFd = mapFd;
    this.byteSize = byteSize;
    this.page = page;
    this.mask = byteSize - 1;
    const target = `ring buffer fd ${mapFd}`;
    if (memory) {
      this.consumerMap = this.producerMap = null;
    } else {
      this.consumerMap = mmap(page, PROT_READ | PROT_WRITE, mapFd, 0, target);
      try {
        // Populated now: the first record after a start otherwise took 370-500 µs to read (page faults
        // on the data pages, inside drain, measured after kill -9 and restart on this VM).
        this.producerMap = mmap(page + 2 * byteSize, PROT_READ, mapFd, page, target, MAP_POPULATE);
      } catch (e) {
        munmap(this.consumerMap.ptr, page);
        throw e;
      }
    }
    const consumer = memory?.consumer ?? this.consumerMap!.buffer;
    const producer = memory?.producer ?? this.producerMap!.buffer;
    this.consPos = new BigUint64Array(consumer, 0, 1);
    this.prodWords = new Uint32Array(producer, 0, 2);
    this.words = new Int32Array(producer);
    this.dv = new DataView(producer);
    this.consumer = Number(Atomics.load(this.consPos, 0));
  }

  /**
   * A reader over ordinary memory, one page of data, for running drain()'s
   * record path where no record has come yet: the event thread's warm-up
   * (its first real record otherwise met code V8 had optimized for an empty
   * ring: 430-780 µs inside drain before the handler was called, after a
   * restart). Same class, same code, same type feedback; nothing mapped.
   */
  static synthetic(): RingReader {
    const page = pageSize();
    return new RingReader(-1, page, { consumer: new ArrayBuffer(page), producer: new ArrayBuffer(3 * page) });
  }

  /**
   * Put `count` copies of `record` in a synthetic reader's ring from its
   * start, as committed records (kernel layout: 8-byte header, length word
   * first), so the next drain() delivers them. Throws on a mapped reader.
   */
  fillSynthetic(record: Uint8Array, count: number): void {
    if (this.producerMap || this.consumerMap) throw new TcpresetError('E_INTERNAL', 'fillSynthetic on a mapped ring');
    const step = (record.length + BPF_RINGBUF_HDR_SZ + 7) & ~7;
    if (step * count > this.byteSize) throw new RangeError(`${count} records of ${record.length} bytes exceed the ${this.byteSize}-byte ring`);
    const bytes = new Uint8Array(this.dv.buffer);
    for (let i = 0; i < count; i++) {
      const off = this.page + i * step;
      this.dv.setUint32(off, record.length, true);
      bytes.set(record, off + BPF_RINGBUF_HDR_SZ);
    }
    this.consumer = 0;
    Atomics.store(this.consPos, 0, 0n);
    Atomics.store(this.prodWords, 0, step * count);
    Atomics.store(this.prodWords, 1, 0);
  }

  /** Bytes (headers included) the producer sees as unconsumed: producer_pos - consumer_pos as stored in the ring. */
  pendingBytes(): number {
    return this.producerPos() - Number(Atomics.load(this.consPos, 0));
  }

  private producerPos(): number {
    // Read high, low, high: a carry into the high word between the two reads is seen and retried.
    for (;;) {
      const hi = Atomics.load(this.prodWords, 1);
      const lo = Atomics.load(this.prodWords, 0);
      if (Atomics.load(this.prodWords, 1) === hi) return hi * 0x1_0000_0000 + lo;
    }
  }

  /**
   * Deliver the committed records now in the ring (up to `max`) and release
   * their space to the producer. Non-blocking; returns the records delivered.
   * Stops at the first record still being written (busy bit): records are
   * consumed strictly in order.
   */
  drain(onRecord: OnRecord, max = Infinity): number {
    if (this.closed) throw new TcpresetError('E_INTERNAL', 'ring reader is closed');
    const prod = this.producerPos();
    let cons = this.consumer;
    if (cons >= prod) {
      this.lastAdvance = 0;
      return 0;
    }
    const words = this.words;
    const base = this.page;
    const mask = this.mask;
    let count = 0;
    try {
      while (cons < prod && count < max) {
        const off = base + (cons & mask);
        // The header word is written last by the kernel (commit clears busy with an xchg).
        const len = Atomics.load(words, off >> 2);
        if (len & BPF_RINGBUF_BUSY_BIT) break;
        const dataLen = len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
        // Advance first: a throwing callback must not see its record again.
        cons += (dataLen + BPF_RINGBUF_HDR_SZ + 7) & ~7;
        if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
          count++;
          onRecord(this.dv, off + BPF_RINGBUF_HDR_SZ, dataLen);
        }
      }
    } finally {
      this.lastAdvance = cons - this.consumer;
      if (cons !== this.consumer) {
        this.consumer = cons;
        // One 64-bit release store per drain: a torn store could let the producer overwrite unread data.
        Atomics.store(this.consPos, 0, BigInt(cons));
      }
      this.records += count;
    }
    return count;
  }

  /**
   * Deliver records as they come, until stop(). The event loop is never
   * blocked: waits happen in libuv's own poll phase ('poll') or on a worker
   * thread ('epoll').
   */
  start(onRecord: OnRecord, opts: RingStartOptions = {}): void {
    if (this.closed) throw new TcpresetError('E_INTERNAL', 'ring reader is closed');
    if (this.running) throw new TcpresetError('E_INTERNAL', 'ring reader already started');
    const wait = opts.wait ?? (canWatchFds ? 'poll' : 'epoll');
    this.running = true;
    if (wait === 'poll') this.startPoll(onRecord, opts);
    else this.startEpoll(onRecord, opts);
  }

  /** One drain for the loop: the count, or null when the loop must end (an exception and no onError). */
  private loopDrain(onRecord: OnRecord, opts: RingStartOptions, batch: number): number | null {
    try {
      const n = this.drain(onRecord, batch);
      this.drains++;
      if (n > 0) opts.onDrained?.(n);
      return n;
    } catch (err) {
      if (!opts.onError) {
        this.running = false;
        this.fail(err, opts);
        return null;
      }
      opts.onError(err);
      return 1; // records may remain: look again before sleeping
    }
  }

  /**
   * libuv watches the ring fd (level-triggered) on the event loop: a drain
   * per readiness report. A drain that stopped at `batch`, at a record
   * still being written, or raced a commit that sent no wake-up leaves the
   * fd readable, so libuv reports it again on its next turn.
   */
  private startPoll(onRecord: OnRecord, opts: RingStartOptions): void {
    const batch = opts.batch ?? 4096;
    let finish!: () => void;
    this.loopDone = new Promise<void>((resolve) => (finish = resolve));
    const watch = watchReadable(this.mapFd, (status) => {
      if (!this.running) return;
      if (status < 0) {
        this.running = false;
        watch.close();
        this.fail(new NativeError('poll ring buffer', -status, strerror(-status), `ring buffer fd ${this.mapFd}`), opts);
        finish();
        return;
      }
      this.wakeups++;
      if (this.loopDrain(onRecord, opts, batch) === null) {
        watch.close();
        finish();
      }
    });
    this.stopWaiting = () => {
      watch.close();
      finish();
    };
  }

  /**
   * epoll_wait on a libuv worker thread (koffi async call), hybrid: after a
   * drain that found records, drain again on the next turn of the event
   * loop (the producer may have committed meanwhile without a wake-up);
   * wait only once a drain finds nothing. The wait times out every waitMs
   * so stop() is prompt.
   */
  private startEpoll(onRecord: OnRecord, opts: RingStartOptions): void {
    if (this.epfd < 0) {
      this.epfd = epollCreate(`ring buffer fd ${this.mapFd}`);
      epollCtl(this.epfd, EPOLL_CTL_ADD, this.mapFd, EPOLLIN, this.mapFd, `ring buffer fd ${this.mapFd}`);
      this.events = new EpollEvents(1);
    }
    this.stopWaiting = null;
    this.loopDone = this.epollLoop(onRecord, opts);
  }

  private async epollLoop(onRecord: OnRecord, opts: RingStartOptions): Promise<void> {
    const waitMs = opts.waitMs ?? 100;
    const batch = opts.batch ?? 4096;
    const events = this.events!;
    while (this.running) {
      const n = this.loopDrain(onRecord, opts, batch);
      if (n === null || !this.running) return;
      // Any progress, even over discarded records only, moved consumer_pos: a record committed
      // meanwhile saw an older position and sent no wake-up, so look again before sleeping.
      if (n > 0 || this.lastAdvance > 0) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        continue;
      }
      let ready: number;
      try {
        ready = await epollWaitAsync(this.epfd, events, waitMs, `ring buffer fd ${this.mapFd}`);
      } catch (err) {
        // A failing epoll fd does not heal: end the loop and report.
        this.running = false;
        this.fail(err, opts);
        return;
      }
      if (ready > 0) this.wakeups++;
    }
  }

  private fail(err: unknown, opts: RingStartOptions): void {
    if (opts.onError) {
      opts.onError(err);
      return;
    }
    setImmediate(() => {
      throw err;
    });
  }

  /** End the loop. 'poll': at once; 'epoll': once the pending wait (at most waitMs) has returned. */
  async stop(): Promise<void> {
    this.running = false;
    this.stopWaiting?.();
    this.stopWaiting = null;
    await this.loopDone;
  }

  /**
   * Whether the last drain() moved consumer_pos (discarded records count).
   * A producer that committed meanwhile saw the older position and sent no
   * wake-up, so a waiter must look again before it sleeps.
   */
  get lastDrainAdvanced(): boolean {
    return this.lastAdvance > 0;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /**
   * Unmap the ring and close the epoll fd. Not the map fd: its owner closes
   * it, after stop() (a watched fd must not be closed under the watcher).
   */
  close(): void {
    if (this.closed) return;
    if (this.running) throw new TcpresetError('E_INTERNAL', 'ring reader closed while running: await stop() first');
    this.closed = true;
    if (this.epfd >= 0) closeFd(this.epfd);
    this.epfd = -1;
    this.events?.free();
    this.events = null;
    if (this.consumerMap) munmap(this.consumerMap.ptr, this.page);
    if (this.producerMap) munmap(this.producerMap.ptr, this.page + 2 * this.byteSize);
    this.consumerMap = this.producerMap = null;
  }
}
