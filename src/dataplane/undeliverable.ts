/**
 * Destinations the event threads found undeliverable (delivery.ts), grouped
 * by reset interface: what the main thread keeps of them, logs about them
 * and shows as a fault.
 *
 * Grouped because of scale: a job's HOST is checked when the job is set up,
 * so 100,000 jobs on hosts RESET_IF has no route to are 100,000 refusals at
 * once (the bench's lab, a restore). One entry per destination with its own
 * reason string and one warning line each cost ~400 B of heap per
 * destination plus a log line per job. Now, per interface:
 *
 * - the first destination of an episode (none listed on the interface
 *   before) is warned at once, with its reason as the message and `dst`,
 *   `reason`, `ifname` as fields, as before;
 * - the ones that follow are counted and told in one warning per
 *   SUMMARY_MS: the count, the first of them and its reason (a summary of
 *   one destination is that destination's own warning);
 * - a destination that becomes deliverable again is logged the same way
 *   (the first at once, `RSTs from IF to DST can be delivered again`; the
 *   rest counted into one info line per SUMMARY_MS);
 * - each destination keeps its exact reason for the jobs that send to it
 *   (a job's `fault` in list), stored as the reason with the address cut
 *   out, interned (one string per kind of reason and interface), and
 *   rebuilt on demand: ~100 B per destination instead of ~400 B;
 * - status shows one fault per interface: the first reason, and how many
 *   more destinations there are.
 *
 * Nothing is dropped silently: every refused RST is still counted on its
 * job (undeliverable) and in the metrics; only the log lines are grouped.
 */
import type { InterfaceFault } from './types.js';
import type { InjectMode, LogSink } from '../core/model.js';
import { reasonMode } from './delivery.js';

/** At most one summary line per interface and kind this often (ms). */
export const SUMMARY_MS = 5000;
/** A destination not confirmed for this long (ms; no RST went that way since) is no longer news. */
const STALE_MS = 60_000;
/** Interned reason shapes: bounded, in case reasons vary in ways the address cut does not catch. */
const MAX_SHAPES = 1024;

/** One undeliverable destination: its reason without the address (rebuilt with it), and when last confirmed. */
class Dest {
  constructor(
    public shape: string,
    public seen: number,
  ) {}
}

/** Lines held back for a summary: how many, and the first of them. */
interface Held {
  count: number;
  dst: string;
  reason: string | null;
  timer: NodeJS.Timeout | null;
}

class Group {
  /** Since when the interface has had undeliverable destinations (this episode). */
  since: number;
  /** By destination (address text), in the order they were found. */
  readonly dsts = new Map<string, Dest>();
  readonly warnings: Held = { count: 0, dst: '', reason: null, timer: null };
  readonly recoveries: Held = { count: 0, dst: '', reason: null, timer: null };
  /** When the last line of each kind was written (the next one waits SUMMARY_MS after it). */
  warnedAt = -Infinity;
  recoveredAt = -Infinity;

  constructor(now: number) {
    this.since = now;
  }
}

/** A reason is `shape` with each \0 standing for the destination's address text. */
const cut = (reason: string, dst: string): string => reason.split(dst).join('\0');
const rebuild = (shape: string, dst: string): string => shape.split('\0').join(dst);

export class UndeliverableDestinations {
  private readonly groups = new Map<string, Group>();
  private readonly shapes = new Map<string, string>();

  constructor(private readonly log: LogSink) {}

  /** A destination's verdict from an event thread (delivery.ts's DeliveryChange): undeliverable (reason) or deliverable again (null). */
  verdict(ifname: string, dst: string, reason: string | null, now = Date.now()): void {
    let g = this.groups.get(ifname);
    if (reason === null) {
      if (!g || !g.dsts.delete(dst)) return;
      this.hold(ifname, g, g.recoveries, 'recoveredAt', dst, null, now);
      if (g.dsts.size === 0 && !g.warnings.timer && !g.recoveries.timer) this.groups.delete(ifname);
      return;
    }
    if (!g || g.dsts.size === 0) {
      g ??= new Group(now);
      g.since = now;
      this.groups.set(ifname, g);
    }
    const shape = this.intern(cut(reason, dst));
    const have = g.dsts.get(dst);
    if (have) {
      have.seen = now;
      if (have.shape === shape) return;
      have.shape = shape;
    } else {
      g.dsts.set(dst, new Dest(shape, now));
    }
    this.hold(ifname, g, g.warnings, 'warnedAt', dst, reason, now);
  }

  /** The reason RSTs from `ifname` to `dst` are refused, if they are. */
  reasonFor(ifname: string, dst: string): string | undefined {
    const d = this.groups.get(ifname)?.dsts.get(dst);
    return d ? rebuild(d.shape, dst) : undefined;
  }

  /** The reason of the first destination listed on `ifname`, if any. */
  firstReason(ifname: string): string | undefined {
    const g = this.groups.get(ifname);
    if (!g) return undefined;
    for (const [dst, d] of g.dsts) return rebuild(d.shape, dst);
    return undefined;
  }

  /** How many destinations are listed on `ifname`. */
  count(ifname: string): number {
    return this.groups.get(ifname)?.dsts.size ?? 0;
  }

  /** Everything found about `ifname` is void (it went down or away, or came back); held lines are written now. */
  forget(ifname: string): void {
    const g = this.groups.get(ifname);
    if (!g) return;
    this.flush(ifname, g.warnings, true);
    this.flush(ifname, g.recoveries, false);
    this.groups.delete(ifname);
  }

  /**
   * One fault per reset interface and mode (reasonMode) with undeliverable
   * destinations: the first reason, and how many more. Ages out
   * unconfirmed ones.
   */
  faults(now = Date.now()): InterfaceFault[] {
    const out: InterfaceFault[] = [];
    for (const [ifname, g] of this.groups) {
      const byMode = new Map<InjectMode, { first: string; n: number }>();
      for (const [dst, d] of g.dsts) {
        if (now - d.seen > STALE_MS) {
          g.dsts.delete(dst);
          continue;
        }
        const mode = reasonMode(d.shape);
        const have = byMode.get(mode);
        if (have) have.n++;
        else byMode.set(mode, { first: rebuild(d.shape, dst), n: 1 });
      }
      for (const [mode, { first, n }] of byMode) {
        out.push({
          ifname, role: 'reset', kind: 'undeliverable', since: g.since, mode,
          fault: n === 1 ? first : `${first} (and ${n - 1} more undeliverable destinations)`,
        });
      }
    }
    return out;
  }

  /** Write what is held, stop the timers. */
  close(): void {
    for (const [ifname, g] of this.groups) {
      this.flush(ifname, g.warnings, true);
      this.flush(ifname, g.recoveries, false);
    }
  }

  private intern(shape: string): string {
    const have = this.shapes.get(shape);
    if (have !== undefined) return have;
    if (this.shapes.size < MAX_SHAPES) this.shapes.set(shape, shape);
    return shape;
  }

  /** Log the line now if none of its kind was written in the last SUMMARY_MS, else hold it for the summary. */
  private hold(ifname: string, g: Group, h: Held, at: 'warnedAt' | 'recoveredAt', dst: string, reason: string | null, now: number): void {
    const warn = reason !== null;
    if (h.count === 0 && now - g[at] >= SUMMARY_MS) {
      g[at] = now;
      this.line(ifname, warn, 1, dst, reason);
      return;
    }
    if (h.count++ === 0) {
      h.dst = dst;
      h.reason = reason;
    }
    h.timer ??= setTimeout(() => {
      h.timer = null;
      g[at] = Date.now();
      this.flush(ifname, h, warn);
      if (g.dsts.size === 0 && !g.warnings.timer && !g.recoveries.timer && this.groups.get(ifname) === g) this.groups.delete(ifname);
    }, Math.max(0, SUMMARY_MS - (now - g[at]))).unref();
  }

  private flush(ifname: string, h: Held, warn: boolean): void {
    if (h.timer) clearTimeout(h.timer);
    h.timer = null;
    if (h.count > 0) this.line(ifname, warn, h.count, h.dst, h.reason);
    h.count = 0;
  }

  private line(ifname: string, warn: boolean, count: number, dst: string, reason: string | null): void {
    if (warn) {
      if (count === 1) this.log.warn({ ifname, dst, reason }, reason!);
      else this.log.warn({ ifname, dst, reason, destinations: count }, `RSTs from ${ifname} cannot reach ${count} more destinations, first ${dst}: ${reason}`);
    } else if (count === 1) {
      this.log.info({ ifname, dst }, `RSTs from ${ifname} to ${dst} can be delivered again`);
    } else {
      this.log.info({ ifname, dst, destinations: count }, `RSTs from ${ifname} can be delivered again to ${count} destinations, first ${dst}`);
    }
  }
}
