/**
 * Runs the REAL daemon (`node bin/tcpresetd ...`) as a child process, for
 * the tests, the bench and the demo: DaemonProc (optionally inside a network
 * namespace) talks to its control socket with plain net sockets
 * (newline-delimited JSON); SensorDaemon is a DaemonProc in a lab's sensor
 * namespace with the product's own control client and the real CLI.
 */
import { execFile, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { request } from '../src/control/client.js';
import type { RequestBody, Response } from '../src/control/protocol.js';
import type { Lab } from './lab/lab.js';
import { ownedNetnsSync } from './lab/netns.js';
import { wallMs } from './time.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url)); // from dist/testkit/
export const DAEMON_BIN = join(REPO_ROOT, 'bin/tcpresetd');

/**
 * The node flags of a script's `#!/usr/bin/env -S node FLAGS` line ([] for a
 * plain `node` shebang): the daemon is run as `node FLAGS SCRIPT`, so it gets
 * what the installed command gets (bin/tcpresetd's --max-semi-space-size).
 */
export function shebangNodeFlags(script: string): string[] {
  const first = readFileSync(script, 'utf8').split('\n', 1)[0]!;
  const m = /^#!\S*env(?: -S)? node((?: --?\S+)*)\s*$/.exec(first);
  return m ? m[1]!.split(' ').filter(Boolean) : [];
}
export const CLI_BIN = join(REPO_ROOT, 'bin/tcpreset');

let portable: Promise<{ root: string; cli: string; daemon: string }> | undefined;

/**
 * The CLI and the daemon where any user can load them: what `make install`
 * ships (bin/, dist/src/, build/tcpreset.bpf.o, package.json and the
 * production packages of node_modules, per package-lock.json; nested ones come with their parent) copied into a
 * world-readable temp directory. Tests that run the product as `nobody` or
 * another unprivileged user start it from here, so they do not depend on
 * where the checkout lives (in a clone under a 0700 home those users cannot
 * reach bin/, and node reports "Cannot find module"). Made once per
 * process, removed at exit.
 */
export function worldReadableBuild(): Promise<{ root: string; cli: string; daemon: string }> {
  portable ??= makeWorldReadableBuild();
  return portable;
}

/** Copies with child processes, so concurrent tests' timing is not stalled by a synchronous copy. */
async function makeWorldReadableBuild(): Promise<{ root: string; cli: string; daemon: string }> {
  const run = promisify(execFile);
  const root = mkdtempSync(join(tmpdir(), 'tcpreset-build-'));
  process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  const prodModules = Object.entries(lock.packages).filter(([path, p]) => path.split('node_modules/').length === 2 && path.startsWith('node_modules/') && !p.dev).map(([path]) => path);
  for (const dir of ['dist', 'build', 'node_modules', ...prodModules.map((m) => dirname(m))]) mkdirSync(join(root, dir), { recursive: true });
  // A real copy, not hard links: making it readable must not change the checkout's own file modes.
  for (const part of ['bin', 'dist/src', 'dist/tcpreset.cjs', 'dist/tcpreset.cjs.cache', 'build/tcpreset.bpf.o', 'package.json', ...prodModules]) {
    await run('cp', ['-r', join(REPO_ROOT, part), join(root, part)]);
  }
  await run('chmod', ['-R', 'a+rX', root]);
  return { root, cli: join(root, 'bin/tcpreset'), daemon: join(root, 'bin/tcpresetd') };
}

export interface LogLine {
  level: number;
  msg?: string;
  [k: string]: unknown;
}

export interface StartOptions {
  /** Directory for socket, state and config; a fresh temp dir by default. */
  dir?: string;
  socket?: string;
  stateDir?: string;
  /** Written to DIR/config.json and passed with --config ({} when absent). */
  config?: object;
  /** Extra flags. */
  args?: string[];
  /** Run inside this network namespace (ip netns exec). */
  netns?: string;
  env?: NodeJS.ProcessEnv;
  /** Wait for the "tcpresetd ready" line (default true). */
  waitReady?: boolean;
  /** Prefix argv (e.g. a setpriv or systemd-socket-activate wrapper). */
  wrapper?: string[];
  /** The daemon script (default bin/tcpresetd of the checkout; see worldReadableBuild). */
  daemonBin?: string;
  /** Starts the command (default child_process.spawn), e.g. a lab's spawn so the lab owns the process. */
  spawn?: (cmd: string[], opts: SpawnOptions) => ChildProcess;
  /** Also append stdout and stderr to this file. */
  logFile?: string;
  /** Keep every log line in memory, in `logs` and `rawLines` (default true; off for runs with very many jobs). */
  keepLogs?: boolean;
}

export class DaemonProc {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly logs: LogLine[] = [];
  /** Raw stdout lines, as written (with any journald prefix). */
  readonly rawLines: string[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  constructor(opts: StartOptions) {
    this.dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'tcpresetd-'));
    this.socket = opts.socket ?? join(this.dir, 'ctl.sock');
    this.stateDir = opts.stateDir ?? join(this.dir, 'state');
    const argv = [opts.daemonBin ?? DAEMON_BIN, '--socket', this.socket, '--state-dir', this.stateDir, ...(opts.args ?? [])];
    if (!(opts.args ?? []).includes('--config')) {
      // Always explicit: the machine's /etc/tcpreset/config.json must not leak into a test.
      const cfg = join(this.dir, 'config.json');
      writeFileSync(cfg, JSON.stringify(opts.config ?? {}));
      argv.push('--config', cfg);
    }
    let cmd: string[] = [process.execPath, ...shebangNodeFlags(argv[0]!), ...argv];
    if (opts.wrapper) cmd = [...opts.wrapper, ...cmd];
    if (opts.netns) cmd = ['ip', 'netns', 'exec', opts.netns, ...cmd];
    const env = { ...process.env, ...opts.env };
    delete env.JOURNAL_STREAM;
    delete env.NOTIFY_SOCKET;
    if (opts.env?.JOURNAL_STREAM) env.JOURNAL_STREAM = opts.env.JOURNAL_STREAM;
    if (opts.env?.NOTIFY_SOCKET) env.NOTIFY_SOCKET = opts.env.NOTIFY_SOCKET;
    const spawnOpts: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe'], env };
    this.child = opts.spawn ? opts.spawn(cmd, spawnOpts) : spawn(cmd[0], cmd.slice(1), spawnOpts);
    const keep = opts.keepLogs !== false;
    if (opts.logFile) {
      const log = createWriteStream(opts.logFile);
      this.child.stdout!.pipe(log);
      this.child.stderr!.pipe(log);
    }
    createInterface({ input: this.child.stdout! }).on('line', (raw) => {
      if (keep) this.rawLines.push(raw);
      const text = raw.replace(/^<\d>/, '');
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        return;
      }
      if (keep) this.logs.push(line);
      for (const w of [...this.waiters]) {
        if (w.pred(line)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => (this.stderr = keep ? this.stderr + d : (this.stderr + d).slice(-8192)));
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The first log line (already seen or future) matching `pred`. */
  waitLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000, what = 'log line'): Promise<LogLine> {
    const seen = this.logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; exit=${JSON.stringify(this.exit)}\nstderr: ${this.stderr}\nlogs:\n${this.rawLines.slice(-15).join('\n')}`)), timeoutMs);
      const w = { pred, resolve: (l: LogLine) => (clearTimeout(timer), resolve(l)) };
      this.waiters.push(w);
      void this.exited.then(() => {
        if (this.waiters.includes(w)) {
          clearTimeout(timer);
          reject(new Error(`daemon exited (${JSON.stringify(this.exit)}) before ${what}\nstderr: ${this.stderr}\nlogs:\n${this.rawLines.slice(-15).join('\n')}`));
        }
      });
    });
  }

  ready(timeoutMs = 15_000): Promise<LogLine> {
    return this.waitLog((l) => l.msg === 'tcpresetd ready', timeoutMs, 'ready line');
  }

  /** One request (object or raw line), one response. */
  async request(req: object | string, timeoutMs = 10_000): Promise<Resp> {
    const [r] = await sendLines(this.socket, [typeof req === 'string' ? req : JSON.stringify(req)], timeoutMs);
    return r as Resp;
  }

  wait(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.exited;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.exit) {
      this.child.kill(signal);
      const hard = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
      await this.exited;
      clearTimeout(hard);
    }
    return this.exit!;
  }
}

export interface Resp {
  v: 1;
  id?: string | number;
  ok: boolean;
  result?: any;
  error?: { code: string; message: string; details?: Record<string, unknown> };
}

export async function startDaemon(opts: StartOptions = {}): Promise<DaemonProc> {
  const d = new DaemonProc(opts);
  if (opts.waitReady !== false) {
    try {
      await d.ready();
    } catch (err) {
      // The caller never gets the handle, so its teardown cannot stop it: a daemon left running
      // holds its sockets and flows into the next tests (CI kept one alive after its test failed).
      await d.stop('SIGKILL', 5_000);
      throw err;
    }
  }
  return d;
}

/** Connect, write `lines` (each + '\n'), read as many response lines, close. */
export function sendLines(path: string, lines: string[], timeoutMs = 10_000): Promise<Resp[]> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path });
    const out: Resp[] = [];
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${out.length}/${lines.length} responses within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(lines.map((l) => `${l}\n`).join('')));
    s.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        out.push(JSON.parse(buf.slice(0, nl)) as Resp);
        buf = buf.slice(nl + 1);
      }
      if (out.length >= lines.length) {
        clearTimeout(timer);
        s.end();
        resolve(out);
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.on('close', () => {
      clearTimeout(timer);
      if (out.length < lines.length) reject(new Error(`connection closed after ${out.length}/${lines.length} responses`));
    });
  });
}

/** A raw connection for tests that need to misbehave. */
export function connect(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Lines received on `s` until it closes (or `timeoutMs`), and when it closed (performance.now()). */
export function readUntilClose(s: net.Socket, timeoutMs = 30_000): Promise<{ lines: string[]; closedAt: number | null }> {
  return new Promise((resolve) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (buf += d));
    s.on('error', () => {});
    const timer = setTimeout(() => resolve({ lines: buf.split('\n').filter(Boolean), closedAt: null }), timeoutMs);
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ lines: buf.split('\n').filter(Boolean), closedAt: performance.now() });
    });
  });
}


/**
 * A namespace with the interfaces a job needs: sniff0 and reset0 (veths,
 * up; reset0 with 192.0.2.1/24 and 2001:db8::1/64). Owned like a lab's
 * (testkit/lab/record.ts); removed at teardown.
 */
export async function sensorNetns(t: import('ava').ExecutionContext): Promise<string> {
  const { ns, destroy } = ownedNetnsSync('sensor');
  t.teardown(destroy);
  const ip = (...a: string[]) => {
    const r = spawnSync('ip', a, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip ${a.join(' ')}: ${r.stderr}`);
  };
  ip('-n', ns, 'link', 'add', 'sniff0', 'type', 'veth', 'peer', 'name', 'sniffp');
  ip('-n', ns, 'link', 'add', 'reset0', 'type', 'veth', 'peer', 'name', 'resetp');
  for (const dev of ['lo', 'sniff0', 'sniffp', 'reset0', 'resetp']) ip('-n', ns, 'link', 'set', dev, 'up');
  ip('-n', ns, 'addr', 'add', '192.0.2.1/24', 'dev', 'reset0');
  ip('-n', ns, 'addr', 'add', '2001:db8::1/64', 'dev', 'reset0', 'nodad');
  return ns;
}

// ---- the daemon in a lab's sensor namespace (make demo, make bench) --------------

export interface DaemonOptions {
  /** Written as the daemon's configuration file (default: {} = built-in defaults). */
  config?: Record<string, unknown>;
  logLevel?: string;
  readyTimeoutMs?: number;
  /** Contents of STATE_DIR/jobs.json before the start: the daemon restores these jobs (fast path to many jobs). */
  stateFile?: string;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall-clock ms just before the spawn and when the process had exited. */
  startedAt: number;
  exitedAt: number;
}

/**
 * tcpresetd in the lab's sensor namespace, started by the lab (so the lab's
 * teardown ends it): a private socket, state directory and configuration in
 * a temporary directory, its log in a file there (shown only when something
 * goes wrong, and not kept in memory: a bench run makes 100,000 jobs).
 */
export class SensorDaemon {
  readonly logPath: string;

  private constructor(
    readonly lab: Lab,
    readonly proc: DaemonProc,
  ) {
    this.logPath = join(proc.dir, 'tcpresetd.log');
  }

  /** Starts tcpresetd in the lab's sensor namespace and waits for its ready line (it listens by then). */
  static async start(lab: Lab, opts: DaemonOptions = {}): Promise<SensorDaemon> {
    const dir = mkdtempSync(join(tmpdir(), 'tcpreset-lab-'));
    if (opts.stateFile !== undefined) {
      mkdirSync(join(dir, 'state'), { mode: 0o700 });
      writeFileSync(join(dir, 'state', 'jobs.json'), opts.stateFile, { mode: 0o600 });
    }
    const proc = new DaemonProc({
      dir,
      socket: join(dir, 'tcpreset.sock'),
      config: opts.config ?? {},
      args: ['--log-level', opts.logLevel ?? 'info'],
      spawn: (cmd, spawnOpts) => lab.spawn(lab.sensor.ns, cmd, spawnOpts),
      logFile: join(dir, 'tcpresetd.log'),
      keepLogs: false,
    });
    const d = new SensorDaemon(lab, proc);
    try {
      await proc.ready(opts.readyTimeoutMs ?? 15_000);
    } catch (err) {
      await proc.stop('SIGKILL', 5_000);
      throw new Error(`tcpresetd did not start: ${(err as Error).message.split('\n')[0]}\n${d.logTail()}`, { cause: err });
    }
    return d;
  }

  get dir(): string {
    return this.proc.dir;
  }

  get socket(): string {
    return this.proc.socket;
  }

  get child(): ChildProcess {
    return this.proc.child;
  }

  get pid(): number {
    return this.proc.child.pid ?? 0;
  }

  get exited(): boolean {
    return this.proc.exit !== null;
  }

  request<R = unknown>(body: RequestBody, timeoutMs = 10_000): Promise<Response<R>> {
    return request(this.socket, body, { timeoutMs }) as Promise<Response<R>>;
  }

  /** Like request(), but throws on an error response. */
  async call<R = unknown>(body: RequestBody, timeoutMs = 10_000): Promise<R> {
    const res = await this.request<R>(body, timeoutMs);
    if (!res.ok) throw new Error(`tcpresetd: ${body.op} failed: ${res.error.code}: ${res.error.message}`);
    return res.result;
  }

  /**
   * Runs `tcpreset ARGS` in the sensor namespace, the way an operator on the sensor would; `env`
   * (default: this process's) lets a benchmark drop what an operator's shell would not set.
   */
  cli(args: readonly string[], timeoutMs = 15_000, env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
    return new Promise((resolve) => {
      const startedAt = wallMs();
      const child = this.lab.spawn(this.lab.sensor.ns, [process.execPath, CLI_BIN, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...env, TCPRESET_SOCKET: this.socket },
      });
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
      child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr, startedAt, exitedAt: wallMs() });
      });
    });
  }

  logTail(lines = 20): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** SIGTERM (orderly: the daemon saves jobs and detaches XDP), SIGKILL after `graceMs`. */
  stop(graceMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.proc.stop('SIGTERM', graceMs);
  }

  /** Removes the temporary directory (socket, state, log). */
  removeFiles(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
