/**
 * Running the daemon as operators do, through the REAL bin/tcpresetd: the
 * state-directory lock, configuration errors and --test-config, reload on
 * SIGHUP. Nothing here needs root except where marked (ptest: a real job
 * in a namespace).
 */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ptest } from './helpers/privileged.js';
import { sensorNetns, startDaemon } from './helpers/daemon.js';

const tmp = (what: string): string => mkdtempSync(join(tmpdir(), `tcpresetd-ops-${what}-`));

test('state directory lock: a second daemon on another socket but the same --state-dir is refused with one line naming the holder pid (69); it starts once the first is gone', async (t) => {
  const dir = tmp('lock');
  const state = join(dir, 'state');
  const first = await startDaemon({ dir, socket: join(dir, 'a.sock'), stateDir: state });
  t.teardown(() => first.stop());
  t.is(readFileSync(join(state, 'tcpresetd.lock'), 'utf8'), `${first.pid}\n`, 'the lock file names its holder');

  // Positive control: the same second daemon with its own state directory starts.
  const other = await startDaemon({ dir, socket: join(dir, 'b.sock'), stateDir: join(dir, 'state-b') });
  t.true((await other.request({ v: 1, op: 'version' })).ok);
  t.deepEqual(await other.stop(), { code: 0, signal: null });

  const second = await startDaemon({ dir, socket: join(dir, 'b.sock'), stateDir: state, waitReady: false });
  const ex = await second.wait();
  t.is(ex.code, 69);
  const lines = second.stderr.split('\n').filter(Boolean);
  t.is(lines.length, 1, second.stderr);
  t.is(lines[0], `tcpresetd: cannot start: state directory ${state} is in use by tcpresetd pid ${first.pid} (lock ${join(state, 'tcpresetd.lock')}); give each daemon its own --state-dir`);
  t.false(existsSync(join(dir, 'b.sock')), 'the refused daemon never listened');
  t.false(existsSync(join(state, 'jobs.json')), 'the refused daemon wrote no jobs.json over the holder\'s');
  t.true((await first.request({ v: 1, op: 'version' })).ok, 'the holder still serves');

  t.deepEqual(await first.stop(), { code: 0, signal: null });
  const third = await startDaemon({ dir, socket: join(dir, 'b.sock'), stateDir: state });
  t.is(readFileSync(join(state, 'tcpresetd.lock'), 'utf8'), `${third.pid}\n`, 'the lock is free once its holder exits');
  t.deepEqual(await third.stop(), { code: 0, signal: null });
});

test('state directory lock: a holder killed with SIGKILL leaves no stale lock', async (t) => {
  const dir = tmp('lockkill');
  const state = join(dir, 'state');
  const first = await startDaemon({ dir, socket: join(dir, 'a.sock'), stateDir: state });
  t.deepEqual(await first.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });
  t.is(readFileSync(join(state, 'tcpresetd.lock'), 'utf8'), `${first.pid}\n`, 'the file stays (never unlinked) with the dead pid');
  const next = await startDaemon({ dir, socket: join(dir, 'b.sock'), stateDir: state });
  t.is(readFileSync(join(state, 'tcpresetd.lock'), 'utf8'), `${next.pid}\n`);
  t.deepEqual(await next.stop(), { code: 0, signal: null });
});

ptest('state directory lock: the holder\'s saved job survives a refused second daemon', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('lockjob');
  const state = join(dir, 'state');
  const first = await startDaemon({ dir, socket: join(dir, 'a.sock'), stateDir: state, netns: ns });
  t.teardown(() => first.stop());
  const r = await first.request({ v: 1, op: 'create', engid: 'e1', sniffIf: 'sniff0', resetIf: 'reset0', host: '198.51.100.7', duration: 60 });
  t.true(r.ok, JSON.stringify(r));
  const saved = readFileSync(join(state, 'jobs.json'), 'utf8');
  t.true(saved.includes(r.result.job.id));
  const mtime = statSync(join(state, 'jobs.json')).mtimeMs;

  const second = await startDaemon({ dir, socket: join(dir, 'b.sock'), stateDir: state, netns: ns, waitReady: false });
  t.is((await second.wait()).code, 69);
  t.is(readFileSync(join(state, 'jobs.json'), 'utf8'), saved, 'jobs.json untouched');
  t.is(statSync(join(state, 'jobs.json')).mtimeMs, mtime);
  t.is((await first.request({ v: 1, op: 'list' })).result.jobs.length, 1);
});

