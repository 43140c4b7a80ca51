/**
 * What a lab owns, written down: one record file per lab under the run
 * directory (`/run/tcpreset-lab`, env TCPRESET_LAB_RUN_DIR), holding the
 * names of the namespaces the lab created, each appended only after
 * `ip netns add` succeeded. The lab's process holds flock(LOCK_EX) on the
 * record for as long as it lives; the kernel drops that lock when the
 * process dies, however it dies (SIGKILL, OOM) and whatever PID namespace it
 * was in. So an unlocked record is a dead lab's, and a sweep deletes exactly
 * the namespaces it lists: never a namespace nobody recorded, even one named
 * like a lab whose pid looks dead from here (another container, another
 * user's run, a stem reused after a PID wrap).
 *
 * Record format (text, one item a line):
 *   tcpreset-lab 1
 *   prefix <prefix>
 *   pid <pid>
 *   netns <name>          (zero or more; each starts with "<stem>-")
 */
import { closeSync, fstatSync, linkSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ValidationError } from '../../src/core/errors.js';
import { tryLockExclusive } from '../../src/native/libc.js';

export const DEFAULT_PREFIX = 'trlab';
export const DEFAULT_RUN_DIR = '/run/tcpreset-lab';
const MAGIC = 'tcpreset-lab 1';
const SUFFIX = '.lab';
const TMP = '.new-';

/**
 * The namespace-name prefix (env TCPRESET_LAB_PREFIX, default "trlab"):
 * 1-24 of [A-Za-z0-9_], starting with a letter, so `<prefix><pid>-<seq>`
 * parses back and is a valid file name under /run/netns.
 */
export function labPrefix(): string {
  const p = process.env.TCPRESET_LAB_PREFIX ?? DEFAULT_PREFIX;
  if (!/^[A-Za-z][A-Za-z0-9_]{0,23}$/.test(p)) {
    throw new ValidationError('TCPRESET_LAB_PREFIX', p, '1-24 letters, digits or _, starting with a letter');
  }
  return p;
}

/** Where the records live (env TCPRESET_LAB_RUN_DIR, default /run/tcpreset-lab). */
export function labRunDir(): string {
  return process.env.TCPRESET_LAB_RUN_DIR ?? DEFAULT_RUN_DIR;
}

let seq = 0;

/** One live lab's record, locked by this process until release(). */
export class LabRecord {
  private fd: number | null;

  private constructor(
    readonly stem: string,
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  /**
   * Reserves a fresh stem `<prefix><pid>-<seq>`: the record is built and
   * locked under a temporary name, then linked to `<stem>.lab`, which fails
   * if that name exists. So two processes with the same pid in different PID
   * namespaces never share a stem, and a sweep never sees an unlocked record
   * of a live lab.
   */
  static create(prefix = labPrefix(), dir = labRunDir()): LabRecord {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    for (;;) {
      seq += 1;
      const stem = `${prefix}${process.pid}-${seq}`;
      const tmp = join(dir, `${TMP}${stem}-${randomBytes(4).toString('hex')}`);
      // Node opens with O_CLOEXEC: children the lab spawns never inherit the lock.
      const fd = openSync(tmp, 'wx', 0o644);
      let linked = false;
      try {
        if (!tryLockExclusive(fd, tmp)) continue; // a sweeper took the fresh file; take another name
        writeSync(fd, `${MAGIC}\nprefix ${prefix}\npid ${process.pid}\n`);
        const path = join(dir, `${stem}${SUFFIX}`);
        try {
          linkSync(tmp, path);
          linked = true;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EEXIST' || code === 'ENOENT') continue; // stem taken, or tmp swept: next seq
          throw err;
        }
        return new LabRecord(stem, path, fd);
      } finally {
        try {
          unlinkSync(tmp);
        } catch {
          /* swept already */
        }
        if (!linked) closeSync(fd);
      }
    }
  }

  /** Appends a namespace this lab has just created (call after `ip netns add` succeeded). */
  addNetns(name: string): void {
    if (this.fd === null) throw new Error(`lab record ${this.path} already released`);
    if (!name.startsWith(`${this.stem}-`)) throw new ValidationError('netns', name, `a lab records only names starting with ${this.stem}-`);
    writeSync(this.fd, `netns ${name}\n`);
  }

  /**
   * Drops the lock. With `remove`, the record is deleted first (everything it
   * lists is gone); without, it stays for a later sweep to finish the job.
   */
  release(remove: boolean): void {
    if (this.fd === null) return;
    if (remove) {
      try {
        unlinkSync(this.path);
      } catch {
        /* already gone */
      }
    }
    closeSync(this.fd);
    this.fd = null;
  }
}

/** A dead lab's record, locked by the sweeper while it deletes what the record lists. */
export interface StaleRecord {
  stem: string;
  netns: string[];
  /** Deletes the record and drops the lock. */
  remove(): void;
  /** Drops the lock, keeping the record (deletion failed: try again later). */
  keep(): void;
}

/**
 * Records of dead labs with this prefix, each locked for the caller (call
 * remove() or keep() on every one). Records of live labs, other prefixes
 * and unreadable files are left alone; leftover temporary files of a
 * process that died while reserving a stem are deleted (they name nothing).
 */
export function staleRecords(prefix = labPrefix(), dir = labRunDir()): StaleRecord[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: StaleRecord[] = [];
  for (const entry of entries) {
    const path = join(dir, entry);
    const isTmp = entry.startsWith(TMP);
    if (!isTmp && !entry.endsWith(SUFFIX)) continue;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      continue; // removed meanwhile
    }
    let handedOut = false;
    try {
      if (!tryLockExclusive(fd, path)) continue; // its lab is alive
      // Another sweeper may have finished and unlinked it between our open and our lock.
      if (!sameFile(fd, path)) continue;
      if (isTmp) {
        unlinkSync(path);
        continue;
      }
      const stem = entry.slice(0, -SUFFIX.length);
      const lines = readFileSync(fd, 'utf8').split('\n');
      if (lines[0] !== MAGIC || lines[1] !== `prefix ${prefix}` || !stem.startsWith(prefix)) continue;
      // Only names of the record's own stem: a damaged record cannot point at anything else.
      const netns = lines.filter((l) => l.startsWith('netns ')).map((l) => l.slice(6)).filter((n) => n.startsWith(`${stem}-`));
      const lockFd = fd;
      let done = false;
      const finish = (remove: boolean): void => {
        if (done) return;
        done = true;
        if (remove && sameFile(lockFd, path)) unlinkSync(path);
        closeSync(lockFd);
      };
      out.push({ stem, netns, remove: () => finish(true), keep: () => finish(false) });
      handedOut = true;
    } finally {
      if (!handedOut) closeSync(fd);
    }
  }
  return out;
}

function sameFile(fd: number, path: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(path);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}
