/**
 * The job manager: the one owner of job lifetimes. A job is a timed order
 * "reset every TCP flow of HOST[:PORT] seen on SNIFF_IF" raised by a
 * detection engine (ENGID); its identity is (engid, sniffIf, host, port).
 * Each job holds exactly one Enforcer target, added on create, extended on
 * re-create, removed on cancel and at expiry. This is the one owner of
 * expiry in user space (its deadline heap, expiry-heap.ts, and one timer); the Enforcer keeps
 * no timers. The backstop is the kernel: the targets map entry carries the
 * deadline and the XDP program ignores it past then, so a late timer here
 * (a blocked event loop) never extends enforcement.
 *
 * No I/O here beyond the injected backend, checks and clock, so the logic
 * is tested with a stepped clock.
 *
 * Memory: a daemon may hold 100,000 jobs, so a job is a slot in a table of
 * typed-array columns (times, target id, port, mode, links of the lookup
 * chains, its place in the expiry heap) plus its id and host strings, about
 * 200 bytes in all, instead of several objects per job. Counters carried
 * from earlier targets and faults are kept only for the jobs that have
 * them. One timer serves every job: it is armed for the top of an indexed
 * min-heap of end times.
 */
import { randomFillSync } from 'node:crypto';
import { TcpresetError, ValidationError } from '../core/errors.js';
import { keptHost, parseHost, type Host } from '../core/addr.js';
import type { TargetInfo, TargetSpec } from '../dataplane/types.js';
import type { Clock, TimerHandle } from './clock.js';
import { MAX_TIMER_MS } from './clock.js';
import { ExpiryHeap } from './expiry-heap.js';
import type { Job } from '../control/protocol.js';
import type { EpochMs, Family, InjectMode, JobCounters, JobFields, JobKey, LogSink } from '../core/model.js';


/** The part of the Enforcer the job manager uses. */
export interface TargetBackend {
  add(spec: TargetSpec): TargetInfo;
  extend(id: number, expiresAt: number): TargetInfo;
  remove(id: number): boolean;
  get(id: number): TargetInfo | undefined;
  /** The target's counters alone (what totals() needs for every job of a compaction or a list), without a TargetInfo. */
  targetCounters?(id: number): JobCounters<EpochMs> | undefined;
}

/** What the job manager creates a job from: the create request after the protocol parsed it (port null or absent: every port). */
export interface JobCreateArgs {
  engid: string;
  sniffIf: string;
  resetIf: string;
  /** Parsed once by the protocol (parseRequest): used as it is here. */
  host: Host;
  /** Remote port; null/undefined/0 = every port of the host. */
  port?: number | null;
  /** Seconds. */
  duration: number;
  mode?: InjectMode;
}

/** What is persisted per job (times in epoch ms). */
export interface JobRecord extends JobFields {
  createdAt: number;
  expiresAt: number;
  counters: JobCounters<EpochMs>;
  /**
   * uid of the client that created the job, as read back from the state file (null: unknown). Not
   * kept by the job manager: the daemon's History holds it for live jobs and state.ts writes it.
   */
  uid?: number | null;
}

/**
 * One change, as the state journal records it: a job written whole (created,
 * extended, swapped; counters as totals at that moment), a job ended, or
 * "all" when many changed at once (a restore) and the set is saved whole.
 */
export type JobChange =
  | { op: 'put'; rec: JobRecord }
  | { op: 'del'; id: string; why: EndReason; /** The job as it ended, final counters included (history). */ job?: Job }
  | { op: 'all' };

/**
 * How a job ended: its end time came (expired), a client cancelled it
 * (cancelled), or a configuration reload protected its host (protected).
 */
export type EndReason = 'expired' | 'cancelled' | 'protected';

/** Why a host may not be reset: the address matched and the entry that protects it. */
export interface ProtectHit {
  address: string;
  entry: string;
  source: 'config' | 'local';
}

export interface JobChecks {
  /** Returns the protecting entry, or null when the host may be reset. */
  protectedBy(host: Host): ProtectHit | null;
  /** Throws E_IFACE when the sniff or reset interface is unusable for this host and mode. */
  interfaces(q: { sniffIf: string; resetIf: string; host: Host; family: Family; mode: InjectMode }): void;
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

/** What a create did, for the service (which adds the sweep and warnings to make the protocol's CreateResult). */
export interface JobCreateResult {
  /** kept: the job existed and already ended later than asked (its end is unchanged). */
  action: 'created' | 'extended' | 'kept';
  /** The re-create moved the job to another reset interface or mode (from what). */
  switched?: { resetIf: string; mode: InjectMode };
  /** For extended and kept: the job's end before this create (ISO), for the history. */
  previousExpiresAt?: string;
  job: Job;
}

const zeroCounters = (): JobCounters<EpochMs> => ({ matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null });

/** A job's key as cancel names it: the host parsed by the protocol, as JobCreateArgs'. */
export type JobLookup = Omit<JobKey, 'host'> & { host: Host };

function normPort(port: number | null | undefined): number | null {
  return port === undefined || port === null || port === 0 ? null : port;
}

function addCounters(a: JobCounters<EpochMs>, b: JobCounters<EpochMs>): JobCounters<EpochMs> {
  const first = a.firstHitAt === null ? b.firstHitAt : b.firstHitAt === null ? a.firstHitAt : Math.min(a.firstHitAt, b.firstHitAt);
  const last = a.lastHitAt === null ? b.lastHitAt : b.lastHitAt === null ? a.lastHitAt : Math.max(a.lastHitAt, b.lastHitAt);
  const undeliverable = (a.undeliverable ?? 0) + (b.undeliverable ?? 0);
  const known = (a.known ?? 0) + (b.known ?? 0);
  const verified = (a.verified ?? 0) + (b.verified ?? 0);
  const mptcpNoKeys = (a.mptcpNoKeys ?? 0) + (b.mptcpNoKeys ?? 0);
  return {
    matched: a.matched + b.matched, rstsSent: a.rstsSent + b.rstsSent, flows: a.flows + b.flows, firstHitAt: first, lastHitAt: last,
    ...(undeliverable ? { undeliverable } : {}),
    ...(known ? { known } : {}),
    ...(verified ? { verified } : {}),
    ...(mptcpNoKeys ? { mptcpNoKeys } : {}),
  };
}

const copy = <T extends object>(o: T | undefined): T | undefined => (o ? { ...o } : undefined);

const isZero = (c: JobCounters<EpochMs>): boolean => c.matched === 0 && c.rstsSent === 0 && c.flows === 0 && c.firstHitAt === null && c.lastHitAt === null;

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

const MODES: readonly InjectMode[] = ['l3', 'l2'];
/** No slot / no target. Target ids from the backend are positive. */
const NONE = -1;
/** addrCol bytes per slot: an IPv6 address (IPv4 uses the first 4). */
const ADDR_BYTES = 16;

/**
 * Strings many jobs repeat (interface names, ENGIDs) are kept once: each
 * request's JSON parse makes a new copy. Bounded, so unique values cannot
 * grow it; past the bound a value is simply not shared.
 */
class Interner {
  private readonly m = new Map<string, string>();
  intern(s: string): string {
    const have = this.m.get(s);
    if (have !== undefined) return have;
    if (this.m.size < 4096) this.m.set(s, s);
    return s;
  }
}

/** Job ids: 12 hex digits from a pooled random buffer (one getrandom(2) per 1,024 ids, not per job). */
class IdSource {
  private readonly pool = Buffer.alloc(6 * 1024);
  private off = this.pool.length;
  next(): string {
    if (this.off === this.pool.length) {
      randomFillSync(this.pool);
      this.off = 0;
    }
    const id = this.pool.toString('hex', this.off, this.off + 6);
    this.off += 6;
    return id;
  }
}

export class JobManager {
  private readonly opts: Required<Omit<JobManagerOptions, 'onChange'>> & { onChange: (change: JobChange) => void };
  // ---- the job table: slot-indexed columns ----
  private cap = 0;
  /** Inside restore(): targets are added without a flow-memory sweep (see TargetSpec.sweep). */
  private restoring = false;
  private count = 0;
  private createdAtCol = new Float64Array(0);
  private targetCol = new Int32Array(0);
  /** Remote port, 0 = every port. */
  private portCol = new Uint16Array(0);
  /** Index into MODES. */
  private modeCol = new Uint8Array(0);
  /** Next slot with the same host (the identity chain), or NONE. */
  private nextSameHost = new Int32Array(0);
  private ids: (string | undefined)[] = [];
  private hosts: (string | undefined)[] = [];
  /** The host's address bytes as parsed, ADDR_BYTES per slot (IPv4: the first 4): the Enforcer's orders are made from them, not from the text. */
  private addrCol = new Uint8Array(0);
  private engids: (string | undefined)[] = [];
  private sniffIfs: (string | undefined)[] = [];
  private resetIfs: (string | undefined)[] = [];
  private free: number[] = [];
  /** Counters from targets a job held before its current one (swaps, previous daemon runs); only when non-zero. */
  private readonly base = new Map<number, JobCounters<EpochMs>>();
  private readonly faults = new Map<number, string>();
  /** Live jobs that hold no target (their add failed): retried. */
  private readonly unenforced = new Set<number>();
  // ---- lookups ----
  private readonly byId = new Map<string, number>();
  /** First slot of each host's identity chain. */
  private readonly byHost = new Map<string, number>();
  private readonly byTarget = new Map<number, number>();
  /** End times, and the slots ordered by them. */
  private readonly expiry = new ExpiryHeap();
  private readonly strings = new Interner();
  private readonly idSource = new IdSource();
  private expiryTimer: TimerHandle | undefined;
  private expiryAt = Infinity;
  /** Set while due jobs are being finished: the timer is armed once afterwards. */
  private expiring = false;
  private retryTimer: TimerHandle | undefined;
  private backendInstance: TargetBackend | undefined;
  private closed = false;

  constructor(opts: JobManagerOptions) {
    this.opts = { defaultMode: 'l3', retryMs: 5000, onChange: () => {}, ...opts };
  }

  get size(): number {
    return this.count;
  }

  /** Create a job, or extend the job with the same identity to the later end time. */
  create(args: JobCreateArgs): JobCreateResult {
    this.assertOpen();
    const now = this.opts.clock.now();
    if (!Number.isInteger(args.duration) || args.duration < 1) {
      throw new ValidationError('duration', args.duration, 'must be a whole number of seconds >= 1');
    }
    if (args.duration > this.opts.maxDurationSec) {
      throw new ValidationError('duration', args.duration, `exceeds the maximum of ${this.opts.maxDurationSec} s (config maxDurationSec)`);
    }
    // Parsed by the protocol: canonical (one host, one identity), unicast. Policy only from here.
    const { canonical: host, family } = args.host;
    const port = normPort(args.port);
    const mode = args.mode ?? this.opts.defaultMode;

    const hit = this.opts.checks.protectedBy(args.host);
    if (hit) {
      throw new TcpresetError(
        'E_PROTECTED',
        `host ${host} is protected: ${hit.address} is covered by ${hit.source === 'local' ? 'this sensor\'s own address' : 'protected entry'} ${hit.entry}`,
        { details: { host, address: hit.address, entry: hit.entry, source: hit.source } },
      );
    }
    this.opts.checks.interfaces({ sniffIf: args.sniffIf, resetIf: args.resetIf, host: args.host, family, mode });

    const expiresAt = now + args.duration * 1000;
    const existing = this.findIdentity(args.engid, args.sniffIf, host, port);
    if (existing !== NONE) {
      const was = { resetIf: this.resetIfs[existing]!, mode: MODES[this.modeCol[existing]!]!, expiresAt: this.expiry.endOf(existing) };
      const slot = this.extend(existing, args.resetIf, mode, expiresAt);
      const switched = was.resetIf !== args.resetIf || was.mode !== mode;
      return {
        action: this.expiry.endOf(slot) > was.expiresAt ? 'extended' : 'kept',
        job: this.view(slot),
        previousExpiresAt: new Date(was.expiresAt).toISOString(),
        ...(switched ? { switched: { resetIf: was.resetIf, mode: was.mode } } : {}),
      };
    }

    if (this.count >= this.opts.maxJobs) {
      throw new TcpresetError('E_LIMIT', `too many jobs: the limit is ${this.opts.maxJobs} (config maxJobs)`, {
        details: { maxJobs: this.opts.maxJobs },
      });
    }
    const rec: JobRecord = {
      id: this.newId(), engid: args.engid, sniffIf: args.sniffIf, resetIf: args.resetIf, host, port, mode,
      createdAt: now, expiresAt, counters: zeroCounters(),
    };
    // Add the target before the job exists: a failure leaves nothing behind.
    const targetId = this.backend().add(this.spec(rec, args.host)).id;
    const slot = this.insert(rec, targetId, args.host);
    this.opts.log.info({ job: this.logFields(slot), durationSec: args.duration }, 'job created');
    this.changed({ op: 'put', rec });
    return { action: 'created', job: this.view(slot) };
  }

  private extend(slot: number, resetIf: string, mode: InjectMode, expiresAt: number): number {
    const before = this.expiry.endOf(slot);
    const newEnd = Math.max(before, expiresAt);
    const swap = resetIf !== this.resetIfs[slot] || mode !== MODES[this.modeCol[slot]!];
    const targetId = this.targetCol[slot]!;
    if (swap || targetId === NONE) {
      // The newest order names the reset interface/mode; add the new target
      // before removing the old one so enforcement has no gap.
      const next = { ...this.record(slot, zeroCounters()), resetIf, mode, expiresAt: newEnd };
      const added = this.backend().add(this.spec(next, this.hostAt(slot)));
      this.dropTarget(slot);
      this.resetIfs[slot] = this.strings.intern(resetIf);
      this.modeCol[slot] = MODES.indexOf(mode);
      this.setTarget(slot, added.id);
      this.faults.delete(slot);
      this.expiry.update(slot, newEnd);
    } else if (newEnd !== before) {
      this.backend().extend(targetId, newEnd);
      this.expiry.update(slot, newEnd);
    }
    this.opts.log.info(
      { job: this.logFields(slot), previousExpiresAt: iso(before), ...(swap ? { swapped: true } : {}) },
      newEnd === before ? 'job kept (already ends later)' : 'job extended',
    );
    this.armExpiry();
    this.changed({ op: 'put', rec: this.record(slot, this.totals(slot)) });
    return slot;
  }

  /** End the job `id`; `why` is recorded (journal, history, log): a reload ends jobs as 'protected', not as a client's cancel. */
  cancelById(id: string, why: Exclude<EndReason, 'expired'> = 'cancelled'): Job {
    this.assertOpen();
    const slot = this.byId.get(id);
    if (slot === undefined) throw new TcpresetError('E_NOT_FOUND', `no job with id ${JSON.stringify(id)}`, { details: { jobId: id } });
    return this.finish(slot, why);
  }

  /** End the job with this key (cancel by ENGID). Throws E_NOT_FOUND naming the key when there is none. */
  cancelByIdentity(who: JobLookup): Job {
    this.assertOpen();
    const { canonical } = who.host;
    const port = normPort(who.port);
    const slot = this.findIdentity(who.engid, who.sniffIf, canonical, port);
    if (slot === NONE) {
      throw new TcpresetError(
        'E_NOT_FOUND',
        `no job for engid ${JSON.stringify(who.engid)} on ${who.sniffIf} host ${canonical}${port === null ? '' : ` port ${port}`}`,
        { details: { engid: who.engid, sniffIf: who.sniffIf, host: canonical, port } },
      );
    }
    return this.finish(slot, 'cancelled');
  }

  list(): Job[] {
    return this.liveSlots().sort((a, b) => this.createdAtCol[a]! - this.createdAtCol[b]!).map((s) => this.view(s));
  }

  get(id: string): Job | undefined {
    const slot = this.byId.get(id);
    return slot === undefined ? undefined : this.view(slot);
  }

  /** The job a target belongs to (for the Enforcer's flow events). */
  jobOfTarget(targetId: number): JobRecord | undefined {
    const slot = this.byTarget.get(targetId);
    return slot === undefined ? undefined : this.record(slot, this.totals(slot));
  }

  /** Current totals of a job, including counters from earlier targets. */
  counters(id: string): JobCounters<EpochMs> | undefined {
    const slot = this.byId.get(id);
    return slot === undefined ? undefined : this.totals(slot);
  }

  /** Records to persist: counters are the totals at this moment. */
  snapshot(): JobRecord[] {
    return this.liveSlots().map((s) => this.record(s, this.totals(s)));
  }

  /**
   * Jobs per (sniffIf, resetIf, mode, family), in the order each group's
   * first job came in, with how many carry a fault of their own: what
   * `status` needs, without building a view of every job (at 100,000 jobs
   * that took a second per status poll, the event loop blocked meanwhile).
   */
  usage(): { jobs: number; groups: { sniffIf: string; resetIf: string; mode: InjectMode; family: Family; jobs: number; faulty: number }[] } {
    const groups = new Map<string, { sniffIf: string; resetIf: string; mode: InjectMode; family: Family; jobs: number; faulty: number }>();
    for (const slot of this.byId.values()) {
      const family: Family = this.hosts[slot]!.includes(':') ? 6 : 4;
      const mode = MODES[this.modeCol[slot]!]!;
      const key = `${this.sniffIfs[slot]}\0${this.resetIfs[slot]}\0${mode}\0${family}`;
      let g = groups.get(key);
      if (!g) {
        g = { sniffIf: this.sniffIfs[slot]!, resetIf: this.resetIfs[slot]!, mode, family, jobs: 0, faulty: 0 };
        groups.set(key, g);
      }
      g.jobs++;
      if (this.faults.has(slot)) g.faulty++;
    }
    return { jobs: this.count, groups: [...groups.values()] };
  }

  /**
   * Visit every job whose counters are not all zero, with its totals,
   * without building a record for the others (the activity summary runs
   * over every job every period).
   */
  forEachActive(fn: (job: { id: string; engid: string; host: string; port: number | null; expiresAt: number }, counters: JobCounters<EpochMs>) => void): void {
    for (const slot of this.byId.values()) {
      const c = this.totals(slot);
      if (isZero(c)) continue;
      fn({ id: this.ids[slot]!, engid: this.engids[slot]!, host: this.hosts[slot]!, port: this.portCol[slot] || null, expiresAt: this.expiry.endOf(slot) }, c);
    }
  }

  /**
   * Re-enforce jobs loaded from disk for their remaining time, keeping their
   * original end times. Expired ones and ones the configuration now protects
   * are dropped; ones whose target cannot be added now are kept with a fault
   * and retried.
   */
  restore(records: JobRecord[]): { restored: number; expired: number; dropped: number; faulty: number } {
    this.assertOpen();
    this.restoring = true;
    try {
      return this.restoreAll(records);
    } finally {
      this.restoring = false;
    }
  }

  private restoreAll(records: JobRecord[]): { restored: number; expired: number; dropped: number; faulty: number } {
    const now = this.opts.clock.now();
    let restored = 0, expired = 0, dropped = 0, faulty = 0;
    for (const rec of records) {
      if (rec.expiresAt <= now) {
        expired++;
        this.opts.log.info({ job: { id: rec.id, engid: rec.engid, host: rec.host, port: rec.port }, expiresAt: iso(rec.expiresAt) }, 'saved job already expired: not restored');
        continue;
      }
      // The one parse of a saved job's host (the state file is a boundary: it may have been edited by hand).
      let parsed: Host;
      try {
        parsed = parseHost(rec.host, 'host');
      } catch (err) {
        dropped++;
        this.opts.log.error({ job: rec, err }, 'saved job has an invalid host: dropped');
        continue;
      }
      const host = parsed.canonical;
      const hit = this.opts.checks.protectedBy(parsed);
      if (hit) {
        dropped++;
        this.opts.log.error({ job: { id: rec.id, engid: rec.engid, host }, protectedBy: hit }, 'saved job targets a protected address: dropped');
        continue;
      }
      if (this.byId.has(rec.id) || this.findIdentity(rec.engid, rec.sniffIf, host, rec.port) !== NONE) {
        dropped++;
        this.opts.log.error({ job: { id: rec.id } }, 'saved job duplicates another: dropped');
        continue;
      }
      const slot = this.insert({ ...rec, host }, NONE, parsed);
      if (!isZero(rec.counters)) this.base.set(slot, { ...rec.counters });
      if (this.tryEnforce(slot)) restored++;
      else faulty++;
    }
    this.armRetry();
    if (restored + faulty > 0 || expired + dropped > 0) this.changed({ op: 'all' });
    return { restored, expired, dropped, faulty };
  }

  /** New limits from a reloaded configuration: they apply to the next create; existing jobs keep their end times. */
  setLimits(l: { maxJobs: number; maxDurationSec: number; defaultMode: InjectMode }): void {
    this.opts.maxJobs = l.maxJobs;
    this.opts.maxDurationSec = l.maxDurationSec;
    this.opts.defaultMode = l.defaultMode;
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

  private liveSlots(): number[] {
    return [...this.byId.values()];
  }

  /** The job (engid, sniffIf, host, port), or NONE. */
  private findIdentity(engid: string, sniffIf: string, host: string, port: number | null): number {
    const p = port ?? 0;
    for (let s = this.byHost.get(host) ?? NONE; s !== NONE; s = this.nextSameHost[s]!) {
      if (this.portCol[s] === p && this.engids[s] === engid && this.sniffIfs[s] === sniffIf) return s;
    }
    return NONE;
  }

  private record(slot: number, counters: JobCounters<EpochMs>): JobRecord {
    return {
      id: this.ids[slot]!, engid: this.engids[slot]!, sniffIf: this.sniffIfs[slot]!, resetIf: this.resetIfs[slot]!, host: this.hosts[slot]!,
      port: this.portCol[slot] || null, mode: MODES[this.modeCol[slot]!]!, createdAt: this.createdAtCol[slot]!, expiresAt: this.expiry.endOf(slot), counters,
    };
  }

  /** The Enforcer's order for `rec`, whose host is `host` (parsed: the Enforcer trusts it). */
  private spec(rec: JobRecord, host: Host): TargetSpec {
    return {
      sniffIf: rec.sniffIf, resetIf: rec.resetIf, host, port: rec.port ?? 0, mode: rec.mode,
      expiresAt: rec.expiresAt, label: `${rec.engid}/${rec.id}`,
      // A restore's flow memory is as new as the daemon: nothing to sweep, and a scan per job would delay READY.
      ...(this.restoring ? { sweep: false } : {}),
    };
  }

  private tryEnforce(slot: number): boolean {
    try {
      const info = this.backend().add(this.spec(this.record(slot, zeroCounters()), this.hostAt(slot)));
      this.setTarget(slot, info.id);
      if (this.faults.has(slot)) this.opts.log.info({ job: this.logFields(slot) }, 'job enforced again');
      this.faults.delete(slot);
      return true;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (this.faults.get(slot) !== message) this.opts.log.error({ job: this.logFields(slot), err }, 'job not enforced: will retry');
      this.faults.set(slot, message);
      return false;
    }
  }

  private setTarget(slot: number, targetId: number): void {
    this.targetCol[slot] = targetId;
    this.byTarget.set(targetId, slot);
    this.unenforced.delete(slot);
  }

  private grow(): void {
    const cap = Math.max(1024, this.cap * 2);
    const f64 = (a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> => {
      const b = new Float64Array(cap);
      b.set(a);
      return b;
    };
    const i32 = (a: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
      const b = new Int32Array(cap).fill(NONE);
      b.set(a);
      return b;
    };
    this.createdAtCol = f64(this.createdAtCol);
    this.targetCol = i32(this.targetCol);
    this.nextSameHost = i32(this.nextSameHost);
    const port = new Uint16Array(cap);
    port.set(this.portCol);
    this.portCol = port;
    const mode = new Uint8Array(cap);
    mode.set(this.modeCol);
    this.modeCol = mode;
    const addr = new Uint8Array(cap * ADDR_BYTES);
    addr.set(this.addrCol);
    this.addrCol = addr;
    this.expiry.grow(cap);
    for (let s = cap - 1; s >= this.cap; s--) this.free.push(s);
    this.cap = cap;
  }

  /** A job's host as it was parsed (its text and bytes kept in the columns). */
  private hostAt(slot: number): Host {
    const text = this.hosts[slot]!;
    const family: Family = text.includes(':') ? 6 : 4;
    const at = slot * ADDR_BYTES;
    return keptHost(family, this.addrCol.slice(at, at + (family === 4 ? 4 : 16)), text);
  }

  /** `host`: `r.host` parsed (its bytes are kept). */
  private insert(r: JobRecord, targetId: number, host: Host): number {
    if (host.canonical !== r.host) throw new TcpresetError('E_INTERNAL', `job ${r.id}: host ${r.host} inserted with the bytes of ${host.canonical}`);
    if (this.free.length === 0) this.grow();
    const slot = this.free.pop()!;
    this.addrCol.set(host.bytes, slot * ADDR_BYTES);
    this.ids[slot] = r.id;
    this.engids[slot] = this.strings.intern(r.engid);
    this.sniffIfs[slot] = this.strings.intern(r.sniffIf);
    this.resetIfs[slot] = this.strings.intern(r.resetIf);
    this.hosts[slot] = r.host;
    this.portCol[slot] = r.port ?? 0;
    this.modeCol[slot] = MODES.indexOf(r.mode);
    this.createdAtCol[slot] = r.createdAt;
    this.targetCol[slot] = NONE;
    this.byId.set(r.id, slot);
    this.nextSameHost[slot] = this.byHost.get(r.host) ?? NONE;
    this.byHost.set(r.host, slot);
    if (targetId !== NONE) this.setTarget(slot, targetId);
    else this.unenforced.add(slot);
    this.expiry.push(slot, r.expiresAt);
    this.count++;
    this.armExpiry();
    return slot;
  }

  /** Take the job out of every table; its slot is free again. */
  private release(slot: number): void {
    const id = this.ids[slot]!;
    const host = this.hosts[slot]!;
    this.byId.delete(id);
    // Unlink from the host's identity chain.
    const head = this.byHost.get(host)!;
    if (head === slot) {
      const next = this.nextSameHost[slot]!;
      if (next === NONE) this.byHost.delete(host);
      else this.byHost.set(host, next);
    } else {
      let p = head;
      while (this.nextSameHost[p] !== slot) p = this.nextSameHost[p]!;
      this.nextSameHost[p] = this.nextSameHost[slot]!;
    }
    this.expiry.remove(slot);
    this.base.delete(slot);
    this.faults.delete(slot);
    this.unenforced.delete(slot);
    this.ids[slot] = this.hosts[slot] = this.engids[slot] = this.sniffIfs[slot] = this.resetIfs[slot] = undefined;
    this.nextSameHost[slot] = NONE;
    this.free.push(slot);
    this.count--;
    // The last job gone: give the table back (after a mass expiry of 100,000 jobs it would hold ~10 MB).
    if (this.count === 0 && this.cap > 1024) this.emptyTable();
  }

  private emptyTable(): void {
    this.cap = 0;
    this.createdAtCol = new Float64Array(0);
    this.targetCol = new Int32Array(0);
    this.portCol = new Uint16Array(0);
    this.modeCol = new Uint8Array(0);
    this.addrCol = new Uint8Array(0);
    this.nextSameHost = new Int32Array(0);
    this.expiry.clear();
    this.ids = [];
    this.hosts = [];
    this.engids = [];
    this.sniffIfs = [];
    this.resetIfs = [];
    this.free = [];
  }

  private addBase(slot: number, c: JobCounters<EpochMs>): void {
    const sum = addCounters(this.base.get(slot) ?? zeroCounters(), c);
    if (isZero(sum)) this.base.delete(slot);
    else this.base.set(slot, sum);
  }

  private dropTarget(slot: number): void {
    const targetId = this.targetCol[slot]!;
    if (targetId === NONE) return;
    // The counters first: once removed, the target (and what it counted) is gone.
    const info = this.backend().get(targetId);
    if (info) this.addBase(slot, info.counters);
    this.backend().remove(targetId);
    this.byTarget.delete(targetId);
    this.targetCol[slot] = NONE;
    this.unenforced.add(slot);
  }

  private finish(slot: number, why: EndReason): Job {
    // Enforcement stops first (the Enforcer deletes the map entry at once).
    this.dropTarget(slot);
    const view = this.view(slot);
    const fields = this.logFields(slot);
    const id = this.ids[slot]!;
    this.release(slot);
    if (why === 'protected') this.opts.log.warn({ job: fields, counters: view.counters, why }, 'job ended: the reloaded configuration protects its host');
    else this.opts.log.info({ job: fields, counters: view.counters, why }, why === 'cancelled' ? 'job cancelled' : 'job expired');
    this.armExpiry();
    this.changed({ op: 'del', id, why, job: view });
    return view;
  }

  private totals(slot: number): JobCounters<EpochMs> {
    const b = this.base.get(slot);
    const targetId = this.targetCol[slot]!;
    const be = this.backendInstance;
    if (targetId === NONE || !be) return b ? { ...b } : zeroCounters();
    const c = be.targetCounters ? be.targetCounters(targetId) : copy(be.get(targetId)?.counters);
    if (!c) return b ? { ...b } : zeroCounters();
    return b ? addCounters(b, c) : c;
  }

  private view(slot: number): Job {
    const c = this.totals(slot);
    const expiresAt = this.expiry.endOf(slot);
    const targetId = this.targetCol[slot]!;
    // The job's own fault first; else its RSTs that cannot leave the reset interface (delivery.ts).
    const info = targetId === NONE ? undefined : this.backendInstance?.get(targetId);
    const fault = this.faults.get(slot) ?? info?.deliveryFault ?? info?.mptcpFault;
    return {
      id: this.ids[slot]!, engid: this.engids[slot]!, sniffIf: this.sniffIfs[slot]!, resetIf: this.resetIfs[slot]!, host: this.hosts[slot]!,
      port: this.portCol[slot] || null, mode: MODES[this.modeCol[slot]!]!,
      createdAt: new Date(this.createdAtCol[slot]!).toISOString(), expiresAt: new Date(expiresAt).toISOString(),
      remainingMs: Math.max(0, expiresAt - this.opts.clock.now()),
      counters: {
        matched: c.matched, rstsSent: c.rstsSent, flows: c.flows, firstHitAt: iso(c.firstHitAt), lastHitAt: iso(c.lastHitAt),
        ...(c.undeliverable ? { undeliverable: c.undeliverable } : {}),
        ...(c.known ? { known: c.known } : {}),
        ...(c.verified ? { verified: c.verified } : {}),
        ...(c.mptcpNoKeys ? { mptcpNoKeys: c.mptcpNoKeys } : {}),
      },
      ...(fault !== undefined ? { fault } : {}),
    };
  }

  private logFields(slot: number): object {
    const targetId = this.targetCol[slot]!;
    return {
      id: this.ids[slot], engid: this.engids[slot], sniffIf: this.sniffIfs[slot], resetIf: this.resetIfs[slot], host: this.hosts[slot],
      port: this.portCol[slot] || null, mode: MODES[this.modeCol[slot]!], expiresAt: new Date(this.expiry.endOf(slot)).toISOString(),
      ...(targetId !== NONE ? { targetId } : {}),
    };
  }

  private newId(): string {
    for (;;) {
      const id = this.idSource.next();
      if (!this.byId.has(id)) return id;
    }
  }

  /** One timer for the earliest end time (the heap's top). */
  private armExpiry(): void {
    if (this.closed || this.expiring) return;
    const next = this.expiry.length > 0 ? this.expiry.endOf(this.expiry.top()) : Infinity;
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
      while (this.expiry.length > 0 && this.expiry.endOf(this.expiry.top()) <= now) this.finish(this.expiry.top(), 'expired');
    } finally {
      this.expiring = false;
    }
    this.armExpiry();
  }

  private armRetry(): void {
    if (this.closed || this.retryTimer || this.unenforced.size === 0) return;
    this.retryTimer = this.opts.clock.setTimer(() => {
      this.retryTimer = undefined;
      for (const slot of [...this.unenforced]) this.tryEnforce(slot);
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
