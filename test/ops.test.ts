/**
 * Running the daemon as operators do, through the REAL bin/tcpresetd: the
 * state-directory lock, configuration errors and --test-config, reload on
 * SIGHUP. Nothing here needs root except where marked (ptest: a real job
 * in a namespace).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, ptest } from './helpers/privileged.js';
import { decodeState } from '../src/daemon/state.js';
import { encodeJournalEntry, fieldName } from '../src/daemon/journal.js';
import http from 'node:http';
import net from 'node:net';
import { createLab } from '../testkit/lab/lab.js';
import { History } from '../src/daemon/history.js';
import { connectOnce, connectOutcome, startServer } from '../testkit/lab/peer-control.js';
import { CLI_BIN, DAEMON_BIN, connect, readUntilClose, sendLines, sensorNetns, startDaemon, worldReadableBuild, type DaemonProc } from '../testkit/daemon.js';
import { sleep } from '../testkit/time.js';
import { idleSession, setupWatched } from './helpers/service-lab.js';

const pserial: typeof test.serial = isRoot || process.env.CI ? test.serial : (test.skip as unknown as typeof test.serial);
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
  const r = await first.request({ v: 1, op: 'create', engid: 'e1', sniffIf: 'sniff0', resetIf: 'reset0', host: '198.51.100.7', duration: 60 }, 30_000);
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


// ---------------------------------------------------------------- configuration errors, --test-config

interface Ran { status: number | null; stdout: string; stderr: string }

/**
 * Run a command to completion without blocking this process: spawnSync
 * would stall every test of the file meanwhile, and a daemon with a short
 * idle timeout then drops their connections (EPIPE) on a loaded machine.
 */
function run(cmd: string, args: string[], as: { uid?: number; gid?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...as });
    let stdout = '';
    let stderr = '';
    c.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** bin/tcpresetd to completion (for --test-config and refusals). */
const daemonSync = (args: string[]): Promise<Ran> => run(process.execPath, [DAEMON_BIN, ...args]);

test('a bad config value: exit 78, one stderr line naming the file, key and value; the log line has no stack and says it once', async (t) => {
  const d = await startDaemon({ config: { maxJobs: 5, defaultMode: 'l4' }, waitReady: false });
  t.is((await d.wait()).code, 78);
  const cfg = `${d.dir}/config.json`;
  t.is(d.stderr, `tcpresetd: refusing to start: config ${cfg}: defaultMode "l4": must be "l3" or "l2"\n`);
  const fatal = d.logs.filter((l) => l.level === 60);
  t.is(fatal.length, 1);
  t.is(fatal[0].msg, `refusing to start: config ${cfg}: defaultMode "l4": must be "l3" or "l2"`);
  t.deepEqual(fatal[0].details, { file: cfg, key: 'defaultMode', value: 'l4' });
  t.is(fatal[0].code, 'E_CONFIG');
  const raw = d.rawLines.join('\n');
  t.false(raw.includes('stack'), 'no stack trace');
  t.is(raw.split('must be').length - 1, 1, 'the reason appears once');
  t.is(d.logs.length, 1, 'nothing else was logged');
});

test('under journald a refusal is one log record (priority crit) and nothing on stderr', async (t) => {
  const dir = tmp('jcfg');
  writeFileSync(join(dir, 'c.json'), '{"maxJobs": 0}');
  const child = spawn('sh', ['-c', 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/1) exec "$0" "$@"', process.execPath, DAEMON_BIN,
    '--socket', join(dir, 's.sock'), '--state-dir', join(dir, 'st'), '--config', join(dir, 'c.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const code = await new Promise((r) => child.once('close', r));
  t.is(code, 78);
  t.is(err, '');
  const lines = out.split('\n').filter(Boolean);
  t.is(lines.length, 1, out);
  t.regex(lines[0], /^<2>\{"level":60,.*"msg":"refusing to start: config .*c\.json: maxJobs 0: must be an integer 1\.\.131072"\}$/);
});

test('an empty config file means defaults (logged as such); a non-empty one still applies', async (t) => {
  const dir = tmp('empty');
  writeFileSync(join(dir, 'empty.json'), '\n  \n');
  const d = await startDaemon({ dir, args: ['--config', join(dir, 'empty.json')] });
  const line = d.logs.find((l) => l.msg === 'configuration file is empty: defaults apply');
  t.truthy(line);
  t.is((line!.settings as { maxJobs: number }).maxJobs, 1024);
  t.deepEqual(await d.stop(), { code: 0, signal: null });
  // Positive control: the same path with content is applied.
  writeFileSync(join(dir, 'empty.json'), '{"maxJobs": 7}');
  const d2 = await startDaemon({ dir, args: ['--config', join(dir, 'empty.json')] });
  t.is((d2.logs.find((l) => l.msg === 'configuration loaded')!.settings as { maxJobs: number }).maxJobs, 7);
  t.deepEqual(await d2.stop(), { code: 0, signal: null });
});

test('--test-config: 0 and one line for a valid or empty file; 78 and one stderr line naming file, key and value (or JSON line and column); nothing started', async (t) => {
  const dir = tmp('testcfg');
  const f = (name: string, text: string): string => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  const side = ['--socket', join(dir, 's.sock'), '--state-dir', join(dir, 'st')];
  const good = await daemonSync(['--test-config', '--config', f('good.json', '{"maxJobs": 3, "protected": ["10.0.0.0/8"]}'), ...side]);
  t.deepEqual(good, { status: 0, stdout: `tcpresetd: config ${dir}/good.json: valid\n`, stderr: '' });
  const empty = await daemonSync(['--test-config', '--config', f('empty.json', ''), ...side]);
  t.deepEqual(empty, { status: 0, stdout: `tcpresetd: config ${dir}/empty.json: valid (empty: defaults apply)\n`, stderr: '' });
  const bad = await daemonSync(['--test-config', '--config', f('bad.json', '{"maxJobs": 3, "protected": ["10.0.0.0/8", "300.1.1.1"]}'), ...side]);
  t.is(bad.status, 78);
  t.is(bad.stdout, '');
  t.regex(bad.stderr, new RegExp(`^tcpresetd: config ${dir}/bad\\.json: protected\\[1\\] "300\\.1\\.1\\.1": [^\\n]+\\n$`));
  const unknown = await daemonSync(['--test-config', '--config', f('unknown.json', '{"maxjobs": 3}'), ...side]);
  t.is(unknown.status, 78);
  t.regex(unknown.stderr, /^tcpresetd: config .*unknown\.json: maxjobs 3: unknown key \(known: maxJobs, [^\n]*\n$/);
  const syntax = await daemonSync(['--test-config', '--config', f('syntax.json', '{\n  "maxJobs": 5,,\n  "x": 1}'), ...side]);
  t.is(syntax.status, 78);
  t.regex(syntax.stderr, /^tcpresetd: config .*syntax\.json: not valid JSON: .*\(line 2 column 16\)\n$/);
  const missing = await daemonSync(['--test-config', '--config', join(dir, 'nope.json'), ...side]);
  t.is(missing.status, 78);
  t.regex(missing.stderr, /^tcpresetd: config .*nope\.json: cannot read: ENOENT[^\n]*\n$/);
  t.false(existsSync(join(dir, 's.sock')), 'no socket');
  t.false(existsSync(join(dir, 'st')), 'no state directory');
});

test('--test-config: a key written twice exits 78 naming the key and both lines and columns; the file with it once is valid', async (t) => {
  const dir = tmp('dupcfg');
  const side = ['--socket', join(dir, 's.sock'), '--state-dir', join(dir, 'st')];
  const twice = join(dir, 'twice.json');
  writeFileSync(twice, '{\n  "protected": ["10.0.0.0/8"],\n  "eventThreads": 2,\n  "protected": []\n}\n');
  t.deepEqual(await daemonSync(['--test-config', '--config', twice, ...side]), {
    status: 78,
    stdout: '',
    stderr: `tcpresetd: config ${twice}: duplicate key protected at line 4 column 3 (first at line 2 column 3): JSON would keep only the last value; write the key once\n`,
  });
  // Positive control: the same file with the key once.
  const once = join(dir, 'once.json');
  writeFileSync(once, '{\n  "protected": ["10.0.0.0/8"],\n  "eventThreads": 2\n}\n');
  t.deepEqual(await daemonSync(['--test-config', '--config', once, ...side]), { status: 0, stdout: `tcpresetd: config ${once}: valid\n`, stderr: '' });
  t.false(existsSync(join(dir, 's.sock')), 'no socket');
});

test('an operand: exit 64, the error names it (commander said "too many arguments. Expected 0 arguments but got 1."); nothing started', async (t) => {
  const dir = tmp('operand');
  const side = ['--socket', join(dir, 's.sock'), '--state-dir', join(dir, 'st'), '--config', join(dir, 'none.json')];
  const r = await daemonSync([...side, 'eth1', '--watch', 'eth0', 'x y']);
  t.is(r.status, 64);
  t.is(r.stdout, '');
  t.is(r.stderr.split('\n')[0], 'error: unexpected operands "eth1", "x y": tcpresetd takes options only');
  t.false(existsSync(join(dir, 's.sock')), 'no socket');
  t.false(existsSync(join(dir, 'st')), 'no state directory');
  // Positive control: the same options without the operands reach the configuration check.
  const ok = await daemonSync([...side, '--watch', 'eth0', '--test-config']);
  t.is(ok.status, 78, ok.stderr);
  t.regex(ok.stderr, /none\.json: cannot read: ENOENT/);
});


// ---------------------------------------------------------------- a data plane that cannot load

/** bin/tcpreset to completion, in the daemon's namespace (the CLI itself needs none). */
const cliSync = (args: string[]): Promise<Ran> => run(process.execPath, [CLI_BIN, ...args]);

ptest('bpf() refused to the daemon (CAP_BPF/CAP_SYS_ADMIN dropped): logged at error with libbpf\'s lines, a fault in status, and the CLI exits 69 blaming the daemon, not 77', async (t) => {
  const ns = await sensorNetns(t);
  const create = (sock: string, host: string) => cliSync(['e1', '-i', 'sniff0', '-o', 'reset0', '-h', host, '-d', '30', '--socket', sock]);

  // Positive control: the same daemon with its capabilities creates the job.
  const ok = await startDaemon({ netns: ns });
  t.teardown(() => ok.stop());
  const okIdle = JSON.parse((await cliSync(['status', '--json', '--socket', ok.socket])).stdout);
  t.is(okIdle.dataPlaneFault, undefined, 'with its capabilities: no fault at start (the bpf() start-up check passed)');
  t.is(ok.logs.filter((l) => l.level >= 40).length, 0, JSON.stringify(ok.logs.filter((l) => l.level >= 40)));
  const made = await create(ok.socket, '198.51.100.8');
  t.is(made.status, 0, made.stderr);
  const okStatus = JSON.parse((await cliSync(['status', '--json', '--socket', ok.socket])).stdout);
  t.is(okStatus.dataPlane, 'open');
  t.is(okStatus.dataPlaneFault, undefined);
  await ok.stop();

  // The bounding set is what a root process keeps across exec: without these bpf() is refused.
  const d = await startDaemon({ netns: ns, wrapper: ['setpriv', '--bounding-set=-bpf,-sys_admin,-perfmon', '--'] });
  t.teardown(() => d.stop());
  // Before any job: the start-up check of bpf() (one map create) was refused; the daemon says so and serves.
  const idle = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout);
  t.is(idle.dataPlane, 'fault');
  t.is(idle.dataPlaneFault.step, 'load');
  t.is(idle.dataPlaneFault.failures, 1);
  t.is(idle.dataPlaneFault.message, 'the daemon cannot load its BPF program: bpf(BPF_MAP_CREATE) start-up check failed: Operation not permitted (errno 1)');
  const atStart = d.logs.filter((l) => l.level >= 40);
  t.is(atStart.length, 1, JSON.stringify(atStart));
  t.is(atStart[0]!.msg, idle.dataPlaneFault.message);
  t.true(d.logs.findIndex((l) => l === atStart[0]) < d.logs.findIndex((l) => l.msg === 'tcpresetd ready'), 'said before ready');
  const r = await create(d.socket, '198.51.100.9');
  t.is(r.status, 69, r.stderr);
  t.is(r.stdout, '');
  const lines = r.stderr.split('\n').filter(Boolean);
  t.is(lines.length, 1);
  t.regex(lines[0], /^tcpreset: the daemon cannot load its BPF program: load BPF object \S+tcpreset\.bpf\.o failed: Operation not permitted \(errno 1\) \(a problem of the daemon, not of this request: see the daemon's log\)$/);
  t.notRegex(r.stderr, /permission denied/i);

  const again = await create(d.socket, '198.51.100.9');
  t.is(again.status, 69);
  const st = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout);
  t.is(st.dataPlane, 'fault');
  t.is(st.dataPlaneFault.step, 'load');
  t.is(st.dataPlaneFault.failures, 2);
  t.regex(st.dataPlaneFault.message, /^the daemon cannot load its BPF program: .*Operation not permitted/);
  t.true(st.dataPlaneFault.libbpf.some((l: string) => l.startsWith('libbpf: ')), JSON.stringify(st.dataPlaneFault));
  t.is(st.dataPlaneFailures, 3, 'the start-up check and the two creates');
  const human = await cliSync(['status', '--socket', d.socket]);
  t.regex(human.stdout, /^data plane: FAULT since \S+ \(2 failures\): the daemon cannot load its BPF program: /m);

  // spawnSync held this process's event loop: let the daemon's log lines in (both refusals were logged after their error records).
  await d.waitLog(() => d.logs.filter((x) => x.msg === 'request refused' && x.op === 'create').length >= 2);
  const errors = d.logs.filter((l) => l.level >= 50);
  t.is(errors.length, 2, 'the start-up check\'s record, then one for the creates: the repeat within a minute is at debug');
  t.regex(errors[1].msg!, /^the daemon cannot load its BPF program: load BPF object /);
  t.true((errors[1].libbpf as string[]).length >= 1, 'libbpf\'s reasons are in the error record');
  t.false(d.stderr.includes('libbpf'), `libbpf wrote nothing to stderr (journald would store it at info): ${d.stderr}`);
  t.true(d.logs.filter((l) => JSON.stringify(l).includes('libbpf: ')).every((l) => l.level >= 40 || l.level === 20), 'libbpf lines are at warning or above (or debug repeats)');
});

// ---------------------------------------------------------------- reload (SIGHUP)

/** SIGHUP, then the reload's outcome line (or its refusal). */
async function hup(d: DaemonProc): Promise<Record<string, unknown>> {
  const before = d.logs.length;
  d.child.kill('SIGHUP');
  return d.waitLog((l) => d.logs.indexOf(l) >= before && (l.msg === 'configuration reloaded' || /^configuration reload refused/.test(l.msg ?? '')), 10_000, 'reload outcome');
}

const createReq = (host: string, duration: number) => ({ v: 1, op: 'create', engid: 'e1', sniffIf: 'nosuch0', resetIf: 'nosuch1', host, duration });

test.serial('SIGHUP applies limits, protected, idle timeout and log level at once, names the key needing a restart, keeps connections; a bad file is refused and the old configuration stays', async (t) => {
  const d = await startDaemon({ config: { maxDurationSec: 3600, clientIdleTimeoutMs: 10_000, eventThreads: 1 } });
  t.teardown(() => d.stop());
  const cfg = join(d.dir, 'config.json');
  const held = await connect(d.socket); // a control connection open across the reload
  const ask = (line: object): Promise<{ ok: boolean; error?: { code: string; message: string }; result?: unknown }> => new Promise((resolve) => {
    held.once('data', (b: Buffer) => resolve(JSON.parse(b.toString().split('\n')[0])));
    held.write(`${JSON.stringify(line)}\n`);
  });

  // Before: the duration and host are accepted as far as the (missing) interfaces; refusals are logged at info.
  const pre = await d.request(createReq('203.0.113.5', 100));
  t.is(pre.error?.code, 'E_IFACE', JSON.stringify(pre));
  await d.waitLog((l) => l.msg === 'request refused' && l.error === 'E_IFACE');

  writeFileSync(cfg, JSON.stringify({ maxDurationSec: 50, protected: ['203.0.113.0/24'], clientIdleTimeoutMs: 2000, logLevel: 'warn', eventThreads: 2 }));
  const done = await hup(d);
  t.is(done.msg, 'configuration reloaded');
  t.deepEqual([...(done.applied as string[])].sort(), ['clientIdleTimeoutMs', 'logLevel', 'maxDurationSec', 'protected']);
  t.deepEqual(done.needRestart, ['eventThreads']);
  const restart = d.logs.find((l) => l.key === 'eventThreads');
  t.is(restart?.level, 40);
  t.is(restart?.msg, 'config key eventThreads changed: restart the daemon to apply it (running with 1)');
  t.deepEqual([restart?.from, restart?.to], [1, 2]);
  for (const k of ['maxDurationSec', 'protected', 'clientIdleTimeoutMs', 'logLevel']) {
    t.truthy(d.logs.find((l) => l.key === k && l.level === 30 && l.msg === `config key ${k}: applied`), k);
  }

  const long = await d.request(createReq('198.51.100.5', 100));
  t.is(long.error?.code, 'E_INVALID');
  t.regex(long.error!.message, /exceeds the maximum of 50 s/);
  const prot = await d.request(createReq('203.0.113.5', 10));
  t.is(prot.error?.code, 'E_PROTECTED');
  const idle = await connect(d.socket);
  const t0 = performance.now();
  const closed = await readUntilClose(idle, 5000);
  t.truthy(closed.closedAt, 'a new idle connection is dropped');
  t.true(closed.closedAt! - t0 < 7000, `after the new 2 s timeout, not 10 s (${Math.round(closed.closedAt! - t0)} ms)`);
  const v = await ask({ v: 1, op: 'version', id: 'held' });
  t.true(v.ok, 'the connection opened before the reload still answers');
  const refusedBefore = d.logs.filter((l) => l.msg === 'request refused').length;
  await d.request({ ...createReq('198.51.100.5', 10), id: 'after' });

  // A file that does not validate: refused in one error line, nothing changes.
  writeFileSync(cfg, JSON.stringify({ maxDurationSec: 0 }));
  const refused = await hup(d);
  // Lines come out in order: the refusal of 'after', answered before this SIGHUP, would precede the
  // reload's line (was: a fixed sleep(200), then count).
  t.is(d.logs.filter((l) => l.msg === 'request refused').length, refusedBefore, 'info lines are no longer logged at level warn');
  t.is(refused.level, 50);
  t.is(refused.msg, `configuration reload refused: config ${cfg}: maxDurationSec 0: must be an integer 1..2592000; the running configuration stays`);
  t.false(JSON.stringify(refused).includes('stack'));
  const still = await d.request(createReq('198.51.100.5', 100));
  t.regex(still.error?.message ?? '', /exceeds the maximum of 50 s/, 'the old limit stays');
  t.is((await d.request(createReq('203.0.113.5', 10))).error?.code, 'E_PROTECTED');
  held.destroy();
  t.deepEqual(await d.stop(), { code: 0, signal: null });
});

test.serial('SIGHUP with a key written twice is refused naming it, and the old configuration (its protected list) stays', async (t) => {
  const d = await startDaemon({ config: { maxDurationSec: 3600, protected: ['203.0.113.0/24'] } });
  t.teardown(() => d.stop());
  const cfg = join(d.dir, 'config.json');
  t.is((await d.request(createReq('203.0.113.5', 10))).error?.code, 'E_PROTECTED');
  // JSON.parse alone would load this as protected: [] and maxDurationSec 50.
  writeFileSync(cfg, '{"protected": ["203.0.113.0/24"], "maxDurationSec": 50, "protected": []}');
  const refused = await hup(d);
  t.is(refused.level, 50);
  t.is(refused.msg, `configuration reload refused: config ${cfg}: duplicate key protected at line 1 column 57 (first at line 1 column 2): JSON would keep only the last value; write the key once; the running configuration stays`);
  t.is((await d.request(createReq('203.0.113.5', 10))).error?.code, 'E_PROTECTED', 'still protected');
  t.is((await d.request(createReq('198.51.100.5', 100))).error?.code, 'E_IFACE', 'the old maximum (3600 s) stays');
  // Positive control: the same file with the key once is applied.
  writeFileSync(cfg, '{"protected": ["203.0.113.0/24"], "maxDurationSec": 50}');
  t.is((await hup(d)).msg, 'configuration reloaded');
  t.regex((await d.request(createReq('198.51.100.5', 100))).error?.message ?? '', /exceeds the maximum of 50 s/);
  t.deepEqual(await d.stop(), { code: 0, signal: null });
});

test.serial('a refused reload is a config FAULT in tcpreset status (text and --json) and counted in tcpreset_config_reloads_total until a reload applies', async (t) => {
  const port = await freePort();
  const base = { maxDurationSec: 3600, metricsListen: `127.0.0.1:${port}` };
  const d = await startDaemon({ config: base });
  t.teardown(() => d.stop());
  const cfg = join(d.dir, 'config.json');
  const status = async (): Promise<{ text: string; json: Record<string, any> }> => {
    const text = await cliSync(['status', '--socket', d.socket]);
    const json = await cliSync(['status', '--json', '--socket', d.socket]);
    t.is(text.status, 0, text.stderr);
    t.is(json.status, 0, json.stderr);
    return { text: text.stdout, json: JSON.parse(json.stdout) };
  };
  const reloads = async (): Promise<[number | undefined, number | undefined]> => {
    const m = samples((await get(`http://127.0.0.1:${port}/metrics`)).body);
    return [m.get('tcpreset_config_reloads_total{result="applied"}'), m.get('tcpreset_config_reloads_total{result="refused"}')];
  };

  // At start: no fault, both counts 0 (the series exist before the first reload).
  const start = await status();
  t.deepEqual(start.json.config, { file: cfg, reloads: { applied: 0, refused: 0 } });
  t.false(start.text.includes('config:'), start.text);
  t.deepEqual(await reloads(), [0, 0]);

  writeFileSync(cfg, JSON.stringify({ ...base, maxDurationSec: 0 }));
  const before = Date.now();
  const refused = await hup(d);
  const why = `config ${cfg}: maxDurationSec 0: must be an integer 1..2592000`;
  t.is(refused.msg, `configuration reload refused: ${why}; the running configuration stays`);
  const bad = await status();
  t.deepEqual(bad.json.config, { file: cfg, reloads: { applied: 0, refused: 1 }, fault: { message: why, file: cfg, at: bad.json.config.fault.at } });
  const at = Date.parse(bad.json.config.fault.at);
  t.true(at >= before - 1000 && at <= Date.now(), `refused at ${bad.json.config.fault.at}`);
  t.true(bad.text.split('\n').includes(`config: FAULT reload of ${cfg} refused at ${bad.json.config.fault.at}: ${why}; the running configuration stays`), bad.text);
  t.deepEqual(await reloads(), [0, 1]);
  t.is((await d.request(createReq('198.51.100.5', 100))).error?.code, 'E_IFACE', 'the old maximum (3600 s) is still in force');

  // Positive control: the file fixed (and a new limit in it), the next reload applies and clears the fault.
  writeFileSync(cfg, JSON.stringify({ ...base, maxDurationSec: 50 }));
  t.is((await hup(d)).msg, 'configuration reloaded');
  const good = await status();
  t.deepEqual(good.json.config, { file: cfg, reloads: { applied: 1, refused: 1 } });
  t.false(good.text.includes('config:'), good.text);
  t.deepEqual(await reloads(), [1, 1], 'counters keep their value after the fault clears');
  t.regex((await d.request(createReq('198.51.100.5', 100))).error?.message ?? '', /exceeds the maximum of 50 s/);
  t.deepEqual(await d.stop(), { code: 0, signal: null });
});

test.serial('a reload that finds the config file emptied or gone is refused and protected stays; {} loads the defaults on purpose', async (t) => {
  const d = await startDaemon({ config: { protected: ['203.0.113.0/24'] } });
  t.teardown(() => d.stop());
  const cfg = join(d.dir, 'config.json');
  const protectedNow = async (): Promise<boolean> => (await d.request(createReq('203.0.113.7', 60))).error?.code === 'E_PROTECTED';
  t.true(await protectedNow(), 'protected at start');
  const why = (what: string): string => `config ${cfg}: the file is ${what}; a reload does not fall back to the defaults (that would drop protected networks and limits): restore the file, or write {} to load the defaults on purpose`;
  writeFileSync(cfg, '');
  t.is((await hup(d)).msg, `configuration reload refused: ${why('empty')}; the running configuration stays`);
  t.true(await protectedNow(), 'still protected after a reload of an empty file');
  // Given with --config, as here, a missing file was refused already (at the default path, the unit's,
  // it meant "defaults" and takes the new rule's "gone" branch).
  rmSync(cfg);
  t.is((await hup(d)).msg, `configuration reload refused: config ${cfg}: cannot read: ENOENT: no such file or directory, open '${cfg}'; the running configuration stays`);
  t.true(await protectedNow(), 'still protected after a reload with the file gone');
  const st = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout);
  t.deepEqual(st.config.reloads, { applied: 0, refused: 2 });
  t.is(st.config.fault.message, `config ${cfg}: cannot read: ENOENT: no such file or directory, open '${cfg}'`);
  // Positive control: an explicit {} is a reload to the defaults, and then the host can be targeted.
  writeFileSync(cfg, '{}');
  t.is((await hup(d)).msg, 'configuration reloaded');
  t.is((await d.request(createReq('203.0.113.7', 60))).error?.code, 'E_IFACE', 'no longer protected: the create gets as far as the interfaces');
});

ptest('SIGHUP keeps running jobs (same end time, still enforced) and ends a job whose host the new configuration protects', async (t) => {
  const ns = await sensorNetns(t);
  const d = await startDaemon({ netns: ns, config: { protected: [] } });
  t.teardown(() => d.stop());
  const mk = (host: string) => ({ v: 1, op: 'create', engid: 'e1', sniffIf: 'sniff0', resetIf: 'reset0', host, duration: 120 });
  const [a, b] = await sendLines(d.socket, [JSON.stringify(mk('198.51.100.20')), JSON.stringify(mk('203.0.113.20'))], 30_000);
  t.true(a.ok && b.ok, JSON.stringify([a, b]));
  writeFileSync(join(d.dir, 'config.json'), JSON.stringify({ protected: ['203.0.113.0/24'] }));
  const done = await hup(d);
  t.deepEqual(done.ended, [b.result.job.id]);
  const endLines = d.logs.filter((l) => /^job (ended|cancelled|expired)/.test(l.msg ?? ''));
  t.is(endLines.length, 1, 'one line for the end, not a "job cancelled" beside the reload\'s');
  t.like(endLines[0], { level: 40, msg: 'job ended: the reloaded configuration protects its host', why: 'protected', job: { id: b.result.job.id } });
  // The history and the metrics name the reason, not "cancelled"; positive control: a client's cancel is "cancelled".
  const c = await d.request(mk('198.51.100.21'), 30_000);
  t.true((await d.request({ v: 1, op: 'cancel', jobId: c.result.job.id })).ok);
  const ends = JSON.parse((await cliSync(['history', '--json', '--socket', d.socket])).stdout).records
    .filter((r: { event: string }) => r.event === 'ended').map((r: { how: string; job: { id: string } }) => [r.job.id, r.how]);
  t.deepEqual(ends, [[b.result.job.id, 'protected'], [c.result.job.id, 'cancelled']]);
  const human = (await cliSync(['history', '--socket', d.socket])).stdout.split('\n').filter((l) => l.includes(b.result.job.id)).map((l) => l.split(/\s+/)[1]);
  t.deepEqual(human, ['created', 'protected']);
  const m = samples((await cliSync(['metrics', '--socket', d.socket])).stdout);
  t.deepEqual(['protected', 'cancelled', 'expired'].map((how) => m.get(`tcpreset_jobs_ended_total{how="${how}"}`)), [1, 1, 0]);
  const journal = readFileSync(join(d.stateDir, 'jobs.json'), 'utf8');
  t.true(journal.includes(` {"del":"${b.result.job.id}","why":"protected"}\n`), 'the journal records the reason');
  const jobs = (await d.request({ v: 1, op: 'list' })).result.jobs;
  t.deepEqual(jobs.map((j: { id: string }) => j.id), [a.result.job.id]);
  t.is(jobs[0].expiresAt, a.result.job.expiresAt, 'same end time');
  t.is(jobs[0].fault, undefined);
  const st = (await d.request({ v: 1, op: 'status' })).result;
  t.is(st.targets, 1, 'the kept job is still in the data plane; the ended one is not');
  // The save after a change is asynchronous: poll for it.
  const savedIds = (): string[] => decodeState(readFileSync(join(d.stateDir, 'jobs.json'), 'utf8')).map((j) => j.id);
  for (let i = 0; i < 40 && savedIds().includes(b.result.job.id); i++) await sleep(50);
  t.deepEqual(savedIds(), [a.result.job.id], 'the ended job is gone from the saved jobs');
});

// ---------------------------------------------------------------- logging

test('read-only polls (version, list, status) are logged at debug, changes at info', async (t) => {
  const info = await startDaemon({ config: { logLevel: 'info' } });
  t.teardown(() => info.stop());
  for (const op of ['version', 'list', 'status']) t.true((await info.request({ v: 1, op, id: `${op}-1` })).ok);
  const refused = await info.request({ ...createReq('198.51.100.5', 10), id: 'create-1' });
  t.is(refused.error?.code, 'E_IFACE');
  await info.waitLog((l) => l.reqId === 'create-1' && l.level === 30, 5000, 'the refused create at info');
  t.deepEqual(info.logs.filter((l) => typeof l.reqId === 'string').map((l) => l.reqId), ['create-1'], 'no poll at info');

  // Positive control: at debug the polls are there, at level 20.
  const debug = await startDaemon({ config: { logLevel: 'debug' } });
  t.teardown(() => debug.stop());
  for (const op of ['version', 'list', 'status']) t.true((await debug.request({ v: 1, op, id: `${op}-2` })).ok);
  await debug.waitLog((l) => l.reqId === 'status-2');
  t.deepEqual(debug.logs.filter((l) => typeof l.reqId === 'string').map((l) => [l.reqId, l.level, l.msg]),
    [['version-2', 20, 'request'], ['list-2', 20, 'request'], ['status-2', 20, 'request']]);
});

// ---------------------------------------------------------------- journal native protocol

/** Parse native-protocol datagrams (both the KEY=value and the length-prefixed form). */
function parseJournal(d: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < d.length) {
    const nl = d.indexOf(0x0a, i);
    const eq = d.indexOf(0x3d, i);
    if (eq >= 0 && eq < nl) {
      out[d.subarray(i, eq).toString()] = d.subarray(eq + 1, nl).toString();
      i = nl + 1;
    } else {
      const name = d.subarray(i, nl).toString();
      const len = Number(d.readBigUInt64LE(nl + 1));
      out[name] = d.subarray(nl + 9, nl + 9 + len).toString();
      if (d[nl + 9 + len] !== 0x0a) throw new Error(`field ${name}: no newline after ${len} bytes`);
      i = nl + 10 + len;
    }
  }
  return out;
}

/** A real Unix datagram socket (what /run/systemd/journal/socket is), bound by python; each datagram comes back base64 per line. */
async function journalListener(t: import('ava').ExecutionContext, path: string): Promise<{ entries: Record<string, string>[]; close: () => void }> {
  const py = spawn('python3', ['-u', '-c', [
    'import socket, sys, base64',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    's.bind(sys.argv[1])',
    'print("bound", flush=True)',
    'while True:',
    '    print(base64.b64encode(s.recv(1 << 20)).decode(), flush=True)',
  ].join('\n'), path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const close = (): void => void py.kill('SIGKILL');
  t.teardown(close);
  const entries: Record<string, string>[] = [];
  let buf = '';
  let bound!: () => void;
  const ready = new Promise<void>((r) => (bound = r));
  py.stdout!.on('data', (b: Buffer) => {
    buf += b.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line === 'bound') bound();
      else entries.push(parseJournal(Buffer.from(line, 'base64')));
    }
  });
  await ready;
  return { entries, close };
}

async function journalReady(entries: Record<string, string>[]): Promise<void> {
  for (let i = 0; i < 300 && !entries.some((e) => e.MESSAGE === 'tcpresetd ready'); i++) await sleep(50);
  if (!entries.some((e) => e.MESSAGE === 'tcpresetd ready')) throw new Error(`no ready record in the journal: ${JSON.stringify(entries.map((e) => e.MESSAGE))}`);
}

test('journal datagrams: KEY=value fields, a value with a newline length-prefixed; field names follow journald\'s rules', (t) => {
  const d = encodeJournalEntry([['MESSAGE', 'job created'], ['STACK', 'a\nb']]);
  const expected = Buffer.concat([Buffer.from('MESSAGE=job created\nSTACK\n'), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('a\nb\n')]);
  t.deepEqual(d, expected);
  t.deepEqual(parseJournal(d), { MESSAGE: 'job created', STACK: 'a\nb' });
  t.is(fieldName('jobId'), 'JOB_ID');
  t.is(fieldName('summaryIntervalMs'), 'SUMMARY_INTERVAL_MS');
  t.is(fieldName('_private'), 'PRIVATE');
  t.is(fieldName('9lives-x'), 'LIVES_X');
});

test('with a journal socket the daemon sends each record as its own fields (MESSAGE human, PRIORITY, OP, ERROR...), nothing on stdout; when the socket goes away records fall back to stdout with their priority', async (t) => {
  const dir = tmp('journal');
  const sock = join(dir, 'journal.sock');
  const j = await journalListener(t, sock);
  // Its ready line goes to the journal, not stdout: wait for it there.
  const d = await startDaemon({ dir, env: { TCPRESET_JOURNAL_SOCKET: sock }, waitReady: false });
  t.teardown(() => d.stop());
  await journalReady(j.entries);
  const r = await d.request({ ...createReq('198.51.100.5', 10), id: 'jr-1' });
  t.is(r.error?.code, 'E_IFACE');
  for (let i = 0; i < 100 && !j.entries.some((e) => e.MESSAGE === 'request refused'); i++) await sleep(20);
  const ready = j.entries.find((e) => e.MESSAGE === 'tcpresetd ready');
  t.truthy(ready, JSON.stringify(j.entries.map((e) => e.MESSAGE)));
  t.is(ready!.PRIORITY, '6');
  t.is(ready!.SYSLOG_IDENTIFIER, 'tcpresetd');
  t.is(ready!.SOCKET, d.socket);
  const refused = j.entries.find((e) => e.MESSAGE === 'request refused')!;
  t.like(refused, { PRIORITY: '6', OP: 'create', ERROR: 'E_IFACE', REQ_ID: 'jr-1', HOST: undefined });
  t.is(JSON.parse(refused.PEER).pid, process.pid);
  const rec = JSON.parse(refused.TCPRESET_JSON);
  t.is(rec.msg, 'request refused');
  t.is(rec.reqId, 'jr-1');
  t.deepEqual(d.rawLines, [], 'nothing duplicated on stdout');

  // journald gone: the next records still reach stdout, with their syslog priority.
  j.close();
  await sleep(200);
  const { unlinkSync } = await import('node:fs');
  unlinkSync(sock);
  await d.request({ ...createReq('198.51.100.6', 10), id: 'jr-2' });
  const fb = await d.waitLog((l) => l.reqId === 'jr-2', 5000, 'fallback line');
  t.is(fb.msg, 'request refused');
  t.true(d.rawLines.some((l) => l.startsWith('<6>{') && l.includes('"reqId":"jr-2"')), d.rawLines.join('\n'));
});

ptest('journal fields of a job: JOB_ID, ENGID, HOST, PORT on job created and on the request line', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('journaljob');
  const sock = join(dir, 'journal.sock');
  const j = await journalListener(t, sock);
  const d = await startDaemon({ dir, netns: ns, env: { TCPRESET_JOURNAL_SOCKET: sock }, waitReady: false });
  t.teardown(() => d.stop());
  await journalReady(j.entries);
  const r = await d.request({ v: 1, op: 'create', engid: 'ENG-7', sniffIf: 'sniff0', resetIf: 'reset0', host: '198.51.100.7', port: 443, duration: 30 }, 30_000);
  t.true(r.ok, JSON.stringify(r));
  for (let i = 0; i < 100 && !j.entries.some((e) => e.MESSAGE === 'request' && e.OP === 'create'); i++) await sleep(20);
  const created = j.entries.find((e) => e.MESSAGE === 'job created');
  t.like(created, { JOB_ID: r.result.job.id, ENGID: 'ENG-7', HOST: '198.51.100.7', PORT: '443', PRIORITY: '6' });
  const req = j.entries.find((e) => e.MESSAGE === 'request' && e.OP === 'create');
  t.like(req, { JOB_ID: r.result.job.id, ACTION: 'created' });
});

// ---------------------------------------------------------------- metrics

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function get(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    }).once('error', reject);
  });
}

/** Samples of a Prometheus text exposition: "name{labels}" -> value. */
function samples(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

test('metrics: GET /metrics on the configured address serves the text format (tcpreset_ prefix, _total counters with TYPE counter); the textfile is written; a port in use is an error in the log and in status, and the daemon runs on', async (t) => {
  const port = await freePort();
  const dir = tmp('metrics');
  const textfile = join(dir, 'tcpreset.prom');
  const d = await startDaemon({ dir, config: { metricsListen: `127.0.0.1:${port}`, metricsTextfile: textfile, metricsIntervalSec: 1 } });
  t.teardown(() => d.stop());
  t.is((await d.request(createReq('198.51.100.5', 10))).error?.code, 'E_IFACE');
  const r = await get(`http://127.0.0.1:${port}/metrics`);
  t.is(r.status, 200);
  t.regex(r.type, /^text\/plain; version=0\.0\.4/);
  const m = samples(r.body);
  t.is(m.get('tcpreset_jobs'), 0);
  t.is(m.get('tcpreset_jobs_created_total'), 0, 'a refused create is not a created job');
  t.is(m.get('tcpreset_jobs_ended_total{how="expired"}'), 0);
  t.is(m.get('tcpreset_dataplane_up'), 1);
  for (const c of ['tcpreset_jobs_created_total', 'tcpreset_events_lost_total', 'tcpreset_matched_packets_total', 'tcpreset_dataplane_failures_total', 'tcpreset_job_rsts_sent_total']) {
    t.true(r.body.includes(`# TYPE ${c} counter`), c);
  }
  t.true(r.body.includes('# TYPE tcpreset_process_resident_memory_bytes gauge'));
  t.true([...m.keys()].every((k) => k.startsWith('tcpreset_')), 'every sample has the prefix');
  t.is((await get(`http://127.0.0.1:${port}/other`)).status, 404);
  let file = '';
  for (let i = 0; i < 50 && !(file = existsSync(textfile) ? readFileSync(textfile, 'utf8') : ''); i++) await sleep(50);
  t.is(samples(file).get('tcpreset_jobs'), 0);
  const st = (await d.request({ v: 1, op: 'status' })).result;
  t.like(st.metrics, { listen: `127.0.0.1:${port}`, listening: true, textfile });
  t.true(st.metrics.scrapes >= 1);

  // The same address again: the second daemon cannot listen, says so, and still serves its socket.
  const busy = await startDaemon({ config: { metricsListen: `127.0.0.1:${port}` } });
  t.teardown(() => busy.stop());
  const err = busy.logs.find((l) => l.level === 50 && /^metrics: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/.test(l.msg ?? ''));
  t.truthy(err, busy.rawLines.join('\n'));
  const bst = (await busy.request({ v: 1, op: 'status' })).result;
  t.like(bst.metrics, { listening: false });
  t.regex(bst.metrics.error, /EADDRINUSE/);
});

test('metrics textfile that cannot be written (its directory is missing): an error line, a count and a FAULT in tcpreset status; written, and the fault gone, once the directory exists', async (t) => {
  const dir = tmp('mtext');
  const textfile = join(dir, 'collector', 'tcpreset.prom');
  const d = await startDaemon({ dir, config: { metricsTextfile: textfile, metricsIntervalSec: 1 } });
  t.teardown(() => d.stop());
  const err = d.logs.filter((l) => l.level === 50 && (l.msg ?? '').startsWith('metrics: cannot write'));
  t.is(err.length, 1, d.rawLines.join('\n'));
  t.regex(err[0].msg!, new RegExp(`^metrics: cannot write ${textfile.replace(/[.]/g, '\\.')}: ENOENT`));
  await sleep(1500); // a retry or two: still one error line per failure streak
  const st = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout).metrics;
  t.like(st, { textfile, writes: 0 });
  t.true(st.textfileFailures >= 2, JSON.stringify(st));
  t.regex((await cliSync(['status', '--socket', d.socket])).stdout, /^metrics: FAULT cannot write .*tcpreset\.prom: ENOENT.*\(\d+ failed textfile write\(s\)\)$/m);
  t.true(samples((await cliSync(['metrics', '--socket', d.socket])).stdout).get('tcpreset_metrics_textfile_failures_total')! >= 2);
  t.is(d.logs.filter((l) => (l.msg ?? '').startsWith('metrics: cannot write')).length, 1);
  // Positive control: the directory appears, the next write lands and the fault clears.
  mkdirSync(join(dir, 'collector'));
  await d.waitLog((l) => l.msg === 'metrics textfile written again', 5000, 'written again');
  t.is(samples(readFileSync(textfile, 'utf8')).get('tcpreset_jobs'), 0);
  const after = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout).metrics;
  t.is(after.error, undefined);
  t.true(after.writes >= 1);
  t.false((await cliSync(['status', '--socket', d.socket])).stdout.includes('metrics: FAULT'));
});

test('tcpreset metrics prints the exposition over the control socket, also when no listener or textfile is configured', async (t) => {
  const d = await startDaemon();
  t.teardown(() => d.stop());
  const r = await cliSync(['metrics', '--socket', d.socket]);
  t.is(r.status, 0, r.stderr);
  t.true(r.stdout.includes('# TYPE tcpreset_jobs gauge\n'));
  t.true(r.stdout.includes('# TYPE tcpreset_rsts_sent_total counter\n'));
  t.is(samples(r.stdout).get('tcpreset_jobs'), 0);
  t.is(samples(r.stdout).get('tcpreset_jobs_created_total'), 0);
  t.is(samples(r.stdout).get('tcpreset_event_thread_fifo_demotions_total'), 0);
  const j = JSON.parse((await cliSync(['metrics', '--json', '--socket', d.socket])).stdout);
  // --json carries the same exposition (the values of the process metrics move between the two asks).
  t.deepEqual([...samples(j.text).keys()].filter((k) => !/_(process|nodejs)_/.test(k)), [...samples(r.stdout).keys()].filter((k) => !/_(process|nodejs)_/.test(k)));
});

test('metrics config: bad listen addresses and textfile paths are refused naming the key', async (t) => {
  const dir = tmp('mcfg');
  for (const [cfg, re] of [
    [{ metricsListen: '0.0.0.0' }, /metricsListen "0\.0\.0\.0": must be "" \(off\) or "ADDRESS:PORT"/],
    [{ metricsListen: '300.0.0.1:9477' }, /metricsListen "300\.0\.0\.1:9477"/],
    [{ metricsListen: '127.0.0.1:70000' }, /metricsListen "127\.0\.0\.1:70000"/],
    [{ metricsTextfile: 'relative.prom' }, /metricsTextfile "relative\.prom": must be "" \(off\) or an absolute path ending in \.prom/],
    [{ metricsTextfile: '/tmp/x.txt' }, /metricsTextfile "\/tmp\/x\.txt"/],
    [{ metricsIntervalSec: 0 }, /metricsIntervalSec 0: must be an integer 1\.\.3600/],
  ] as [object, RegExp][]) {
    writeFileSync(join(dir, 'c.json'), JSON.stringify(cfg));
    const r = await daemonSync(['--test-config', '--config', join(dir, 'c.json')]);
    t.is(r.status, 78, JSON.stringify(cfg));
    t.regex(r.stderr, re);
  }
  writeFileSync(join(dir, 'c.json'), JSON.stringify({ metricsListen: '[::1]:9477', metricsTextfile: '/var/lib/node_exporter/tcpreset.prom' }));
  t.is((await daemonSync(['--test-config', '--config', join(dir, 'c.json')])).status, 0, 'positive control');
});

// Serial: building the lab blocks this process (spawnSync) long enough to starve the other tests' timers.
pserial('metrics during enforcement: per-job and global counters move with real resets; a cancel ends the job\'s series and counts it', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const dir = tmp('mjob');
  const textfile = join(dir, 'tcpreset.prom');
  const d = await startDaemon({ dir, netns: lab.ns.sensor, config: { metricsTextfile: textfile, metricsIntervalSec: 1 } });
  t.teardown(() => d.stop());
  await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  const probe = () => connectOnce(lab, lab.ns.client, lab.hosts.server.v4, 5001, { timeoutMs: 1500, holdMs: 300 });
  t.true((await probe()).ok, 'the lab works before any job');
  const c = await d.request({ v: 1, op: 'create', engid: 'ENG-M', sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: lab.hosts.client.v4, duration: 60 }, 30_000);
  t.true(c.ok, JSON.stringify(c));
  const id = c.result.job.id;
  t.is(connectOutcome(await probe()), 'reset', 'the job resets the connection after its handshake');
  const read = async (pred: (m: Map<string, number>) => boolean): Promise<Map<string, number>> => {
    let m = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      if (existsSync(textfile) && pred((m = samples(readFileSync(textfile, 'utf8'))))) return m;
      await sleep(100);
    }
    return m;
  };
  const job = `{job_id="${id}",engid="ENG-M"}`;
  const m = await read((x) => (x.get(`tcpreset_job_rsts_sent_total${job}`) ?? 0) > 0);
  t.is(m.get('tcpreset_jobs'), 1);
  t.is(m.get('tcpreset_jobs_created_total'), 1);
  t.true(m.get(`tcpreset_job_matched_total${job}`)! > 0, JSON.stringify([...m].filter(([k]) => k.includes('job'))));
  t.true(m.get(`tcpreset_job_rsts_sent_total${job}`)! > 0);
  t.true(m.get('tcpreset_matched_packets_total')! >= m.get(`tcpreset_job_matched_total${job}`)!);
  const sent = [...m].find(([k]) => k.startsWith(`tcpreset_rsts_sent_total{ifname="${lab.sensor.resetIf}"`));
  t.truthy(sent, 'RSTs counted per reset interface');
  t.true(sent![1] > 0);
  t.is(m.get(`tcpreset_xdp_attached{ifname="${lab.sensor.sniffIf}",mode="native"}`) ?? m.get(`tcpreset_xdp_attached{ifname="${lab.sensor.sniffIf}",mode="generic"}`), 1);

  t.true((await d.request({ v: 1, op: 'cancel', jobId: id })).ok);
  const after = await read((x) => x.get('tcpreset_jobs_ended_total{how="cancelled"}') === 1);
  t.is(after.get('tcpreset_jobs'), 0);
  t.is(after.get(`tcpreset_job_rsts_sent_total${job}`), undefined, 'the ended job\'s series is gone');
  t.true(after.get('tcpreset_rsts_sent_total' + sent![0].slice('tcpreset_rsts_sent_total'.length))! >= sent![1], 'global counters keep counting');
  t.log(readFileSync(textfile, 'utf8').split('\n').filter((l) => l.startsWith('tcpreset_') && !l.includes('nodejs') && !l.includes('process')).join('\n'));
});

// Serial: a lab (see above).
pserial('metrics: RSTs per reset interface count the create-time sweep (kind="sweep") beside the event path (kind="event"), and stay, monotonic, after the last job on the interface ends, though no scrape saw them before', async (t) => {
  const ctx = await setupWatched(t);
  const { lab, daemon: d } = ctx;
  // An idle session the flow memory knows (--watch): the create's sweep resets it.
  await idleSession(ctx, lab.hosts.server.v4);
  const probe = () => connectOnce(lab, lab.ns.client, lab.hosts.server.v4, 5001, { timeoutMs: 1500, holdMs: 300 });
  const job = async (): Promise<{ id: string; flows?: { known: number } }> => {
    const r = await cliSync(['ENG-K', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', lab.hosts.client.v4, '-d', '60', '--json', '--socket', d.socket]);
    t.is(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    return { id: j.job.id, flows: j.flows };
  };
  const cancel = async (id: string): Promise<number> => {
    await sleep(500); // the event threads' reports of their last sends
    const r = await cliSync(['cancel', id, '--json', '--socket', d.socket]);
    t.is(r.status, 0, r.stderr);
    return JSON.parse(r.stdout).job.counters.rstsSent as number;
  };
  const series = (m: Map<string, number>, name: string, kind?: string): number | undefined =>
    m.get(`${name}{ifname="${lab.sensor.resetIf}",mode="l3"${kind ? `,kind="${kind}"` : ''}}`);

  const first = await job();
  t.is(first.flows?.known, 1, 'the sweep found the idle session');
  const swept = await d.waitLog((l) => l.msg === 'flows reset from flow memory', 5000, 'sweep line');
  t.deepEqual([swept.flows, swept.rsts], [1, 2]);
  t.is(connectOutcome(await probe()), 'reset', 'a new connection is reset by the event path after its handshake');
  const rsts1 = await cancel(first.id);
  // Nothing scraped while the job ran: the counters must not depend on a scrape having seen the sender.
  const m1 = samples((await cliSync(['metrics', '--socket', d.socket])).stdout);
  const sweep1 = series(m1, 'tcpreset_rsts_sent_total', 'sweep');
  const event1 = series(m1, 'tcpreset_rsts_sent_total', 'event');
  t.is(sweep1, 2, 'the sweep\'s RST pair');
  t.true(event1! > 0, `the event path's RSTs (${event1})`);
  t.is(sweep1! + event1!, rsts1, 'the two kinds add up to the job\'s own count of RSTs sent');
  const st = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout);
  t.is(series(m1, 'tcpreset_sweep_probes_sent_total')! + sweep1!, st.sweep.sent, 'probes + sweep RSTs = every packet the sweeps sent');
  t.true(series(m1, 'tcpreset_sweep_probes_sent_total')! >= 2);
  for (const reason of ['refused', 'send_error']) {
    t.is(m1.get(`tcpreset_rsts_undeliverable_total{ifname="${lab.sensor.resetIf}",mode="l3",reason="${reason}"}`), 0, `undeliverable ${reason}: every RST left`);
  }
  t.deepEqual(st.senders, [], 'the reset sockets are closed: no job uses them');

  // The next job reopens the sender from 0: the series go on from where they were.
  const second = await job();
  t.is(second.flows?.known ?? 0, 0, 'nothing idle left');
  t.false((await probe()).ok);
  const rsts2 = await cancel(second.id);
  t.true(rsts2 > 0);
  const m2 = samples((await cliSync(['metrics', '--socket', d.socket])).stdout);
  t.is(series(m2, 'tcpreset_rsts_sent_total', 'sweep'), 2);
  t.is(series(m2, 'tcpreset_rsts_sent_total', 'event'), event1! + rsts2, 'monotonic: the first job\'s RSTs plus the second\'s');
  t.log([...m2].filter(([k]) => /^tcpreset_(rsts|sweep|jobs)/.test(k)).map(([k, v]) => `${k} ${v}`).join('\n'));
});

// Serial: a lab (see above).
pserial('metrics: tcpreset_reaction_latency_seconds counts exactly the job\'s hits (buckets cumulative, +Inf = _count, _sum from real latencies); tcpreset_flows_verified_total and tcpreset_flows_reset_total count a verified sweep and an event-path kill, and stay after the job ends', async (t) => {
  const ctx = await setupWatched(t);
  const { lab, daemon: d } = ctx;
  // An idle session the flow memory knows (--watch): the create's sweep resets it and its probes verify it dead.
  await idleSession(ctx, lab.hosts.server.v4);
  const probe = () => connectOnce(lab, lab.ns.client, lab.hosts.server.v4, 5001, { timeoutMs: 1500, holdMs: 300 });
  t.true((await probe()).ok, 'the lab works before any job');
  const scrape = async (): Promise<Map<string, number>> => samples((await cliSync(['metrics', '--socket', d.socket])).stdout);
  const H = 'tcpreset_reaction_latency_seconds';
  /** The histogram's buckets in exposition order, "le" -> cumulative count. */
  const buckets = (m: Map<string, number>): [string, number][] =>
    [...m].filter(([k]) => k.startsWith(`${H}_bucket{`)).map(([k, v]) => [/le="([^"]*)"/.exec(k)![1], v]);

  // Positive control: the warm-up ran its thousands of synthetic segments through the same code, and a
  // connection crossed the sniff port, yet nothing is counted before a job.
  const m0 = await scrape();
  t.deepEqual(buckets(m0).map(([le]) => le), ['0.00002', '0.00003', '0.00005', '0.000075', '0.0001', '0.00015', '0.0002', '0.0003', '0.0005', '0.00075',
    '0.001', '0.002', '0.005', '0.01', '0.02', '0.05', '0.1', '0.2', '0.5', '1', '+Inf']);
  t.true(buckets(m0).every(([, v]) => v === 0));
  t.deepEqual([m0.get(`${H}_count`), m0.get(`${H}_sum`), m0.get('tcpreset_flows_reset_total'), m0.get('tcpreset_flows_verified_total')], [0, 0, 0, 0]);

  const c = await cliSync(['ENG-LAT', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', lab.hosts.client.v4, '-d', '60', '--wait', '3', '--json', '--socket', d.socket]);
  t.is(c.status, 0, c.stderr);
  const created = JSON.parse(c.stdout);
  t.like(created.flows, { known: 1, reset: 1, verified: 1 }, 'the sweep reset the idle session and verified it dead');
  const m1 = await scrape();
  t.is(m1.get('tcpreset_flows_verified_total'), 1, 'exactly the job\'s verified');
  t.is(m1.get('tcpreset_flows_reset_total'), 1);

  t.false((await probe()).ok, 'a new connection is reset by the event path');
  const killed = await d.waitLog((l) => l.msg === 'flow reset' && !l.atCreate, 5000, 'the event path\'s flow reset line');
  const id = created.job.id as string;
  // The thread adds to the histogram before it reports the hits: read until the main thread has them too.
  let job: { counters: { matched: number; rstsSent: number; flows: number; verified?: number } } | undefined;
  let m2 = new Map<string, number>();
  for (let i = 0; i < 50; i++) {
    await sleep(100);
    job = (JSON.parse((await cliSync(['list', '--json', '--socket', d.socket])).stdout).jobs as { id: string }[]).find((j) => j.id === id) as typeof job;
    m2 = await scrape();
    if (job && job.counters.matched > 0 && m2.get(`${H}_count`) === job.counters.matched) break;
  }
  const matched = job!.counters.matched;
  t.true(matched > 0, JSON.stringify(job));
  t.is(m2.get(`${H}_count`), matched, 'one observation per hit the job counted (every hit sent RSTs)');
  t.is(m2.get('tcpreset_events_total'), matched, 'and per event the XDP program sent up (one job, no loss)');
  const b2 = buckets(m2);
  t.is(b2.length, 21);
  t.true(b2.every(([, v], i) => i === 0 || v >= b2[i - 1][1]), `cumulative: ${JSON.stringify(b2)}`);
  t.is(b2[20][1], matched, '+Inf = _count');
  const sum = m2.get(`${H}_sum`)!;
  t.true(sum > 0);
  t.true(sum >= (killed.firstLatencyUs as number - 1) / 1e6, `the sum (${sum} s) holds the logged first latency (${killed.firstLatencyUs as number} µs)`);
  t.is(m2.get('tcpreset_flows_reset_total'), 2, 'the swept session and the killed connection');
  t.is(job!.counters.flows, 2);
  t.is(m2.get('tcpreset_flows_verified_total'), job!.counters.verified);

  t.is((await cliSync(['cancel', id, '--socket', d.socket])).status, 0);
  const m3 = await scrape();
  t.deepEqual([m3.get(`${H}_count`), m3.get(`${H}_sum`), m3.get('tcpreset_flows_reset_total'), m3.get('tcpreset_flows_verified_total')],
    [matched, sum, 2, 1], 'lifetime totals: the ended job\'s counts stay');
  t.log([...m3].filter(([k]) => /^tcpreset_(reaction|flows_|events_total|jobs)/.test(k)).map(([k, v]) => `${k} ${v}`).join('\n'));
});

// Serial: a lab (see above).
pserial('metrics: with two event threads (eventThreads 2) tcpreset_reaction_latency_seconds adds up both threads\' histograms: _count = the job\'s hits, with hits on each thread', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const d = await startDaemon({ netns: lab.ns.sensor, config: { eventThreads: 2 } });
  t.teardown(() => d.stop());
  await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  const H = 'tcpreset_reaction_latency_seconds';
  const scrape = async (): Promise<Map<string, number>> => samples((await cliSync(['metrics', '--socket', d.socket])).stdout);
  const c = await cliSync(['ENG-LAT2', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', lab.hosts.client.v4, '-d', '60', '--json', '--socket', d.socket]);
  t.is(c.status, 0, c.stderr);
  const id = JSON.parse(c.stdout).job.id as string;
  t.is((await scrape()).get(`${H}_count`), 0, 'positive control: nothing before a connection');
  // Connections until each thread has handled some (the XDP program spreads flows over the rings by a hash of the flow).
  const perThread = async (): Promise<number[]> => JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout).ring.perThread as number[];
  let spread: number[] = [];
  for (let i = 0; i < 24; i++) {
    t.false((await connectOnce(lab, lab.ns.client, lab.hosts.server.v4, 5001, { timeoutMs: 1500, holdMs: 100 })).ok, `connection ${i + 1} reset`);
    await sleep(100);
    spread = await perThread();
    if (i >= 3 && spread.length === 2 && spread.every((n) => n > 0)) break;
  }
  t.is(spread.length, 2);
  t.true(spread.every((n) => n > 0), `both threads handled segments: ${JSON.stringify(spread)}`);
  let matched = -1;
  let m = new Map<string, number>();
  for (let i = 0; i < 50; i++) {
    await sleep(100);
    matched = (JSON.parse((await cliSync(['list', '--json', '--socket', d.socket])).stdout).jobs as { id: string; counters: { matched: number } }[]).find((j) => j.id === id)!.counters.matched;
    m = await scrape();
    if (m.get(`${H}_count`) === matched) break;
  }
  t.true(matched > 0);
  t.is(m.get(`${H}_count`), matched, 'the two threads\' observations added up: one per hit');
  t.is(m.get(`${H}_bucket{le="+Inf"}`), matched);
  t.is((await perThread()).reduce((a, b) => a + b, 0), matched, 'every record a thread read was one of the job\'s hits');
  t.true(m.get(`${H}_sum`)! > 0);
});

// ---------------------------------------------------------------- history

ptest('tcpreset history: jobs created (with the uid that asked) and ended (expired, cancelled) with their final counters, --since and --json; it survives a restart', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('history');
  const state = join(dir, 'state');
  const d = await startDaemon({ dir, stateDir: state, netns: ns });
  t.teardown(() => d.stop());
  const mk = (host: string, duration: number, port?: number) => ({ v: 1, op: 'create', engid: 'ENG-H', sniffIf: 'sniff0', resetIf: 'reset0', host, duration, ...(port ? { port } : {}) });
  const short = await d.request(mk('198.51.100.31', 1), 30_000);
  const long = await d.request(mk('198.51.100.32', 60, 443), 30_000);
  t.true(short.ok && long.ok, JSON.stringify([short, long]));
  t.true((await d.request({ v: 1, op: 'cancel', jobId: long.result.job.id })).ok);
  await d.waitLog((l) => l.msg === 'job expired', 5000);

  const human = await cliSync(['history', '--socket', d.socket]);
  t.is(human.status, 0, human.stderr);
  const lines = human.stdout.trimEnd().split('\n');
  t.regex(lines[0], /^TIME\s+EVENT\s+JOB\s+ENGID\s+HOST\s+SNIFF>RESET\s+UID\s+MATCHED\s+RSTS\s+FLOWS$/);
  // The 1 s job may expire before the second create on a loaded machine: compare the events, not their interleaving.
  const events = lines.slice(1).map((l) => l.split(/\s+/).slice(1, 7)).sort();
  t.deepEqual(events, [
    ['created', short.result.job.id, 'ENG-H', '198.51.100.31', 'sniff0>reset0', '0'],
    ['created', long.result.job.id, 'ENG-H', '198.51.100.32:443', 'sniff0>reset0', '0'],
    ['cancelled', long.result.job.id, 'ENG-H', '198.51.100.32:443', 'sniff0>reset0', '0'],
    ['expired', short.result.job.id, 'ENG-H', '198.51.100.31', 'sniff0>reset0', '0'],
  ].sort());
  const times = lines.slice(1).map((l) => l.split(/\s+/)[0]);
  t.deepEqual([...times].sort(), times, 'oldest first');
  const json = JSON.parse((await cliSync(['history', '--json', '--socket', d.socket])).stdout);
  const expired = json.records.find((r: { how?: string }) => r.how === 'expired');
  t.like(expired, { event: 'ended', uid: 0, job: { id: short.result.job.id, host: '198.51.100.31', port: null } });
  t.deepEqual(Object.keys(expired.counters).sort(), ['firstHitAt', 'flows', 'lastHitAt', 'matched', 'rstsSent']);

  await sleep(1100);
  const recent = await cliSync(['history', '--since', '1s', '--socket', d.socket]);
  t.is(recent.stdout, 'no jobs created or ended in that time\n');
  const bad = await cliSync(['history', '--since', '5 minutes', '--socket', d.socket]);
  t.is(bad.status, 65);
  t.regex(bad.stderr, /^tcpreset: since \(--since\) "5 minutes": must be a duration/);

  // Kept on disk: a restarted daemon still answers.
  t.deepEqual(await d.stop(), { code: 0, signal: null });
  const d2 = await startDaemon({ dir, stateDir: state, netns: ns, socket: join(dir, 'b.sock') });
  t.teardown(() => d2.stop());
  t.is(JSON.parse((await cliSync(['history', '--json', '--socket', d2.socket])).stdout).records.length, 4);
});

ptest('history after a restart (kill -9 and restore from the journal): the ended record of a restored job names the uid that created it, as jobs.json does', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('hist-uid');
  const state = join(dir, 'state');
  const d = await startDaemon({ dir, stateDir: state, netns: ns });
  t.teardown(() => d.stop());
  // nobody (65534) creates one job, root the other: the socket and its directory opened to it, the CLI from a copy it can read.
  chmodSync(dir, 0o755);
  chmodSync(d.socket, 0o666);
  const { cli } = await worldReadableBuild();
  const asNobody = await run(process.execPath, [cli, 'ENG-U', '-i', 'sniff0', '-o', 'reset0', '-h', '198.51.100.61', '-d', '120', '--json', '--socket', d.socket], { uid: 65534, gid: 65534 });
  t.is(asNobody.status, 0, asNobody.stderr);
  const a = JSON.parse(asNobody.stdout).job.id as string;
  const asRoot = await cliSync(['ENG-U', '-i', 'sniff0', '-o', 'reset0', '-h', '198.51.100.62', '-d', '120', '--json', '--socket', d.socket]);
  t.is(asRoot.status, 0, asRoot.stderr);
  const b = JSON.parse(asRoot.stdout).job.id as string;
  // The creates were acknowledged after their journal records were synced: a kill -9 now restarts from the journal.
  const saved = decodeState(readFileSync(join(state, 'jobs.json'), 'utf8'));
  t.deepEqual(saved.map((j) => [j.id, j.uid]), [[a, 65534], [b, 0]]);
  t.deepEqual(await d.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });

  const d2 = await startDaemon({ dir, stateDir: state, netns: ns, socket: join(dir, 'b.sock') });
  t.teardown(() => d2.stop());
  t.is((await d2.request({ v: 1, op: 'list' })).result.jobs.length, 2, 'both jobs restored');
  for (const id of [a, b]) t.true((await d2.request({ v: 1, op: 'cancel', jobId: id })).ok);
  const recs = JSON.parse((await cliSync(['history', '--json', '--socket', d2.socket])).stdout).records as { event: string; uid: number | null; job: { id: string } }[];
  t.deepEqual(recs.map((r) => [r.event, r.job.id, r.uid]), [['created', a, 65534], ['created', b, 0], ['ended', a, 65534], ['ended', b, 0]]);
  const human = (await cliSync(['history', '--socket', d2.socket])).stdout.split('\n').filter((l) => / (cancelled) /.test(l)).map((l) => l.split(/\s+/)[6]);
  t.deepEqual(human, ['65534', '0'], 'the UID column of the ends');
});

ptest('history after a restart: a saved job whose end passed while the daemon was stopped is "expired" at its end; one the new configuration protects is "restart"; a restored one has no end yet', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('hist-restart');
  const state = join(dir, 'state');
  const d = await startDaemon({ dir, stateDir: state, netns: ns, config: { protected: [] } });
  t.teardown(() => d.stop());
  const mk = (host: string, duration: number) => ({ v: 1, op: 'create', engid: 'ENG-S', sniffIf: 'sniff0', resetIf: 'reset0', host, duration });
  // The long job first: the first create loads the data plane, which on a loaded machine took
  // seconds, and the short one must still be live when the daemon is killed.
  const [kept] = await sendLines(d.socket, [JSON.stringify(mk('198.51.100.92', 120))], 30_000);
  const [short, prot] = await sendLines(d.socket, [JSON.stringify(mk('198.51.100.91', 6)), JSON.stringify(mk('203.0.113.91', 120))], 30_000);
  t.true(short.ok && prot.ok && kept.ok, JSON.stringify([short, prot, kept]));
  t.is((await d.request({ v: 1, op: 'list' })).result.jobs.length, 3, 'all three live when the daemon is killed');
  t.deepEqual(await d.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });
  await sleep(Math.max(0, Date.parse(short.result.job.expiresAt) - Date.now()) + 200);

  writeFileSync(join(dir, 'config.json'), JSON.stringify({ protected: ['203.0.113.0/24'] }));
  const d2 = await startDaemon({ dir, stateDir: state, netns: ns, socket: join(dir, 'b.sock'), args: ['--config', join(dir, 'config.json')] });
  t.teardown(() => d2.stop());
  t.deepEqual((await d2.request({ v: 1, op: 'list' })).result.jobs.map((j: { id: string }) => j.id), [kept.result.job.id], 'positive control: the third is restored');
  const recs = JSON.parse((await cliSync(['history', '--json', '--socket', d2.socket])).stdout).records as { at: string; event: string; how?: string; uid: number | null; job: { id: string } }[];
  const ends = recs.filter((r) => r.event === 'ended').map((r) => [r.job.id, r.how, r.at, r.uid]);
  t.is(ends.length, 2, JSON.stringify(ends));
  t.deepEqual(ends[0], [short.result.job.id, 'expired', short.result.job.expiresAt, 0], 'expired at its own end, while no daemon ran');
  t.deepEqual(ends[1].slice(0, 2), [prot.result.job.id, 'restart']);
  t.true(Date.parse(ends[1][2] as string) > Date.parse(short.result.job.expiresAt), 'dropped at the restart');
  const human = (await cliSync(['history', '--socket', d2.socket])).stdout.split('\n').filter((l) => l.includes(prot.result.job.id)).map((l) => l.split(/\s+/)[1]);
  t.deepEqual(human, ['created', 'restart']);
  // The metric counts the same ends under the same words (the drop was uncounted; a SIGHUP's is "protected").
  const m = samples((await cliSync(['metrics', '--socket', d2.socket])).stdout);
  t.deepEqual(['expired', 'restart', 'protected', 'cancelled'].map((how) => m.get(`tcpreset_jobs_ended_total{how="${how}"}`)), [1, 1, 0, 0]);
  t.is(m.get('tcpreset_jobs_created_total'), 0, 'restored and dropped jobs are not new orders');
});

ptest('history records the re-creates of a running job as its events: extended, kept, switched (--l2), with the end before and what it switched from', async (t) => {
  const ns = await sensorNetns(t);
  const d = await startDaemon({ netns: ns });
  t.teardown(() => d.stop());
  const create = async (seconds: number, extra: string[] = []): Promise<{ action: string; switched?: object; job: { id: string; expiresAt: string } }> => {
    const r = await cliSync(['ENG-R', '-i', 'sniff0', '-o', 'reset0', '-h', '198.51.100.71', '-d', String(seconds), '--json', ...extra, '--socket', d.socket]);
    t.is(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  const c = await create(60);
  const e = await create(600);
  const k = await create(30);
  const s = await create(30, ['--l2']);
  // What the creates answered is the positive control for what the history says.
  t.deepEqual([c.action, e.action, k.action, s.action], ['created', 'extended', 'kept', 'kept']);
  t.deepEqual(s.switched, { resetIf: 'reset0', mode: 'l3' });
  t.is(new Set([c.job.id, e.job.id, k.job.id, s.job.id]).size, 1, 'one job');
  t.is(k.job.expiresAt, e.job.expiresAt);
  t.false('previousExpiresAt' in e, 'the response keeps the protocol\'s shape');
  const recs = JSON.parse((await cliSync(['history', '--json', '--socket', d.socket])).stdout).records as Record<string, unknown>[];
  t.deepEqual(recs.map((r) => [r.event, r.previousExpiresAt, r.from, (r.job as { mode: string }).mode, (r.job as { expiresAt: string }).expiresAt, r.uid]), [
    ['created', undefined, undefined, 'l3', c.job.expiresAt, 0],
    ['extended', c.job.expiresAt, undefined, 'l3', e.job.expiresAt, 0],
    ['kept', e.job.expiresAt, undefined, 'l3', e.job.expiresAt, 0],
    ['switched', e.job.expiresAt, { resetIf: 'reset0', mode: 'l3' }, 'l2', e.job.expiresAt, 0],
  ]);
  const human = (await cliSync(['history', '--socket', d.socket])).stdout.trimEnd().split('\n').slice(1).map((l) => l.split(/\s+/)[1]);
  t.deepEqual(human, ['created', 'extended', 'kept', 'switched']);
});

/** DIR/state as a 64 KiB tmpfs (the full-disk tests fill it), unmounted and removed at teardown. */
async function tinyStateDir(t: import('ava').ExecutionContext, name: string): Promise<{ dir: string; state: string }> {
  const dir = tmp(name);
  const state = join(dir, 'state');
  mkdirSync(state);
  const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tcpreset-test', state]);
  t.is(mounted.status, 0, mounted.stderr);
  t.teardown(async () => {
    await run('umount', [state]);
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, state };
}

ptest('history on a full disk (a 64 KiB tmpfs as state directory): a warning, a count and a fault in status; the records are kept in memory, listed by tcpreset history, and written in order once space returns', async (t) => {
  const ns = await sensorNetns(t);
  const { dir, state } = await tinyStateDir(t, 'hist-full');
  const d = await startDaemon({ dir, stateDir: state, netns: ns });
  t.teardown(() => d.stop());
  const file = join(state, 'history.jsonl');
  t.false(existsSync(file), 'no history yet');
  const fill = await run('dd', ['if=/dev/zero', `of=${join(state, 'filler')}`, 'bs=4k']);
  t.regex(fill.stderr, /No space left on device/, 'the tmpfs is full');

  const c = await d.request({ v: 1, op: 'create', engid: 'ENG-F', sniffIf: 'sniff0', resetIf: 'reset0', host: '198.51.100.81', duration: 60 }, 30_000);
  t.true(c.ok, JSON.stringify(c));
  t.regex(c.result.warnings?.[0] ?? '', /could not be saved/, 'jobs.json on the same full disk warns as before');
  const id = c.result.job.id as string;
  t.true((await d.request({ v: 1, op: 'cancel', jobId: id })).ok);

  const warn = await d.waitLog((l) => /^job history: cannot append to /.test(l.msg ?? ''), 5000, 'history warning');
  t.is(warn.level, 40);
  t.regex(warn.msg!, /ENOSPC.*the records are kept in memory and written when the disk takes them$/);
  const st = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout);
  t.like(st.history, { path: file, unwritten: 2, lost: 0 });
  t.true(st.history.writeFailures >= 2, JSON.stringify(st.history));
  t.regex(st.history.fault, /^cannot append to .*history\.jsonl: ENOSPC: no space left on device.* \(since \S+; 2 records held in memory\)$/);
  const human = (await cliSync(['status', '--socket', d.socket])).stdout;
  t.regex(human, /^history: FAULT cannot append to .*ENOSPC.*; written when the disk takes them$/m);
  const m = samples((await cliSync(['metrics', '--socket', d.socket])).stdout);
  t.is(m.get('tcpreset_history_unwritten_records'), 2);
  t.true(m.get('tcpreset_history_write_failures_total')! >= 2);
  const held = JSON.parse((await cliSync(['history', '--json', '--socket', d.socket])).stdout).records;
  t.deepEqual(held.map((r: { event: string; how?: string; job: { id: string } }) => [r.event, r.how, r.job.id]), [['created', undefined, id], ['ended', 'cancelled', id]], 'listed from memory');
  t.is(d.logs.filter((l) => /^job history: cannot/.test(l.msg ?? '')).length, 1, 'one warning per failure streak');
  t.is(readFileSync(file, 'utf8'), '', 'nothing (and no torn line) in the file');

  // Space returns: the retry writes them, in order, and the fault clears.
  rmSync(join(state, 'filler'));
  const back = await d.waitLog((l) => l.msg === 'job history written again: the records held in memory are on disk', 15_000, 'history written again');
  t.is(back.records, 2);
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  t.deepEqual(lines.map((r) => [r.event, r.how, r.job.id]), [['created', undefined, id], ['ended', 'cancelled', id]]);
  const after = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout).history;
  t.like(after, { unwritten: 0, lost: 0 });
  t.is(after.fault, undefined);
  t.false((await cliSync(['status', '--socket', d.socket])).stdout.includes('history: FAULT'));

});

ptest('History on a full tmpfs: an append written short (to the end of the file\'s last page) is taken back, so no torn line swallows a record; all are written in order when space returns', async (t) => {
  const { state } = await tinyStateDir(t, 'hist-short');
  const warnings: string[] = [];
  const log = { info() {}, warn: (_o: object, msg?: string) => void warnings.push(msg ?? ''), error() {}, debug() {} };
  const h = new History(state, log, 1000);
  h.open();
  const job = (i: number) => ({
    id: `job-${String(i).padStart(4, '0')}`, engid: 'E'.repeat(40), sniffIf: 'sniff0', resetIf: 'reset0', host: '192.0.2.9', port: null, mode: 'l3' as const,
    createdAt: new Date(0).toISOString(), expiresAt: new Date(0).toISOString(), remainingMs: 0,
    counters: { matched: i, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null },
  });
  h.ended(job(0), 'expired');
  h.flush();
  const file = join(state, 'history.jsonl');
  const one = readFileSync(file, 'utf8');
  t.is(one.split('\n').length, 2, 'positive control: the first record is written');
  const fill = await run('dd', ['if=/dev/zero', `of=${join(state, 'filler')}`, 'bs=4k']);
  t.regex(fill.stderr, /No space left on device/);
  // 12 records (~5 KB) in one batch: more than the ~3.5 KB left in the file's page.
  for (let i = 1; i <= 12; i++) h.ended(job(i), 'expired');
  t.true(12 * (one.length - 1) > 4096 - one.length, 'the batch does not fit in the page');
  h.flush();
  t.is(readFileSync(file, 'utf8'), one, 'the short write was taken back: the file is as before');
  t.like(h.status(), { unwritten: 12, writeFailures: 1, lost: 0 });
  t.is(warnings.length, 1);
  rmSync(join(state, 'filler'));
  h.flush();
  h.close();
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).job.id);
  t.deepEqual(lines, Array.from({ length: 13 }, (_, i) => job(i).id));
  t.like(h.status(), { unwritten: 0 });
  t.is(h.status().fault, undefined);
});

test('history is bounded: past twice historyMaxRecords the oldest are dropped; 0 keeps none', async (t) => {
  const dir = tmp('hbound');
  const log = { info() {}, warn() {}, error() {}, debug() {} };
  const h = new History(dir, log, 3);
  h.open();
  const job = (i: number) => ({
    id: `j${i}`, engid: 'E', sniffIf: 's', resetIf: 'r', host: '192.0.2.9', port: null, mode: 'l3' as const,
    createdAt: new Date(0).toISOString(), expiresAt: new Date(0).toISOString(), remainingMs: 0,
    counters: { matched: i, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null },
  });
  for (let i = 0; i < 7; i++) {
    h.ended(job(i), 'expired');
    h.flush();
  }
  const ids = h.read().map((r) => r.job.id);
  t.deepEqual(ids, ['j4', 'j5', 'j6'], 'compacted to the newest 3 when a 7th made it more than 6');
  t.is(readFileSync(join(dir, 'history.jsonl'), 'utf8').split('\n').filter(Boolean).length, 3);
  // A restart counts what is there.
  const h2 = new History(dir, log, 3);
  h2.open();
  for (let i = 7; i < 10; i++) h2.ended(job(i), 'cancelled');
  h2.flush();
  t.deepEqual(h2.read().map((r) => r.job.id), ['j4', 'j5', 'j6', 'j7', 'j8', 'j9']);

  const off = await startDaemon({ config: { historyMaxRecords: 0 } });
  t.teardown(() => off.stop());
  t.is((await cliSync(['history', '--socket', off.socket])).stdout, 'no history: the daemon keeps none (historyMaxRecords is 0)\n');
  const on = await startDaemon();
  t.teardown(() => on.stop());
  t.is((await cliSync(['history', '--socket', on.socket])).stdout, 'no jobs created or ended in that time\n');
});

// ---------------------------------------------------------------- another XDP program on the sniff port

ptest('xdp-filter (xdp-tools) on the sniff port: the create fails with 69 naming the program there and what to do, not 70; once it is removed the job starts', async (t) => {
  const ns = await sensorNetns(t);
  // libxdp keeps its state in bpffs: a private mount namespace gets one without touching the host's mounts.
  const load = await run('ip', ['netns', 'exec', ns, 'unshare', '-m', 'sh', '-c', 'mount -t bpf bpf /sys/fs/bpf && xdp-filter load sniff0']);
  t.is(load.status, 0, `xdp-filter load: ${load.stderr}`);
  const d = await startDaemon({ netns: ns });
  t.teardown(() => d.stop());
  const create = () => cliSync(['e1', '-i', 'sniff0', '-o', 'reset0', '-h', '198.51.100.40', '-d', '30', '--socket', d.socket]);
  const r = await create();
  t.is(r.status, 69, r.stderr);
  t.regex(r.stderr, /^tcpreset: the daemon cannot enforce the job: attach XDP in native mode \(sniff0 already has XDP program "(xdp_dispatcher|xdpfilt_\w+)" \(id \d+[^)]*\); tcpreset needs the XDP hook of its sniff interface to itself: remove that program \((xdp-loader unload sniff0 --all|ip link set dev sniff0 xdp off)\) or mirror to another port(, or set xdpAttach "libxdp" in the configuration to join the dispatcher)?\) on sniff0 failed: Device or resource busy \(errno 16\)/);
  const st = JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout);
  t.is(st.dataPlaneFault?.step, 'enforce');
  // Positive control: with the hook free the same create works.
  t.is((await run('ip', ['-n', ns, 'link', 'set', 'dev', 'sniff0', 'xdp', 'off'])).status, 0);
  const ok = await create();
  t.is(ok.status, 0, ok.stderr);
  t.is(JSON.parse((await cliSync(['status', '--json', '--socket', d.socket])).stdout).dataPlaneFault, undefined, 'the fault clears with the next success');
});

ptest('pipelined on a fresh daemon: a list and a cancel behind the first create (which loads the data plane) see its job', async (t) => {
  const ns = await sensorNetns(t);
  const d = await startDaemon({ netns: ns });
  t.teardown(() => d.stop());
  const create = { v: 1, op: 'create', engid: 'P', sniffIf: 'sniff0', resetIf: 'reset0', host: '198.51.100.50', duration: 60 };
  const [c, l, x] = await sendLines(d.socket, [JSON.stringify(create), '{"v":1,"op":"list"}', JSON.stringify({ v: 1, op: 'cancel', engid: 'P', sniffIf: 'sniff0', host: '198.51.100.50' })], 30_000);
  t.true(c.ok, JSON.stringify(c));
  t.deepEqual(l.result.jobs.map((j: { id: string }) => j.id), [c.result.job.id], 'list sees the job created before it');
  t.true(x.ok, JSON.stringify(x));
  t.is(x.result.job.id, c.result.job.id);
});
