/**
 * Jobs on disk: STATE_DIR/jobs.json, rewritten atomically on every change
 * (temp file in the same directory, fsync, rename, fsync the directory), so
 * a crash or power loss leaves either the old or the new file, never half.
 *
 * Failure policy (decided here, tested in test/persist.test.ts):
 * - a corrupt or unreadable file on start is moved aside to
 *   jobs.json.corrupt-<timestamp> (copied if it cannot be moved), an error is
 *   logged and the daemon starts with no jobs: losing the saved jobs is
 *   better than a daemon that cannot start and so enforces nothing;
 * - a failed save (directory unwritable, disk full) does NOT refuse the
 *   change: the job is already enforced and a security response should not
 *   be withheld because of the disk. The response carries a warning, the
 *   error is logged, and the next change retries the write. What is lost is
 *   only survival across a restart.
 */
import { promises as fsp, constants as fsc, copyFileSync, renameSync, readFileSync, readdirSync, mkdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { JobCounters, JobRecord, LogSink } from './jobs.js';

export const STATE_FILE = 'jobs.json';
export const STATE_VERSION = 1;

export type SaveOutcome = { ok: true } | { ok: false; error: Error };

interface FileJob {
  id: string; engid: string; sniffIf: string; resetIf: string; host: string; port: number | null; mode: 'l3' | 'l2';
  createdAt: string; expiresAt: string;
  counters: { matched: number; rstsSent: number; flows: number; firstHitAt: string | null; lastHitAt: string | null };
}

const isoOrNull = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function encodeState(records: JobRecord[], now = Date.now()): string {
  const jobs: FileJob[] = records.map((r) => ({
    id: r.id, engid: r.engid, sniffIf: r.sniffIf, resetIf: r.resetIf, host: r.host, port: r.port, mode: r.mode,
    createdAt: new Date(r.createdAt).toISOString(), expiresAt: new Date(r.expiresAt).toISOString(),
    counters: {
      matched: r.counters.matched, rstsSent: r.counters.rstsSent, flows: r.counters.flows,
      firstHitAt: isoOrNull(r.counters.firstHitAt), lastHitAt: isoOrNull(r.counters.lastHitAt),
    },
  }));
  return `${JSON.stringify({ v: STATE_VERSION, savedAt: new Date(now).toISOString(), jobs }, null, 1)}\n`;
}

export class StateFormatError extends Error {}

function fail(msg: string): never {
  throw new StateFormatError(msg);
}

function str(o: Record<string, unknown>, k: string, where: string): string {
  const v = o[k];
  if (typeof v !== 'string' || v === '') fail(`${where}.${k}: expected a non-empty string`);
  return v;
}

function time(v: unknown, where: string): number {
  if (typeof v !== 'string') fail(`${where}: expected an ISO time`);
  const t = Date.parse(v);
  if (!Number.isFinite(t)) fail(`${where}: invalid time ${JSON.stringify(v)}`);
  return t;
}

function count(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${where}: expected a count`);
  return v;
}

function decodeJob(o: unknown, i: number): JobRecord {
  const where = `jobs[${i}]`;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) fail(`${where}: expected an object`);
  const j = o as Record<string, unknown>;
  const port = j.port;
  if (port !== null && (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)) fail(`${where}.port: expected 1-65535 or null`);
  const mode = j.mode;
  if (mode !== 'l3' && mode !== 'l2') fail(`${where}.mode: expected "l3" or "l2"`);
  const c = (j.counters ?? {}) as Record<string, unknown>;
  if (typeof c !== 'object' || c === null) fail(`${where}.counters: expected an object`);
  const counters: JobCounters = {
    matched: count(c.matched ?? 0, `${where}.counters.matched`),
    rstsSent: count(c.rstsSent ?? 0, `${where}.counters.rstsSent`),
    flows: count(c.flows ?? 0, `${where}.counters.flows`),
    firstHitAt: c.firstHitAt == null ? null : time(c.firstHitAt, `${where}.counters.firstHitAt`),
    lastHitAt: c.lastHitAt == null ? null : time(c.lastHitAt, `${where}.counters.lastHitAt`),
  };
  return {
    id: str(j, 'id', where), engid: str(j, 'engid', where), sniffIf: str(j, 'sniffIf', where),
    resetIf: str(j, 'resetIf', where), host: str(j, 'host', where), port: port as number | null, mode,
    createdAt: time(j.createdAt, `${where}.createdAt`), expiresAt: time(j.expiresAt, `${where}.expiresAt`), counters,
  };
}

/** Parse a state file's text; throws StateFormatError naming the first problem. */
export function decodeState(text: string): JobRecord[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    fail(`not JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) fail('expected an object');
  const d = doc as Record<string, unknown>;
  if (d.v !== STATE_VERSION) fail(`unsupported version ${JSON.stringify(d.v)} (expected ${STATE_VERSION})`);
  if (!Array.isArray(d.jobs)) fail('jobs: expected an array');
  return d.jobs.map(decodeJob);
}

export interface LoadResult {
  jobs: JobRecord[];
  /** Where a corrupt/unreadable file was kept, if there was one. */
  corruptCopy?: string;
  error?: string;
}

export class StateStore {
  readonly dir: string;
  readonly path: string;
  private readonly log: LogSink;
  private readonly snapshot: () => JobRecord[];
  private next: { promise: Promise<SaveOutcome>; resolve: (o: SaveOutcome) => void } | null = null;
  private running = false;
  private failing = false;
  private tmpSeq = 0;

  constructor(dir: string, log: LogSink, snapshot: () => JobRecord[]) {
    this.dir = dir;
    this.path = join(dir, STATE_FILE);
    this.log = log;
    this.snapshot = snapshot;
  }

  /** Create the directory if missing (systemd's StateDirectory= normally has). Never throws. */
  ensureDir(): void {
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      this.log.error({ err, dir: this.dir }, 'cannot create state directory: jobs will not survive a restart');
    }
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
    try {
      return { jobs: decodeState(text) };
    } catch (err) {
      return this.quarantine(now, `corrupt: ${(err as Error).message}`, err);
    }
  }

  /**
   * A crash (kill -9, power loss) in the middle of a save leaves its temp
   * file behind, never renamed into place: garbage as big as the state, one
   * more per crash. Called before this process writes anything.
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

  private quarantine(now: number, why: string, err: unknown): LoadResult {
    const copy = `${this.path}.corrupt-${new Date(now).toISOString().replace(/[:.]/g, '-')}`;
    let kept: string | undefined;
    try {
      renameSync(this.path, copy);
      kept = copy;
    } catch {
      try {
        copyFileSync(this.path, copy, fsc.COPYFILE_EXCL);
        kept = copy;
      } catch {
        kept = undefined;
      }
    }
    this.log.error({ err, path: this.path, keptAs: kept ?? null }, `state file ${why}; starting with no jobs`);
    return { jobs: [], ...(kept ? { corruptCopy: kept } : {}), error: why };
  }

  /**
   * Write the current jobs (taken from the snapshot function when the write
   * starts). Calls made while a write runs share the next write. Resolves,
   * never rejects: the caller decides what a failure means.
   */
  save(): Promise<SaveOutcome> {
    if (!this.next) {
      let resolve!: (o: SaveOutcome) => void;
      const promise = new Promise<SaveOutcome>((r) => (resolve = r));
      this.next = { promise, resolve };
      // Started on a microtask so that every change made in this tick shares one write.
      queueMicrotask(() => void this.pump());
    }
    return this.next.promise;
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.next) {
        const waiter = this.next;
        this.next = null;
        waiter.resolve(await this.writeOnce(encodeState(this.snapshot())));
      }
    } finally {
      this.running = false;
    }
  }

  private async writeOnce(text: string): Promise<SaveOutcome> {
    const tmp = join(this.dir, `.${STATE_FILE}.tmp-${process.pid}-${this.tmpSeq++}`);
    try {
      const fh = await fsp.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, this.path);
      await syncDir(this.dir);
      return this.succeeded();
    } catch (err) {
      await fsp.unlink(tmp).catch(() => {});
      return this.failed(err);
    }
  }

  private succeeded(): SaveOutcome {
    if (this.failing) this.log.info({ path: this.path }, 'state saved again');
    this.failing = false;
    return { ok: true };
  }

  private failed(err: unknown): SaveOutcome {
    const error = err instanceof Error ? err : new Error(String(err));
    // One error line per failure streak, not one per change.
    if (!this.failing) this.log.error({ err: error, path: this.path }, 'cannot save jobs: they will not survive a restart');
    this.failing = true;
    return { ok: false, error };
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
