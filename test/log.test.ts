/** The daemon's logger (src/daemon/log.ts): journald priorities, a congested stdout, and the level (config logLevel, --log-level) taking effect in the real daemon. */
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { prefixPriority, syslogPriority, stdoutIsJournal } from '../src/daemon/log.js';
import { startDaemon } from '../testkit/daemon.js';
import { sleep } from '../testkit/time.js';

test('journald priority prefix follows the pino level', (t) => {
  t.is(syslogPriority(60), 2);
  t.is(syslogPriority(50), 3);
  t.is(syslogPriority(40), 4);
  t.is(syslogPriority(30), 6);
  t.is(syslogPriority(20), 7);
  t.is(syslogPriority(10), 7);
  t.is(prefixPriority('{"level":40,"msg":"x"}\n'), '<4>{"level":40,"msg":"x"}\n');
  t.is(prefixPriority('{"level":50,"time":1}\n').slice(0, 3), '<3>');
  t.false(stdoutIsJournal({}));
  t.false(stdoutIsJournal({ JOURNAL_STREAM: '1:1' }), 'a stale JOURNAL_STREAM (another stream) is not ours');
});


test('the logger never stalls the event loop on a congested stdout, loses nothing it can buffer, and flush() writes the rest at exit', async (t) => {
  // Regression: synchronous pino on Node's non-blocking stdout pipe hit EAGAIN when the reader
  // lagged, and sonic-boom then slept 100 ms per retry with the whole thread (stalls of 100-300 ms
  // in the control fuzz). The child logs 20,000 lines (~2.6 MB) into a pipe nobody reads yet.
  const { spawn } = await import('node:child_process');
  const logModule = new URL('../src/daemon/log.js', import.meta.url).href;
  const script = `
    // What the stall was: sonic-boom blocking the thread in Atomics.wait between retries. Counted
    // exactly; the gap is logged only (a loaded CI machine preempts for 100-200 ms).
    let waits = 0;
    const wait = Atomics.wait;
    Atomics.wait = (...a) => { waits++; return wait(...a); };
    const { createLogger } = await import(${JSON.stringify(logModule)});
    process.stdout; // as in the daemon: Node makes the stdout pipe non-blocking
    const { logger, flush } = createLogger({ level: 'info' });
    let worstGap = 0, last = performance.now();
    const tick = setInterval(() => { const now = performance.now(); worstGap = Math.max(worstGap, now - last); last = now; }, 1);
    const t0 = performance.now();
    for (let i = 0; i < 20000; i++) {
      logger.info({ i, pad: 'x'.repeat(64) }, 'line');
      if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
    }
    const loggingMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 200));
    clearInterval(tick);
    process.stderr.write(JSON.stringify({ loggingMs, worstGap, waits }) + '\\n');
    logger.info({}, 'bye');
    flush();
    process.exit(0);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdout.pause(); // congested: not read until the child has finished logging
  while (!err.includes('\n') && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stdout.resume();
  const code = await new Promise<number | null>((ok) => child.once('close', ok));
  t.is(code, 0, err);
  const m = JSON.parse(err.split('\n')[0]) as { loggingMs: number; worstGap: number; waits: number };
  t.is(m.waits, 0, 'the thread never blocked in Atomics.wait while logging');
  // Timings are measured, not asserted: on two shared cores a gap bound measured the neighbours
  // (it was loosened from 90 to 500 ms after flaky runs); the exact witness is the count above.
  t.log(`20,000 lines logged in ${m.loggingMs.toFixed(0)} ms; worst event-loop gap ${m.worstGap.toFixed(1)} ms`);
  const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { i?: number; msg: string });
  const missing = [...Array(20000).keys()].filter((i) => !lines.some((l) => l.i === i));
  t.is(lines.length, 20001, `every line arrives; missing ${missing.length}: ${missing.slice(0, 5)}..${missing.slice(-3)}; last ${JSON.stringify(lines.at(-1))}`);
  t.true(lines.slice(0, 20000).every((l, i) => l.i === i), 'in order');
  t.is(lines.at(-1)!.msg, 'bye', 'flush() at exit wrote the last line');
});

test('the log level takes effect: logLevel "warn" from the config hides info and debug lines from the start (an error still shows); --log-level debug beats the file (the read-only requests appear)', async (t) => {
  const d = await startDaemon({ config: { logLevel: 'warn' }, waitReady: false });
  t.teardown(() => d.stop());
  // No "tcpresetd ready" line at warn: the socket answering is the sign of life.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await d.request({ v: 1, op: 'version' }).catch(() => null);
    if (r?.ok) break;
    if (Date.now() > deadline || d.exit) return t.fail(`daemon not answering: ${JSON.stringify(d.exit)} ${d.stderr}`);
    await sleep(50);
  }
  t.true((await d.request({ v: 1, op: 'list' })).ok);
  const refused = await d.request({ v: 1, op: 'create', engid: 'e', sniffIf: 'nosuch0', resetIf: 'nosuch1', host: '198.51.100.9', duration: 10 });
  t.is(refused.error?.code, 'E_IFACE', 'a refusal, which is logged at info');
  // The positive control: an error is still logged at warn.
  writeFileSync(join(d.dir, 'config.json'), '{"logLevel": "warn", "maxJobs": 0}');
  d.child.kill('SIGHUP');
  const err = await d.waitLog((l) => /^configuration reload refused/.test(l.msg ?? ''), 10_000, 'the refused reload');
  t.is(err.level, 50);
  t.deepEqual(await d.stop(), { code: 0, signal: null });
  // Every line is in now (the process has exited): none below warn.
  t.deepEqual(d.logs.filter((l) => l.level < 40).map((l) => l.msg), [], 'no info or debug line at level warn');

  const d2 = await startDaemon({ config: { logLevel: 'warn' }, args: ['--log-level', 'debug'] }); // its ready line (info) shows
  t.teardown(() => d2.stop());
  t.true((await d2.request({ v: 1, op: 'list', id: 'dbg' })).ok);
  const line = await d2.waitLog((l) => l.msg === 'request' && l.reqId === 'dbg', 10_000, 'the list request at debug');
  t.is(line.level, 20);
  t.is(line.op, 'list');
});
