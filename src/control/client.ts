/**
 * Control-socket client: connect, send one request line, read one response
 * line, close. Transport failures become TcpresetErrors whose codes map to
 * the CLI's exit status (unreachable 69, timeout 75, permission 77).
 */
import net from 'node:net';
import { TcpresetError } from '../errors.js';
import { encodeLine, MAX_RESPONSE_LINE_BYTES, parseResponse, PROTOCOL_VERSION, type RequestBody, type Response } from './protocol.js';

export const DEFAULT_TIMEOUT_MS = 10_000;

export interface RequestOptions {
  /** Whole exchange, connect included. Default 10 s. */
  timeoutMs?: number;
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

/**
 * Send `req` (the "v" field is added) and resolve with the daemon's
 * response, ok or not. Rejects only for transport problems: unreachable
 * (E_UNAVAILABLE), permission (E_PERM), no answer in time (E_TIMEOUT), an
 * answer that is not a protocol line (E_PROTOCOL).
 */
export function request(socketPath: string, req: RequestBody, opts: RequestOptions = {}): Promise<Response> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const line = encodeLine({ v: PROTOCOL_VERSION, ...req });
  return new Promise<Response>((resolve, reject) => {
    let connected = false;
    let settled = false;
    const chunks: Buffer[] = [];
    let size = 0;
    const sock = net.createConnection({ path: socketPath });
    const finish = (err: Error | null, res?: Response): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
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
    sock.on('connect', () => {
      connected = true;
      sock.write(line);
    });
    sock.on('data', (chunk: Buffer) => {
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
    });
    sock.on('end', () => {
      finish(
        new TcpresetError('E_UNAVAILABLE', `the daemon at ${socketPath} closed the connection without answering`, {
          details: { socket: socketPath },
        }),
      );
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected) return finish(connectError(socketPath, err));
      finish(
        new TcpresetError('E_UNAVAILABLE', `connection to the daemon at ${socketPath} failed: ${err.message}`, {
          cause: err,
          details: { socket: socketPath, errno: err.code },
        }),
      );
    });
    sock.on('close', () => {
      finish(new TcpresetError('E_UNAVAILABLE', `the daemon at ${socketPath} closed the connection without answering`));
    });
  });
}
