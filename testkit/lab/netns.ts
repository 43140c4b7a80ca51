/**
 * Network-namespace plumbing for the test lab: run `ip`/`tc`/`ethtool`
 * (argument arrays only, never a shell), create and delete namespaces, and
 * remember everything made so it is removed even after a partial failure,
 * a thrown test, Ctrl-C or SIGTERM.
 *
 * Every interface the lab makes lives inside a namespace the lab made, so
 * nothing outside them is ever touched. Each lab writes down the namespaces
 * it created in a record it keeps locked while alive (./record.ts); a later
 * run sweeps what a SIGKILLed one left behind by those records alone, never
 * by the look of a name.
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { TcpresetError } from '../../src/core/errors.js';
import { LabRecord, labPrefix, staleRecords } from './record.js';

export { labPrefix } from './record.js';
/** Linux IFNAMSIZ is 16 including the NUL. */
export const IFNAMSIZ_MAX = 15;

/** A lab command (ip, tc, ethtool, ...) failed. */
export class LabCommandError extends TcpresetError {
  readonly argv: readonly string[];
  readonly status: number | null;
  readonly stderr: string;
  constructor(argv: readonly string[], exitCode: number | null, stderr: string, cause?: unknown) {
    super('E_NATIVE', `lab command failed (exit ${exitCode ?? 'signal'}): ${argv.join(' ')}: ${stderr.trim()}`, {
      cause,
      details: { argv: [...argv], exitCode, stderr: stderr.trim() },
    });
    this.argv = argv;
    this.status = exitCode;
    this.stderr = stderr;
  }
}

export interface RunOptions {
  /** Written to the command's stdin (e.g. `ip -batch -`). */
  input?: string;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell; rejects with LabCommandError on a non-zero exit. */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new TypeError('run: empty argv'));
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs ?? 20_000, maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null;
          reject(new LabCommandError(argv, code, stderr || err.message, err));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Synchronous form, for exit handlers where no event loop is left. Never throws. */
export function runSyncQuiet(argv: readonly string[]): boolean {
  const [file, ...args] = argv;
  if (file === undefined) return false;
  try {
    execFileSync(file, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

function runSyncOrThrow(argv: readonly string[]): void {
  const [file, ...args] = argv;
  try {
    execFileSync(file!, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
  } catch (err) {
    const e = err as { status?: number | null; stderr?: Buffer };
    throw new LabCommandError(argv, e.status ?? null, e.stderr?.toString() ?? String(err), err);
  }
}

/**
 * One namespace owned the way a lab owns its own: named `<stem>-<role>`,
 * recorded (so a crashed run's is swept and nobody else's ever is), lo up
 * unless `loUp: false`, removed by destroy() or at process exit. For tests that need a bare
 * namespace rather than the whole lab. Synchronous.
 */
export function ownedNetnsSync(role: string, opts: { loUp?: boolean } = {}): { ns: string; destroy: () => void } {
  const res = new Resources();
  const ns = `${res.stem}-${role}`;
  try {
    res.addNetnsSync(ns, opts);
  } catch (err) {
    res.destroySync();
    throw err;
  }
  return { ns, destroy: () => res.destroySync() };
}

/** argv that runs `argv` inside namespace `ns`. */
export function nsArgv(ns: string, argv: readonly string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

/** Throws when `name` cannot be a Linux interface name. */
export function assertIfName(name: string): string {
  if (name.length === 0 || name.length > IFNAMSIZ_MAX || /[\s/:]/.test(name)) {
    throw new TypeError(`bad interface name ${JSON.stringify(name)} (1..${IFNAMSIZ_MAX} chars, no space, '/' or ':')`);
  }
  return name;
}

/**
 * What one owner (a Lab) created: namespaces and child processes. Every
 * namespace is named `<stem>-<role>`, stem `<prefix><pid>-<seq>` reserved by
 * the lab's record. destroy() kills the children, then deletes the
 * namespaces (which removes every veth and bridge inside them), tolerating
 * anything already gone, then the record.
 */
export class Resources {
  /** Unique stem of every namespace name of this owner. */
  readonly stem: string;
  private readonly record: LabRecord;
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  constructor() {
    this.record = LabRecord.create();
    this.stem = this.record.stem;
    live.add(this);
    installExitHooks();
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** Namespaces created so far, in creation order. */
  get netns(): readonly string[] {
    return this.namespaces;
  }

  /** Creates a namespace, brings its loopback up, and records it before anything can fail. */
  async addNetns(name: string): Promise<void> {
    if (this.destroyed) throw new TcpresetError('E_STATE', 'lab already destroyed');
    if (!name.startsWith(`${this.stem}-`)) throw new TypeError(`namespace ${name} must start with ${this.stem}-`);
    // Recorded only once it exists: `ip netns add` fails on a name that is
    // taken, so a recorded name is always one this lab made.
    await run(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    this.record.addNetns(name);
    await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  }

  /** addNetns for synchronous callers (tests that build their namespace with execFileSync). */
  addNetnsSync(name: string, opts: { loUp?: boolean } = {}): void {
    if (this.destroyed) throw new TcpresetError('E_STATE', 'lab already destroyed');
    if (!name.startsWith(`${this.stem}-`)) throw new TypeError(`namespace ${name} must start with ${this.stem}-`);
    runSyncOrThrow(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    this.record.addNetns(name);
    if (opts.loUp !== false) runSyncOrThrow(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  }

  /** Records a child process so destroy() ends it; forgets it when it exits on its own. */
  trackChild(child: ChildProcess): void {
    if (this.destroyed) {
      child.kill('SIGKILL');
      return;
    }
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    const exits = [...this.children].map((child) => killAndWait(child));
    await Promise.all(exits);
    this.children.clear();
    // Whatever else still runs inside our namespaces was started by us (e.g.
    // through Lab.exec); a namespace stays alive as long as a process is in it.
    for (const ns of this.namespaces) await killNetnsPids(ns);
    // Try every namespace even if one fails, then report what is left.
    const failures: unknown[] = [];
    for (const ns of [...this.namespaces].reverse()) {
      try {
        await deleteNetns(ns);
      } catch (err) {
        failures.push(err);
      }
    }
    this.namespaces.length = 0;
    // Left on disk when something could not be deleted: a later sweep retries.
    this.record.release(failures.length === 0);
    if (failures.length > 0) throw new AggregateError(failures, `lab cleanup: ${failures.length} namespace(s) could not be deleted`);
  }

  /** For process exit: no event loop, so everything is synchronous. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    this.children.clear();
    let ok = true;
    for (const ns of [...this.namespaces].reverse()) {
      for (const pid of netnsPidsSync(ns)) safeKill(pid, 'SIGKILL');
      ok = runSyncQuiet(['ip', 'netns', 'del', ns]) && ok;
    }
    this.namespaces.length = 0;
    this.record.release(ok);
  }
}

function killAndWait(child: ChildProcess, graceMs = 1000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const hard = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function safeKill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

async function netnsPids(ns: string): Promise<number[]> {
  try {
    const { stdout } = await run(['ip', 'netns', 'pids', ns]);
    return parsePids(stdout);
  } catch {
    return [];
  }
}

function netnsPidsSync(ns: string): number[] {
  try {
    return parsePids(execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch {
    return [];
  }
}

function parsePids(text: string): number[] {
  return text
    .split('\n')
    .map((s) => Number.parseInt(s, 10))
    .filter((n) => Number.isInteger(n) && n > 1 && n !== process.pid);
}

async function killNetnsPids(ns: string): Promise<void> {
  let pids = await netnsPids(ns);
  if (pids.length === 0) return;
  for (const pid of pids) safeKill(pid, 'SIGTERM');
  for (let i = 0; i < 20 && pids.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 25));
    pids = await netnsPids(ns);
  }
  for (const pid of pids) safeKill(pid, 'SIGKILL');
}

/** Deletes a namespace; absent is fine. */
export async function deleteNetns(name: string): Promise<void> {
  try {
    await run(['ip', 'netns', 'del', name]);
  } catch (err) {
    if (!(await listNetns()).includes(name)) return;
    throw err;
  }
}

export async function listNetns(): Promise<string[]> {
  const { stdout } = await run(['ip', 'netns', 'list']);
  return stdout
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((s) => s.length > 0);
}

/** Lab namespaces of this process that still exist (for leak checks). */
export async function ownNetns(): Promise<string[]> {
  const mine = `${labPrefix()}${process.pid}-`;
  return (await listNetns()).filter((n) => n.startsWith(mine));
}

/**
 * Deletes what dead labs of this prefix recorded (their process is gone, so
 * the kernel released their record's lock), and their records. Namespaces
 * nobody recorded are never touched, whatever their name; live labs, in
 * this process or any other, are left alone. Returns the namespaces removed.
 */
export async function sweepStale(): Promise<string[]> {
  const removed: string[] = [];
  const records = staleRecords();
  try {
    const existing = new Set(await listNetns());
    for (const rec of records) {
      let ok = true;
      for (const name of rec.netns) {
        if (!existing.has(name)) continue;
        try {
          await killNetnsPids(name);
          await deleteNetns(name);
          removed.push(name);
        } catch {
          ok = false;
        }
      }
      if (ok) rec.remove();
      else rec.keep();
    }
  } finally {
    for (const rec of records) rec.keep(); // no-op for the finished ones
  }
  return removed;
}

// ---- process-exit cleanup -------------------------------------------------

const live = new Set<Resources>();
let hooksInstalled = false;

function destroyAllSync(): void {
  for (const r of [...live]) r.destroySync();
}

/**
 * On exit, SIGINT, SIGTERM and SIGHUP remove whatever is still alive. A signal
 * handler replaces Node's default "die", so after cleaning up we re-raise the
 * signal with the handler removed: the exit status still says "killed by".
 */
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', destroyAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      destroyAllSync();
      // Only re-raise when nobody else handles the signal (their handler decides).
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, onSignal);
  }
}
