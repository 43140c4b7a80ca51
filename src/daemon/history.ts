/**
 * What was cut and when, for the incident report: an append-only record of
 * job creations (who asked: the peer uid) and ends (how, with the final
 * counters), one JSON object per line in STATE_DIR/history.jsonl, read
 * back by `tcpreset history [--since DURATION]`.
 *
 * Bounded: past 2 × maxRecords lines the file is rewritten with the newest
 * maxRecords (atomically: a reader sees the old file or the new one).
 * Appends of one event-loop turn are written together (a bulk of 10,000
 * creates is not 10,000 writes).
 *
 * A failed write (ENOSPC on a full disk, EIO, a directory gone) loses no
 * record: what an append cut short is truncated away (a torn line would
 * swallow the next record), the records stay in memory (the newest
 * MEMORY_RECORDS; older ones are dropped and counted as lost) and are
 * written, in order, by the next append or by a retry every RETRY_MS. A
 * streak of failures is one warning, counted (writeFailures) and shown by
 * `tcpreset status` as a fault until the disk takes the records again; the
 * jobs themselves are unaffected. `tcpreset history` shows the records held
 * in memory too.
 */
import { appendFileSync, readFileSync, renameSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EndReason, JobRecord } from './jobs.js';
import type { LogSink } from '../core/model.js';
import type { HistoryStatus, Job } from '../control/protocol.js';

export const HISTORY_FILE = 'history.jsonl';
/** Records held in memory while the file cannot be written (~400 bytes each); past this the oldest are lost. */
export const MEMORY_RECORDS = 10_000;
/** While failing, the held records are retried this often (ms); each new record retries too. */
export const RETRY_MS = 5_000;

/**
 * How a job ended: jobs.ts EndReason (expired, cancelled, protected: a configuration reload protected its
 * host), or restart: a saved job the restarted daemon did not restore (its host is protected now, or the
 * record is invalid or a duplicate). A saved job whose end passed while the daemon was stopped is expired.
 */
export type HistoryHow = EndReason | 'restart';

/**
 * created: a new job; ended: see how. A create naming a live job's identity
 * (ENGID, sniff interface, host, port) is an event of that job: extended (its
 * end moved later), kept (it already ended later: unchanged), or switched
 * (-o / --l2 moved it to another reset interface or injection mode; its end
 * is the later of the two, see previousExpiresAt).
 */
export type HistoryEvent = 'created' | 'extended' | 'kept' | 'switched' | 'ended';

export interface HistoryRecord {
  /** ISO time of the event. */
  at: string;
  event: HistoryEvent;
  /** For ended: how. */
  how?: HistoryHow;
  /** For extended, kept, switched: the job's end time before this event (ISO). */
  previousExpiresAt?: string;
  /** For switched: the reset interface and mode the job had before. */
  from?: { resetIf: string; mode: string };
  job: {
    id: string; engid: string; sniffIf: string; resetIf: string; host: string; port: number | null; mode: string;
    createdAt: string; expiresAt: string;
  };
  /**
   * uid of the client that asked (peer credentials, SO_PEERCRED): for created, extended, kept and switched the
   * requester; for ended the job's creator (null: unknown, e.g. a job saved by a daemon older than this field).
   */
  uid: number | null;
  /** For ended: the final counters. */
  counters?: Job['counters'];
}

export class History {
  readonly path: string;
  /** Failed writes (appends and compactions). */
  failures = 0;
  /** Records dropped from memory while the disk refused them (more than MEMORY_RECORDS waited). */
  lost = 0;
  private lines = 0;
  /** Records not yet in the file, oldest first: this turn's, and any the disk refused. */
  private pending: string[] = [];
  private flushScheduled = false;
  /** The current failure streak: its first error and when it began; null when writes succeed. */
  private failing: { error: string; since: number } | null = null;
  private retryTimer: NodeJS.Timeout | undefined;
  /** uid of the creator of each live job (for its ended record, and jobs.json so a restart keeps it). */
  private readonly creators = new Map<string, number | null>();

  constructor(
    dir: string,
    private readonly log: LogSink,
    private readonly maxRecords: number,
  ) {
    this.path = join(dir, HISTORY_FILE);
  }

  get enabled(): boolean {
    return this.maxRecords > 0;
  }

  /** Count the lines already there (the bound applies across restarts). Never throws. */
  open(): void {
    if (!this.enabled) return;
    try {
      const text = readFileSync(this.path, 'utf8');
      let n = 0;
      for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
      this.lines = n;
    } catch {
      this.lines = 0;
    }
  }

  /** The uid that created live job `id` (undefined: not a live job here). Written with the job in jobs.json (state.ts). */
  creatorOf(id: string): number | null | undefined {
    return this.creators.get(id);
  }

  /** Who created a live job: set as its first change is journaled, and for jobs restored from jobs.json. */
  noteCreator(id: string, uid: number | null): void {
    this.creators.set(id, uid);
  }

  created(job: Job, uid: number | null, at = Date.now()): void {
    this.creators.set(job.id, uid);
    this.add({ at: new Date(at).toISOString(), event: 'created', job: jobPart(job), uid });
  }

  /** A create that named a live job (JobManager.create's action extended or kept, maybe switched). */
  recreated(r: { action: 'extended' | 'kept'; switched?: { resetIf: string; mode: string }; job: Job }, previousExpiresAt: string, uid: number | null, at = Date.now()): void {
    this.add({
      at: new Date(at).toISOString(), event: r.switched ? 'switched' : r.action, previousExpiresAt,
      ...(r.switched ? { from: { resetIf: r.switched.resetIf, mode: r.switched.mode } } : {}), job: jobPart(r.job), uid,
    });
  }

  /**
   * A saved job a restarted daemon did not restore: expired (its end passed while the daemon was stopped;
   * recorded at that end) or restart. Its counters are the saved ones (as of the last save before the stop).
   */
  notRestored(rec: JobRecord, now = Date.now()): 'expired' | 'restart' {
    this.creators.delete(rec.id);
    const expired = rec.expiresAt <= now;
    const c = rec.counters;
    const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
    this.add({
      at: new Date(expired ? rec.expiresAt : now).toISOString(), event: 'ended', how: expired ? 'expired' : 'restart',
      job: {
        id: rec.id, engid: rec.engid, sniffIf: rec.sniffIf, resetIf: rec.resetIf, host: rec.host, port: rec.port, mode: rec.mode,
        createdAt: new Date(rec.createdAt).toISOString(), expiresAt: new Date(rec.expiresAt).toISOString(),
      },
      uid: rec.uid ?? null,
      counters: { matched: c.matched, rstsSent: c.rstsSent, flows: c.flows, firstHitAt: iso(c.firstHitAt), lastHitAt: iso(c.lastHitAt) },
    });
    return expired ? 'expired' : 'restart';
  }

  ended(job: Job, how: HistoryHow, at = Date.now()): void {
    const uid = this.creators.get(job.id) ?? null;
    this.creators.delete(job.id);
    this.add({ at: new Date(at).toISOString(), event: 'ended', how, job: jobPart(job), uid, counters: job.counters });
  }

  private add(rec: HistoryRecord): void {
    if (!this.enabled) return;
    this.pending.push(`${JSON.stringify(rec)}\n`);
    if (this.pending.length > MEMORY_RECORDS) {
      // Only while the disk refuses them (a turn's batch is written at its end): bounded memory, the loss counted and said.
      const drop = this.pending.length - MEMORY_RECORDS;
      this.pending.splice(0, drop);
      if (this.lost === 0 || Math.floor(this.lost / 1000) !== Math.floor((this.lost + drop) / 1000)) {
        this.log.error({ path: this.path, lost: this.lost + drop, held: MEMORY_RECORDS }, 'job history: records lost (the disk refuses them and memory holds only the newest)');
      }
      this.lost += drop;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Write what is pending now (also called at shutdown, and by the retry timer). Never throws. */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    let sizeBefore: number | null = null;
    try {
      sizeBefore = statSync(this.path).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') sizeBefore = 0;
    }
    try {
      appendFileSync(this.path, this.pending.join(''), { mode: 0o640 });
    } catch (err) {
      // A short write (ENOSPC part-way) leaves a line without its end, which would swallow the next record appended.
      if (sizeBefore !== null) {
        try {
          truncateSync(this.path, sizeBefore);
        } catch {
          // nothing was written, or the file is gone
        }
      }
      this.writeFailed(err, 'append');
      return;
    }
    this.lines += this.pending.length;
    const written = this.pending.length;
    this.pending = [];
    if (this.failing) {
      this.log.info({ path: this.path, records: written, failingMs: Date.now() - this.failing.since }, 'job history written again: the records held in memory are on disk');
      this.failing = null;
    }
    if (this.retryTimer) clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    if (this.lines > 2 * this.maxRecords) this.compact();
  }

  private writeFailed(err: unknown, what: 'append' | 'compact'): void {
    this.failures++;
    if (!this.failing) {
      const error = `cannot ${what === 'append' ? 'append to' : 'compact'} ${this.path}: ${(err as Error).message}`;
      this.failing = { error, since: Date.now() };
      this.log.warn({ err, path: this.path, records: this.pending.length, retryMs: RETRY_MS }, `job history: ${error}; the records are kept in memory and written when the disk takes them`);
    }
    if (this.pending.length > 0 && !this.retryTimer) {
      this.retryTimer = setInterval(() => this.flush(), RETRY_MS);
      this.retryTimer.unref();
    }
  }

  /** Keep the newest maxRecords lines. A failure leaves the file as it was (longer than the bound) until the next append tries again. */
  private compact(): void {
    const tmp = `${this.path}.tmp-${process.pid}`;
    try {
      const all = readFileSync(this.path, 'utf8').split('\n').filter((l) => l !== '');
      const keep = all.slice(-this.maxRecords);
      writeFileSync(tmp, keep.map((l) => `${l}\n`).join(''), { mode: 0o640 });
      renameSync(tmp, this.path);
      this.lines = keep.length;
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // not created
      }
      this.writeFailed(err, 'compact');
      // Nothing waits: the records are in the file; the fault clears with the next successful append.
    }
  }

  /** What `tcpreset status` shows of the history (status.history): records waiting for the disk and the current fault. */
  status(): HistoryStatus {
    return {
      path: this.path, unwritten: this.pending.length, writeFailures: this.failures, lost: this.lost,
      ...(this.failing ? { fault: `${this.failing.error} (since ${new Date(this.failing.since).toISOString()}; ${this.pending.length} record${this.pending.length === 1 ? '' : 's'} held in memory)` } : {}),
    };
  }

  /** Stop retrying (shutdown, after the last flush). */
  close(): void {
    if (this.retryTimer) clearInterval(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** Records at or after `sinceMs` (epoch ms), oldest first; unreadable lines are skipped. */
  read(sinceMs = 0): HistoryRecord[] {
    this.flush();
    let text = '';
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    // Records the disk has not taken yet come after the file's (they are newer).
    if (this.pending.length) text += this.pending.join('');
    const out: HistoryRecord[] = [];
    for (const line of text.split('\n')) {
      if (line === '') continue;
      let rec: HistoryRecord;
      try {
        rec = JSON.parse(line) as HistoryRecord;
      } catch {
        continue; // a line cut by a crash mid-append
      }
      if (Date.parse(rec.at) >= sinceMs) out.push(rec);
    }
    return out;
  }
}

function jobPart(j: Job): HistoryRecord['job'] {
  return {
    id: j.id, engid: j.engid, sniffIf: j.sniffIf, resetIf: j.resetIf, host: j.host, port: j.port, mode: j.mode,
    createdAt: j.createdAt, expiresAt: j.expiresAt,
  };
}
