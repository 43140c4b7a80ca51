/**
 * The client of bench/idle.ts's "new connections during a job", run inside
 * the lab's client namespace:
 *
 *   node conn-client.js --host H --port P --count N --interval-ms MS
 *                       --delay-us US --local-port-base B [--wait-ms MS] [--go-on-stdin 1]
 *
 * With --go-on-stdin 1 it prints {"ready":true} and starts only when a line
 * arrives on stdin, so the bench can connect right after an event of its
 * own (a job created, a daemon restarted) without Node's start-up between.
 * Attempt i starts at i × interval from the start, from local port B + i
 * (so the bench can find each attempt in a capture and in the server's
 * events), and sends an 8-byte request "request\n" when connect completes
 * (--delay-us 0) or that many µs later (busy-waited: a timer has 1 ms
 * granularity). It then waits --wait-ms (default 200) for an echo and
 * closes. One JSON line per attempt on stdout:
 *   {"i":0,"lport":B,"connected":true,"rx":8,"code":"ECONNRESET"}
 */
import net from 'node:net';

function arg(name: string, dflt?: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const text = i >= 0 ? process.argv[i + 1] : dflt === undefined ? undefined : String(dflt);
  const n = Number(text);
  if (text === undefined || !Number.isInteger(n) || n < 0) {
    process.stderr.write(`conn-client: --${name} must be a non-negative integer (got ${JSON.stringify(text)})\n`);
    process.exit(64);
  }
  return n;
}

const hostIdx = process.argv.indexOf('--host');
const host = hostIdx >= 0 ? process.argv[hostIdx + 1] : undefined;
if (!host || net.isIP(host) === 0) {
  process.stderr.write(`conn-client: --host must be an IP address (got ${JSON.stringify(host)})\n`);
  process.exit(64);
}
const port = arg('port');
const count = arg('count');
const intervalMs = arg('interval-ms');
const delayUs = arg('delay-us');
const base = arg('local-port-base');
const waitMs = arg('wait-ms', 200);
const goOnStdin = arg('go-on-stdin', 0) === 1;

const hr = (): bigint => process.hrtime.bigint();

function attempt(i: number): Promise<void> {
  return new Promise((resolve) => {
    const lport = base + i;
    let connected = false;
    let rx = 0;
    let code: string | undefined;
    let done = false;
    const sock = net.connect({ host, port, localPort: lport, noDelay: true });
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      process.stdout.write(JSON.stringify({ i, lport, connected, rx, ...(code ? { code } : {}) }) + '\n');
      resolve();
    };
    const timer = setTimeout(finish, waitMs);
    sock.on('connect', () => {
      connected = true;
      if (delayUs > 0) {
        const until = hr() + BigInt(delayUs) * 1000n;
        while (hr() < until);
      }
      if (!sock.destroyed) sock.write('request\n');
    });
    sock.on('data', (d: Buffer) => (rx += d.length));
    sock.on('error', (err: NodeJS.ErrnoException) => (code = err.code ?? 'UNKNOWN'));
    sock.on('close', () => setTimeout(finish, 0));
  });
}

if (goOnStdin) {
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  process.stdin.pause();
}
const t0 = Date.now();
for (let i = 0; i < count; i++) {
  const wait = t0 + i * intervalMs - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  await attempt(i);
}
process.stdout.write(JSON.stringify({ done: count }) + '\n');
