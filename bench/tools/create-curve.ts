/**
 * Job creation and memory at scale, alone: the part of `make bench`'s scale
 * section that creates jobs one control request each, without the lab, the
 * traffic and the restored configurations, so a change to the job path can
 * be measured (and profiled) in a minute rather than a quarter of an hour.
 *
 *   node dist/bench/tools/create-curve.js [--jobs N] [--restore N] [--cpu-prof DIR] [--heap-snapshot FILE] [--hold S] [--offlink]
 *
 * A namespace of its own with sniff0/reset0 (veths), the real daemon
 * (bin/tcpresetd) in it with the bench's configuration; jobs created as in
 * bench/scale.ts (16 connections, 64 requests in flight each, 1,000 at a
 * time). Prints per 1,000: wall-clock rate, the daemon's CPU µs per
 * creation, RSS; at the end the daemon's memory as `status` reports it.
 * --restore N: instead, start the daemon on a state file of N jobs and
 * report the start time and RSS. --cpu-prof: the daemon runs with
 * --cpu-prof into DIR (written at its exit). --heap-snapshot: a heap
 * snapshot of the daemon's main thread at the end (SIGUSR2).
 * --hold: keep the daemon S seconds before stopping it (to read /proc).
 * Needs root. Not a test: it asserts nothing.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '../../testkit/daemon.js';
import { bulkRequests, stateFileWithJobs, targetHost } from '../../testkit/control.js';
import { ownedNetnsSync } from '../../testkit/lab/netns.js';
import { processesCpuNs, rssBytes } from '../../testkit/proc.js';
import { BENCH_DAEMON_CONFIG } from '../context.js';
import { sleep } from '../../testkit/time.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const jobs = Number(arg('--jobs') ?? '100000');
const restore = arg('--restore') === undefined ? undefined : Number(arg('--restore'));
const cpuProf = arg('--cpu-prof');
const heapSnap = arg('--heap-snapshot');
const STEP = 1000;

/**
 * Preloaded into the daemon: profiles its main thread from SIGPWR (sent once
 * the data plane is open: the sampler's SIGPROF interrupts the BPF load,
 * which then fails with EAGAIN), written at exit as main-PID.cpuprofile.
 */
const PROFILER = `import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
const s = new Session();
s.connect();
s.post('Profiler.enable');
s.post('Profiler.setSamplingInterval', { interval: 200 });
process.on('SIGPWR', () => s.post('Profiler.start'));
process.on('exit', () => s.post('Profiler.stop', (err, r) => {
  if (!err) writeFileSync(process.env.PROF_DIR + '/main-' + process.pid + '.cpuprofile', JSON.stringify(r.profile));
}));
`;

const { ns, destroy } = ownedNetnsSync('curve');
process.once('exit', destroy);
const ip = (...a: string[]): void => {
  const r = spawnSync('ip', ['-n', ns, ...a], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${a.join(' ')}: ${r.stderr}`);
};
ip('link', 'add', 'sniff0', 'type', 'veth', 'peer', 'name', 'sniffp');
ip('link', 'add', 'reset0', 'type', 'veth', 'peer', 'name', 'resetp');
for (const dev of ['lo', 'sniff0', 'sniffp', 'reset0', 'resetp']) ip('link', 'set', dev, 'up');
// --offlink: the targets (10.128.0.0/9) are not on reset0's network, as in the bench's lab (each is a route lookup).
ip('addr', 'add', process.argv.includes('--offlink') ? '192.0.2.1/24' : '10.0.0.1/8', 'dev', 'reset0');

const env: NodeJS.ProcessEnv = {};
const nodeOpts: string[] = [];
if (cpuProf) {
  mkdirSync(cpuProf, { recursive: true });
  // --cpu-prof is refused in NODE_OPTIONS: a preload that runs the inspector's profiler instead.
  const pre = join(cpuProf, 'prof.mjs');
  writeFileSync(pre, PROFILER);
  nodeOpts.push(`--import=${pre}`);
  env.PROF_DIR = cpuProf;
}
if (heapSnap) nodeOpts.push('--heapsnapshot-signal=SIGUSR2');
// Extra V8/node flags for the daemon (an experiment's knob), e.g. --node-flags=--max-semi-space-size=1
for (const a of process.argv) if (a.startsWith('--node-flags=')) nodeOpts.push(...a.slice(13).split(' ').filter(Boolean));
if (nodeOpts.length) env.NODE_OPTIONS = nodeOpts.join(' ');

/** CPU ns per thread of `pid`, by tid, with the thread's name (comm). */
function threadCpu(pid: number): Map<string, { comm: string; ns: number }> {
  const out = new Map<string, { comm: string; ns: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      out.set(tid, { comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), ns });
    } catch {
      /* gone */
    }
  }
  return out;
}

/** µs per job by thread name, between two threadCpu() readings. */
function perThread(a: Map<string, { comm: string; ns: number }>, b: Map<string, { comm: string; ns: number }>, n: number): string {
  const by = new Map<string, number>();
  for (const [tid, t] of b) by.set(t.comm, (by.get(t.comm) ?? 0) + (t.ns - (a.get(tid)?.ns ?? 0)));
  return [...by].filter(([, ns]) => ns / 1000 / n >= 1).sort((x, y) => y[1] - x[1]).map(([c, ns]) => `${c}=${Math.round(ns / 1000 / n)}`).join(' ');
}

const mb = (b: number): number => Math.round(b / 1e5) / 10;

async function main(): Promise<void> {
  let stateDir: string | undefined;
  if (restore !== undefined) {
    const dir = `/tmp/create-curve-${process.pid}`;
    stateDir = join(dir, 'state');
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(join(stateDir, 'jobs.json'), stateFileWithJobs(restore, 'sniff0', 'reset0'));
  }
  const t0 = performance.now();
  // As the bench runs it: info level, the log in a file.
  const d = await startDaemon({
    netns: ns, config: BENCH_DAEMON_CONFIG, env, keepLogs: false, waitReady: false, logFile: `/tmp/create-curve-${process.pid}.log`,
    ...(stateDir ? { stateDir } : {}), args: ['--log-level', 'info'],
  });
  await d.ready(300_000);
  const status = async (): Promise<{ jobs: number; memory: Record<string, number> }> => (await d.request({ v: 1, op: 'status' }, 60_000)).result;
  if (restore !== undefined) {
    const st = await status();
    console.log(JSON.stringify({ restored: st.jobs, startMs: Math.round(performance.now() - t0), rssMB: mb(rssBytes(d.pid)), memory: st.memory }));
  } else {
    const create = (i: number): object => ({ v: 1, op: 'create', engid: 'bench-create', sniffIf: 'sniff0', resetIf: 'reset0', host: targetHost(i), duration: 3600 });
    // The first job opens the data plane: a one-time cost, as in bench/scale.ts.
    const warm = await d.request({ ...create(jobs + 1), engid: 'bench-warm' }, 60_000);
    if (!warm.ok) throw new Error(JSON.stringify(warm));
    if (cpuProf) d.child.kill('SIGPWR');
    let totalMs = 0;
    for (let base = 0; base < jobs; base += STEP) {
      const cpu0 = processesCpuNs([d.pid]);
      const th0 = threadCpu(d.pid);
      const r = await bulkRequests(d.socket, STEP, (i) => create(base + i), { connections: 16, window: 64, timeoutMs: 120_000 });
      const cpuUs = Math.round((processesCpuNs([d.pid]) - cpu0) / 1000 / Math.max(1, r.ok));
      totalMs += r.ms;
      if (r.ok !== STEP) console.log(`refused: ${JSON.stringify([...r.errors])}`);
      const n = base + STEP;
      if (n <= 5000 || n % 10_000 === 0 || n === jobs) {
        console.log(`${n}\t${Math.round((r.ok / r.ms) * 1000)}/s\tcpu ${cpuUs} µs/job (${perThread(th0, threadCpu(d.pid), r.ok)})\trss ${mb(rssBytes(d.pid))} MB`);
      }
    }
    await sleep(500);
    const st = await status();
    console.log(JSON.stringify({ jobs: st.jobs, totalMs: Math.round(totalMs), rssMB: mb(rssBytes(d.pid)), memory: st.memory }));
  }
  if (heapSnap) {
    d.child.kill('SIGUSR2');
    // Written into the daemon's working directory (ours) as Heap.*.heapsnapshot.
    for (let i = 0; i < 600; i++) {
      await sleep(500);
      const f = readdirSync('.').find((n) => n.endsWith('.heapsnapshot') && n.includes(String(d.pid)));
      if (f) {
        await sleep(3000);
        renameSync(f, heapSnap);
        break;
      }
    }
  }
  const hold = Number(arg('--hold') ?? '0');
  if (hold > 0) {
    console.log(`holding the daemon (pid ${d.pid}) for ${hold} s`);
    await sleep(hold * 1000);
  }
  await d.stop('SIGTERM', 120_000);
  if (cpuProf) console.log(`cpu profile in ${cpuProf}: ${readdirSync(cpuProf).join(' ')}`);
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
