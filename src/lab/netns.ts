/**
 * Network-namespace plumbing for the test lab: run `ip`/`tc`/`ethtool`
 * (argument arrays only, never a shell), create and delete namespaces, and
 * remember everything made so it is removed even after a partial failure,
 * a thrown test, Ctrl-C or SIGTERM.
 *
 * Every interface the lab makes lives inside a namespace the lab made, so
 * nothing outside them is ever touched; namespace names carry the pid so
 * concurrent processes (ava workers) never collide, and a later run can
 * sweep what a SIGKILLed one left behind.
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { TcpresetError } from '../errors.js';

/** Every lab namespace is named `${NS_PREFIX}<pid>-<seq>-<role>`. */
export const NS_PREFIX = 'trlab';
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

let nameSeq = 0;
/** A fresh namespace-name stem for this process: `trlab<pid>-<seq>`. */
export function uniqueStem(): string {
  nameSeq += 1;
  return `${NS_PREFIX}${process.pid}-${nameSeq}`;
}

/**
 * What one owner (a Lab) created: namespaces and child processes. destroy()
 * kills the children, then deletes the namespaces (which removes every veth
 * and bridge inside them), tolerating anything already gone.
 */
export class Resources {
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  constructor() {
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
    await run(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
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
    for (const ns of [...this.namespaces].reverse()) {
      for (const pid of netnsPidsSync(ns)) safeKill(pid, 'SIGKILL');
      runSyncQuiet(['ip', 'netns', 'del', ns]);
    }
    this.namespaces.length = 0;
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
  const mine = `${NS_PREFIX}${process.pid}-`;
  return (await listNetns()).filter((n) => n.startsWith(mine));
}

/**
 * Deletes lab namespaces whose creating process is dead (a run that was
 * SIGKILLed cannot clean up). Namespaces of live processes are left alone.
 * Returns what was removed.
 */
export async function sweepStale(): Promise<string[]> {
  const re = new RegExp(`^${NS_PREFIX}(\\d+)-`);
  const removed: string[] = [];
  for (const name of await listNetns()) {
    const m = re.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    await killNetnsPids(name);
    await deleteNetns(name);
    removed.push(name);
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
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
