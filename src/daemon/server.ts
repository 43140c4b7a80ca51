/**
 * The control socket: newline-delimited JSON over a Unix stream socket,
 * one response line per request line, in order. Either listens on a path
 * (stale socket file removed only if nothing answers on it; mode 0660;
 * group "tcpreset" if that group exists) or on the socket systemd passes
 * (socket activation: LISTEN_PID/LISTEN_FDS, fd 3).
 *
 * A client cannot hurt others: a line over MAX_LINE_BYTES gets an error
 * and the connection is closed; a client idle for `idleTimeoutMs` (half a
 * line, then silence) is dropped; a handler that throws becomes an
 * E_INTERNAL response. At `maxClients` connections, a newcomer takes the
 * place of the connection idle the longest (it gets an E_LIMIT line and is
 * closed), so slow or stuck clients can never lock out an alert; only when
 * every connection has a request in progress is the newcomer refused with
 * E_LIMIT. This file accepts and answers requests; what one connection
 * does with its bytes (framing, order, backpressure) is connection.ts.
 */
import net from 'node:net';
import { chmodSync, chownSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import { TcpresetError } from '../core/errors.js';
import { encodeLine, errorResponse, extractId, okResponse, parseRequest, type Request } from '../control/protocol.js';
import type { LogSink } from '../core/model.js';
import { Connection, type ConnectionContext, type Peer } from './connection.js';

export type { Peer };

export type RequestHandler = (req: Request, peer: Peer) => unknown;

export interface ServerOptions {
  /** Socket path (also used in logs when listening on a passed fd). */
  path: string;
  /** A listening socket passed by systemd (fd 3), instead of binding `path`. */
  listenFd?: number;
  handler: RequestHandler;
  log: LogSink;
  idleTimeoutMs: number;
  maxClients: number;
  /** Group given the socket file when we create it; skipped if the group does not exist. */
  group?: string;
  /** Mode of the socket file we create. */
  mode?: number;
}

/** Requests that change nothing: answered ones are logged at debug, not info. Any op not listed is logged at info. */
export const READ_ONLY_OPS: ReadonlySet<string> = new Set(['version', 'status', 'list', 'metrics', 'history']);

/** The passed socket, when systemd socket-activated us (sd_listen_fds(3)). Clears the variables. */
export function socketActivationFd(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | undefined {
  if (!env.LISTEN_PID || !env.LISTEN_FDS) return undefined;
  if (Number(env.LISTEN_PID) !== pid) return undefined;
  const n = Number(env.LISTEN_FDS);
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  return Number.isInteger(n) && n >= 1 ? 3 : undefined;
}

/** gid of `name` from /etc/group (Node has no getgrnam), or undefined. */
export function groupId(name: string, groupFile = '/etc/group'): number | undefined {
  let text: string;
  try {
    text = readFileSync(groupFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 3 && /^\d+$/.test(f[2])) return Number(f[2]);
  }
  return undefined;
}

/** Something answers on `path`: true; nothing (stale file): false. */
function probe(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path });
    const done = (alive: boolean): void => {
      s.destroy();
      resolve(alive);
    };
    s.setTimeout(timeoutMs, () => done(true)); // accepted but slow: someone is there
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Make `path` free to bind: remove a stale socket file; refuse a live socket or a non-socket. */
export async function clearStaleSocket(path: string, log: LogSink): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new TcpresetError('E_USAGE', `${path} exists and is not a socket; refusing to remove it`, { details: { path } });
  }
  if (await probe(path)) {
    throw new TcpresetError('E_UNAVAILABLE', `another daemon is answering on ${path}`, { details: { path } });
  }
  unlinkSync(path);
  log.info({ path }, 'removed stale control socket');
}

type PeerCredFn = (fd: number) => { pid: number; uid: number; gid: number };

export class ControlServer {
  private readonly o: Required<Omit<ServerOptions, 'listenFd' | 'group'>> & Pick<ServerOptions, 'listenFd' | 'group'>;
  private readonly server: net.Server;
  private readonly clients = new Map<net.Socket, Connection>();
  private peerCred: PeerCredFn | undefined;
  private closing = false;
  requests = 0;

  private constructor(opts: ServerOptions) {
    this.o = { mode: 0o660, ...opts };
    this.server = net.createServer({ allowHalfOpen: true }, (s) => this.onConnection(s));
  }

  /** Limits from a reloaded configuration: new connections get them; open ones keep the idle timeout they started with. */
  setLimits(l: { idleTimeoutMs: number; maxClients: number }): void {
    this.o.idleTimeoutMs = l.idleTimeoutMs;
    this.o.maxClients = l.maxClients;
  }

  get connections(): number {
    return this.clients.size;
  }

  static async listen(opts: ServerOptions): Promise<ControlServer> {
    const cs = new ControlServer(opts);
    try {
      cs.peerCred = (await import('../native/libc.js')).getPeerCred;
    } catch (err) {
      opts.log.warn({ err }, 'SO_PEERCRED unavailable: requests are logged without the peer uid/pid');
    }
    await cs.start();
    return cs;
  }

  private async start(): Promise<void> {
    const { log } = this.o;
    if (this.o.listenFd !== undefined) {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen({ fd: this.o.listenFd }, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
      log.info({ fd: this.o.listenFd, path: this.o.path }, 'listening on the socket passed by systemd');
    } else {
      await clearStaleSocket(this.o.path, log);
      // Created with no access for others from the start (umask), then set exactly.
      const old = process.umask(0o177);
      try {
        await new Promise<void>((resolve, reject) => {
          this.server.once('error', reject);
          this.server.listen({ path: this.o.path, exclusive: true }, () => {
            this.server.off('error', reject);
            resolve();
          });
        });
      } finally {
        process.umask(old);
      }
      const gid = this.o.group ? groupId(this.o.group) : undefined;
      if (gid !== undefined) {
        try {
          chownSync(this.o.path, -1, gid);
        } catch (err) {
          log.warn({ err, path: this.o.path, group: this.o.group }, 'cannot give the control socket its group');
        }
      }
      chmodSync(this.o.path, this.o.mode);
      log.info({ path: this.o.path, mode: this.o.mode.toString(8), ...(gid !== undefined ? { gid } : {}) }, 'listening');
    }
    this.server.on('error', (err) => log.error({ err }, 'control socket error'));
  }

  /** Stop accepting; let requests in progress answer, then close every connection. */
  async close(graceMs = 2000): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.clients.values()) c.end();
    const t = setTimeout(() => {
      for (const c of this.clients.values()) c.destroy();
    }, graceMs);
    t.unref();
    await closed;
    clearTimeout(t);
  }

  private credOf(s: net.Socket): Peer {
    const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (this.peerCred && typeof fd === 'number' && fd >= 0) {
      try {
        return this.peerCred(fd);
      } catch {
        // the peer is gone already
      }
    }
    return { pid: null, uid: null, gid: null };
  }

  /** Accept: refuse or make room at maxClients, then hand the socket to its Connection. */
  private onConnection(s: net.Socket): void {
    const { log } = this.o;
    const peer = this.credOf(s);
    if (this.closing) {
      s.destroy();
      return;
    }
    if (this.clients.size >= this.o.maxClients && !this.evictIdlest(peer)) {
      log.warn({ peer, maxClients: this.o.maxClients }, 'too many control connections: refused');
      s.end(encodeLine(errorResponse(new TcpresetError('E_LIMIT', `too many connections (limit ${this.o.maxClients}); retry`))));
      s.destroySoon();
      return;
    }
    s.on('close', () => this.clients.delete(s));
    const ctx: ConnectionContext = {
      log,
      idleTimeoutMs: this.o.idleTimeoutMs,
      handle: (line, p) => this.handleLine(line, p),
      countRequest: () => void this.requests++,
    };
    this.clients.set(s, new Connection(s, peer, ctx));
  }

  /**
   * Make room for a newcomer: close the connection idle the longest among
   * those with no request in progress. False when every one is working.
   */
  private evictIdlest(newcomer: Peer): boolean {
    let victim: net.Socket | undefined;
    let oldest = Infinity;
    for (const [sock, c] of this.clients) {
      if (c.working) continue;
      const t = c.lastActivity;
      if (t < oldest) {
        oldest = t;
        victim = sock;
      }
    }
    if (!victim) return false;
    const c = this.clients.get(victim)!;
    this.clients.delete(victim);
    this.o.log.warn(
      { peer: c.peer, idleMs: Math.round(performance.now() - oldest), maxClients: this.o.maxClients, newcomer },
      'too many control connections: dropped the longest idle one',
    );
    c.closeWith(new TcpresetError('E_LIMIT', `too many connections (limit ${this.o.maxClients}); this idle one was closed to make room`));
    return true;
  }

  private async handleLine(line: string, peer: Peer): Promise<object> {
    const t0 = process.hrtime.bigint();
    this.requests++;
    let req: Request;
    try {
      req = parseRequest(line);
    } catch (err) {
      const resp = errorResponse(err, extractId(line));
      this.o.log.info({ peer, error: resp.error.code, message: resp.error.message }, 'request rejected');
      return resp;
    }
    try {
      const result = await this.o.handler(req, peer);
      const r = result as { action?: string; job?: { id?: string } } | null;
      // Polls (a dashboard's `tcpreset list` every few seconds) would drown the changes: debug.
      this.o.log[READ_ONLY_OPS.has(req.op) ? 'debug' : 'info'](
        {
          peer, op: req.op, ...(req.id !== undefined ? { reqId: req.id } : {}),
          ...(r?.job?.id ? { jobId: r.job.id } : {}), ...(r?.action ? { action: r.action } : {}), ms: msSince(t0),
        },
        'request',
      );
      return okResponse(result, req.id);
    } catch (err) {
      const resp = errorResponse(err, req.id);
      if (err instanceof TcpresetError && err.code !== 'E_INTERNAL') {
        this.o.log.info({ peer, op: req.op, ...(req.id !== undefined ? { reqId: req.id } : {}), error: resp.error.code, message: resp.error.message, ms: msSince(t0) }, 'request refused');
      } else {
        // A bug: never fatal to the daemon, always visible in the log.
        this.o.log.error({ peer, op: req.op, err }, 'request failed with an internal error');
      }
      return resp;
    }
  }
}

function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
