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
 * E_LIMIT.
 */
import net from 'node:net';
import { chmodSync, chownSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import { TcpresetError } from '../core/errors.js';
import {
  MAX_LINE_BYTES, MAX_RESPONSE_LINE_BYTES, encodeLine, errorResponse, extractId, okResponse, parseRequest,
  type Request, type RequestId,
} from '../control/protocol.js';
import type { LogSink } from '../core/model.js';

export interface Peer {
  pid: number | null;
  uid: number | null;
  gid: number | null;
}

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

/** Lines queued per connection before reading pauses (a client pipelining thousands of requests). */
const MAX_QUEUED_LINES = 64;
/** After an oversized line: how long the rest may still trickle in before the connection is cut. */
const OVERSIZE_GRACE_MS = 1000;

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

/** What the server needs to know of a connection to choose one to close when full. */
interface Conn {
  peer: Peer;
  /** performance.now() of its last read or write. */
  lastActivity: () => number;
  /** A request of it is being handled or waits in its queue. */
  working: () => boolean;
}

export class ControlServer {
  private readonly o: Required<Omit<ServerOptions, 'listenFd' | 'group'>> & Pick<ServerOptions, 'listenFd' | 'group'>;
  private readonly server: net.Server;
  private readonly clients = new Map<net.Socket, Conn>();
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
    for (const s of this.clients.keys()) s.end();
    const t = setTimeout(() => {
      for (const s of this.clients.keys()) s.destroy();
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
    s.on('error', (err) => log.debug({ err, peer }, 'control connection error'));

    let chunks: Buffer[] = [];
    let buffered = 0;
    let discarding = false;
    let queued = 0;
    /** Requests started and not yet answered. */
    let busy = 0;
    /** Starts requests, one per turn, in order. */
    let chain: Promise<void> = Promise.resolve();
    /** Sends the answers, in the order the requests came. */
    let replies: Promise<void> = Promise.resolve();
    /** Since when our answers have been piling up unread (s.write returned false), or null. */
    let blockedSince: number | null = null;
    let drained: Promise<void> = Promise.resolve();

    const idleMs = this.o.idleTimeoutMs;
    let lastActivity = performance.now();
    this.clients.set(s, { peer, lastActivity: () => lastActivity, working: () => busy > 0 || queued > 0 });
    const resumeIfRoom = (): void => {
      if (queued < MAX_QUEUED_LINES && blockedSince === null && !discarding && !s.destroyed) s.resume();
    };
    // on(), not setTimeout's callback: that one is a once() listener, and the
    // check below may decide to look again later.
    s.setTimeout(idleMs);
    s.on('timeout', () => {
      // Timers run before pending input is read: after a stall of the daemon
      // itself, data may be waiting. Read it first (setImmediate runs after
      // the poll phase), then judge.
      setImmediate(() => {
        if (s.destroyed) return;
        const now = performance.now();
        if (blockedSince !== null && now - blockedSince >= idleMs) {
          log.warn({ peer, idleMs }, 'client does not read its answers: dropped');
          s.destroy();
          return;
        }
        const idleFor = now - lastActivity;
        // A request in progress is the daemon's delay, not the client's.
        if (busy > 0 || queued > 0 || idleFor < idleMs) {
          // Not idle (yet): the socket's timer does not fire again without new
          // activity, and libuv's cached clock can fire it a hair early, so arm
          // it again or the client would be kept forever.
          s.setTimeout(busy > 0 || queued > 0 ? idleMs : Math.max(1, Math.ceil(idleMs - idleFor)));
          return;
        }
        log.warn({ peer, partialBytes: buffered, idleMs }, buffered > 0 ? 'client sent part of a line and stalled: dropped' : 'idle client dropped');
        s.destroy();
      });
    });

    const send = (obj: object): void => {
      if (s.destroyed || !s.writable) return;
      let line: string;
      try {
        line = encodeLine(obj, MAX_RESPONSE_LINE_BYTES);
      } catch (err) {
        line = encodeLine(errorResponse(err, (obj as { id?: RequestId }).id));
      }
      lastActivity = performance.now();
      if (!s.write(line) && blockedSince === null) {
        // The client is not reading: stop reading and answering it until it
        // does, so its answers cannot pile up in our memory.
        blockedSince = performance.now();
        s.pause();
        drained = new Promise((resolve) => {
          const done = (): void => {
            s.off('drain', done);
            s.off('close', done);
            blockedSince = null;
            lastActivity = performance.now();
            resolve();
            resumeIfRoom();
          };
          s.on('drain', done);
          s.on('close', done);
        });
      }
    };

    const enqueue = (line: Buffer): void => {
      queued++;
      if (queued >= MAX_QUEUED_LINES) s.pause();
      chain = chain.then(async () => {
        // One line per turn of the event loop: a client pipelining thousands
        // of requests must not keep every other client (and the data plane)
        // waiting until its whole batch is done.
        await yieldToIo();
        if (blockedSince !== null) await drained;
        // Started in order, answered in order, but the next one starts while
        // this one waits (for its journal record's fsync): so one sync
        // acknowledges many of a pipelining client's changes, and at most
        // MAX_QUEUED_LINES of them are in progress.
        busy++;
        const answer = this.handleLine(line.toString('utf8'), peer);
        replies = replies.then(async () => {
          try {
            send(await answer);
          } finally {
            busy--;
            queued--;
            resumeIfRoom();
          }
        }).catch((err: unknown) => log.error({ err, peer }, 'control connection handler failed'));
      }).catch((err: unknown) => {
        log.error({ err, peer }, 'control connection handler failed');
        queued--;
        resumeIfRoom();
      });
    };

    s.on('data', (data: Buffer) => {
      lastActivity = performance.now();
      if (discarding) return;
      let start = 0;
      for (;;) {
        const nl = data.indexOf(0x0a, start);
        if (nl < 0) break;
        const piece = data.subarray(start, nl);
        start = nl + 1;
        if (buffered + piece.length > MAX_LINE_BYTES) return oversize(buffered + piece.length);
        const line = chunks.length ? Buffer.concat([...chunks, piece]) : Buffer.from(piece);
        chunks = [];
        buffered = 0;
        enqueue(line);
      }
      if (start < data.length) {
        const rest = data.subarray(start);
        buffered += rest.length;
        if (buffered > MAX_LINE_BYTES) return oversize(buffered);
        chunks.push(Buffer.from(rest));
      }
    });

    const oversize = (atLeast: number): void => {
      discarding = true;
      chunks = [];
      buffered = 0;
      this.requests++;
      log.warn({ peer, bytes: atLeast, limit: MAX_LINE_BYTES }, 'request line too long: closing the connection');
      // Answer after whatever is ahead of it, then half-close; the rest of
      // the line is read and dropped until the client closes or the grace ends.
      chain = chain.then(() => replies).then(() => {
        send(errorResponse(new TcpresetError('E_PROTOCOL', `request line exceeds ${MAX_LINE_BYTES} bytes; closing the connection`, {
          details: { limit: MAX_LINE_BYTES },
        })));
        s.end();
        setTimeout(() => s.destroy(), OVERSIZE_GRACE_MS).unref();
      }).catch((err: unknown) => log.error({ err, peer }, 'control connection handler failed'));
    };

    s.on('end', () => {
      // The client is done sending: answer what is queued, then close our side.
      if (buffered > 0 && !discarding) {
        log.debug({ peer, partialBytes: buffered }, 'client closed with an unterminated line: ignored');
      }
      void chain.then(() => replies).then(() => s.end());
    });
  }

  /**
   * Make room for a newcomer: close the connection idle the longest among
   * those with no request in progress. False when every one is working.
   */
  private evictIdlest(newcomer: Peer): boolean {
    let victim: net.Socket | undefined;
    let oldest = Infinity;
    for (const [sock, c] of this.clients) {
      if (c.working()) continue;
      const t = c.lastActivity();
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
    victim.end(encodeLine(errorResponse(new TcpresetError('E_LIMIT', `too many connections (limit ${this.o.maxClients}); this idle one was closed to make room`))));
    victim.destroySoon();
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

/** Let pending I/O (other clients, the ring) run before the next request line. */
function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
