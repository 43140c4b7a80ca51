/**
 * Runs the real tcpresetd and the real tcpreset CLI inside a lab's sensor
 * namespace, for `make demo` and `make bench`: a private control socket,
 * state directory and configuration in a temporary directory, the daemon's
 * JSON log kept in a file (shown only when something goes wrong).
 */
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../lab/lab.js';
import { request } from '../../src/control/client.js';
import type { RequestBody, Response } from '../../src/control/protocol.js';
import { wallMs } from '../time.js';

/** The repository (or install) root, from dist/testkit/demo/. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const DAEMON_BIN = join(REPO_ROOT, 'bin', 'tcpresetd');
export const CLI_BIN = join(REPO_ROOT, 'bin', 'tcpreset');



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

export class SensorDaemon {
  readonly dir: string;
  readonly socket: string;
  readonly logPath: string;
  readonly child: ChildProcess;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  private constructor(readonly lab: Lab, dir: string, child: ChildProcess) {
    this.dir = dir;
    this.socket = join(dir, 'tcpreset.sock');
    this.logPath = join(dir, 'tcpresetd.log');
    this.child = child;
    child.once('exit', (code, signal) => (this.exitInfo = { code, signal }));
  }

  /** Starts tcpresetd in the lab's sensor namespace and waits until it answers on its socket. */
  static async start(lab: Lab, opts: DaemonOptions = {}): Promise<SensorDaemon> {
    const dir = mkdtempSync(join(tmpdir(), 'tcpreset-lab-'));
    const cfg = join(dir, 'config.json');
    writeFileSync(cfg, JSON.stringify(opts.config ?? {}));
    const socket = join(dir, 'tcpreset.sock');
    if (opts.stateFile !== undefined) {
      mkdirSync(join(dir, 'state'), { mode: 0o700 });
      writeFileSync(join(dir, 'state', 'jobs.json'), opts.stateFile, { mode: 0o600 });
    }
    const child = lab.spawn(lab.sensor.ns, [
      process.execPath,
      DAEMON_BIN,
      '--socket', socket,
      '--state-dir', join(dir, 'state'),
      '--config', cfg,
      '--log-level', opts.logLevel ?? 'info',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const d = new SensorDaemon(lab, dir, child);
    const log = createWriteStream(d.logPath);
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
    for (;;) {
      if (d.exitInfo) throw new Error(`tcpresetd exited during start (${JSON.stringify(d.exitInfo)}):\n${d.logTail()}`);
      try {
        const res = await request(socket, { op: 'version' }, { timeoutMs: 500 });
        if (res.ok) return d;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`tcpresetd did not answer within ${opts.readyTimeoutMs ?? 15_000} ms:\n${d.logTail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get exited(): boolean {
    return this.exitInfo !== null;
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

  /** Runs `tcpreset ARGS` in the sensor namespace, the way an operator on the sensor would. */
  cli(args: readonly string[], timeoutMs = 15_000): Promise<CliResult> {
    return new Promise((resolve) => {
      const startedAt = wallMs();
      const child = this.lab.spawn(this.lab.sensor.ns, [process.execPath, CLI_BIN, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, TCPRESET_SOCKET: this.socket },
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
  async stop(graceMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.exitInfo) {
      await new Promise<void>((resolve) => {
        const hard = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
        this.child.once('exit', () => {
          clearTimeout(hard);
          resolve();
        });
        this.child.kill('SIGTERM');
      });
    }
    return this.exitInfo ?? { code: null, signal: null };
  }

  /** Removes the temporary directory (socket, state, log). */
  removeFiles(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
