/**
 * One client connection of the control socket (server.ts accepts, this
 * serves): the line buffer, the requests in progress, answers in request
 * order, backpressure on a client that does not read, the idle timeout,
 * oversize lines and the close.
 *
 * Framing: newline-delimited lines of at most MAX_LINE_BYTES (protocol.ts).
 * Each line is handed to `handle`, one per turn of the event loop, in
 * order; its answer is written when every earlier answer has been. A line
 * over the limit is answered E_PROTOCOL after what is ahead of it, then the
 * connection is half-closed and dropped after OVERSIZE_GRACE_MS.
 */
import type net from 'node:net';
import { TcpresetError } from '../core/errors.js';
import { MAX_LINE_BYTES, MAX_RESPONSE_LINE_BYTES, encodeLine, errorResponse, type RequestId } from '../control/protocol.js';
import type { LogSink } from '../core/model.js';

/** The client process, from SO_PEERCRED (null where unknown). */
export interface Peer {
  pid: number | null;
  uid: number | null;
  gid: number | null;
}

/** Lines queued per connection before reading pauses (a client pipelining thousands of requests). */
export const MAX_QUEUED_LINES = 64;
/** After an oversized line: how long the rest may still trickle in before the connection is cut. */
export const OVERSIZE_GRACE_MS = 1000;

/** What a connection needs from its server. */
export interface ConnectionContext {
  log: LogSink;
  /** Drop the client after this long without a byte read or written (its own requests in progress excepted). */
  idleTimeoutMs: number;
  /** The response object for one request line (a JSON text, without its newline). Should not reject; a rejection is logged and the line gets no answer. */
  handle: (line: string, peer: Peer) => Promise<object>;
  /** An oversize line counts as a request (the server's `requests`). */
  countRequest: () => void;
}

export class Connection {
  /** performance.now() of the last read or write. */
  private lastIo = performance.now();
  /** Pieces of the line being read, and their length in bytes. */
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** After an oversize line: read and drop until the close. */
  private discarding = false;
  /** Lines received and not yet answered (started or waiting). */
  private queued = 0;
  /** Requests started and not yet answered. */
  private busy = 0;
  /** Starts requests, one per turn, in order. */
  private chain: Promise<void> = Promise.resolve();
  /** Sends the answers, in the order the requests came. */
  private replies: Promise<void> = Promise.resolve();
  /** Since when our answers have been piling up unread (s.write returned false), or null. */
  private blockedSince: number | null = null;
  private drained: Promise<void> = Promise.resolve();
  private readonly idleMs: number;

  constructor(
    private readonly s: net.Socket,
    readonly peer: Peer,
    private readonly ctx: ConnectionContext,
  ) {
    this.idleMs = ctx.idleTimeoutMs;
    s.on('error', (err) => ctx.log.debug({ err, peer }, 'control connection error'));
    // on(), not setTimeout's callback: that one is a once() listener, and the
    // check in onTimeout may decide to look again later.
    s.setTimeout(this.idleMs);
    s.on('timeout', () => this.onTimeout());
    s.on('data', (data: Buffer) => this.onData(data));
    s.on('end', () => this.onEnd());
  }

  /** performance.now() of its last read or write. */
  get lastActivity(): number {
    return this.lastIo;
  }

  /** A request of it is being handled or waits in its queue: not idle, whatever the clock says. */
  get working(): boolean {
    return this.busy > 0 || this.queued > 0;
  }

  /** Send `err` as the last line and close (e.g. to make room for a newcomer). */
  closeWith(err: TcpresetError): void {
    this.s.end(encodeLine(errorResponse(err)));
    this.s.destroySoon();
  }

  /** Half-close: answer what is queued first (the socket's end waits for pending writes). */
  end(): void {
    this.s.end();
  }

  destroy(): void {
    this.s.destroy();
  }

  private resumeIfRoom(): void {
    if (this.queued < MAX_QUEUED_LINES && this.blockedSince === null && !this.discarding && !this.s.destroyed) this.s.resume();
  }

  private onTimeout(): void {
    const { s, idleMs, peer } = this;
    const { log } = this.ctx;
    // Timers run before pending input is read: after a stall of the daemon
    // itself, data may be waiting. Read it first (setImmediate runs after
    // the poll phase), then judge.
    setImmediate(() => {
      if (s.destroyed) return;
      const now = performance.now();
      if (this.blockedSince !== null && now - this.blockedSince >= idleMs) {
        log.warn({ peer, idleMs }, 'client does not read its answers: dropped');
        s.destroy();
        return;
      }
      const idleFor = now - this.lastIo;
      // A request in progress is the daemon's delay, not the client's.
      if (this.working || idleFor < idleMs) {
        // Not idle (yet): the socket's timer does not fire again without new
        // activity, and libuv's cached clock can fire it a hair early, so arm
        // it again or the client would be kept forever.
        s.setTimeout(this.working ? idleMs : Math.max(1, Math.ceil(idleMs - idleFor)));
        return;
      }
      const partialBytes = this.buffered;
      log.warn({ peer, partialBytes, idleMs }, partialBytes > 0 ? 'client sent part of a line and stalled: dropped' : 'idle client dropped');
      s.destroy();
    });
  }

  /** Write one answer; a client that stops reading pauses this connection until it drains. */
  private send(obj: object): void {
    const { s } = this;
    if (s.destroyed || !s.writable) return;
    let line: string;
    try {
      line = encodeLine(obj, MAX_RESPONSE_LINE_BYTES);
    } catch (err) {
      line = encodeLine(errorResponse(err, (obj as { id?: RequestId }).id));
    }
    this.lastIo = performance.now();
    if (!s.write(line) && this.blockedSince === null) {
      // The client is not reading: stop reading and answering it until it
      // does, so its answers cannot pile up in our memory.
      this.blockedSince = performance.now();
      s.pause();
      this.drained = new Promise((resolve) => {
        const done = (): void => {
          s.off('drain', done);
          s.off('close', done);
          this.blockedSince = null;
          this.lastIo = performance.now();
          resolve();
          this.resumeIfRoom();
        };
        s.on('drain', done);
        s.on('close', done);
      });
    }
  }

  private enqueue(line: Buffer): void {
    const { log } = this.ctx;
    const { peer } = this;
    this.queued++;
    if (this.queued >= MAX_QUEUED_LINES) this.s.pause();
    this.chain = this.chain.then(async () => {
      // One line per turn of the event loop: a client pipelining thousands
      // of requests must not keep every other client (and the data plane)
      // waiting until its whole batch is done.
      await yieldToIo();
      if (this.blockedSince !== null) await this.drained;
      // Started in order, answered in order, but the next one starts while
      // this one waits (for its journal record's fsync): so one sync
      // acknowledges many of a pipelining client's changes. Reading pauses
      // at MAX_QUEUED_LINES, but the lines of a chunk already read are all
      // queued.
      this.busy++;
      const answer = this.ctx.handle(line.toString('utf8'), peer);
      this.replies = this.replies.then(async () => {
        try {
          this.send(await answer);
        } finally {
          this.busy--;
          this.queued--;
          this.resumeIfRoom();
        }
      }).catch((err: unknown) => log.error({ err, peer }, 'control connection handler failed'));
    }).catch((err: unknown) => {
      log.error({ err, peer }, 'control connection handler failed');
      this.queued--;
      this.resumeIfRoom();
    });
  }

  /** Split into lines; a line (or the part of one buffered) over MAX_LINE_BYTES ends the connection. */
  private onData(data: Buffer): void {
    this.lastIo = performance.now();
    if (this.discarding) return;
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = data.subarray(start, nl);
      start = nl + 1;
      if (this.buffered + piece.length > MAX_LINE_BYTES) return this.oversize(this.buffered + piece.length);
      const line = this.chunks.length ? Buffer.concat([...this.chunks, piece]) : Buffer.from(piece);
      this.chunks = [];
      this.buffered = 0;
      this.enqueue(line);
    }
    if (start < data.length) {
      const rest = data.subarray(start);
      this.buffered += rest.length;
      if (this.buffered > MAX_LINE_BYTES) return this.oversize(this.buffered);
      this.chunks.push(Buffer.from(rest));
    }
  }

  private oversize(atLeast: number): void {
    const { s, peer } = this;
    const { log } = this.ctx;
    this.discarding = true;
    this.chunks = [];
    this.buffered = 0;
    this.ctx.countRequest();
    log.warn({ peer, bytes: atLeast, limit: MAX_LINE_BYTES }, 'request line too long: closing the connection');
    // Answer after whatever is ahead of it, then half-close; the rest of
    // the line is read and dropped until the client closes or the grace ends.
    this.chain = this.chain.then(() => this.replies).then(() => {
      this.send(errorResponse(new TcpresetError('E_PROTOCOL', `request line exceeds ${MAX_LINE_BYTES} bytes; closing the connection`, {
        details: { limit: MAX_LINE_BYTES },
      })));
      s.end();
      setTimeout(() => s.destroy(), OVERSIZE_GRACE_MS).unref();
    }).catch((err: unknown) => log.error({ err, peer }, 'control connection handler failed'));
  }

  /** The client is done sending: answer what is queued, then close our side. */
  private onEnd(): void {
    if (this.buffered > 0 && !this.discarding) {
      this.ctx.log.debug({ peer: this.peer, partialBytes: this.buffered }, 'client closed with an unterminated line: ignored');
    }
    void this.chain.then(() => this.replies).then(() => this.s.end());
  }
}

/** Let pending I/O (other clients, the ring) run before the next request line. */
function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
