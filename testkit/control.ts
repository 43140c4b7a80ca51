/**
 * Many control requests at once, for loading 100,000 jobs into tcpresetd:
 * several connections, each keeping a window of requests in flight
 * (the protocol answers in order, one line per request). One request per
 * CLI process would measure process spawning, not the daemon.
 */
import net from 'node:net';
import type { RequestBody, Response } from '../src/control/protocol.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { encodeState } from '../src/daemon/state.js';

export interface BulkOutcome {
  ok: number;
  errors: Map<string, number>;
  ms: number;
}

export async function bulkRequests(
  socketPath: string,
  bodies: readonly RequestBody[],
  opts: { connections?: number; window?: number; timeoutMs?: number } = {},
): Promise<BulkOutcome> {
  const conns = Math.max(1, Math.min(opts.connections ?? 8, bodies.length || 1));
  const window = opts.window ?? 32;
  const t0 = performance.now();
  let next = 0;
  let ok = 0;
  const errors = new Map<string, number>();
  const worker = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const sock = net.createConnection({ path: socketPath });
      let inFlight = 0;
      let buf = '';
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`bulk requests: no progress within ${opts.timeoutMs ?? 600_000} ms`));
      }, opts.timeoutMs ?? 600_000);
      const pump = (): void => {
        let chunk = '';
        while (inFlight < window && next < bodies.length) {
          chunk += JSON.stringify({ v: 1, ...bodies[next++] }) + '\n';
          inFlight++;
        }
        if (chunk) sock.write(chunk);
        if (inFlight === 0 && next >= bodies.length) {
          clearTimeout(timer);
          sock.end();
          resolve();
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
          inFlight--;
          const res = JSON.parse(line) as Response;
          if (res.ok) ok++;
          else errors.set(res.error.code, (errors.get(res.error.code) ?? 0) + 1);
        }
        pump();
      });
      sock.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  await Promise.all(Array.from({ length: conns }, worker));
  return { ok, errors, ms: performance.now() - t0 };
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
