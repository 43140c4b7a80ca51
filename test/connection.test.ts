/**
 * src/daemon/connection.ts on real Unix stream sockets, without the daemon:
 * a server that wraps each accepted socket in a Connection whose handler
 * the test controls, so the order of completion, the size of a line and
 * the time a request takes are chosen exactly. The daemon's own behaviour
 * over the same code is test/protocol.test.ts.
 */
import test from 'ava';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection, type ConnectionContext, type Peer } from '../src/daemon/connection.js';
import { MAX_LINE_BYTES } from '../src/control/protocol.js';
import type { LogSink } from '../src/core/model.js';

interface Harness {
  path: string;
  logs: { level: string; msg: string; obj: object }[];
  requests: number;
  close: () => Promise<void>;
}

/** A server at a fresh socket path; `handle` answers each line. */
async function serve(handle: ConnectionContext['handle'], idleTimeoutMs = 10_000): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-conn-'));
  const path = join(dir, 'c.sock');
  const logs: Harness['logs'] = [];
  const at = (level: string) => (obj: object, msg = ''): void => void logs.push({ level, msg, obj });
  const log: LogSink = { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') };
  const peer: Peer = { pid: null, uid: null, gid: null };
  const sockets = new Set<net.Socket>();
  const h: Harness = {
    path,
    logs,
    requests: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    new Connection(s, peer, { log, idleTimeoutMs, handle, countRequest: () => void h.requests++ });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return h;
}

/** Everything the server sends until it closes, as lines; and whether it ended cleanly (FIN) or not. */
function readAll(c: net.Socket): Promise<{ lines: string[]; ended: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    let ended = false;
    c.setEncoding('utf8');
    c.on('data', (d: string) => (text += d));
    c.on('end', () => {
      ended = true;
      c.end();
    });
    c.on('error', () => {});
    c.on('close', () => resolve({ lines: text.split('\n').filter((l) => l !== ''), ended }));
  });
}

function connect(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection({ path, allowHalfOpen: true });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

/** Resolves when `pred` holds, checked every 5 ms; rejects after `ms` (a broken test, not a slow machine). */
async function until(pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('answers go out in request order even when the handlers finish in reverse order', async (t) => {
  const pending: { line: string; resolve: (o: object) => void }[] = [];
  const finished: string[] = [];
  const h = await serve((line) => new Promise((resolve) => {
    pending.push({ line, resolve: (o) => { finished.push(line); resolve(o); } });
  }));
  const c = await connect(h.path);
  const got = readAll(c);
  c.end('a\nb\nc\nd\ne\n');
  // Every line is started while the earlier ones are still unanswered.
  await until(() => pending.length === 5);
  t.deepEqual(pending.map((p) => p.line), ['a', 'b', 'c', 'd', 'e']);
  for (const p of [...pending].reverse()) p.resolve({ answer: p.line });
  const { lines, ended } = await got;
  t.deepEqual(finished, ['e', 'd', 'c', 'b', 'a'], 'positive control: completion really was reversed');
  t.deepEqual(lines.map((l) => (JSON.parse(l) as { answer: string }).answer), ['a', 'b', 'c', 'd', 'e']);
  t.true(ended, 'the client half-closed, so the server closes its side once all are answered');
  await h.close();
});

test('a line of exactly MAX_LINE_BYTES is read whole; one byte more gets E_PROTOCOL after the earlier answers, then the close', async (t) => {
  const seen: number[] = [];
  const h = await serve((line) => {
    seen.push(Buffer.byteLength(line));
    return Promise.resolve({ bytes: Buffer.byteLength(line) });
  });

  const ok = await connect(h.path);
  const okGot = readAll(ok);
  // Sent in pieces, so the line is assembled from several reads.
  const full = 'x'.repeat(MAX_LINE_BYTES);
  ok.write(full.slice(0, 1000));
  ok.write(full.slice(1000, 40_000));
  ok.end(`${full.slice(40_000)}\n`);
  const okRes = await okGot;
  t.deepEqual(okRes.lines.map((l) => JSON.parse(l) as unknown), [{ bytes: MAX_LINE_BYTES }]);
  t.deepEqual(seen, [MAX_LINE_BYTES]);

  const big = await connect(h.path);
  const bigGot = readAll(big);
  big.write('first\n');
  big.write(`${'y'.repeat(MAX_LINE_BYTES + 1)}\nnever\n`);
  const bigRes = await bigGot;
  t.is(bigRes.lines.length, 2, bigRes.lines.join('\n').slice(0, 300));
  t.deepEqual(JSON.parse(bigRes.lines[0]), { bytes: 5 });
  const err = JSON.parse(bigRes.lines[1]) as { ok: boolean; error: { code: string } };
  t.is(err.ok, false);
  t.is(err.error.code, 'E_PROTOCOL');
  t.deepEqual(seen, [MAX_LINE_BYTES, 5], 'the oversize line and what follows it are never handled');
  t.is(h.requests, 1, 'the oversize line counts as a request');
  t.true(h.logs.some((l) => l.level === 'warn' && l.msg === 'request line too long: closing the connection'));
  big.destroy();
  await h.close();
});

test('idle timeout: half a line then silence is dropped; a request slower than the timeout is not the client\'s idleness and is answered', async (t) => {
  const IDLE = 150;
  const h = await serve((line) => new Promise((resolve) => setTimeout(() => resolve({ line }), IDLE * 4)), IDLE);

  const stalled = await connect(h.path);
  const stalledGot = readAll(stalled);
  stalled.write('{"op":"ver');
  const s = await stalledGot;
  t.deepEqual(s.lines, [], 'nothing is answered for half a line');
  const warn = h.logs.find((l) => l.msg === 'client sent part of a line and stalled: dropped');
  t.truthy(warn);
  t.is((warn!.obj as { partialBytes: number }).partialBytes, 10);

  // Positive control: the same timeout does not cut a client waiting for its answer.
  const waiting = await connect(h.path);
  const waitingGot = readAll(waiting);
  waiting.write('slow\n');
  const w = await waitingGot;
  // The answer came (a connection cut as idle meanwhile would have none); then the client went idle and was dropped.
  t.deepEqual(w.lines.map((l) => JSON.parse(l) as unknown), [{ line: 'slow' }]);
  t.true(h.logs.some((l) => l.msg === 'idle client dropped'));
  await h.close();
});
