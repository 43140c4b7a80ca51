import type { InjectMode } from '../core/model.js';
/**
 * What the main thread and the event thread (event-worker.ts) say to each
 * other. Commands go main → event thread over a MessagePort the event
 * thread reads synchronously (it never returns to its own event loop), each
 * followed by a ring of the doorbell eventfd that wakes its epoll_wait.
 * Reports go back with parentPort.postMessage, after the RSTs were sent.
 */

export interface EventThreadData {
  /** The ring buffer map's fd (process-wide, so valid in the thread). */
  ringFd: number;
  ringBytes: number;
  /** eventfd rung after each command. */
  doorbellFd: number;
  /** Busy-poll the ring this long after the last record before sleeping (µs). */
  spinUs: number;
  /**
   * While idle, wake every this many ms and run the per-event code on a
   * synthetic record (nothing is sent), so the first real segment after a
   * quiet spell finds code and data in the caches. 0 = sleep until a segment.
   */
  keepWarmMs: number;
  /** Most records handled per drain before the thread looks at commands and flushes. */
  batch: number;
  /** Nice value for the thread (-20..19); null leaves it as inherited. */
  nice: number | null;
  /** SCHED_FIFO priority (1..99) for the thread; 0 = stay SCHED_OTHER. */
  rtPriority: number;
  /**
   * The reaction latency histogram (LATENCY_SLOTS float64s, layout below),
   * written by the thread with plain stores and read by the main thread at
   * scrape time. The main thread's, so it outlives a restarted thread.
   */
  latency: SharedArrayBuffer;
}

/**
 * Reaction latency: from the XDP program's timestamp of the segment
 * (bpf_ktime_get_ns, CLOCK_MONOTONIC, tr_event.ts_ns) to the return of the
 * sendmmsg(2) that sent its RSTs (process.hrtime, the same clock), once per
 * event with at least one RST queued (an event whose every RST was refused
 * as undeliverable sent none). Upper bounds of the buckets, µs: from the
 * ~20 µs of a warm thread at SCHED_FIFO to 1 s (BENCHMARKS.md: first RSTs
 * p50 ~50-550 µs). The metric exports them in seconds.
 */
export const LATENCY_BOUNDS_US: readonly number[] = [
  20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
];
/**
 * Layout of EventThreadData.latency, float64 slots: [0, n) events per
 * bucket, not cumulative (slot i: above bound i-1, at most bound i);
 * n: above the last bound (+Inf); n+1: the sum of the latencies, µs.
 * Counts as float64 are exact to 2^53. No reader sees a torn value (aligned
 * 8-byte stores on x86-64 and arm64); a read during a store may see a
 * bucket one ahead of the sum, never buckets that disagree with the count,
 * since the count is their sum.
 */
export const LATENCY_INF = LATENCY_BOUNDS_US.length;
export const LATENCY_SUM = LATENCY_BOUNDS_US.length + 1;
export const LATENCY_SLOTS = LATENCY_BOUNDS_US.length + 2;

export type EventCommand =
  | { type: 'sender'; key: string; ifname: string; ifindex: number; mode: InjectMode; mac: Uint8Array; fds: number[] }
  /** Stop using the sender's sockets; answered by {type:'released'} so the main thread may close them. */
  | { type: 'sender-del'; key: string }
  /** The distinct sender keys an event of this slot fires on (the slot's targets' reset senders). */
  /** `host`: the slot's address (4 or 16 bytes), checked for deliverability before its first segment. */
  | { type: 'slot'; id: number; senders: string[]; host?: Uint8Array }
  | { type: 'slot-del'; id: number }
  /** Verdicts about `ifname` were taken while it was down or away, or before it came back: drop them. */
  | { type: 'delivery-forget'; ifname: string }
  | { type: 'stop' };

/** Totals of one sender since the event thread adopted it. */
export interface SenderReport {
  key: string;
  sent: number;
  errors: number;
  lastError?: string;
}

export type EventReport =
  /** Waiting on the ring. `niceError`: the priority could not be set (the thread runs at the inherited one). */
  /** `fifoError`: SCHED_FIFO was refused (the thread runs at its nice value). */
  | { type: 'ready'; niceError?: string; fifoError?: string }
  | { type: 'released'; key: string }
  /** RSTs to `dst` cannot leave `ifname` (reason), or can again (null): see delivery.ts. */
  | { type: 'delivery'; ifname: string; dst: string; reason: string | null }
  | {
      type: 'hits';
      /** HIT_BYTES per hit, `count` hits (layout: HIT below). */
      hits: ArrayBuffer;
      count: number;
      /** Wall clock (epoch ms) when the batch was sent. */
      at: number;
      senders: SenderReport[];
    }
  | {
      type: 'stats';
      records: number;
      wakeups: number;
      /** Records whose slot the thread did not know (raced a removal). */
      stale: number;
      /** Records whose handling threw (counted, skipped). */
      errors: number;
      /** Times a SCHED_FIFO thread went back to SCHED_OTHER for a flood (event-worker.ts FIFO_BUSY_NS). */
      fifoDemotions: number;
      /** l2 RSTs not built: addressed to the reset interface's own MAC (the sensor's own frame seen again through the mirror; event-worker.ts). */
      selfAddressed: number;
      /** The latest such failure's message, if any since the last report. */
      lastError?: string;
    };

/**
 * One handled event, as the main thread needs it for bookkeeping: which
 * slot, the flow, how many RSTs, and how long from XDP to sendmmsg's return.
 */
export const HIT = {
  slotId: 0, // u32
  family: 4, // u8
  rsts: 5, // u8
  sport: 6, // u16
  dport: 8, // u16
  encap: 10, // u8, TR_ENCAP_* of the segment's tunnel
  undeliverable: 11, // u8, RSTs of `rsts` that could not leave a reset interface (delivery.ts)
  latencyUs: 12, // f32
  saddr: 16, // 16 bytes (v4: first 4)
  daddr: 32, // 16 bytes
  tsNs: 48, // u64, bpf_ktime_get_ns() of the segment
  mptcp: 56, // u8, HIT_MP_* of mptcp.ts: MP_FASTCLOSE sent, or an MPTCP subflow without keys
} as const;
export const HIT_BYTES = 64;
