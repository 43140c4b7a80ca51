/**
 * One daemon per state directory: an exclusive flock(2) on
 * STATE_DIR/tcpresetd.lock, held for the daemon's life.
 *
 * Two daemons with different sockets but one --state-dir used to both
 * start and overwrite each other's jobs.json (a job acknowledged by one was
 * gone from the file a second later). The control socket's own check does
 * not cover that, since the sockets differ.
 *
 * flock, not a pid file: the kernel drops the lock when the holder exits,
 * however it exits (SIGKILL, OOM), so there is never a stale lock to clean
 * up. The file holds the holder's pid only so that the refusal can name it;
 * it is never unlinked (unlinking a lock file lets a third process lock a
 * new inode while the second still holds the old one).
 */
import { ftruncateSync, openSync, readFileSync, writeSync, closeSync, constants as C } from 'node:fs';
import { join } from 'node:path';
import { TcpresetError } from '../core/errors.js';
import type { LogSink } from '../core/model.js';

export const LOCK_FILE = 'tcpresetd.lock';

/** How long to wait for a holder that has just taken the lock to write its pid. */
const PID_WAIT_MS = 200;

export class StateDirLock {
  private constructor(
    readonly path: string,
    private fd: number | null,
  ) {}

  /**
   * Take the lock on `dir` (which must exist) or throw.
   *
   * Throws TcpresetError E_UNAVAILABLE "state directory DIR is in use by
   * tcpresetd pid N (lock DIR/tcpresetd.lock)" when another process holds
   * it. When the lock file cannot be opened at all (read-only or missing
   * directory) there is no jobs.json for two daemons to fight over either:
   * an error is logged and null is returned, and the daemon runs without
   * persistence as before.
   */
  static async acquire(dir: string, log: LogSink): Promise<StateDirLock | null> {
    const path = join(dir, LOCK_FILE);
    let fd: number;
    try {
      // libuv adds O_CLOEXEC: a child process never inherits (and so never keeps) the lock.
      fd = openSync(path, C.O_RDWR | C.O_CREAT, 0o644);
    } catch (err) {
      log.error({ err, path }, 'cannot open the state directory lock: another daemon could use the same state directory');
      return null;
    }
    let taken: boolean;
    try {
      // libc (koffi) is loaded on use, like the rest of the daemon's native code.
      const libc = await import('../native/libc.js');
      taken = libc.tryLockExclusive(fd, path);
    } catch (err) {
      closeSync(fd);
      log.error({ err, path }, 'cannot lock the state directory: another daemon could use the same state directory');
      return null;
    }
    if (!taken) {
      closeSync(fd);
      const pid = holderPid(path);
      throw new TcpresetError(
        'E_UNAVAILABLE',
        `state directory ${dir} is in use by tcpresetd pid ${pid ?? '(unknown)'} (lock ${path}); give each daemon its own --state-dir`,
        { details: { stateDir: dir, lock: path, pid } },
      );
    }
    const text = `${process.pid}\n`;
    ftruncateSync(fd, 0);
    writeSync(fd, text, 0);
    return new StateDirLock(path, fd);
  }

  /** Drop the lock (an exiting process drops it anyway). */
  release(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }
}

/** The pid the holder wrote; it may be between flock and write, so wait a little for it. */
function holderPid(path: string): number | null {
  const deadline = Date.now() + PID_WAIT_MS;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      const m = /^(\d+)\n/.exec(readFileSync(path, 'utf8'));
      if (m) return Number(m[1]);
    } catch {
      // unreadable: name no pid
    }
    if (Date.now() >= deadline) return null;
    Atomics.wait(nap, 0, 0, 10);
  }
}
