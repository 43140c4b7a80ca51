/**
 * Many control requests at once, for loading 100,000 jobs into tcpresetd
 * (bench/scale) or keeping it busy while something else is checked (the
 * stress files): several connections, each keeping a window of requests in
 * flight (the protocol answers a connection's requests in order, one line
 * each). One request per CLI process would measure process spawning, not
 * the daemon.
 */
import net from 'node:net';
import type { Response } from '../src/control/protocol.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { encodeState } from '../src/daemon/state.js';

export interface BulkOutcome<R = Response> {
  /** The response to request i at index i; a request whose connection failed gets E_CLOSED. */
  responses: R[];
  ok: number;
  /** Error responses by code. */
  errors: Map<string, number>;
  ms: number;
}

export interface BulkOptions<R> {
  /** Connections at once (default 8, at most `count`). */
  connections?: number;
  /** Requests in flight per connection (default 1: one at a time, each sent when the last is answered). */
  window?: number;
  /** Rejects when no connection finishes within this long (default 10 min). */
  timeoutMs?: number;
  onResponse?: (i: number, r: R) => void;
}

/**
 * Sends requests make(0) .. make(count - 1) (objects, written as JSON lines
 * verbatim: include `v`) over several connections and collects every answer.
 * A connection that fails or closes ends with E_CLOSED for what it had in
 * flight; the others go on with the rest.
 */
export async function bulkRequests<R extends { ok: boolean; error?: { code: string; message: string } } = Response>(
  socketPath: string,
  count: number,
  make: (i: number) => object,
  opts: BulkOptions<R> = {},
): Promise<BulkOutcome<R>> {
  const conns = Math.max(1, Math.min(opts.connections ?? 8, count || 1));
  const window = Math.max(1, opts.window ?? 1);
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const t0 = performance.now();
  const responses = new Array<R>(count);
  const errors = new Map<string, number>();
  let ok = 0;
  let next = 0;
  const settle = (i: number, r: R): void => {
    responses[i] = r;
    if (r.ok) ok++;
    else errors.set(r.error!.code, (errors.get(r.error!.code) ?? 0) + 1);
    opts.onResponse?.(i, r);
  };
  const closed = (message: string): R => ({ v: 1, ok: false, error: { code: 'E_CLOSED', message } }) as unknown as R;
  const worker = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const sock = net.createConnection({ path: socketPath });
      const inFlight: number[] = [];
      let buf = '';
      let finished = false;
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`bulk requests: not done within ${timeoutMs} ms`));
      }, timeoutMs);
      const finish = (): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        resolve();
      };
      const pump = (): void => {
        let chunk = '';
        while (inFlight.length < window && next < count) {
          const i = next++;
          inFlight.push(i);
          chunk += `${JSON.stringify(make(i))}\n`;
        }
        if (chunk) sock.write(chunk);
        if (inFlight.length === 0 && next >= count) {
          sock.end();
          finish();
        }
      };
      sock.on('connect', pump);
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          settle(inFlight.shift()!, JSON.parse(line) as R);
        }
        pump();
      });
      const fail = (err: Error): void => {
        for (const i of inFlight.splice(0)) settle(i, closed(err.message));
        finish();
      };
      sock.on('error', fail);
      sock.on('close', () => fail(new Error('connection closed')));
    });
  await Promise.all(Array.from({ length: conns }, worker));
  // Every connection failed before the end: what nobody sent gets E_CLOSED too.
  for (let i = 0; i < count; i++) if (responses[i] === undefined) settle(i, closed('no connection left'));
  return { responses, ok, errors, ms: performance.now() - t0 };
}

/** The i-th of up to ~4 million distinct IPv4 host addresses in 10.128.0.0/9, never .0 or .255. */
export function targetHost(i: number): string {
  const perC = 254;
  const c = Math.floor(i / perC);
  const d = (i % perC) + 1;
  return `10.${128 + Math.floor(c / 256)}.${c % 256}.${d}`;
}

/**
 * A tcpresetd state file (STATE_DIR/jobs.json, the format of
 * src/daemon/state.ts) holding `n` jobs on distinct hosts: a daemon started
 * on it restores them all at once, the way it comes back after a restart.
 */
export function stateFileWithJobs(n: number, sniffIf: string, resetIf: string, durationS = 3600, now = Date.now()): string {
  const records: JobRecord[] = Array.from({ length: n }, (_, i) => ({
    id: `bench${i}`,
    engid: 'bench',
    sniffIf,
    resetIf,
    host: targetHost(i),
    port: null,
    mode: 'l3',
    createdAt: now,
    expiresAt: now + durationS * 1000,
    counters: { matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null },
  }));
  return encodeState(records, now);
}
