/**
 * The job manager: the one owner of job lifetimes. A job is a timed order
 * "reset every TCP flow of HOST[:PORT] seen on SNIFF_IF" raised by a
 * detection engine (ENGID); its identity is (engid, sniffIf, host, port).
 * Each job holds exactly one Enforcer target, added on create, extended on
 * re-create, removed on cancel and at expiry. The Enforcer also drops a
 * target at its deadline by itself (and the kernel ignores it past then),
 * but the job manager decides when a job ends; the Enforcer's own expiry
 * is only a backstop.
 *
 * No I/O here beyond the injected backend, checks and clock, so the logic
 * is tested with a stepped clock.
 */
import { randomBytes } from 'node:crypto';
import { TcpresetError, ValidationError } from '../errors.js';
import { parseHost } from '../packet/addr.js';
import type { TargetCounters, TargetInfo, TargetSpec } from '../dataplane/enforcer.js';
import type { Clock, TimerHandle } from './clock.js';
import { MAX_TIMER_MS } from './clock.js';
import type { JobFields, Job as ProtocolJob } from '../control/protocol.js';

// The injection mode is the sender's; a type-only import keeps the CLI free of the sender's koffi.
export type { InjectMode } from '../net/sender.js';
import type { InjectMode } from '../net/sender.js';

/** The part of the Enforcer the job manager uses. */
export interface TargetBackend {
  add(spec: TargetSpec): TargetInfo;
  extend(id: number, expiresAt: number): TargetInfo;
  remove(id: number): boolean;
  get(id: number): TargetInfo | undefined;
}

export interface LogSink {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface CreateArgs {
  engid: string;
  sniffIf: string;
  resetIf: string;
  host: string;
  /** Remote port; null/undefined/0 = every port of the host. */
  port?: number | null;
  /** Seconds. */
  duration: number;
  mode?: InjectMode;
}

export interface CancelIdentity {
  engid: string;
  sniffIf: string;
  host: string;
  port?: number | null;
}

export interface JobCounters {
  matched: number;
  rstsSent: number;
  flows: number;
  /** epoch ms */
  firstHitAt: number | null;
  lastHitAt: number | null;
}

/** What is persisted per job (times in epoch ms). */
export interface JobRecord extends JobFields {
  createdAt: number;
  expiresAt: number;
  counters: JobCounters;
}

/**
 * One change, as the state journal records it: a job written whole (created,
 * extended, swapped; counters as totals at that moment), a job ended, or
 * "all" when many changed at once (a restore) and the set is saved whole.
 */
export type JobChange =
  | { op: 'put'; rec: JobRecord }
  | { op: 'del'; id: string; why: 'cancelled' | 'expired' }
  | { op: 'all' };

/** The protocol's Job (times as ISO strings). */
export type JobView = ProtocolJob;

/** Why a host may not be reset: the address matched and the entry that protects it. */
export interface ProtectHit {
  address: string;
  entry: string;
  source: 'config' | 'local';
}

export interface JobChecks {
  /** Returns the protecting entry, or null when the host may be reset. */
  protectedBy(host: string): ProtectHit | null;
  /** Throws E_IFACE when the sniff or reset interface is unusable for this host and mode. */
  interfaces(q: { sniffIf: string; resetIf: string; host: string; family: 4 | 6; mode: InjectMode }): void;
}

export interface JobManagerOptions {
  clock: Clock;
  /** Called when a target is first needed (opening the Enforcer needs root). */
  backend: () => TargetBackend;
  checks: JobChecks;
  log: LogSink;
  maxJobs: number;
  maxDurationSec: number;
  defaultMode?: InjectMode;
  /** How often a job whose target could not be (re)added is retried. */
  retryMs?: number;
  /**
   * Called after every change of the job set or of a job's end time, with
   * the change (for the journal; `rec` is valid during the call only).
   */
  onChange?: (change: JobChange) => void;
}

export interface CreateResult {
  action: 'created' | 'extended';
  job: JobView;
}

interface Job {
  rec: JobRecord;
  targetId: number | null;
  /** Counters from targets this job held before its current one (swaps, previous daemon runs). */
  base: JobCounters;
  fault: string | undefined;
}

const zeroCounters = (): JobCounters => ({ matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null });

/**
 * The host's canonical text and family; IPv4-mapped IPv6 becomes IPv4, so
 * one host has one identity. Refuses what is not one unicast host.
 */
export function canonicalHost(text: string): { canonical: string; family: 4 | 6 } {
  const host = parseHost(text, 'host');
  return { canonical: host.canonical, family: host.family };
}

function normPort(port: number | null | undefined): number | null {
  return port === undefined || port === null || port === 0 ? null : port;
}

function identityKey(engid: string, sniffIf: string, host: string, port: number | null): string {
  return JSON.stringify([engid, sniffIf, host, port]);
}

function addCounters(a: JobCounters, b: TargetCounters | JobCounters): JobCounters {
  const first = [a.firstHitAt, b.firstHitAt].filter((x): x is number => x !== null);
  const last = [a.lastHitAt, b.lastHitAt].filter((x): x is number => x !== null);
  return {
    matched: a.matched + b.matched,
    rstsSent: a.rstsSent + b.rstsSent,
    flows: a.flows + b.flows,
    firstHitAt: first.length ? Math.min(...first) : null,
    lastHitAt: last.length ? Math.max(...last) : null,
  };
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export class JobManager {
  private readonly opts: Required<Omit<JobManagerOptions, 'onChange'>> & { onChange: (change: JobChange) => void };
  private readonly jobs = new Map<string, Job>();
  private readonly byIdentity = new Map<string, Job>();
  private readonly byTarget = new Map<number, Job>();
  private expiryTimer: TimerHandle | undefined;
  private expiryAt = Infinity;
  /** End times, earliest first; an entry outdated by an extension or an end is dropped when it surfaces. */
  private readonly deadlines = new DeadlineHeap();
  /** Set while due jobs are being finished: the timer is armed once afterwards. */
  private expiring = false;
  private retryTimer: TimerHandle | undefined;
  private backendInstance: TargetBackend | undefined;
  private closed = false;

  constructor(opts: JobManagerOptions) {
    this.opts = { defaultMode: 'l3', retryMs: 5000, onChange: () => {}, ...opts };
  }

  get size(): number {
    return this.jobs.size;
  }

  /** Create a job, or extend the job with the same identity to the later end time. */
  create(args: CreateArgs): CreateResult {
    this.assertOpen();
    const now = this.opts.clock.now();
    if (!Number.isInteger(args.duration) || args.duration < 1) {
      throw new ValidationError('duration', args.duration, 'must be a whole number of seconds >= 1');
    }
    if (args.duration > this.opts.maxDurationSec) {
      throw new ValidationError('duration', args.duration, `exceeds the maximum of ${this.opts.maxDurationSec} s (config maxDurationSec)`);
    }
    const { canonical: host, family } = canonicalHost(args.host);
    const port = normPort(args.port);
    const mode = args.mode ?? this.opts.defaultMode;

    const hit = this.opts.checks.protectedBy(host);
    if (hit) {
      throw new TcpresetError(
        'E_PROTECTED',
        `host ${host} is protected: ${hit.address} is covered by ${hit.source === 'local' ? 'this sensor\'s own address' : 'protected entry'} ${hit.entry}`,
        { details: { host, address: hit.address, entry: hit.entry, source: hit.source } },
      );
    }
    this.opts.checks.interfaces({ sniffIf: args.sniffIf, resetIf: args.resetIf, host, family, mode });

    const expiresAt = now + args.duration * 1000;
    const existing = this.byIdentity.get(identityKey(args.engid, args.sniffIf, host, port));
    if (existing) return { action: 'extended', job: this.view(this.extend(existing, args.resetIf, mode, expiresAt)) };

    if (this.jobs.size >= this.opts.maxJobs) {
      throw new TcpresetError('E_LIMIT', `too many jobs: the limit is ${this.opts.maxJobs} (config maxJobs)`, {
        details: { maxJobs: this.opts.maxJobs },
      });
    }
    const rec: JobRecord = {
      id: this.newId(), engid: args.engid, sniffIf: args.sniffIf, resetIf: args.resetIf, host, port, mode,
      createdAt: now, expiresAt, counters: zeroCounters(),
    };
    const job: Job = { rec, targetId: null, base: zeroCounters(), fault: undefined };
    // Add the target before the job exists: a failure leaves nothing behind.
    job.targetId = this.backend().add(this.spec(rec)).id;
    this.insert(job);
    this.opts.log.info({ job: this.logFields(job), durationSec: args.duration }, 'job created');
    this.changed({ op: 'put', rec });
    return { action: 'created', job: this.view(job) };
  }

  private extend(job: Job, resetIf: string, mode: InjectMode, expiresAt: number): Job {
    const newEnd = Math.max(job.rec.expiresAt, expiresAt);
    const swap = resetIf !== job.rec.resetIf || mode !== job.rec.mode;
    const before = job.rec.expiresAt;
    if (swap || job.targetId === null) {
      // The newest order names the reset interface/mode; add the new target
      // before removing the old one so enforcement has no gap.
      const next = { ...job.rec, resetIf, mode, expiresAt: newEnd };
      const added = this.backend().add(this.spec(next));
      this.dropTarget(job);
      job.rec = next;
      job.targetId = added.id;
      job.fault = undefined;
      this.byTarget.set(added.id, job);
      this.deadlines.push(newEnd, job);
    } else if (newEnd !== before) {
      this.backend().extend(job.targetId, newEnd);
      job.rec.expiresAt = newEnd;
      this.deadlines.push(newEnd, job);
    }
    this.opts.log.info(
      { job: this.logFields(job), previousExpiresAt: iso(before), ...(swap ? { swapped: true } : {}) },
      newEnd === before ? 'job kept (already ends later)' : 'job extended',
    );
    this.armExpiry();
    this.changed({ op: 'put', rec: { ...job.rec, counters: this.totals(job) } });
    return job;
  }

  cancelById(id: string): JobView {
    this.assertOpen();
    const job = this.jobs.get(id);
    if (!job) throw new TcpresetError('E_NOT_FOUND', `no job with id ${JSON.stringify(id)}`, { details: { jobId: id } });
    return this.finish(job, 'cancelled');
  }

  cancelByIdentity(who: CancelIdentity): JobView {
    this.assertOpen();
    const { canonical } = canonicalHost(who.host);
    const port = normPort(who.port);
    const job = this.byIdentity.get(identityKey(who.engid, who.sniffIf, canonical, port));
    if (!job) {
      throw new TcpresetError(
        'E_NOT_FOUND',
        `no job for engid ${JSON.stringify(who.engid)} on ${who.sniffIf} host ${canonical}${port === null ? '' : ` port ${port}`}`,
        { details: { engid: who.engid, sniffIf: who.sniffIf, host: canonical, port } },
      );
    }
    return this.finish(job, 'cancelled');
  }

  list(): JobView[] {
    return [...this.jobs.values()].sort((a, b) => a.rec.createdAt - b.rec.createdAt).map((j) => this.view(j));
  }

  get(id: string): JobView | undefined {
    const job = this.jobs.get(id);
    return job ? this.view(job) : undefined;
  }

  /** The job a target belongs to (for the Enforcer's flow events). */
  jobOfTarget(targetId: number): JobRecord | undefined {
    return this.byTarget.get(targetId)?.rec;
  }

  /** Current totals of a job, including counters from earlier targets. */
  counters(id: string): JobCounters | undefined {
    const job = this.jobs.get(id);
    return job ? this.totals(job) : undefined;
  }

  /** Records to persist: counters are the totals at this moment. */
  snapshot(): JobRecord[] {
    return [...this.jobs.values()].map((j) => ({ ...j.rec, counters: this.totals(j) }));
  }

  /**
   * Re-enforce jobs loaded from disk for their remaining time, keeping their
   * original end times. Expired ones and ones the configuration now protects
   * are dropped; ones whose target cannot be added now are kept with a fault
   * and retried.
   */
  restore(records: JobRecord[]): { restored: number; expired: number; dropped: number; faulty: number } {
    this.assertOpen();
    const now = this.opts.clock.now();
    let restored = 0, expired = 0, dropped = 0, faulty = 0;
    for (const rec of records) {
      if (rec.expiresAt <= now) {
        expired++;
        this.opts.log.info({ job: { id: rec.id, engid: rec.engid, host: rec.host, port: rec.port }, expiresAt: iso(rec.expiresAt) }, 'saved job already expired: not restored');
        continue;
      }
      let host: string;
      try {
        host = canonicalHost(rec.host).canonical;
      } catch (err) {
        dropped++;
        this.opts.log.error({ job: rec, err }, 'saved job has an invalid host: dropped');
        continue;
      }
      const hit = this.opts.checks.protectedBy(host);
      if (hit) {
        dropped++;
        this.opts.log.error({ job: { id: rec.id, engid: rec.engid, host }, protectedBy: hit }, 'saved job targets a protected address: dropped');
        continue;
      }
      if (this.jobs.has(rec.id) || this.byIdentity.has(identityKey(rec.engid, rec.sniffIf, host, rec.port))) {
        dropped++;
        this.opts.log.error({ job: { id: rec.id } }, 'saved job duplicates another: dropped');
        continue;
      }
      const job: Job = { rec: { ...rec, host }, targetId: null, base: { ...rec.counters }, fault: undefined };
      this.insert(job);
      if (this.tryEnforce(job)) restored++;
      else faulty++;
    }
    this.armRetry();
    if (restored + faulty > 0 || expired + dropped > 0) this.changed({ op: 'all' });
    return { restored, expired, dropped, faulty };
  }

  /**
   * The Enforcer dropped a target by itself (its backstop timer): end the job
   * if it is due. `final` is the target's counters as the Enforcer held them
   * when it dropped it: the target is gone, so they can no longer be read,
   * and without them the job would end (and be logged) with zero counters.
   */
  targetExpired(targetId: number, final?: TargetCounters): void {
    const job = this.byTarget.get(targetId);
    if (!job) return;
    this.byTarget.delete(targetId);
    job.targetId = null;
    if (final) job.base = addCounters(job.base, final);
    if (job.rec.expiresAt <= this.opts.clock.now()) this.finish(job, 'expired');
    else {
      // Should not happen (deadlines are the same); re-enforce rather than silently stop.
      this.tryEnforce(job);
      this.armRetry();
    }
  }

  /**
   * Stop the timers and refuse further changes (shutdown). Targets are left
   * to Enforcer.close(); the jobs themselves are persisted and restored.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.expiryTimer) this.opts.clock.clearTimer(this.expiryTimer);
    if (this.retryTimer) this.opts.clock.clearTimer(this.retryTimer);
    this.expiryTimer = this.retryTimer = undefined;
  }

  // ---- internals -------------------------------------------------------

  private backend(): TargetBackend {
    this.backendInstance ??= this.opts.backend();
    return this.backendInstance;
  }

  private spec(rec: JobRecord): TargetSpec {
    return {
      sniffIf: rec.sniffIf, resetIf: rec.resetIf, host: rec.host, port: rec.port ?? 0, mode: rec.mode,
      expiresAt: rec.expiresAt, label: `${rec.engid}/${rec.id}`,
    };
  }

  private tryEnforce(job: Job): boolean {
    try {
      const info = this.backend().add(this.spec(job.rec));
      job.targetId = info.id;
      this.byTarget.set(info.id, job);
      if (job.fault !== undefined) this.opts.log.info({ job: this.logFields(job) }, 'job enforced again');
      job.fault = undefined;
      return true;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (job.fault !== message) this.opts.log.error({ job: this.logFields(job), err }, 'job not enforced: will retry');
      job.fault = message;
      return false;
    }
  }

  private insert(job: Job): void {
    const r = job.rec;
    this.jobs.set(r.id, job);
    this.byIdentity.set(identityKey(r.engid, r.sniffIf, r.host, r.port), job);
    if (job.targetId !== null) this.byTarget.set(job.targetId, job);
    this.deadlines.push(r.expiresAt, job);
    this.armExpiry();
  }

  private dropTarget(job: Job): void {
    if (job.targetId === null) return;
    const info = this.backend().get(job.targetId);
    if (info) job.base = addCounters(job.base, info.counters);
    this.backend().remove(job.targetId);
    this.byTarget.delete(job.targetId);
    job.targetId = null;
  }

  private finish(job: Job, why: 'cancelled' | 'expired'): JobView {
    // Enforcement stops first (the Enforcer deletes the map entry at once).
    this.dropTarget(job);
    const r = job.rec;
    this.jobs.delete(r.id);
    this.byIdentity.delete(identityKey(r.engid, r.sniffIf, r.host, r.port));
    const view = this.view(job);
    this.opts.log.info({ job: this.logFields(job), counters: view.counters }, why === 'cancelled' ? 'job cancelled' : 'job expired');
    this.armExpiry();
    this.changed({ op: 'del', id: r.id, why });
    return view;
  }

  private totals(job: Job): JobCounters {
    const info = job.targetId === null || !this.backendInstance ? undefined : this.backendInstance.get(job.targetId);
    return info ? addCounters(job.base, info.counters) : { ...job.base };
  }

  private view(job: Job): JobView {
    const r = job.rec;
    const c = this.totals(job);
    return {
      id: r.id, engid: r.engid, sniffIf: r.sniffIf, resetIf: r.resetIf, host: r.host, port: r.port, mode: r.mode,
      createdAt: new Date(r.createdAt).toISOString(), expiresAt: new Date(r.expiresAt).toISOString(),
      remainingMs: Math.max(0, r.expiresAt - this.opts.clock.now()),
      counters: { matched: c.matched, rstsSent: c.rstsSent, flows: c.flows, firstHitAt: iso(c.firstHitAt), lastHitAt: iso(c.lastHitAt) },
      ...(job.fault !== undefined ? { fault: job.fault } : {}),
    };
  }

  private logFields(job: Job): object {
    const r = job.rec;
    return {
      id: r.id, engid: r.engid, sniffIf: r.sniffIf, resetIf: r.resetIf, host: r.host, port: r.port, mode: r.mode,
      expiresAt: new Date(r.expiresAt).toISOString(), ...(job.targetId !== null ? { targetId: job.targetId } : {}),
    };
  }

  private newId(): string {
    for (;;) {
      const id = randomBytes(6).toString('hex');
      if (!this.jobs.has(id)) return id;
    }
  }

  /** Whether a heap entry is still a live job's end time. */
  private isCurrent(e: { at: number; job: Job }): boolean {
    return this.jobs.get(e.job.rec.id) === e.job && e.job.rec.expiresAt === e.at;
  }

  /**
   * One timer for the earliest end time. O(log n) per change (a heap, not a
   * scan of every job), so ending or expiring many jobs at once stays linear.
   */
  private armExpiry(): void {
    if (this.closed || this.expiring) return;
    let top = this.deadlines.peek();
    while (top && !this.isCurrent(top)) {
      this.deadlines.pop();
      top = this.deadlines.peek();
    }
    // Entries outdated by extensions of long jobs surface only late: rebuild when they outnumber the jobs.
    if (this.deadlines.size > 2 * this.jobs.size + 1024) {
      this.deadlines.rebuild([...this.jobs.values()].map((job) => ({ at: job.rec.expiresAt, job })));
      top = this.deadlines.peek();
    }
    const next = top ? top.at : Infinity;
    if (next === this.expiryAt && this.expiryTimer) return;
    if (this.expiryTimer) this.opts.clock.clearTimer(this.expiryTimer);
    this.expiryTimer = undefined;
    this.expiryAt = next;
    if (next === Infinity) return;
    const delay = Math.min(Math.max(0, next - this.opts.clock.now()), MAX_TIMER_MS);
    this.expiryTimer = this.opts.clock.setTimer(() => {
      this.expiryTimer = undefined;
      this.expiryAt = Infinity;
      this.expireDue();
    }, delay);
  }

  private expireDue(): void {
    const now = this.opts.clock.now();
    this.expiring = true;
    try {
      for (let top = this.deadlines.peek(); top && top.at <= now; top = this.deadlines.peek()) {
        this.deadlines.pop();
        if (this.isCurrent(top)) this.finish(top.job, 'expired');
      }
    } finally {
      this.expiring = false;
    }
    this.armExpiry();
  }

  private armRetry(): void {
    if (this.closed || this.retryTimer) return;
    if (![...this.jobs.values()].some((j) => j.targetId === null)) return;
    this.retryTimer = this.opts.clock.setTimer(() => {
      this.retryTimer = undefined;
      for (const job of this.jobs.values()) if (job.targetId === null) this.tryEnforce(job);
      this.armRetry();
    }, this.opts.retryMs);
  }

  private changed(change: JobChange): void {
    try {
      this.opts.onChange(change);
    } catch (err) {
      this.opts.log.error({ err }, 'job change listener failed');
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new TcpresetError('E_UNAVAILABLE', 'the daemon is shutting down');
  }
}

/** A binary min-heap of (end time, job). */
class DeadlineHeap {
  private a: { at: number; job: Job }[] = [];

  get size(): number {
    return this.a.length;
  }

  peek(): { at: number; job: Job } | undefined {
    return this.a[0];
  }

  push(at: number, job: Job): void {
    const a = this.a;
    a.push({ at, job });
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.at <= a[i]!.at) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }

  pop(): { at: number; job: Job } | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      this.down(0);
    }
    return top;
  }

  rebuild(entries: { at: number; job: Job }[]): void {
    this.a = entries;
    for (let i = (entries.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  private down(i: number): void {
    const a = this.a;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && a[l]!.at < a[m]!.at) m = l;
      if (r < a.length && a[r]!.at < a[m]!.at) m = r;
      if (m === i) return;
      [a[m], a[i]] = [a[i]!, a[m]!];
      i = m;
    }
  }
}
