/**
 * Controller for lab TCP peers (testkit/lab/peer.ts): starts one inside a lab
 * namespace, collects its JSON-line events, and waits for the one a test
 * needs. Peers are tracked by the lab, so Lab.destroy() ends them.
 */
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from './lab.js';

/** One line a peer printed. `t` is wall-clock epoch ms with a sub-ms fraction. */
export interface PeerEvent {
  t: number;
  ev: 'listening' | 'ready' | 'accept' | 'connected' | 'echoed' | 'progress' | 'eof' | 'error' | 'close' | 'result' | 'attempt' | 'done';
  /** attempts: which one (0-based). */
  attempt?: number;
  /** Connection id: "c" for a client, "PORT#N" for a server's Nth accepted connection. */
  conn?: string;
  /** err.code from Node, e.g. ECONNRESET, ECONNREFUSED, ETIMEDOUT, EPIPE. */
  code?: string;
  message?: string;
  mode?: string;
  local?: string;
  lport?: number;
  remote?: string;
  rport?: number;
  rx?: number;
  tx?: number;
  mbps?: number;
  hadError?: boolean;
  ok?: boolean;
  /** connect result: the handshake completed / the ping came back before the end. */
  connected?: boolean;
  echoed?: boolean;
  /** mptcp_peer.py: the socket is MPTCP (did not fall back to TCP). */
  mptcp?: boolean;
}

export type PeerArgs = string[];

/** Path of the compiled peer program next to this module. */
export const PEER_SCRIPT = fileURLToPath(new URL('./peer.js', import.meta.url));

/**
 * The MPTCP peer (testkit/lab/mptcp_peer.py, run from the source tree: tsc
 * does not copy it): Node cannot open IPPROTO_MPTCP sockets. It prints the
 * same events as peer.ts.
 */
export const MPTCP_PEER_ARGV: readonly string[] = ['python3', '-u', fileURLToPath(new URL('../../../testkit/lab/mptcp_peer.py', import.meta.url))];

export class PeerTimeoutError extends Error {}

export class Peer extends EventEmitter {
  readonly ns: string;
  readonly args: readonly string[];
  readonly events: PeerEvent[] = [];
  readonly child: ChildProcess;
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly exited: Promise<void>;

  /** `program`: the argv before ARGS; default `node peer.js` (MPTCP_PEER_ARGV for the MPTCP peer). */
  constructor(lab: Lab, ns: string, args: PeerArgs, program: readonly string[] = [process.execPath, PEER_SCRIPT]) {
    super();
    this.ns = ns;
    this.args = args;
    this.child = lab.spawn(ns, [...program, ...args]);
    const lines = createInterface({ input: this.child.stdout! });
    lines.on('line', (line) => {
      let ev: PeerEvent;
      try {
        ev = JSON.parse(line) as PeerEvent;
      } catch {
        this.stderr += `unparsed stdout: ${line}\n`;
        return;
      }
      this.events.push(ev);
      this.emit('event', ev);
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      if (this.stderr.length < 65536) this.stderr += d;
    });
    this.exited = new Promise((resolve) => {
      // 'close' (not 'exit') so every stdout line has been read first.
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        this.emit('exit', this.exit);
        resolve();
      });
    });
  }

  /**
   * Resolves with the first event (already seen or future) matching `pred`.
   * Rejects on timeout or when the peer exits without one; the message shows
   * the last events and stderr.
   */
  waitFor(pred: (ev: PeerEvent) => boolean, timeoutMs: number, what = 'event'): Promise<PeerEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('exit', onExit);
      };
      const onEvent = (ev: PeerEvent): void => {
        if (!pred(ev)) return;
        cleanup();
        resolve(ev);
      };
      const onExit = (): void => {
        cleanup();
        reject(new PeerTimeoutError(`peer exited before ${what}: ${this.describe()}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new PeerTimeoutError(`no ${what} within ${timeoutMs} ms: ${this.describe()}`));
      }, timeoutMs);
      this.on('event', onEvent);
      if (this.exit) onExit();
      else this.on('exit', onExit);
    });
  }

  /** First error event of a connection (e.g. the kernel's ECONNRESET). */
  errorOf(conn: string): PeerEvent | undefined {
    return this.events.find((e) => e.ev === 'error' && e.conn === conn);
  }

  /** Latest progress report of a connection. */
  lastProgress(conn: string): PeerEvent | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i]!;
      if (e.ev === 'progress' && e.conn === conn) return e;
    }
    return undefined;
  }

  describe(): string {
    const tail = this.events.slice(-8).map((e) => JSON.stringify(e));
    return `[${this.ns}] peer ${this.args.join(' ')}; exit=${JSON.stringify(this.exit)}; last events:\n  ${tail.join('\n  ')}\nstderr: ${this.stderr.trim()}`;
  }

  /** Ends the peer (SIGTERM, then SIGKILL after 1 s) and waits for it. */
  async kill(): Promise<void> {
    if (!this.exit) {
      const hard = setTimeout(() => this.child.kill('SIGKILL'), 1000);
      this.child.kill('SIGTERM');
      await this.exited;
      clearTimeout(hard);
    }
  }

  /** Resolves when the peer has exited. */
  wait(): Promise<void> {
    return this.exited;
  }
}

/** Starts `node peer.js ARGS` inside namespace `ns` of the lab. */
export function spawnPeer(lab: Lab, ns: string, args: PeerArgs): Peer {
  return new Peer(lab, ns, args);
}

/** An MPTCP echo server on `port` (mptcp_peer.py), once it listens. */
export async function startMptcpServer(lab: Lab, ns: string, port: number): Promise<Peer> {
  const peer = new Peer(lab, ns, ['server', '--listen', String(port)], MPTCP_PEER_ARGV);
  await peer.waitFor((e) => e.ev === 'ready', 10_000, 'listening');
  return peer;
}

/** An interactive MPTCP client (16 bytes every 20 ms, progress every 50 ms), once connected; `bind`: its source address. */
export async function startMptcpClient(lab: Lab, ns: string, host: string, port: number, bind?: string): Promise<Peer> {
  const peer = new Peer(lab, ns, ['client', '--host', host, '--port', String(port), ...(bind ? ['--bind', bind] : [])], MPTCP_PEER_ARGV);
  await peer.waitFor((e) => e.ev === 'connected', 10_000, 'connected');
  return peer;
}

/** Starts a server and waits until it listens on every port. */
export async function startServer(lab: Lab, ns: string, listen: { port: number; mode: 'echo' | 'bulk' }[], reportMs = 0): Promise<Peer> {
  const args = ['server', ...listen.flatMap((l) => ['--listen', `${l.port}:${l.mode}`])];
  if (reportMs > 0) args.push('--report-ms', String(reportMs));
  const peer = spawnPeer(lab, ns, args);
  await peer.waitFor((e) => e.ev === 'ready', 10_000, 'listening');
  return peer;
}

/** Starts a client session and waits until it is connected. */
export async function startClient(
  lab: Lab,
  ns: string,
  host: string,
  port: number,
  mode: 'interactive' | 'bulk',
  opts: { intervalMs?: number; reportMs?: number } = {},
): Promise<Peer> {
  const args = ['client', '--host', host, '--port', String(port), '--mode', mode];
  if (opts.intervalMs !== undefined) args.push('--interval', String(opts.intervalMs));
  if (opts.reportMs !== undefined) args.push('--report-ms', String(opts.reportMs));
  const peer = spawnPeer(lab, ns, args);
  await peer.waitFor((e) => e.ev === 'connected', 10_000, 'connected');
  return peer;
}

/**
 * `count` new connections `gapMs` apart, each sending a request `delayUs`
 * after it connects (default at once); resolves with one 'attempt' event each ({connected, echoed, code}).
 */
export async function connectionAttempts(
  lab: Lab,
  ns: string,
  host: string,
  port: number,
  opts: { count: number; gapMs?: number; timeoutMs?: number; delayUs?: number },
): Promise<PeerEvent[]> {
  const gapMs = opts.gapMs ?? 300;
  const timeoutMs = opts.timeoutMs ?? 300;
  const peer = spawnPeer(lab, ns, ['attempts', '--host', host, '--port', String(port), '--count', String(opts.count),
    '--gap', String(gapMs), '--timeout', String(timeoutMs), '--delay-us', String(opts.delayUs ?? 0)]);
  try {
    await peer.waitFor((e) => e.ev === 'done', opts.count * (gapMs + timeoutMs + 200) + 10_000, 'attempts done');
    return peer.events.filter((e) => e.ev === 'attempt');
  } finally {
    await peer.kill();
  }
}

/** One connection attempt; resolves with its result event ({ok, code}). */
export async function connectOnce(
  lab: Lab,
  ns: string,
  host: string,
  port: number,
  opts: { timeoutMs?: number; holdMs?: number } = {},
): Promise<PeerEvent> {
  const timeoutMs = opts.timeoutMs ?? 1000;
  const holdMs = opts.holdMs ?? 0;
  const peer = spawnPeer(lab, ns, ['connect', '--host', host, '--port', String(port), '--timeout', String(timeoutMs), '--hold', String(holdMs)]);
  try {
    return await peer.waitFor((e) => e.ev === 'result', timeoutMs + holdMs + 10_000, 'result');
  } finally {
    await peer.kill();
  }
}

/**
 * What the client's kernel said of one connectOnce attempt, in the words a
 * test may claim: 'works' (the echo came back and the connection lasted its
 * hold), 'refused' (the handshake was refused: a RST in SYN-SENT is
 * ECONNREFUSED, RFC 793 §3.4), 'reset' (the handshake completed, then the
 * connection was reset: ECONNRESET, which Linux gives only to a
 * synchronized connection; Node may not have reported the connect yet when
 * the RST follows the SYN-ACK by microseconds). Whether the request's echo
 * got back before the RST is `r.echoed`, a separate claim (the request goes
 * at once here: a quiet daemon can lose that race; the "no byte crossed"
 * claim is tested with the request 0.5 ms after connect). Anything else (a
 * timeout, an unreachable host, a lab that is not there) is 'other' with
 * what happened: never a verdict about tcpreset.
 */
export function connectOutcome(r: PeerEvent): 'works' | 'refused' | 'reset' | `other: ${string}` {
  if (r.ok === true) return 'works';
  if (r.connected === false && r.code === 'ECONNREFUSED') return 'refused';
  if (r.code === 'ECONNRESET') return 'reset';
  return `other: connected ${String(r.connected)}, echoed ${String(r.echoed)}, ${r.code ?? 'no error code'}`;
}
