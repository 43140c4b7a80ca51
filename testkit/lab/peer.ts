/**
 * A real TCP endpoint for the lab, run inside a namespace:
 *
 *   node peer.js server  --listen PORT:echo|bulk [--listen ...] [--report-ms N]
 *   node peer.js client  --host H --port P --mode interactive|bulk [--interval MS] [--report-ms N]
 *   node peer.js connect --host H --port P [--timeout MS] [--hold MS]
 *
 * It reports one JSON object per line on stdout (see PeerEvent in
 * peer-control.ts) with a wall-clock timestamp `t` in epoch milliseconds with
 * a sub-millisecond fraction, comparable across processes on one machine.
 * What matters is what the kernel says: errors carry Node's err.code
 * (ECONNRESET, ECONNREFUSED, ETIMEDOUT, EPIPE); an end of stream is
 * reported as "eof" and probed with a write, so a reset that libuv shows as
 * EOF still surfaces as ECONNRESET (see Conn.probeAfterEof).
 *
 * server: listens dual-stack on every port given; "echo" sends back what
 *   it reads (interactive sessions), "bulk" writes as fast as the socket
 *   takes it (downloads). Node always has a read pending on a socket, so an
 *   idle server socket still sees an incoming RST as ECONNRESET.
 * client interactive: a 16-byte message every --interval ms (default 20),
 *   counts echoes. client bulk: reads a download at full speed.
 * connect: one connection attempt with a timeout; on success sends "ping",
 *   waits for the echo and keeps the connection --hold ms (default 0), then
 *   reports {ev:"result", ok, connected, echoed, lport?, code?}: a connection
 *   that was reset while held counts as failed; lport once connected.
 * attempts: --count N connection attempts --gap MS apart (default 300: a
 *   quiet link between them), each sending "ping" --delay-us after it
 *   connects (default 0: at once, as an exploit or a beacon would) and
 *   waiting --timeout MS for the echo;
 *   one {ev:"attempt", attempt, connected, echoed, code?} per attempt, then
 *   {ev:"done"}. `echoed` is the case the product must prevent: a request
 *   and its answer got through before the RSTs.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { PeerEvent } from './peer-control.js';

const now = (): number => performance.timeOrigin + performance.now();

function emit(ev: Omit<PeerEvent, 't'>): void {
  process.stdout.write(JSON.stringify({ t: now(), ...ev }) + '\n');
}

function fail(message: string): never {
  process.stderr.write(`peer: ${message}\n`);
  process.exit(64);
}

interface Args {
  cmd: string;
  opts: Map<string, string[]>;
}

function parseArgs(argv: string[]): Args {
  const [cmd, ...rest] = argv;
  if (!cmd) fail('usage: peer server|client|connect [--option value]...');
  const opts = new Map<string, string[]>();
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i]!;
    const value = rest[i + 1];
    if (!key.startsWith('--') || value === undefined) fail(`bad argument ${key}`);
    const list = opts.get(key.slice(2)) ?? [];
    list.push(value);
    opts.set(key.slice(2), list);
  }
  return { cmd, opts };
}

function opt(a: Args, name: string, dflt?: string): string {
  const v = a.opts.get(name)?.[0] ?? dflt;
  if (v === undefined) fail(`--${name} is required`);
  return v;
}

function intOpt(a: Args, name: string, dflt?: number): number {
  const text = opt(a, name, dflt === undefined ? undefined : String(dflt));
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) fail(`--${name} must be a non-negative integer`);
  return n;
}

function endpoints(sock: net.Socket): { local: string; lport: number; remote: string; rport: number } {
  return {
    local: unmap(sock.localAddress ?? ''),
    lport: sock.localPort ?? 0,
    remote: unmap(sock.remoteAddress ?? ''),
    rport: sock.remotePort ?? 0,
  };
}

/** A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d. */
function unmap(addr: string): string {
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

/** Tracks one connection's byte counts and reports its end exactly once. */
class Conn {
  rx = 0;
  tx = 0;
  ended = false;
  constructor(
    readonly id: string,
    readonly sock: net.Socket,
  ) {
    sock.on('data', (d: Buffer) => {
      this.rx += d.length;
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      emit({ ev: 'error', conn: id, code: err.code ?? 'UNKNOWN', message: err.message, rx: this.rx, tx: this.tx });
    });
    sock.on('close', (hadError: boolean) => {
      this.ended = true;
      emit({ ev: 'close', conn: id, hadError, rx: this.rx, tx: this.tx });
    });
    sock.on('end', () => this.probeAfterEof());
  }

  /**
   * libuv turns a reset that arrives while data is still queued into a
   * plain EOF (it sees POLLHUP after a partial read and never reads the
   * error). The kernel still holds the error: a write now fails with it
   * (ECONNRESET), while after a real FIN it succeeds. Sockets are half-open
   * (allowHalfOpen) so this write is possible; then we end our side.
   */
  private probeAfterEof(): void {
    emit({ ev: 'eof', conn: this.id, rx: this.rx, tx: this.tx });
    if (this.sock.destroyed) return;
    this.sock.write(Buffer.alloc(1), (err) => {
      if (!err) this.sock.end();
    });
  }
}

const BULK_CHUNK = Buffer.alloc(64 * 1024, 0x5a);

/** Writes until the socket pushes back, then waits for 'drain'; stops on error/close. */
function pumpBulk(conn: Conn): void {
  const write = (): void => {
    while (!conn.ended && !conn.sock.destroyed) {
      conn.tx += BULK_CHUNK.length;
      if (!conn.sock.write(BULK_CHUNK)) {
        conn.sock.once('drain', write);
        return;
      }
    }
  };
  write();
}

function startProgress(conns: Set<Conn>, everyMs: number): void {
  if (everyMs <= 0) return;
  let last = new Map<string, { rx: number; t: number }>();
  setInterval(() => {
    const t = now();
    const next = new Map<string, { rx: number; t: number }>();
    for (const c of conns) {
      if (c.ended) continue;
      const prev = last.get(c.id);
      const mbps = prev ? ((c.rx - prev.rx) * 8) / 1e6 / ((t - prev.t) / 1000) : undefined;
      emit({ ev: 'progress', conn: c.id, rx: c.rx, tx: c.tx, ...(mbps === undefined ? {} : { mbps: Math.round(mbps * 10) / 10 }) });
      next.set(c.id, { rx: c.rx, t });
    }
    last = next;
  }, everyMs).unref();
}

function server(a: Args): void {
  const specs = a.opts.get('listen') ?? fail('--listen PORT:echo|bulk is required');
  const conns = new Set<Conn>();
  let pending = specs.length;
  let seq = 0;
  for (const spec of specs) {
    const [portText, mode = 'echo'] = spec.split(':');
    const port = Number(portText);
    if (!Number.isInteger(port) || port < 1 || port > 65535 || (mode !== 'echo' && mode !== 'bulk')) fail(`bad --listen ${spec}`);
    const srv = net.createServer({ noDelay: true, allowHalfOpen: true }, (sock) => {
      seq += 1;
      const conn = new Conn(`${port}#${seq}`, sock);
      conns.add(conn);
      sock.on('close', () => conns.delete(conn));
      emit({ ev: 'accept', conn: conn.id, mode, ...endpoints(sock) });
      if (mode === 'echo') sock.on('data', (d: Buffer) => {
        conn.tx += d.length;
        sock.write(d);
      });
      else pumpBulk(conn);
    });
    srv.on('error', (err: NodeJS.ErrnoException) => {
      emit({ ev: 'error', code: err.code ?? 'UNKNOWN', message: err.message });
      process.exit(1);
    });
    srv.listen({ port, host: '::', ipv6Only: false }, () => {
      emit({ ev: 'listening', lport: port });
      pending -= 1;
      if (pending === 0) emit({ ev: 'ready' });
    });
  }
  startProgress(conns, intOpt(a, 'report-ms', 0));
}

function client(a: Args): void {
  const host = opt(a, 'host');
  const port = intOpt(a, 'port');
  const mode = opt(a, 'mode', 'interactive');
  if (mode !== 'interactive' && mode !== 'bulk') fail(`bad --mode ${mode}`);
  const interval = intOpt(a, 'interval', 20);
  const sock = net.connect({ host, port, noDelay: true, allowHalfOpen: true });
  const conn = new Conn('c', sock);
  const conns = new Set([conn]);
  sock.on('connect', () => {
    emit({ ev: 'connected', conn: 'c', ...endpoints(sock) });
    if (mode === 'interactive') {
      const msg = Buffer.from('interactive-msg\n'); // 16 bytes
      const timer = setInterval(() => {
        if (conn.ended || sock.destroyed) return clearInterval(timer);
        conn.tx += msg.length;
        sock.write(msg);
      }, interval);
      sock.on('close', () => clearInterval(timer));
    }
  });
  sock.on('close', () => setImmediate(() => process.exit(0)));
  startProgress(conns, intOpt(a, 'report-ms', mode === 'bulk' ? 200 : 0));
}

function connectOnce(a: Args): void {
  const host = opt(a, 'host');
  const port = intOpt(a, 'port');
  const timeout = intOpt(a, 'timeout', 1000);
  const hold = intOpt(a, 'hold', 0);
  let done = false;
  let connected = false;
  let echoed = false;
  let lport = 0;
  const result = (ok: boolean, code?: string): void => {
    if (done) return;
    done = true;
    emit({ ev: 'result', ok, connected, echoed, ...(connected ? { lport } : {}), ...(code ? { code } : {}) });
    sock.destroy();
    setImmediate(() => process.exit(0));
  };
  const sock = net.connect({ host, port, noDelay: true, allowHalfOpen: true });
  new Conn('c', sock); // reports error/eof/close, and probes an EOF for a hidden reset
  // Until the echo is back: a handshake that goes unanswered, or a half-dead one.
  const connectTimer = setTimeout(() => result(false, 'ETIMEDOUT'), timeout);
  sock.on('error', (err: NodeJS.ErrnoException) => result(false, err.code ?? 'UNKNOWN'));
  sock.on('close', () => result(false, 'CLOSED'));
  sock.on('connect', () => {
    connected = true;
    lport = sock.localPort ?? 0;
    emit({ ev: 'connected', conn: 'c', ...endpoints(sock) });
    sock.write('ping\n');
  });
  let got = '';
  sock.on('data', (d: Buffer) => {
    got += d.toString('latin1');
    if (got.includes('ping\n') && !echoed) {
      echoed = true;
      clearTimeout(connectTimer);
      emit({ ev: 'echoed', conn: 'c' });
      setTimeout(() => result(true), hold);
    }
  });
}

/** One attempt as in `attempts`; resolves when it has an outcome. */
function attemptOnce(host: string, port: number, timeout: number, delayUs: number): Promise<{ connected: boolean; echoed: boolean; code?: string }> {
  return new Promise((resolve) => {
    let connected = false;
    let echoed = false;
    let got = '';
    const sock = net.connect({ host, port, noDelay: true });
    const finish = (code?: string): void => {
      clearTimeout(timer);
      sock.removeAllListeners();
      sock.on('error', () => {});
      sock.destroy();
      resolve({ connected, echoed, ...(code ? { code } : {}) });
    };
    const timer = setTimeout(() => finish('ETIMEDOUT'), timeout);
    sock.on('connect', () => {
      connected = true;
      // Sub-millisecond: a timer cannot wait 0.5 ms, so spin (a test client, one connection at a time).
      const until = performance.now() + delayUs / 1000;
      while (performance.now() < until);
      if (!sock.destroyed) sock.write('ping\n');
    });
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('ping\n')) {
        echoed = true;
        finish();
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? 'UNKNOWN'));
    sock.on('close', () => finish('CLOSED'));
  });
}

async function attempts(a: Args): Promise<void> {
  const host = opt(a, 'host');
  const port = intOpt(a, 'port');
  const count = intOpt(a, 'count', 10);
  const gap = intOpt(a, 'gap', 300);
  const timeout = intOpt(a, 'timeout', 300);
  const delayUs = intOpt(a, 'delay-us', 0);
  for (let i = 0; i < count; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, gap));
    emit({ ev: 'attempt', attempt: i, ...(await attemptOnce(host, port, timeout, delayUs)) });
  }
  emit({ ev: 'done' });
  setImmediate(() => process.exit(0));
}

function main(): void {
  const a = parseArgs(process.argv.slice(2));
  process.on('SIGTERM', () => process.exit(0));
  switch (a.cmd) {
    case 'server':
      return server(a);
    case 'client':
      return client(a);
    case 'connect':
      return connectOnce(a);
    case 'attempts':
      void attempts(a);
      return;
    default:
      fail(`unknown command ${a.cmd}`);
  }
}

main();
