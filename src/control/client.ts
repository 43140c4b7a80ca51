/**
 * Control-socket client: connect, send one request line, read one response
 * line, close. Transport failures become TcpresetErrors whose codes map to
 * the CLI's exit status (unreachable 69, timeout 75, permission 77).
 *
 * Two transports, one behaviour. `net` is node:net. `pipe` drives Node's
 * own Unix-socket handle (the pipe_wrap binding that net.Socket wraps)
 * directly: loading node:net pulls in the whole stream machinery, about
 * 25 modules and, measured, most of the CLI's cost above a bare `node -e 0`.
 * The binding is reached through process.binding() (DEP0111, deprecated in
 * the documentation only), so `pipe` is used only when the binding has the
 * shape this code knows and no pending deprecation (--pending-deprecation,
 * NODE_PENDING_DEPRECATION=1) would print a warning; otherwise, and on any surprise before connecting, `net` is used.
 * test/cli.test.ts runs the transport cases against both.
 */
import { TcpresetError } from '../core/errors.js';
import { encodeLine, MAX_RESPONSE_LINE_BYTES, parseResponse, PROTOCOL_VERSION, type RequestBody, type Response } from './protocol.js';

export const DEFAULT_TIMEOUT_MS = 10_000;

export type Transport = 'pipe' | 'net';

export interface RequestOptions {
  /** Whole exchange, connect included. Default 10 s. */
  timeoutMs?: number;
  /** Default: `pipe` where usable, else `net`. */
  transport?: Transport;
}

function connectError(socketPath: string, err: NodeJS.ErrnoException): TcpresetError {
  const code = err.code ?? 'error';
  const details = { socket: socketPath, errno: code };
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return new TcpresetError('E_PERM', `permission denied on ${socketPath}: connect ${code} — run as root or as a member of the socket's group`, {
        cause: err,
        details,
      });
    case 'ENOENT':
    case 'ECONNREFUSED':
    case 'ENOTDIR':
      return new TcpresetError('E_UNAVAILABLE', `daemon not reachable at ${socketPath}: connect ${code} — is tcpresetd running?`, {
        cause: err,
        details,
      });
    case 'EAGAIN':
      // The listen backlog of a Unix socket is full: the daemon is alive but swamped.
      return new TcpresetError('E_TIMEOUT', `daemon at ${socketPath} is busy: connect EAGAIN — try again`, { cause: err, details });
    default:
      return new TcpresetError('E_UNAVAILABLE', `daemon not reachable at ${socketPath}: ${err.message}`, { cause: err, details });
  }
}

/** What a transport reports; `error` carries a Node-style errno error (code "ENOENT" ...). */
/** Handed to a transport, which calls them detached (node:net's socket.on): properties, not methods. */
interface Events {
  connect: () => void;
  data: (chunk: Buffer) => void;
  end: () => void;
  error: (err: NodeJS.ErrnoException) => void;
}
interface Conn {
  write(line: string): void;
  destroy(): void;
}
type Open = (path: string, ev: Events) => Conn;

// ---------------------------------------------------------------- pipe: Node's Unix-socket handle

interface PipeHandle {
  connect(req: object, path: string): number;
  readStart(): number;
  writeUtf8String(req: object, s: string): number;
  close(cb?: () => void): void;
  onread: (ab: ArrayBuffer | undefined) => void;
}
interface PipeBinding {
  Pipe: new (type: number) => PipeHandle;
  PipeConnectWrap: new () => { oncomplete?: (status: number) => void };
  constants: { SOCKET: number };
}
interface StreamBinding {
  WriteWrap: new () => { handle?: PipeHandle; oncomplete?: (status: number) => void; async?: boolean };
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
}

/** libuv's end of stream (UV_EOF). */
const UV_EOF = -4095;
/** libuv errors are negated errnos on Linux; the ones connectError names. */
const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 11: 'EAGAIN', 13: 'EACCES', 20: 'ENOTDIR', 32: 'EPIPE', 104: 'ECONNRESET', 111: 'ECONNREFUSED' };

function errnoError(status: number, syscall: string, path: string): NodeJS.ErrnoException {
  const code = ERRNO_NAMES[-status] ?? `errno ${-status}`;
  return Object.assign(new Error(`${syscall} ${code} ${path}`), { code, errno: status, syscall });
}

let pipeBindings: { p: PipeBinding; s: StreamBinding } | null | undefined;

/** The bindings, if they look as expected and using them is silent. */
function pipeOpen(): Open | null {
  if (pipeBindings === undefined) {
    pipeBindings = null;
    const pending =
      process.execArgv.includes('--pending-deprecation') ||
      /--pending-deprecation/.test(process.env.NODE_OPTIONS ?? '') ||
      process.env.NODE_PENDING_DEPRECATION === '1';
    const binding = (process as unknown as { binding?: (name: string) => unknown }).binding;
    if (!pending && typeof binding === 'function') {
      try {
        const p = binding('pipe_wrap') as PipeBinding;
        const s = binding('stream_wrap') as StreamBinding;
        const proto = p.Pipe?.prototype as unknown as Record<string, unknown> | undefined;
        if (
          proto &&
          typeof proto.connect === 'function' &&
          typeof proto.readStart === 'function' &&
          typeof proto.writeUtf8String === 'function' &&
          typeof proto.close === 'function' &&
          typeof p.PipeConnectWrap === 'function' &&
          typeof p.constants?.SOCKET === 'number' &&
          typeof s.WriteWrap === 'function' &&
          s.streamBaseState instanceof Int32Array &&
          typeof s.kReadBytesOrError === 'number' &&
          typeof s.kArrayBufferOffset === 'number'
        ) {
          pipeBindings = { p, s };
        }
      } catch {
        // e.g. refused under the permission model: net it is.
      }
    }
  }
  const b = pipeBindings;
  if (b === null) return null;
  return (path, ev) => {
    const { streamBaseState, kReadBytesOrError, kArrayBufferOffset } = b.s;
    const handle = new b.p.Pipe(b.p.constants.SOCKET);
    let closed = false;
    // Holds the WriteWrap until the write completes, so it is not collected first: assigned, never read.
    // eslint-disable-next-line @typescript-eslint/no-unused-vars -- a reference held on purpose
    let writeReq: object | undefined;
    const close = (): void => {
      if (closed) return;
      closed = true;
      // The binding asserts (aborts the process) unless onread is a function.
      handle.onread = () => {};
      handle.close();
    };
    const req = new b.p.PipeConnectWrap();
    req.oncomplete = (status: number) => {
      if (closed) return;
      if (status < 0) return ev.error(errnoError(status, 'connect', path));
      handle.onread = (ab) => {
        const n = streamBaseState[kReadBytesOrError];
        if (n > 0 && ab !== undefined) ev.data(Buffer.from(ab, streamBaseState[kArrayBufferOffset], n));
        else if (n === UV_EOF) ev.end();
        else if (n < 0) ev.error(errnoError(n, 'read', path));
      };
      const err = handle.readStart();
      if (err < 0) return ev.error(errnoError(err, 'read', path));
      ev.connect();
    };
    const err = handle.connect(req, path);
    // Node's binding reports a synchronous failure as a status; the callback then never runs.
    if (err < 0) queueMicrotask(() => ev.error(errnoError(err, 'connect', path)));
    return {
      write(line) {
        const w = new b.s.WriteWrap();
        w.handle = handle;
        w.async = false;
        w.oncomplete = (status) => {
          writeReq = undefined;
          if (status < 0 && !closed) ev.error(errnoError(status, 'write', path));
        };
        writeReq = w;
        const st = handle.writeUtf8String(w, line);
        if (st < 0) queueMicrotask(() => ev.error(errnoError(st, 'write', path)));
      },
      destroy: close,
    };
  };
}

// ---------------------------------------------------------------- net

async function netOpen(): Promise<Open> {
  const net = await import('node:net');
  return (path, ev) => {
    const sock = net.createConnection({ path });
    sock.on('connect', ev.connect);
    sock.on('data', ev.data);
    sock.on('end', ev.end);
    sock.on('error', ev.error);
    sock.on('close', ev.end);
    return { write: (line) => void sock.write(line), destroy: () => void sock.destroy() };
  };
}

/**
 * Send `req` (the "v" field is added) and resolve with the daemon's
 * response, ok or not. Rejects only for transport problems: unreachable
 * (E_UNAVAILABLE), permission (E_PERM), no answer in time (E_TIMEOUT), an
 * answer that is not a protocol line (E_PROTOCOL).
 */
export async function request(socketPath: string, req: RequestBody, opts: RequestOptions = {}): Promise<Response> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const line = encodeLine({ v: PROTOCOL_VERSION, ...req });
  const open = (opts.transport === 'net' ? null : pipeOpen()) ?? (await netOpen());
  if (opts.transport === 'pipe' && pipeBindings === null) throw new Error('the pipe transport is not usable on this Node');
  return new Promise<Response>((resolve, reject) => {
    let connected = false;
    let settled = false;
    const chunks: Buffer[] = [];
    let size = 0;
    let conn: Conn | undefined;
    const finish = (err: Error | null, res?: Response): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn?.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    const timer = setTimeout(() => {
      const secs = `${timeoutMs / 1000} s`;
      finish(
        new TcpresetError(
          'E_TIMEOUT',
          connected
            ? `no answer from the daemon at ${socketPath} within ${secs}`
            : `could not connect to the daemon at ${socketPath} within ${secs}`,
          { details: { socket: socketPath, timeoutMs } },
        ),
      );
    }, timeoutMs);
    conn = open(socketPath, {
      connect() {
        connected = true;
        conn!.write(line);
      },
      data(chunk) {
        const nl = chunk.indexOf(0x0a);
        chunks.push(nl < 0 ? chunk : chunk.subarray(0, nl));
        size += nl < 0 ? chunk.length : nl;
        if (nl >= 0) {
          try {
            finish(null, parseResponse(Buffer.concat(chunks).toString('utf8')));
          } catch (err) {
            finish(err as Error);
          }
        } else if (size > MAX_RESPONSE_LINE_BYTES) {
          finish(new TcpresetError('E_PROTOCOL', `response from ${socketPath} exceeds ${MAX_RESPONSE_LINE_BYTES} bytes without a newline`));
        }
      },
      end() {
        finish(
          new TcpresetError('E_UNAVAILABLE', `the daemon at ${socketPath} closed the connection without answering`, {
            details: { socket: socketPath },
          }),
        );
      },
      error(err) {
        if (!connected) return finish(connectError(socketPath, err));
        finish(
          new TcpresetError('E_UNAVAILABLE', `connection to the daemon at ${socketPath} failed: ${err.message}`, {
            cause: err,
            details: { socket: socketPath, errno: err.code },
          }),
        );
      },
    });
    if (settled) conn.destroy();
  });
}
