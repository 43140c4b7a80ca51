/**
 * Time as the job manager sees it: wall-clock epoch ms and one-shot timers.
 * Injected so tests can step time instead of sleeping.
 */
export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): TimerHandle;
  clearTimer(handle: TimerHandle): void;
}

export type TimerHandle = { readonly __timer: unique symbol } | object;

/** setTimeout's limit; a longer delay fires early and is re-armed by the caller. */
export const MAX_TIMER_MS = 0x7fffffff;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS)),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** A clock for tests: time moves only when told; due timers run in deadline order. */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Map<object, { at: number; seq: number; fn: () => void }>();

  constructor(start = Date.UTC(2025, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const handle = {};
    this.timers.set(handle, { at: this.t + Math.max(0, ms), seq: this.seq++, fn });
    return handle;
  }

  clearTimer(handle: TimerHandle): void {
    this.timers.delete(handle);
  }

  get pending(): number {
    return this.timers.size;
  }

  /** Move time forward by `ms`, running every timer that falls due on the way, at its own time. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [object, { at: number; seq: number; fn: () => void }] | undefined;
      for (const e of this.timers) {
        if (e[1].at <= end && (!next || e[1].at < next[1].at || (e[1].at === next[1].at && e[1].seq < next[1].seq))) next = e;
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
  }
}
