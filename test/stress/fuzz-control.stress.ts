/**
 * The control socket under abuse. The REAL daemon runs in the lab's sensor
 * namespace and enforces a real job (the lab client's address) while a
 * separate fuzzer process (control-fuzzer.ts) throws random bytes, invalid
 * UTF-8, deeply nested and huge JSON, wrong types and oversize lines at it,
 * holds thousands of half-open slow connections and a few clients that
 * pipeline requests without ever reading. Throughout, this process asks
 * valid questions on fresh connections and measures how long each answer
 * takes, and a lab client keeps trying to connect to the server (the job
 * must keep refusing it). Afterwards the job is intact and still enforcing,
 * and every request the fuzzer made is in the log with its peer credentials.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createLab } from '../../testkit/lab/lab.js';
import { connectOnce, connectOutcome, startServer } from '../../testkit/lab/peer-control.js';
import { startDaemon, type LogLine } from '../../testkit/daemon.js';
import { ptest } from '../helpers/privileged.js';
import { fmtMs } from './helpers.js';
import { SCALE, scaled } from './scale.js';
import { sleep } from '../../testkit/time.js';
import { seedFromEnv } from '../../testkit/rng.js';
import { rssMb } from '../../testkit/proc.js';
import { summarize } from '../../testkit/stats.js';

const FUZZER = fileURLToPath(new URL('./control-fuzzer.js', import.meta.url));
const PROBE = fileURLToPath(new URL('./latency-probe.js', import.meta.url));
const LINES = scaled(3_000, 60_000);
const SLOW = scaled(1_500, 4_000);
const MIN_MS = scaled(8_000, 45_000);
const IDLE_MS = 3_000;
/**
 * Valid requests while the daemon is being abused: the median within this
 * (the daemon keeps serving), and none starved past STARVE_MS (a queue
 * behind the fuzz, not a slow moment on a loaded 2-vCPU machine: the max
 * alone measured 185-918 ms under CI load, so it is reported, not bounded
 * tighter; speed is bench's business).
 */
const LATENCY_BOUND_MS = 100;
const STARVE_MS = 3_000;
const ECHO_PORT = 5001;
/** A connection that survives this long was not reset. */
const HOLD_MS = 300;


interface ProbeResult {
  latencies: number[];
  startedAt: number[];
  failures: string[];
}

/** The latency probe as a child process; stop() ends it and returns what it measured. */
async function startProbe(socket: string, jobId: string): Promise<{ origin: () => number; stop: () => Promise<ProbeResult> }> {
  const child = spawn(process.execPath, [PROBE, JSON.stringify({ socket, gapMs: 20, jobId })], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  for (let i = 0; i < 200 && !out.startsWith('ready'); i++) await sleep(25);
  const start = performance.now();
  const closed = new Promise<void>((ok) => child.once('close', () => ok()));
  return {
    // The probe's clock starts a little before ours: its start times are relative to its own origin.
    origin: () => performance.now() - start,
    stop: async () => {
      child.stdin.end();
      await closed;
      return JSON.parse(out.slice(out.indexOf('\n') + 1)) as ProbeResult;
    },
  };
}

function slowest(p: ProbeResult, n: number, origin: number): string {
  return p.latencies
    .map((ms, i) => ({ ms, at: p.startedAt[i] - origin }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, n)
    .map((x) => `${x.ms.toFixed(1)} ms at +${(x.at / 1000).toFixed(2)} s`)
    .join(', ');
}

const REQUEST_MSGS = new Set(['request', 'request rejected', 'request refused', 'request failed with an internal error', 'request line too long: closing the connection']);

ptest(`control socket fuzz (${LINES} bad lines, ${SLOW} slow connections, non-reading clients): valid requests answered (median within ${LATENCY_BOUND_MS} ms, none starved), the job keeps enforcing`, async (t) => {
  const seed = seedFromEnv();
  t.log(`seed ${seed} (STRESS_SEED replays the fuzz lines), scale ${SCALE}`);
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const daemon = await startDaemon({
    netns: lab.ns.sensor,
    // The default maxClients (1024): the slow clients outnumber it, so newcomers make room by closing the longest idle.
    // debug: read-only requests are logged at debug only, and every line must be logged here.
    config: { clientIdleTimeoutMs: IDLE_MS, summaryIntervalMs: 1000, logLevel: 'debug' },
  });
  t.teardown(async () => {
    await daemon.stop();
  });
  await startServer(lab, lab.ns.server, [{ port: ECHO_PORT, mode: 'echo' }]);
  // ok = the connection lived HOLD_MS; reset after its handshake (connectOutcome 'reset') = the job is enforcing.
  const tryConnect = () => connectOnce(lab, lab.ns.client, lab.hosts.server.v4, ECHO_PORT, { timeoutMs: 1500, holdMs: HOLD_MS });
  t.true((await tryConnect()).ok, 'the lab works before any job');

  const created = await daemon.request({
    v: 1, op: 'create', engid: 'ENG-FUZZ', sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: lab.hosts.client.v4, duration: 900,
  });
  t.true(created.ok, JSON.stringify(created.error));
  const job = created.result.job as { id: string; expiresAt: string };
  const refusedBefore = await tryConnect();
  t.is(connectOutcome(refusedBefore), 'reset', 'the job resets the client\'s connections before the fuzz');
  const countersBefore = (await daemon.request({ v: 1, op: 'list' })).result.jobs[0].counters as { matched: number; rstsSent: number };

  // Valid questions all along, from a process of their own; a list must always show the job.
  const probe = await startProbe(daemon.socket, job.id);
  // The job must keep refusing the client while the daemon is abused.
  const enforcement: { ok: boolean; outcome: string; connected?: boolean; code?: string }[] = [];
  let fuzzing = true;
  const enforcer = (async () => {
    while (fuzzing) {
      const r = await tryConnect();
      enforcement.push({ ok: r.ok === true, outcome: connectOutcome(r), connected: r.connected, code: r.code });
      await sleep(1000);
    }
  })();
  let rssMax = rssMb(daemon.pid);
  const rssStart = rssMax;
  let connMax = 0;
  const sampler = setInterval(() => {
    rssMax = Math.max(rssMax, rssMb(daemon.pid));
  }, 250);

  const fuzzStart = probe.origin();
  // The fuzzer at a lower CPU priority: on two cores it would otherwise take a core from the
  // daemon, and the latency measured would be the scheduler's, not the daemon's fairness.
  const fuzzer = spawn('nice', ['-n', '10', process.execPath, FUZZER, JSON.stringify({
    socket: daemon.socket, lines: LINES, slow: SLOW, nonReaders: 3, minMs: MIN_MS, seed, workers: 4, fakeIf: ['fz-nosuch0', 'fz-nosuch1'],
  })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  fuzzer.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  fuzzer.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const statusSampler = setInterval(() => {
    void daemon.request({ v: 1, op: 'status' }, 2000).then((s) => (connMax = Math.max(connMax, s.result?.connections ?? 0)), () => {});
  }, 1000);
  const code = await new Promise<number | null>((ok) => fuzzer.once('close', ok));
  fuzzing = false;
  clearInterval(sampler);
  clearInterval(statusSampler);
  const p = await probe.stop();
  const lat = summarize(p.latencies);
  await enforcer;
  t.is(code, 0, `fuzzer exit ${code}: ${err}`);
  const s = JSON.parse(out) as {
    pid: number; linesSent: number; bytesSent: number; responses: number; okAnswers: number; batches: number; failures: string[];
    byCode: Record<string, number>; byKind: Record<string, number>; oversize: { sent: number; answeredAndClosed: number };
    slow: { opened: number; connectErrors: number; droppedByDaemon: number; stillOpen: number; trickle: number; trickleAnswered: number; trickleEvicted: number; limitRefused: number };
    nonReaders: { opened: number; requestsWritten: number; droppedByDaemon: number }; elapsedMs: number;
  };

  t.log(`fuzz: ${s.linesSent} lines (${(s.bytesSent / 1e6).toFixed(1)} MB) in ${s.batches} connections over ${(s.elapsedMs / 1000).toFixed(1)} s; ` +
    `${s.responses} answers (${s.okAnswers} ok) ${JSON.stringify(s.byCode)}; kinds ${JSON.stringify(s.byKind)}`);
  t.log(`oversize lines ${s.oversize.sent}, each answered E_PROTOCOL then closed: ${s.oversize.answeredAndClosed}`);
  t.log(`slow connections: ${s.slow.opened} opened (${s.slow.connectErrors} connect errors, ${s.slow.limitRefused} E_LIMIT), ` +
    `${s.slow.droppedByDaemon} closed by the daemon (idle or to make room); of ${s.slow.trickle} trickling clients ${s.slow.trickleAnswered} answered at the end, ${s.slow.trickleEvicted} closed to make room; most connections at once ${connMax}`);
  t.log(`non-reading clients: ${s.nonReaders.opened}, ${s.nonReaders.requestsWritten} requests written unread, ${s.nonReaders.droppedByDaemon} dropped; daemon RSS ${rssStart.toFixed(0)} -> max ${rssMax.toFixed(0)} MiB`);
  t.log(`valid requests during the fuzz: ${lat.n}, p50 ${fmtMs(lat.p50)}, p99 ${fmtMs(lat.p99)}, max ${fmtMs(lat.max)}; failures ${p.failures.length}; slowest: ${slowest(p, 5, fuzzStart)}`);
  const flowLat = daemon.logs.filter((l) => l.msg === 'flow reset').map((l) => Number(l.firstLatencyUs) / 1000);
  t.log(`enforcement checks during the fuzz: ${enforcement.length}, killed ${enforcement.filter((e) => !e.ok).length} ` +
    `(${enforcement.filter((e) => !e.ok && e.connected).length} after the handshake completed, ${[...new Set(enforcement.map((e) => e.code))].join(',')}); ` +
    `data plane first-RST latency per flow (${flowLat.length} flows): ${JSON.stringify(summarize(flowLat))} ms`);

  t.deepEqual(s.failures.slice(0, 10), [], `${s.failures.length} bad answers from the daemon`);
  t.deepEqual(p.failures.slice(0, 10), [], 'every valid request answered correctly');
  t.true(lat.n >= MIN_MS / 100, `${lat.n} valid requests measured`);
  t.true(lat.p50 < LATENCY_BOUND_MS, `median valid request ${fmtMs(lat.p50)}`);
  t.true(lat.max < STARVE_MS, `slowest valid request ${fmtMs(lat.max)}`);
  const evicted = daemon.logs.filter((l) => l.msg === 'too many control connections: dropped the longest idle one').length;
  const refused = daemon.logs.filter((l) => l.msg === 'too many control connections: refused').length;
  t.log(`at the 1024-connection limit: ${evicted} longest-idle connections closed to make room, ${refused} newcomers refused`);
  t.true(s.slow.opened >= SLOW * 0.98 && s.slow.connectErrors === 0, 'every slow connection was accepted');
  t.true(SLOW <= 1000 || evicted > 0, 'the limit was reached and idle connections made room');
  t.true(s.slow.droppedByDaemon > 0, 'idle ones dropped');
  t.is(s.slow.trickleAnswered + s.slow.trickleEvicted, s.slow.trickle, 'each trickling client answered, or closed with E_LIMIT to make room');
  t.true(s.oversize.sent === 0 || s.oversize.answeredAndClosed === s.oversize.sent);
  t.true(rssMax - rssStart < 150, `daemon RSS grew ${(rssMax - rssStart).toFixed(0)} MiB`);
  t.true(enforcement.length >= 2 && enforcement.every((e) => e.outcome === 'reset'), `every connection reset after its handshake while fuzzed: ${JSON.stringify(enforcement)}`);

  // After: same daemon, same job, still enforcing, its counters moved.
  t.is(daemon.exit, null, 'the daemon is still running');
  const list = await daemon.request({ v: 1, op: 'list' });
  t.is(list.result.jobs.length, 1);
  t.is(list.result.jobs[0].id, job.id);
  t.is(list.result.jobs[0].expiresAt, job.expiresAt);
  const after = list.result.jobs[0].counters as { matched: number; rstsSent: number };
  t.true(after.matched > countersBefore.matched && after.rstsSent > countersBefore.rstsSent, `counters ${JSON.stringify(countersBefore)} -> ${JSON.stringify(after)}`);
  t.is(connectOutcome(await tryConnect()), 'reset', 'still reset after the fuzz');
  const st = await daemon.request({ v: 1, op: 'status' });
  t.is(st.result.pid, daemon.pid);
  t.true(st.result.interfaces.some((i: { ifname: string; role: string; up: boolean }) => i.ifname === lab.sensor.sniffIf && i.role === 'sniff' && i.up));

  // Every request line is logged with the peer's credentials (SO_PEERCRED).
  const reqLogs = daemon.logs.filter((l: LogLine) => REQUEST_MSGS.has(l.msg ?? ''));
  const peerOf = (l: LogLine) => l.peer as { uid: number | null; pid: number | null } | undefined;
  const fromFuzzer = reqLogs.filter((l) => peerOf(l)?.pid === s.pid);
  t.true(reqLogs.every((l) => typeof peerOf(l)?.uid === 'number' && typeof peerOf(l)?.pid === 'number'), 'no request logged without uid/pid');
  t.true(fromFuzzer.every((l) => peerOf(l)!.uid === 0));
  t.true(fromFuzzer.length >= s.responses, `${fromFuzzer.length} log lines for the fuzzer's ${s.responses} answered requests`);
  t.false(reqLogs.some((l) => l.msg === 'request failed with an internal error'), 'no internal error logged');
  t.log(`request log lines: ${reqLogs.length} (${fromFuzzer.length} from the fuzzer pid ${s.pid}, uid 0); latency summary of all probes ${JSON.stringify(lat)}`);
});
