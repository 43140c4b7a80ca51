/**
 * The control-socket fuzzer, run as its own process by fuzz-control.stress.ts
 * (so its CPU use does not distort the latency the test measures, and the
 * daemon sees a peer pid other than the test's):
 *
 *   node control-fuzzer.js '{"socket":..., "lines":N, "slow":N, "minMs":N, "seed":N, ...}'
 *
 * Sends random bytes, invalid UTF-8, deeply nested and huge JSON, wrong
 * types, JSON oddities and mutated valid requests over several connections
 * at once, each batch in random chunks; holds `slow` half-open connections
 * (silent, half a line, or trickling a byte at a time) and a few that
 * pipeline requests without reading. Checks every answer it gets (one per
 * line, valid JSON, a client error code, never E_INTERNAL) and prints one
 * JSON summary line on stdout.
 */
import net from 'node:net';
import { sleep } from '../../testkit/time.js';
import { Rng } from '../../testkit/rng.js';

/** The protocol's line limit (src/control/protocol.ts MAX_LINE_BYTES), restated: the fuzzer judges the daemon by it. */
const MAX_LINE_BYTES = 65_536;

interface Options {
  socket: string;
  /** Fuzz lines to send in total. */
  lines: number;
  /** Half-open slow connections to hold. */
  slow: number;
  /** Connections that pipeline requests and never read. */
  nonReaders: number;
  /** Run at least this long (so slow clients meet the idle timeout). */
  minMs: number;
  seed: number;
  workers: number;
  /** Interface names the fuzz templates use (must not exist: no job may be created). */
  fakeIf: [string, string];
}

const opts = JSON.parse(process.argv[2]) as Options;
const r = new Rng(opts.seed);

/** Codes a client mistake may earn. E_INTERNAL (a bug) or anything else is a failure. */
const CLIENT_CODES = new Set(['E_PROTOCOL', 'E_USAGE', 'E_INVALID', 'E_NOT_FOUND', 'E_IFACE', 'E_PROTECTED', 'E_LIMIT']);

const summary = {
  pid: process.pid,
  seed: opts.seed,
  linesSent: 0,
  bytesSent: 0,
  responses: 0,
  byCode: {} as Record<string, number>,
  byKind: {} as Record<string, number>,
  okAnswers: 0,
  batches: 0,
  oversize: { sent: 0, answeredAndClosed: 0 },
  failures: [] as string[],
  slow: { opened: 0, connectErrors: 0, droppedByDaemon: 0, stillOpen: 0, trickle: 0, trickleAnswered: 0, trickleEvicted: 0, limitRefused: 0 },
  nonReaders: { opened: 0, requestsWritten: 0, droppedByDaemon: 0 },
  elapsedMs: 0,
};

function failure(msg: string): void {
  if (summary.failures.length < 20) summary.failures.push(msg.slice(0, 400));
  else summary.failures.push('');
}

// ---------------------------------------------------------------- fuzz lines

const enc = (s: string): Buffer => Buffer.from(s, 'utf8');

function template(): Record<string, unknown> {
  const [sn, rs] = opts.fakeIf;
  switch (r.int(5)) {
    case 0: return { v: 1, op: 'create', engid: 'FUZZ', sniffIf: sn, resetIf: rs, host: '198.18.0.9', duration: 60, port: 443, mode: 'l3' };
    case 1: return { v: 1, op: 'cancel', jobId: 'fuzz0000' };
    case 2: return { v: 1, op: 'cancel', engid: 'FUZZ', sniffIf: sn, host: '198.18.0.9', port: 22 };
    case 3: return { v: 1, op: r.pick(['list', 'status', 'version']), id: r.int(1000) };
    default: return { v: 1, op: 'create', engid: 'FUZZ', sniffIf: sn, resetIf: rs, host: '2001:db8:f::9', duration: 5 };
  }
}

const WRONG: unknown[] = [null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, '', 'x', ' ', '\u0000', '\ud800', '😀', [], {}, [1], { a: 1 }, 'l3 ', 'L3', '0x50', '80', '1e3', -0];

function deepJson(depth: number, obj: boolean): string {
  return obj ? `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}` : `${'['.repeat(depth)}${']'.repeat(depth)}`;
}

/** One fuzz line (without its '\n'; random-bytes lines may contain more newlines). */
function fuzzLine(kind: string): Buffer {
  switch (kind) {
    case 'random-bytes':
      return Buffer.from(r.bytes(r.range(0, 300)));
    case 'invalid-utf8': {
      const text = JSON.stringify(template());
      const bad = r.pick([[0xff], [0xfe, 0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80], [0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]]);
      const at = r.int(text.length + 1);
      return Buffer.concat([enc(text.slice(0, at)), Buffer.from(bad), enc(text.slice(at))]);
    }
    case 'deep': {
      const depth = r.pick([100, 1000, 5000, 12000, 20000, 30000]);
      const obj = r.chance(0.3) && depth <= 10000;
      const d = deepJson(depth, obj);
      const t = template();
      const field = r.pick(['whole', 'v', 'op', 'id', 'mode', 'port', 'engid', 'host', 'extra', 'duration']);
      if (field === 'whole') return enc(d);
      const s = JSON.stringify({ ...t, [field]: '@@' });
      return enc(s.replace('"@@"', d));
    }
    case 'huge': {
      const t = template();
      const n = r.range(20_000, 60_000);
      const v = r.pick([
        () => JSON.stringify({ ...t, id: 'i'.repeat(n) }),
        () => JSON.stringify({ ...t, engid: 'e'.repeat(n) }),
        () => JSON.stringify({ ...t, host: '1'.repeat(n) }),
        () => JSON.stringify({ ...t, extra: Array.from({ length: n / 6 }, (_, i) => i) }),
        () => JSON.stringify(Object.fromEntries(Array.from({ length: n / 12 }, (_, i) => [`k${i}`, i]))),
        () => JSON.stringify({ ...t, engid: '\u0000'.repeat(n / 6) }),
        () => JSON.stringify({ ...t, mode: '\\'.repeat(n / 2) }),
      ])();
      return enc(v.slice(0, 65_536));
    }
    case 'wrong-type': {
      const t = template();
      const keys = [...Object.keys(t), 'v', 'id', 'op', 'jobId', 'port', 'mode', 'extra'];
      for (let k = r.range(1, 2); k > 0; k--) t[r.pick(keys)] = r.pick(WRONG);
      return enc(JSON.stringify(t));
    }
    case 'json-oddity':
      return enc(r.pick([
        '{"v":1,"v":2,"op":"list"}',
        '{"v":1,"op":"list","op":"create"}',
        '{"__proto__":{"op":"create"},"v":1,"op":"list"}',
        '{"v":1,"op":"list","constructor":{"prototype":{"x":1}}}',
        '{"v":1,"op":"list","id":1e999}',
        '{"v":1,"op":"list","id":-0}',
        '{"v":1,"op":"list","id":NaN}',
        '\ufeff{"v":1,"op":"list"}',
        '{"v":1,"op":"list",}',
        '{"v":1,"op":"list"} // comment',
        '{"v":1,"op":"list"}\r',
        '{"v":1,"op":"list"}{"v":1,"op":"list"}',
        "{'v':1,'op':'list'}",
        '{"v":1.0,"op":"version"}',
        '{"v":true,"op":"version"}',
        '{"v":1,"op":"VERSION"}',
        '{"v":1,"op":"version\\u0000"}',
        '"just a string"',
        '12345',
        'null',
        '{}',
        ' '.repeat(r.range(1, 1000)),
        '\t\t{"v":1,"op":"version"}\t',
        '{"v":1,"op":"cancel","jobId":"../../etc/passwd"}',
        '{"v":1,"op":"cancel","jobId":"$(reboot)"}',
        '{"v":1,"op":"create","engid":"a;rm -rf /","sniffIf":"eth0;ls","resetIf":"`id`","host":"1.2.3.4","duration":1}',
      ]));
    default: {
      // A valid request with a few bytes changed.
      const b = enc(JSON.stringify(template()));
      for (let k = r.range(1, 3); k > 0; k--) b[r.int(b.length)] = r.chance(0.5) ? r.int(256) : r.pick([0x22, 0x2c, 0x3a, 0x7b, 0x7d, 0x5b, 0x5d, 0x5c, 0x30]);
      return b;
    }
  }
}

const KINDS = ['random-bytes', 'invalid-utf8', 'deep', 'huge', 'wrong-type', 'wrong-type', 'json-oddity', 'mutated', 'mutated'];

/** Send `data` in random chunks, half-close, collect every answer line until the daemon closes. */
function exchange(data: Buffer, timeoutMs = 30_000): Promise<{ lines: string[]; closedByPeer: boolean; error?: string }> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: opts.socket });
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (closedByPeer: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      const text = Buffer.concat(chunks).toString('utf8');
      resolve({ lines: text.split('\n').filter((l) => l !== ''), closedByPeer, error });
    };
    const timer = setTimeout(() => done(false, `no close within ${timeoutMs} ms`), timeoutMs);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => done(true));
    s.on('close', () => done(true));
    s.on('error', (err: NodeJS.ErrnoException) => {
      // EPIPE/ECONNRESET after an oversize line: the daemon closed while we still wrote.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') return;
      done(false, err.code ?? err.message);
    });
    s.on('connect', () => {
      let off = 0;
      while (off < data.length) {
        const n = Math.min(data.length - off, r.chance(0.3) ? r.range(1, 16) : r.range(64, 65536));
        s.write(data.subarray(off, off + n));
        off += n;
      }
      s.end();
    });
  });
}

function checkAnswer(line: string, kind: string): void {
  summary.responses++;
  let resp: { v?: unknown; ok?: unknown; error?: { code?: unknown; message?: unknown }; result?: unknown };
  try {
    resp = JSON.parse(line) as typeof resp;
  } catch {
    return failure(`${kind}: answer is not JSON: ${line.slice(0, 200)}`);
  }
  if (resp.v !== 1 || typeof resp.ok !== 'boolean') return failure(`${kind}: answer without v/ok: ${line.slice(0, 200)}`);
  if (resp.ok) {
    summary.okAnswers++;
    return;
  }
  const code = String(resp.error?.code);
  summary.byCode[code] = (summary.byCode[code] ?? 0) + 1;
  if (!CLIENT_CODES.has(code)) failure(`${kind}: ${code}: ${String(resp.error?.message).slice(0, 300)}`);
  if (typeof resp.error?.message !== 'string' || resp.error.message === '') failure(`${kind}: error without a message`);
}

async function fuzzWorker(quota: number): Promise<void> {
  let sent = 0;
  while (sent < quota) {
    // A batch: a few lines on one connection; sometimes one ends over the size limit.
    const n = Math.min(quota - sent, r.range(1, 40));
    const parts: Buffer[] = [];
    const kinds: string[] = [];
    for (let i = 0; i < n; i++) {
      const kind = r.pick(KINDS);
      const line = fuzzLine(kind);
      summary.byKind[kind] = (summary.byKind[kind] ?? 0) + 1;
      parts.push(line, Buffer.of(0x0a));
      kinds.push(kind);
    }
    if (r.chance(0.03)) parts.push(Buffer.alloc(r.pick([65_537, 70_000, 300_000, 1_100_000]), 0x61), Buffer.from('\n{"v":1,"op":"version"}\n'));
    const data = Buffer.concat(parts);
    // What the protocol promises for these bytes: one answer per complete line, up to and
    // including the first line over the limit (answered E_PROTOCOL, then the connection closes).
    let want = 0;
    let oversize = false;
    for (let at = 0; ; ) {
      const nl = data.indexOf(0x0a, at);
      const len = (nl < 0 ? data.length : nl) - at;
      if (len > MAX_LINE_BYTES) {
        oversize = true;
        want++;
        break;
      }
      if (nl < 0) break;
      want++;
      at = nl + 1;
    }
    if (oversize) summary.oversize.sent++;
    summary.linesSent += n;
    summary.bytesSent += data.length;
    summary.batches++;
    sent += n;
    const got = await exchange(data);
    if (got.error) failure(`batch of ${n}: ${got.error}`);
    if (got.lines.length !== want) failure(`batch of ${n} (${kinds.join(',')}${oversize ? ',oversize' : ''}): ${got.lines.length} answers for ${want} lines`);
    got.lines.forEach((l, i) => checkAnswer(l, kinds[Math.min(i, kinds.length - 1)]));
    if (oversize) {
      const last = got.lines.at(-1) ?? '';
      if (/"E_PROTOCOL"/.test(last) && /exceeds/.test(last) && got.closedByPeer) summary.oversize.answeredAndClosed++;
      else failure(`oversize line: last answer ${last.slice(0, 200)}`);
    }
  }
}

// ---------------------------------------------------------------- slow and non-reading clients

const slowSockets: { s: net.Socket; kind: string; closed: boolean; answer: string }[] = [];

async function openSlow(): Promise<void> {
  for (let i = 0; i < opts.slow; i++) {
    const kind = r.pick(['silent', 'half-line', 'half-line', 'trickle', 'trickle']);
    if (kind === 'trickle') summary.slow.trickle++;
    const s = net.createConnection({ path: opts.socket });
    const rec = { s, kind, closed: false, answer: '' };
    slowSockets.push(rec);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      rec.answer += d;
      if (/E_LIMIT/.test(d)) summary.slow.limitRefused++;
    });
    s.on('error', () => {});
    s.on('close', () => {
      rec.closed = true;
    });
    s.once('error', () => summary.slow.connectErrors++);
    s.once('connect', () => {
      summary.slow.opened++;
      if (kind === 'half-line') s.write('{"v":1,"op":"ver');
    });
    // Gently: a storm of connects would fill the listen backlog (EAGAIN) for everyone.
    if (i % 50 === 49) await sleep(20);
  }
}

/**
 * Trickling clients send one more byte of a valid request every `everyMs`:
 * never idle long enough to be dropped. Past the last field they send
 * spaces (JSON allows them before the closing brace) until the end.
 */
const TRICKLE_HEAD = '{"v":1,"op":"version","id":"trickle"';
let tricklePos = 0;
let trickleTimer: NodeJS.Timeout | undefined;
function startTrickle(everyMs: number): void {
  trickleTimer = setInterval(() => {
    const ch = tricklePos < TRICKLE_HEAD.length ? TRICKLE_HEAD[tricklePos] : ' ';
    for (const c of slowSockets) if (c.kind === 'trickle' && !c.closed) c.s.write(ch);
    tricklePos++;
  }, everyMs);
}

async function finishTrickle(): Promise<void> {
  if (trickleTimer) clearInterval(trickleTimer);
  // A trickling client is never idle long enough to be dropped; if it is closed, the daemon
  // must have said why: it was the longest idle one when a newcomer needed its place.
  for (const c of slowSockets) {
    if (c.kind !== 'trickle' || !c.closed) continue;
    if (/"E_LIMIT"/.test(c.answer)) summary.slow.trickleEvicted++;
    else failure(`trickling client closed without an E_LIMIT line: ${JSON.stringify(c.answer.slice(0, 200))}`);
  }
  const live = slowSockets.filter((c) => c.kind === 'trickle' && !c.closed);
  // Complete the line: the rest of it, then the newline; exactly one answer must come.
  for (const c of live) c.s.write(`${TRICKLE_HEAD.slice(Math.min(tricklePos, TRICKLE_HEAD.length))}}\n`);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && live.some((c) => !c.answer.includes('\n') && !c.closed)) await sleep(50);
  for (const c of live) {
    if (/"id":"trickle"/.test(c.answer) && /"ok":true/.test(c.answer)) summary.slow.trickleAnswered++;
    else failure(`trickling client: answer ${JSON.stringify(c.answer.slice(0, 200))}${c.closed ? ' (closed)' : ''}`);
  }
}

const nonReaders: net.Socket[] = [];
async function openNonReaders(): Promise<void> {
  for (let i = 0; i < opts.nonReaders; i++) {
    const s = net.createConnection({ path: opts.socket });
    nonReaders.push(s);
    s.on('error', () => {});
    s.on('close', () => summary.nonReaders.droppedByDaemon++);
    await new Promise<void>((ok) => s.once('connect', () => ok()).once('error', () => ok()));
    s.pause(); // never read a byte
    summary.nonReaders.opened++;
    const burst = '{"v":1,"op":"status"}\n'.repeat(2000);
    // Write as long as the kernel takes it; then stop (a well-behaved daemon stops reading).
    const pump = (): void => {
      while (!s.destroyed && s.write(burst)) summary.nonReaders.requestsWritten += 2000;
      if (!s.destroyed) s.once('drain', pump);
    };
    pump();
  }
}

// ---------------------------------------------------------------- main

const t0 = Date.now();
await openSlow();
startTrickle(500);
await openNonReaders();
const per = Math.ceil(opts.lines / opts.workers);
await Promise.all(Array.from({ length: opts.workers }, (_, i) => fuzzWorker(Math.min(per, opts.lines - i * per))));
while (Date.now() - t0 < opts.minMs) await sleep(100);
await finishTrickle();
summary.slow.droppedByDaemon = slowSockets.filter((c) => c.closed).length;
summary.slow.stillOpen = slowSockets.filter((c) => !c.closed).length;
for (const c of slowSockets) c.s.destroy();
for (const s of nonReaders) s.destroy();
summary.elapsedMs = Date.now() - t0;
process.stdout.write(`${JSON.stringify(summary)}\n`);
process.exit(0);
