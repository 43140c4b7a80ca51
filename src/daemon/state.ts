/**
 * Jobs on disk: STATE_DIR/jobs.json, a snapshot followed by an append-only
 * journal, in one file so that compaction replaces both at once (no window
 * in which a snapshot and a journal disagree).
 *
 * Format 2, one record per line, each `CRC SP JSON LF` where CRC is the
 * CRC-32 (IEEE 802.3, zlib's) of the JSON text as 8 lowercase hex digits:
 *
 *   line 1     {"v":2,"savedAt":EPOCH_MS,"jobs":N}       the snapshot's header
 *   lines 2..  {"put":JOB}  x N                          the snapshot
 *   then       {"put":JOB} | {"del":ID,"why":"cancelled"|"expired"|"protected"}, one per change
 *              | {"ctr":[{id, matched, rstsSent, flows, firstHitAt, lastHitAt}, ...]}   a counters checkpoint
 *
 * JOB = {id, engid, sniffIf, resetIf, host, port (null = every port), mode,
 * createdAt, expiresAt, counters: {matched, rstsSent, flows, firstHitAt,
 * lastHitAt}, uid}, times in epoch ms; uid (the creating client's, for the
 * history) is absent when unknown. A put replaces the job with that id.
 *
 * Counters checkpoint: a job's counters move with every packet but records
 * are written only at job changes, so each activity summary (config
 * summaryIntervalMs, default 10 s) appends ONE ctr record holding the
 * current totals of every job whose counters moved since the last summary;
 * replay sets those jobs' counters (an id not live at that point is
 * ignored; the job keeps its place). A kill -9 thus loses at most one
 * summary period of counts. The checkpoint goes through the same group
 * commit as job changes, so it is fdatasync'd too (at most one extra
 * fdatasync per period); nothing waits for it, and a failed checkpoint is
 * reported like any failed save. It counts as one journal record for the
 * compaction bound. Files without ctr records (older daemons) read as before.
 *
 * Durability (RELIABILITY.md, "Jobs on disk"): a change is acknowledged to
 * the client only after its record is written and fdatasync(2) returned.
 * Records of changes made while a write is in flight are written together
 * by the next one (group commit: one fdatasync for many changes). When the
 * journal holds more records than max(COMPACT_FLOOR, a quarter of the jobs
 * in the last snapshot), the next write is a compaction instead: the whole
 * current set is written to a temp file in the same directory, fsync'd,
 * renamed over jobs.json, and the directory fsync'd, so a crash leaves the
 * old file or the new one. Each compaction is paid for by appended records
 * numbering at least a quarter of the jobs it writes, so a change costs at
 * most ~4 snapshot lines of writing however many jobs there are, and a
 * restart replays at most 25 % more records than there are jobs.
 *
 * Failure policy (decided here, tested in test/persist.test.ts):
 * - a record cut short by a crash (a torn write), or one whose checksum or
 *   fields are wrong, ends the replay there: the records after it are
 *   dropped with a warning (their changes were never acknowledged unless
 *   the disk lied), and when more than the last line is dropped the file is
 *   copied aside to jobs.json.corrupt-<timestamp> for a post-mortem;
 * - a file whose header is unreadable is moved aside the same way, an error
 *   is logged and the daemon starts with no jobs: losing the saved jobs is
 *   better than a daemon that cannot start and so enforces nothing;
 * - format 1 (a JSON document {v:1, jobs:[...]}, rewritten whole on every
 *   change) is read and rewritten as format 2 by the first compaction;
 * - a failed write (directory gone or unwritable, disk full, the file
 *   unlinked under us) does NOT refuse the change: the job is already
 *   enforced and a security response should not be withheld because of the
 *   disk. A failed append is retried at once as a full compaction (which
 *   holds the batch's changes); if that fails too, the response carries a
 *   warning, the error is logged once per failure streak, and since the
 *   journal now misses changes (and may end in a torn record), every later
 *   write is a full compaction until one succeeds. What is lost meanwhile
 *   is only survival across a restart.
 */
import { promises as fsp, constants as fsc, copyFileSync, renameSync, readFileSync, readdirSync, mkdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { JobChange, JobRecord } from './jobs.js';
import type { LogSink, JobCounters, EpochMs } from '../core/model.js';
import type { StateStatus } from '../control/protocol.js';

export const STATE_FILE = 'jobs.json';
export const STATE_VERSION = 2;
/** The format before the journal: one JSON document rewritten on every change. */
export const LEGACY_STATE_VERSION = 1;
/**
 * A journal this short is never compacted, however few jobs there are. Low:
 * a compaction of a few hundred jobs costs about one more fsync, and the
 * shorter the journal the less a restart replays.
 */
export const COMPACT_FLOOR = 64;
/** Compact once the journal holds more than the last snapshot's jobs divided by this. */
export const COMPACT_RATIO = 4;
/** Records serialised per write() during a compaction (bounds the size of one string). */
const CHUNK_RECORDS = 4096;

export type SaveOutcome = { ok: true } | { ok: false; error: Error };

export class StateFormatError extends Error {}

function fail(msg: string): never {
  throw new StateFormatError(msg);
}

// ---- records ---------------------------------------------------------------

function frame(json: string): string {
  return `${(crc32(json) >>> 0).toString(16).padStart(8, '0')} ${json}\n`;
}

const q = JSON.stringify;

/**
 * A job as JSON, written field by field: a compaction writes every job, and
 * building an object per job for JSON.stringify was half of its time.
 * Strings go through JSON.stringify (escaping); numbers and null print as is.
 */
function jobJson(r: JobRecord, uid: number | null | undefined = r.uid): string {
  const c = r.counters;
  return `{"id":${q(r.id)},"engid":${q(r.engid)},"sniffIf":${q(r.sniffIf)},"resetIf":${q(r.resetIf)},"host":${q(r.host)},` +
    `"port":${r.port === null ? 'null' : r.port},"mode":${q(r.mode)},"createdAt":${r.createdAt},"expiresAt":${r.expiresAt},` +
    `"counters":{"matched":${c.matched},"rstsSent":${c.rstsSent},"flows":${c.flows},"firstHitAt":${c.firstHitAt ?? 'null'},"lastHitAt":${c.lastHitAt ?? 'null'}}` +
    `${uid === undefined || uid === null ? '' : `,"uid":${uid}`}}`;
}

/** Where a job's creator uid comes from when it is written (the job manager's records do not carry it). */
export type UidOf = (jobId: string) => number | null | undefined;

/** One journal line for a change to one job (with its checksum and newline). */
export function encodeChange(change: Exclude<JobChange, { op: 'all' }>, uidOf?: UidOf): string {
  return change.op === 'put' ? frame(`{"put":${jobJson(change.rec, uidOf?.(change.rec.id) ?? change.rec.uid)}}`) : frame(JSON.stringify({ del: change.id, why: change.why }));
}

/** One journal line checkpointing the counters of the given jobs (totals, epoch ms). */
export function encodeCounters(moved: readonly { id: string; counters: JobCounters<EpochMs> }[]): string {
  let s = '';
  for (const { id, counters: c } of moved) {
    s += `${s ? ',' : ''}{"id":${q(id)},"matched":${c.matched},"rstsSent":${c.rstsSent},"flows":${c.flows},"firstHitAt":${c.firstHitAt ?? 'null'},"lastHitAt":${c.lastHitAt ?? 'null'}}`;
  }
  return frame(`{"ctr":[${s}]}`);
}

function headerLine(jobs: number, now: number): string {
  return frame(JSON.stringify({ v: STATE_VERSION, savedAt: now, jobs }));
}

/** A whole format-2 file holding `records` as its snapshot and no journal. */
export function encodeState(records: readonly JobRecord[], now = Date.now()): string {
  let s = headerLine(records.length, now);
  for (const r of records) s += frame(`{"put":${jobJson(r)}}`);
  return s;
}

/** Format 1, as daemons before the journal wrote it (for migration tests and benchmarks). */
export function encodeLegacyState(records: readonly JobRecord[], now = Date.now()): string {
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
  const jobs = records.map((r) => ({
    id: r.id, engid: r.engid, sniffIf: r.sniffIf, resetIf: r.resetIf, host: r.host, port: r.port, mode: r.mode,
    createdAt: iso(r.createdAt), expiresAt: iso(r.expiresAt),
    counters: { matched: r.counters.matched, rstsSent: r.counters.rstsSent, flows: r.counters.flows, firstHitAt: iso(r.counters.firstHitAt), lastHitAt: iso(r.counters.lastHitAt) },
  }));
  return `${JSON.stringify({ v: LEGACY_STATE_VERSION, savedAt: new Date(now).toISOString(), jobs }, null, 1)}\n`;
}

function str(o: Record<string, unknown>, k: string, where: string): string {
  const v = o[k];
  if (typeof v !== 'string' || v === '') fail(`${where}.${k}: expected a non-empty string`);
  return v;
}

/** Format 1 keeps ISO strings, format 2 epoch ms. */
function time(v: unknown, where: string, legacy: boolean): number {
  if (legacy) {
    if (typeof v !== 'string') fail(`${where}: expected an ISO time`);
    const t = Date.parse(v);
    if (!Number.isFinite(t)) fail(`${where}: invalid time ${JSON.stringify(v)}`);
    return t;
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(`${where}: expected epoch milliseconds`);
  return v;
}

function count(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${where}: expected a count`);
  return v;
}

function decodeCounters(c: Record<string, unknown>, where: string, legacy: boolean): JobCounters<EpochMs> {
  return {
    matched: count(c.matched ?? 0, `${where}.matched`),
    rstsSent: count(c.rstsSent ?? 0, `${where}.rstsSent`),
    flows: count(c.flows ?? 0, `${where}.flows`),
    firstHitAt: c.firstHitAt == null ? null : time(c.firstHitAt, `${where}.firstHitAt`, legacy),
    lastHitAt: c.lastHitAt == null ? null : time(c.lastHitAt, `${where}.lastHitAt`, legacy),
  };
}

function decodeJob(o: unknown, where: string, legacy: boolean): JobRecord {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) fail(`${where}: expected an object`);
  const j = o as Record<string, unknown>;
  const port = j.port;
  if (port !== null && (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)) fail(`${where}.port: expected 1-65535 or null`);
  const mode = j.mode;
  if (mode !== 'l3' && mode !== 'l2') fail(`${where}.mode: expected "l3" or "l2"`);
  const c = (j.counters ?? {}) as Record<string, unknown>;
  if (typeof c !== 'object' || c === null) fail(`${where}.counters: expected an object`);
  const counters = decodeCounters(c, `${where}.counters`, legacy);
  return {
    id: str(j, 'id', where), engid: str(j, 'engid', where), sniffIf: str(j, 'sniffIf', where),
    resetIf: str(j, 'resetIf', where), host: str(j, 'host', where), port: port as number | null, mode,
    createdAt: time(j.createdAt, `${where}.createdAt`, legacy), expiresAt: time(j.expiresAt, `${where}.expiresAt`, legacy), counters,
    ...(j.uid === undefined || j.uid === null ? {} : { uid: count(j.uid, `${where}.uid`) }),
  };
}

function decodeLegacy(text: string): JobRecord[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    fail(`not JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) fail('expected an object');
  const d = doc as Record<string, unknown>;
  if (d.v !== LEGACY_STATE_VERSION) fail(`unsupported version ${JSON.stringify(d.v)} (expected ${STATE_VERSION}, or ${LEGACY_STATE_VERSION} to migrate)`);
  if (!Array.isArray(d.jobs)) fail('jobs: expected an array');
  return d.jobs.map((o, i) => decodeJob(o, `jobs[${i}]`, true));
}

/** Where the replay of a journal stopped early, and why. */
export interface DroppedTail {
  /** 1-based line of the first record not applied. */
  line: number;
  /** Records (lines) not applied, the bad one included. */
  records: number;
  bytes: number;
  reason: string;
}

export interface DecodedState {
  jobs: JobRecord[];
  format: 1 | 2;
  /** Records in the file (header excluded) that were applied. */
  records: number;
  /** Jobs in the snapshot part, as its header says. */
  snapshotJobs: number;
  dropped?: DroppedTail;
}

/** Check one line's checksum and parse its JSON; throws StateFormatError. */
function unframe(line: string, where: string): Record<string, unknown> {
  if (line.length < 10 || line[8] !== ' ' || !/^[0-9a-f]{8}$/.test(line.slice(0, 8))) fail(`${where}: no checksum (torn or not a record)`);
  const json = line.slice(9);
  if ((crc32(json) >>> 0) !== parseInt(line.slice(0, 8), 16)) fail(`${where}: checksum mismatch`);
  let o: unknown;
  try {
    o = JSON.parse(json);
  } catch (err) {
    fail(`${where}: not JSON: ${(err as Error).message}`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) fail(`${where}: expected an object`);
  return o as Record<string, unknown>;
}

/**
 * Parse a state file (format 2, or format 1 to migrate) and replay its
 * journal. A bad record ends the replay: the result holds the jobs as of the
 * record before it, and `dropped` says what was left out. Throws
 * StateFormatError only when nothing can be trusted (a bad header, a bad
 * format-1 document).
 */
export function decodeStateDetailed(text: string): DecodedState {
  if (/^\s*\{/.test(text)) {
    const jobs = decodeLegacy(text);
    return { jobs, format: 1, records: jobs.length, snapshotJobs: jobs.length };
  }
  const lines = text.split('\n');
  // A file ends with a newline, so the last piece is empty; anything else there is a record cut short.
  const last = lines.pop();
  if (last !== undefined && last !== '') lines.push(last);
  if (lines.length === 0) fail('empty file');
  const header = unframe(lines[0]!, 'line 1 (header)');
  if (header.v !== STATE_VERSION) fail(`line 1 (header): unsupported version ${JSON.stringify(header.v)} (expected ${STATE_VERSION})`);
  const snapshotJobs = header.jobs;
  if (typeof snapshotJobs !== 'number' || !Number.isSafeInteger(snapshotJobs) || snapshotJobs < 0) fail('line 1 (header): jobs: expected a count');
  const jobs = new Map<string, JobRecord>();
  let applied = 0;
  let dropped: DroppedTail | undefined;
  for (let i = 1; i < lines.length; i++) {
    const where = `line ${i + 1}`;
    try {
      const o = unframe(lines[i]!, where);
      if ('put' in o) {
        const rec = decodeJob(o.put, `${where}.put`, false);
        jobs.delete(rec.id); // a put moves the job to the end, as a fresh insertion
        jobs.set(rec.id, rec);
      } else if ('ctr' in o) {
        if (!Array.isArray(o.ctr)) fail(`${where}.ctr: expected an array`);
        // Validate the whole record before applying any of it: a bad one ends the replay with nothing half applied.
        const sets = o.ctr.map((e: unknown, k: number) => {
          if (typeof e !== 'object' || e === null || Array.isArray(e)) fail(`${where}.ctr[${k}]: expected an object`);
          const id = str(e as Record<string, unknown>, 'id', `${where}.ctr[${k}]`);
          return { id, counters: decodeCounters(e as Record<string, unknown>, `${where}.ctr[${k}]`, false) };
        });
        for (const { id, counters } of sets) {
          const rec = jobs.get(id);
          if (rec) rec.counters = counters;
        }
      } else if ('del' in o) {
        if (typeof o.del !== 'string') fail(`${where}.del: expected a job id`);
        jobs.delete(o.del);
      } else {
        fail(`${where}: neither put, ctr nor del`);
      }
      applied++;
    } catch (err) {
      if (!(err instanceof StateFormatError)) throw err;
      const rest = lines.slice(i);
      dropped = { line: i + 1, records: rest.length, bytes: rest.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0), reason: err.message };
      break;
    }
  }
  if (!dropped && applied < snapshotJobs) {
    dropped = { line: lines.length + 1, records: 0, bytes: 0, reason: `the snapshot is short: ${applied} of ${snapshotJobs} jobs` };
  }
  return { jobs: [...jobs.values()], format: 2, records: applied, snapshotJobs, ...(dropped ? { dropped } : {}) };
}

/** The jobs a state file holds (its journal replayed, a bad tail left out); throws StateFormatError naming the first problem. */
export function decodeState(text: string): JobRecord[] {
  return decodeStateDetailed(text).jobs;
}

// ---- the store ---------------------------------------------------------------

export interface LoadResult {
  jobs: JobRecord[];
  /** Where a corrupt/unreadable file was kept, if there was one. */
  corruptCopy?: string;
  error?: string;
  /** The file was in format 1: the next compaction rewrites it. */
  migrated?: boolean;
  /** Records left out of the replay (a torn or corrupt tail). */
  dropped?: DroppedTail;
}

interface Batch {
  lines: string[];
  promise: Promise<SaveOutcome>;
  resolve: (o: SaveOutcome) => void;
}

export interface StateStoreOptions {
  /** Journal records past which the next write is a compaction (at least this many; more with more jobs). */
  compactFloor?: number;
  /** The creator uid of a live job (History), written with it so a restored job keeps it. */
  uidOf?: UidOf;
}

export class StateStore {
  readonly dir: string;
  readonly path: string;
  private readonly log: LogSink;
  private readonly snapshot: () => JobRecord[];
  private readonly compactFloor: number;
  private readonly uidOf: UidOf | undefined;
  private pending: Batch | null = null;
  private inFlight: Batch | null = null;
  private running = false;
  /** The open journal (jobs.json, appended to); null until the first compaction of this process. */
  private fh: fsp.FileHandle | null = null;
  /** The file does not hold every change (never written by this process, a failed write, a format-1 file). */
  private needsCompaction = true;
  private journalRecords = 0;
  private snapshotJobs = 0;
  private compactions = 0;
  private appends = 0;
  private saveFailures = 0;
  private droppedAtLoad = 0;
  private failing: Error | null = null;
  private tmpSeq = 0;

  constructor(dir: string, log: LogSink, snapshot: () => JobRecord[], opts: StateStoreOptions = {}) {
    this.dir = dir;
    this.path = join(dir, STATE_FILE);
    this.log = log;
    this.snapshot = snapshot;
    this.compactFloor = opts.compactFloor ?? COMPACT_FLOOR;
    this.uidOf = opts.uidOf;
  }

  /** Create the directory if missing (systemd's StateDirectory= normally has). Never throws. */
  ensureDir(): void {
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      this.log.error({ err, dir: this.dir }, 'cannot create state directory: jobs will not survive a restart');
    }
  }

  /** What `tcpreset status` shows of the saved jobs (status.state). */
  stats(): StateStatus {
    return {
      path: this.path, journalRecords: this.journalRecords, snapshotJobs: this.snapshotJobs, compactions: this.compactions,
      appends: this.appends, saveFailures: this.saveFailures, droppedAtLoad: this.droppedAtLoad,
      ...(this.failing ? { fault: `cannot save jobs to ${this.path}: ${this.failing.message}` } : {}),
    };
  }

  /** Read the saved jobs. Never throws: a bad file is kept aside and the result is empty. */
  load(now = Date.now()): LoadResult {
    this.removeStaleTemps();
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { jobs: [] };
      return this.quarantine(now, `unreadable: ${(err as Error).message}`, err);
    }
    let d: DecodedState;
    try {
      d = decodeStateDetailed(text);
    } catch (err) {
      return this.quarantine(now, `corrupt: ${(err as Error).message}`, err);
    }
    if (d.format === LEGACY_STATE_VERSION) {
      this.log.info({ path: this.path, jobs: d.jobs.length, from: LEGACY_STATE_VERSION, to: STATE_VERSION }, 'state file in the old format: it is rewritten as a journal');
      return { jobs: d.jobs, migrated: true };
    }
    this.snapshotJobs = d.snapshotJobs;
    this.journalRecords = Math.max(0, d.records - d.snapshotJobs);
    if (!d.dropped) return { jobs: d.jobs };
    this.droppedAtLoad = d.dropped.records;
    // A torn last line is what a crash during an append leaves; anything more is damage worth keeping.
    let keptAs: string | undefined;
    if (d.dropped.records > 1 || d.dropped.line <= d.snapshotJobs + 1) {
      keptAs = this.copyAside(now);
    }
    this.log.warn(
      { path: this.path, line: d.dropped.line, records: d.dropped.records, bytes: d.dropped.bytes, reason: d.dropped.reason, jobs: d.jobs.length, ...(keptAs ? { keptAs } : {}) },
      'state journal: torn or corrupt records at the end dropped; the jobs are restored as of the record before them',
    );
    return { jobs: d.jobs, dropped: d.dropped, ...(keptAs ? { corruptCopy: keptAs } : {}) };
  }

  /**
   * A crash (kill -9, power loss) in the middle of a compaction leaves its
   * temp file behind, never renamed into place: garbage as big as the
   * state, one more per crash. Called before this process writes anything.
   */
  private removeStaleTemps(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    const prefix = `.${STATE_FILE}.tmp-`;
    const mine = `${prefix}${process.pid}-`;
    const removed: string[] = [];
    for (const name of names) {
      if (!name.startsWith(prefix) || name.startsWith(mine)) continue;
      try {
        unlinkSync(join(this.dir, name));
        removed.push(name);
      } catch (err) {
        this.log.warn({ err, path: join(this.dir, name) }, 'cannot remove the temp file of an interrupted save');
      }
    }
    if (removed.length) this.log.info({ dir: this.dir, removed }, 'removed temp files of interrupted saves');
  }

  private corruptName(now: number): string {
    return `${this.path}.corrupt-${new Date(now).toISOString().replace(/[:.]/g, '-')}`;
  }

  private copyAside(now: number): string | undefined {
    const copy = this.corruptName(now);
    try {
      copyFileSync(this.path, copy, fsc.COPYFILE_EXCL);
      return copy;
    } catch {
      return undefined;
    }
  }

  private quarantine(now: number, why: string, err: unknown): LoadResult {
    const copy = this.corruptName(now);
    let kept: string | undefined;
    try {
      renameSync(this.path, copy);
      kept = copy;
    } catch {
      kept = this.copyAside(now);
    }
    this.log.error({ err, path: this.path, keptAs: kept ?? null }, `state file ${why}; starting with no jobs`);
    return { jobs: [], ...(kept ? { corruptCopy: kept } : {}), error: why };
  }

  /**
   * Journal one change. It is durable once the promise of the next save()
   * resolves ok; changes made in one tick, or while a write is in flight,
   * share one write and one fdatasync.
   */
  record(change: JobChange): void {
    if (change.op === 'all') this.requestCompaction();
    else this.batch().lines.push(encodeChange(change, this.uidOf));
  }

  /**
   * Journal a counters checkpoint: one record for all the jobs given (the
   * activity summary's moved jobs). Written with the next batch; nobody
   * awaits it, a failure is counted and logged like any save's.
   */
  recordCounters(moved: readonly { id: string; counters: JobCounters<EpochMs> }[]): void {
    if (moved.length) this.batch().lines.push(encodeCounters(moved));
  }

  /** The next write rewrites the whole file (after a restore, at shutdown: current counters). */
  requestCompaction(): void {
    this.needsCompaction = true;
    this.batch();
  }

  /**
   * Resolves when every change recorded so far is on disk (or the write
   * failed). Never rejects: the caller decides what a failure means.
   */
  save(): Promise<SaveOutcome> {
    if (this.pending) return this.pending.promise;
    if (this.needsCompaction) return this.batch().promise;
    if (this.inFlight) return this.inFlight.promise;
    return Promise.resolve({ ok: true });
  }

  /** Rewrite the whole file now (current counters included); resolves when done. */
  compact(): Promise<SaveOutcome> {
    this.requestCompaction();
    return this.save();
  }

  /** Close the journal's file descriptor (after the last save). */
  async close(): Promise<void> {
    await this.save();
    const fh = this.fh;
    this.fh = null;
    await fh?.close().catch(() => {});
  }

  private batch(): Batch {
    if (!this.pending) {
      let resolve!: (o: SaveOutcome) => void;
      const promise = new Promise<SaveOutcome>((r) => (resolve = r));
      this.pending = { lines: [], promise, resolve };
      // Started on a microtask so that every change made in this tick shares one write.
      queueMicrotask(() => void this.pump());
    }
    return this.pending;
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.pending) {
        const b = this.pending;
        this.pending = null;
        this.inFlight = b;
        b.resolve(await this.write(b.lines));
        this.inFlight = null;
      }
    } finally {
      this.running = false;
    }
  }

  /** Append the batch, or compact when due; an append that fails is retried at once as a compaction. */
  private async write(lines: string[]): Promise<SaveOutcome> {
    const due = this.needsCompaction || !this.fh || this.journalRecords + lines.length > Math.max(this.compactFloor, this.snapshotJobs / COMPACT_RATIO);
    try {
      if (due) {
        await this.compactNow();
      } else {
        try {
          await this.append(lines);
        } catch (err) {
          // The batch may be half written: a full rewrite (which holds the batch's changes) replaces the file.
          this.log.warn({ err, path: this.path }, 'state journal append failed: rewriting the whole file');
          await this.compactNow();
        }
      }
      return this.succeeded();
    } catch (err) {
      return this.failed(err);
    }
  }

  private async append(lines: string[]): Promise<void> {
    const fh = this.fh!;
    await writeAll(fh, lines.join(''));
    await fh.datasync();
    // Appending to a file that was unlinked or replaced under us writes to nothing.
    if ((await fh.stat()).nlink === 0) throw new Error(`${this.path} was removed or replaced`);
    this.journalRecords += lines.length;
    this.appends++;
  }

  /**
   * Write the whole current set to a temp file, fsync, rename over
   * jobs.json, fsync the directory; then append to the new file. The set is
   * taken synchronously when the compaction starts: every change recorded
   * before is in it, every change after goes into the next batch.
   */
  private async compactNow(): Promise<void> {
    this.needsCompaction = false;
    const records = this.snapshot();
    const tmp = join(this.dir, `.${STATE_FILE}.tmp-${process.pid}-${this.tmpSeq++}`);
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(tmp, 'w', 0o600);
      let chunk = headerLine(records.length, Date.now());
      for (let i = 0; i < records.length; i++) {
        chunk += frame(`{"put":${jobJson(records[i]!, this.uidOf?.(records[i]!.id) ?? records[i]!.uid)}}`);
        if ((i + 1) % CHUNK_RECORDS === 0) {
          await writeAll(fh, chunk);
          chunk = '';
        }
      }
      if (chunk) await writeAll(fh, chunk);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await fsp.rename(tmp, this.path);
      await syncDir(this.dir);
      const next = await fsp.open(this.path, 'a');
      const old = this.fh;
      this.fh = next;
      await old?.close().catch(() => {});
      this.snapshotJobs = records.length;
      this.journalRecords = 0;
      this.compactions++;
    } catch (err) {
      await fh?.close().catch(() => {});
      await fsp.unlink(tmp).catch(() => {});
      throw err;
    }
  }

  private succeeded(): SaveOutcome {
    if (this.failing) this.log.info({ path: this.path }, 'state saved again');
    this.failing = null;
    return { ok: true };
  }

  private failed(err: unknown): SaveOutcome {
    const error = err instanceof Error ? err : new Error(String(err));
    this.saveFailures++;
    // The file now misses changes (and may end in a torn record): only a full rewrite brings it back in step.
    this.needsCompaction = true;
    // One error line per failure streak, not one per change.
    if (!this.failing) this.log.error({ err: error, path: this.path }, 'cannot save jobs: they will not survive a restart');
    this.failing = error;
    return { ok: false, error };
  }
}

/** write(2) may take part of a buffer (a disk filling up): go on until all is written or it fails. */
async function writeAll(fh: fsp.FileHandle, text: string): Promise<void> {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length;) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, null);
    if (bytesWritten <= 0) throw new Error(`write returned ${bytesWritten}`);
    off += bytesWritten;
  }
}

async function syncDir(dir: string): Promise<void> {
  const dh = await fsp.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
