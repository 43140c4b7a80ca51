/**
 * What was cut and when, for the incident report: an append-only record of
 * job creations (who asked: the peer uid) and ends (how, with the final
 * counters), one JSON object per line in STATE_DIR/history.jsonl, read
 * back by `tcpreset history [--since DURATION]`.
 *
 * Bounded: past 2 × maxRecords lines the file is rewritten with the newest
 * maxRecords (atomically: a reader sees the old file or the new one).
 * Appends of one event-loop turn are written together (a bulk of 10,000
 * creates is not 10,000 writes). A failed write is logged once per streak
 * and counted; the jobs themselves are unaffected.
 */
import { appendFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EndReason, JobView, LogSink } from './jobs.js';

export const HISTORY_FILE = 'history.jsonl';

/** How a job ended (jobs.ts EndReason): expired, cancelled, or protected (a configuration reload protected its host). */
export type HistoryHow = EndReason;

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
  counters?: JobView['counters'];
}

export class History {
  readonly path: string;
  /** Records not written (disk errors). */
  failures = 0;
  private lines = 0;
  private pending: string[] = [];
  private flushScheduled = false;
  private failing = false;
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

  /** A saved job that was not restored (expired, protected, a duplicate): no ended record will come for it. */
  forgetCreator(id: string): void {
    this.creators.delete(id);
  }

  created(job: JobView, uid: number | null, at = Date.now()): void {
    this.creators.set(job.id, uid);
    this.add({ at: new Date(at).toISOString(), event: 'created', job: jobPart(job), uid });
  }

  /** A create that named a live job (JobManager.create's action extended or kept, maybe switched). */
  recreated(r: { action: 'extended' | 'kept'; switched?: { resetIf: string; mode: string }; job: JobView }, previousExpiresAt: string, uid: number | null, at = Date.now()): void {
    this.add({
      at: new Date(at).toISOString(), event: r.switched ? 'switched' : r.action, previousExpiresAt,
      ...(r.switched ? { from: { resetIf: r.switched.resetIf, mode: r.switched.mode } } : {}), job: jobPart(r.job), uid,
    });
  }

  ended(job: JobView, how: HistoryHow, at = Date.now()): void {
    const uid = this.creators.get(job.id) ?? null;
    this.creators.delete(job.id);
    this.add({ at: new Date(at).toISOString(), event: 'ended', how, job: jobPart(job), uid, counters: job.counters });
  }

  private add(rec: HistoryRecord): void {
    if (!this.enabled) return;
    this.pending.push(`${JSON.stringify(rec)}\n`);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Write what is pending now (also called at shutdown). */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    try {
      appendFileSync(this.path, batch.join(''), { mode: 0o640 });
      this.lines += batch.length;
      if (this.failing) this.log.info({ path: this.path }, 'history written again');
      this.failing = false;
      if (this.lines > 2 * this.maxRecords) this.compact();
    } catch (err) {
      this.failures += batch.length;
      if (!this.failing) this.log.warn({ err, path: this.path, records: batch.length }, 'cannot write the job history: these records are lost');
      this.failing = true;
    }
  }

  /** Keep the newest maxRecords lines. */
  private compact(): void {
    const all = readFileSync(this.path, 'utf8').split('\n').filter((l) => l !== '');
    const keep = all.slice(-this.maxRecords);
    const tmp = `${this.path}.tmp-${process.pid}`;
    writeFileSync(tmp, keep.map((l) => `${l}\n`).join(''), { mode: 0o640 });
    renameSync(tmp, this.path);
    this.lines = keep.length;
  }

  /** Records at or after `sinceMs` (epoch ms), oldest first; unreadable lines are skipped. */
  read(sinceMs = 0): HistoryRecord[] {
    this.flush();
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
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

function jobPart(j: JobView): HistoryRecord['job'] {
  return {
    id: j.id, engid: j.engid, sniffIf: j.sniffIf, resetIf: j.resetIf, host: j.host, port: j.port, mode: j.mode,
    createdAt: j.createdAt, expiresAt: j.expiresAt,
  };
}
