import type { LogSink } from '../core/model.js';
/**
 * sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET. READY=1
 * once the control socket listens, STATUS= lines, WATCHDOG=1 every half
 * WatchdogSec, STOPPING=1 on shutdown. Outside systemd (no NOTIFY_SOCKET)
 * every call is a no-op. A failed send is logged once and never fatal: the
 * watchdog, if enabled, will say what it thinks of a daemon that cannot
 * reach systemd.
 */

export type DatagramSend = (path: string, data: Buffer) => void;

export interface NotifierOptions {
  env?: NodeJS.ProcessEnv;
  log: LogSink;
  /** Defaults to libc.unixDatagramSend (loaded only when NOTIFY_SOCKET is set). */
  send?: DatagramSend;
}

/** The watchdog period systemd asked for, in ms, or null (also when WATCHDOG_PID names another process). */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | null {
  const usec = Number(env.WATCHDOG_USEC);
  if (!env.WATCHDOG_USEC || !Number.isFinite(usec) || usec <= 0) return null;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return null;
  return usec / 1000;
}

export class Notifier {
  readonly socketPath: string | null;
  private readonly log: LogSink;
  private send: DatagramSend | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private warned = false;
  private lastStatus = '';

  private constructor(socketPath: string | null, log: LogSink, send: DatagramSend | undefined) {
    this.socketPath = socketPath;
    this.log = log;
    this.send = send;
  }

  static async create(opts: NotifierOptions): Promise<Notifier> {
    const env = opts.env ?? process.env;
    const path = env.NOTIFY_SOCKET || null;
    let send = opts.send;
    if (path && !send) {
      try {
        send = (await import('../native/libc.js')).unixDatagramSend;
      } catch (err) {
        opts.log.error({ err }, 'cannot load libc for sd_notify: systemd will not hear from the daemon');
      }
    }
    const n = new Notifier(path, opts.log, send);
    const interval = watchdogIntervalMs(env);
    if (path && interval !== null) n.startWatchdog(interval / 2);
    return n;
  }

  get enabled(): boolean {
    return this.socketPath !== null && this.send !== undefined;
  }

  notify(state: string): boolean {
    if (!this.socketPath || !this.send) return false;
    try {
      this.send(this.socketPath, Buffer.from(state));
      return true;
    } catch (err) {
      if (!this.warned) this.log.warn({ err, socket: this.socketPath }, 'sd_notify failed');
      this.warned = true;
      return false;
    }
  }

  ready(status: string): void {
    this.notify(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
    this.lastStatus = status;
  }

  /** STATUS= only when it changed: `systemctl status` shows the latest. */
  status(status: string): void {
    if (status === this.lastStatus) return;
    this.lastStatus = status;
    this.notify(`STATUS=${status}`);
  }

  stopping(): void {
    this.stopWatchdog();
    this.notify('STOPPING=1\nSTATUS=stopping');
  }

  private startWatchdog(everyMs: number): void {
    this.notify('WATCHDOG=1');
    this.watchdog = setInterval(() => this.notify('WATCHDOG=1'), Math.max(1, Math.floor(everyMs)));
    // The watchdog must not be what keeps the process alive after shutdown.
    this.watchdog.unref();
  }

  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }
}
