/**
 * Scale in jobs: CPU cost per packet of NON-matching background traffic
 * at a fixed packet rate, as the number of targets grows. trafgen sends TCP
 * segments between random addresses of 10.99.0.0/16 and 10.98.0.0/16
 * (never targeted) into the sniff path at a fixed, evenly paced rate for
 * the whole section, while the configurations take turns, several rounds:
 *
 *   baseline      no tool
 *   tcpreset-N    tcpresetd with N jobs on distinct hosts (N = 0, 1, 1,000,
 *                 100,000), each round a fresh daemon that restores its N
 *                 jobs from a state file (creating 100,000 jobs one request
 *                 at a time is measured separately: see createRate)
 *   tcpkill-N     N tcpkill processes, one per target (`host X`), since one
 *                 process per target is how tcpkill scales
 *
 * Two measures per window:
 *   attributable  the tool's own CPU (all threads of its processes, from the
 *                 scheduler's accounting, ns) + its XDP program's run time
 *                 (kernel BPF stats, ns) per packet. tcpkill's in-kernel cost
 *                 (one classic-BPF socket filter run per process per packet)
 *                 has no per-program accounting and is not in this figure;
 *   kernel marginal  interrupt + softirq time of the machine per packet
 *                 (/proc/stat, 10 ms resolution) minus that of a window with
 *                 no tool taken just before: the receive path the tool adds
 *                 (its XDP program, tcpkill's socket filters and packet
 *                 copies), plus whatever softirq work the shared machine did.
 *
 * The daemon's resident memory is taken in each tcpreset configuration.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusResult } from '../src/control/protocol.js';
import { BENCH_DAEMON_CONFIG, BENCH_ENGID, type BenchContext } from './context.js';
import { bulkRequests, stateFileWithJobs, targetHost } from '../testkit/control.js';
import { median, quantileSorted, sortNumbers } from '../testkit/stats.js';
import { bpfProgStats, ifCounters, machineIrqNs, processesCpuNs, readSysctl, rssBytes, writeSysctl, xdpProgId } from '../testkit/proc.js';
import { spawnTcpkill, stopTcpkill, waitListening, type TcpkillProc } from './lib/tcpkill.js';
import { startTrafgen, tcpFrameConfig } from '../testkit/trafgen.js';
import { sleep } from '../testkit/time.js';
import { SensorDaemon } from '../testkit/daemon.js';


export interface ScaleRun {
  config: string;
  tool: 'none' | 'tcpreset' | 'tcpkill';
  targets: number;
  round: number;
  pps: number;
  toolNsPerPkt: number;
  bpfNsPerPkt: number;
  attributableNsPerPkt: number;
  irqNsPerPkt: number;
  /** The same, in the no-tool window just before. */
  baselineIrqNsPerPkt: number;
  kernelMarginalNsPerPkt: number;
  rssMB?: number;
  /** tcpreset: spawn to answering, with its jobs restored. */
  startMs?: number;
}

export interface ScaleCell {
  config: string;
  tool: 'none' | 'tcpreset' | 'tcpkill';
  targets: number;
  rounds: number;
  attributable: { p50: number; p25: number; p75: number };
  kernelMarginal: { p50: number; p25: number; p75: number };
  /** Everything the tool adds: its processes + the kernel marginal (which contains its XDP program). */
  total: { p50: number; p25: number; p75: number };
  processNsPerPkt: number;
  bpfNsPerPkt: number;
  pps: number;
  rssMB?: number;
  startMs?: number;
}

export interface ScaleResult {
  ratePps: number;
  windowS: number;
  cells: ScaleCell[];
  runs: ScaleRun[];
  /** Creating jobs one control request each (pipelined, 16 connections): jobs/s at the sizes tried. */
  createRate: { jobs: number; ms: number; perSec: number }[];
  /**
   * One daemon creating jobs from 0 up to 100,000 (10,000 --quick), one
   * control request each: jobs/s of the 1,000 creations that end at each
   * point (1,000th, 10,000th, ... 100,000th), and the daemon's memory once
   * they are all in force.
   */
  createCurve?: {
    /** perSec: wall-clock rate; cpuUsPerJob: the daemon's own CPU time (all threads) per creation, which other load on a shared machine barely moves. */
    points: { jobs: number; perSec: number; cpuUsPerJob?: number }[];
    jobs: number;
    totalMs: number;
    memory: { rssMB: number; heapUsedMB: number; externalMB: number; arrayBuffersMB: number; heapTotalMB?: number; smaps?: RssParts } | null;
  };
  /** Where the resident memory of a daemon with one job is (the first tcpreset-1 run). */
  oneJobSmaps?: RssParts;
  memory: { idleMB: number | null; oneJobMB: number | null; thousandMB: number | null; hundredThousandMB: number | null };
  notes: string[];
}

/** Resident memory (MB) of a process by kind of mapping, from /proc/PID/smaps. */
export interface RssParts {
  /** The node executable's own pages (code, read-only data: ICU, the snapshot). */
  nodeBinary: number;
  /** BPF maps mmapped by the daemon (anon_inode:bpf-map: the flow memory, ring buffers, mmapable arrays). */
  bpfMaps: number;
  /** Other files (shared libraries, the daemon's own files). */
  otherFiles: number;
  /** Anonymous memory: both V8 heaps (main thread, event thread), their code, malloc. */
  anonymous: number;
}

export function rssParts(pid: number): RssParts | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = { nodeBinary: 0, bpfMaps: 0, otherFiles: 0, anonymous: 0 };
  let kind: keyof RssParts = 'anonymous';
  for (const line of text.split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      const name = m[1]!;
      kind = name.includes('bpf-map') ? 'bpfMaps' : /\/node$/.test(name) ? 'nodeBinary' : name.startsWith('/') ? 'otherFiles' : 'anonymous';
      continue;
    }
    if (line.startsWith('Rss:')) kb[kind] += Number(line.split(/\s+/)[1]);
  }
  const mb = (x: number): number => Math.round((x * 1024) / 1e5) / 10;
  return { nodeBinary: mb(kb.nodeBinary), bpfMaps: mb(kb.bpfMaps), otherFiles: mb(kb.otherFiles), anonymous: mb(kb.anonymous) };
}

/**
 * trafgen's --rate sends each second's packets in one burst; --gap paces
 * them evenly, and one trafgen at --gap 1us manages ~20 µs per packet
 * (~45-50k packets/s). Evenly spaced traffic is what a mirror port of
 * sessions delivers, so the gap is used and the rate is what it gives.
 */
const GAP_US = 1;

interface Config {
  name: string;
  tool: 'none' | 'tcpreset' | 'tcpkill';
  targets: number;
}

function q(xs: number[]): { p50: number; p25: number; p75: number } {
  const s = sortNumbers(xs);
  const r = (x: number): number => Math.round(x * 10) / 10;
  return { p50: r(quantileSorted(s, 0.5)), p25: r(quantileSorted(s, 0.25)), p75: r(quantileSorted(s, 0.75)) };
}

interface Window {
  pps: number;
  toolNs: number;
  bpfNs: number;
  irqNs: number;
}

/** One measurement window: per-packet CPU of the given processes and XDP program, and of the machine's irq/softirq. */
async function measureWindow(ctx: BenchContext, pids: number[], progId: number | null, windowS: number): Promise<Window> {
  const { lab } = ctx;
  const b0 = progId ? await bpfProgStats(progId) : { runTimeNs: 0, runCnt: 0 };
  const p0 = await ifCounters(lab.sensor.ns, lab.sensor.sniffIf);
  const cpu0 = processesCpuNs(pids);
  const i0 = machineIrqNs();
  const w0 = performance.now();
  await sleep(windowS * 1000);
  const i1 = machineIrqNs();
  const cpu1 = processesCpuNs(pids);
  const secs = (performance.now() - w0) / 1000;
  const p1 = await ifCounters(lab.sensor.ns, lab.sensor.sniffIf);
  const b1 = progId ? await bpfProgStats(progId) : { runTimeNs: 0, runCnt: 0 };
  const pkts = Math.max(1, p1.rxPackets - p0.rxPackets);
  return { pps: pkts / secs, toolNs: (cpu1 - cpu0) / pkts, bpfNs: (b1.runTimeNs - b0.runTimeNs) / pkts, irqNs: (i1 - i0) / pkts };
}

export async function runScale(ctx: BenchContext): Promise<ScaleResult> {
  const { lab } = ctx;
  const windowS = ctx.quick ? 1.5 : 3;
  const rounds = ctx.quick ? 1 : 3;
  const big = ctx.quick ? 10_000 : 100_000;
  const configs: Config[] = ctx.quick
    ? [
        { name: 'tcpkill-1', tool: 'tcpkill', targets: 1 },
        { name: 'tcpreset-0', tool: 'tcpreset', targets: 0 },
        { name: 'tcpreset-1', tool: 'tcpreset', targets: 1 },
        { name: 'tcpkill-10', tool: 'tcpkill', targets: 10 },
        { name: 'tcpreset-1000', tool: 'tcpreset', targets: 1000 },
        { name: `tcpreset-${big}`, tool: 'tcpreset', targets: big },
      ]
    : [
        { name: 'tcpkill-1', tool: 'tcpkill', targets: 1 },
        { name: 'tcpreset-0', tool: 'tcpreset', targets: 0 },
        { name: 'tcpreset-1', tool: 'tcpreset', targets: 1 },
        { name: 'tcpkill-10', tool: 'tcpkill', targets: 10 },
        { name: 'tcpreset-1000', tool: 'tcpreset', targets: 1000 },
        { name: 'tcpkill-100', tool: 'tcpkill', targets: 100 },
        { name: `tcpreset-${big}`, tool: 'tcpreset', targets: big },
      ];
  const notes: string[] = [];

  // Creating jobs through the control protocol, 0 -> `big` on one daemon, 1,000 at a time: each
  // step's rate is what creating the next 1,000 costs with that many jobs already in force.
  const createRate: ScaleResult['createRate'] = [];
  const STEP = 1000;
  const points: { jobs: number; perSec: number; cpuUsPerJob: number }[] = [];
  const marks = new Set([1000, 10_000, 25_000, 50_000, 75_000, 100_000].filter((n) => n <= big));
  // The daemon's first job opens the data plane (BPF load, XDP attach, event thread start): a one-time
  // cost, not what creating the 1,000th job costs. One job before the curve pays it.
  const warm = await ctx.daemon.call<{ job: { id: string } }>({
    op: 'create', engid: `${BENCH_ENGID}-warm`, sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: targetHost(big + 1), duration: 3600,
  }, 60_000);
  let created = 0;
  let totalMs = 0;
  let createMemory: NonNullable<ScaleResult['createCurve']>['memory'] = null;
  for (let base = 0; base < big; base += STEP) {
    const bodies = Array.from({ length: STEP }, (_, i) => ({
      op: 'create' as const, engid: `${BENCH_ENGID}-create`, sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: targetHost(base + i), duration: 3600,
    }));
    const cpu0 = processesCpuNs([ctx.daemon.pid]);
    const r = await bulkRequests(ctx.daemon.socket, bodies.length, (i) => ({ v: 1, ...bodies[i] }), { connections: 16, window: 64, timeoutMs: 120_000 }).catch((err: Error) => {
      notes.push(`creating jobs ${base + 1}-${base + STEP} over the control socket failed: ${err.message}`);
      return null;
    });
    if (!r) break;
    const cpuUsPerJob = Math.round((processesCpuNs([ctx.daemon.pid]) - cpu0) / 1000 / Math.max(1, r.ok));
    if (r.ok !== STEP) notes.push(`creating jobs ${base + 1}-${base + STEP}: ${STEP - r.ok} refused (${JSON.stringify([...r.errors])})`);
    created += r.ok;
    totalMs += r.ms;
    const perSec = Math.round((r.ok / r.ms) * 1000);
    if (marks.has(base + STEP)) {
      points.push({ jobs: base + STEP, perSec, cpuUsPerJob });
      ctx.log(`scale: jobs ${base + 1}-${base + STEP} created at ${perSec}/s, daemon CPU ${cpuUsPerJob} µs each (${(totalMs / 1000).toFixed(1)} s so far)`);
    }
    if (base + STEP === 1000) createRate.push({ jobs: 1000, ms: Math.round(r.ms), perSec });
    if (totalMs > 300_000) {
      notes.push(`creating jobs one request each stopped at ${created} jobs: past 300 s`);
      break;
    }
  }
  await ctx.daemon.call({ op: 'cancel', jobId: warm.job.id }, 60_000);
  if (created > 1000) createRate.push({ jobs: created, ms: Math.round(totalMs), perSec: Math.round((created / totalMs) * 1000) });
  if (created === big) {
    const st = await ctx.daemon.call<StatusResult>({ op: 'status' }, 60_000);
    const smaps = rssParts(ctx.daemon.pid);
    createMemory = {
      rssMB: Math.round((rssBytes(ctx.daemon.pid) / 1e6) * 10) / 10, heapUsedMB: st.memory.heapUsed, heapTotalMB: st.memory.heapTotal, externalMB: st.memory.external, arrayBuffersMB: st.memory.arrayBuffers,
      ...(smaps ? { smaps } : {}),
    };
    ctx.log(`scale: ${big} jobs created in ${(totalMs / 1000).toFixed(1)} s; daemon RSS ${createMemory.rssMB} MB (V8 heap used ${st.memory.heapUsed} MiB, external ${st.memory.external} MiB)`);
  }
  const createCurve: ScaleResult['createCurve'] = { points, jobs: created, totalMs: Math.round(totalMs), memory: createMemory };
  // The configurations below run their own daemons (this one's orderly stop would save 100,000 jobs: not measured).
  await ctx.daemon.stop(created >= 10_000 ? 5_000 : 30_000);
  ctx.daemon.removeFiles();

  const statsBefore = readSysctl('kernel.bpf_stats_enabled');
  await writeSysctl('kernel.bpf_stats_enabled', '1');
  const cfg = tcpFrameConfig({ smac: '02:00:00:00:99:01', dmac: '02:00:00:00:98:01', src: null, dst: null, dport: 443 });
  const tg = startTrafgen(lab, join(ctx.tmp, 'scale.cfg'), cfg, { gapUs: GAP_US });
  const runs: ScaleRun[] = [];
  let oneJobSmaps: RssParts | undefined;
  let skipBig = false;
  try {
    await sleep(1000);
    for (let round = 0; round < rounds; round++) {
      for (const c of configs) {
        if (c.targets === big && c.tool === 'tcpreset' && skipBig) continue;
        // The reference: the same traffic with no tool, just before.
        const base = await measureWindow(ctx, [], null, windowS);
        let daemon: SensorDaemon | undefined;
        let procs: TcpkillProc[] = [];
        let startMs: number | undefined;
        try {
          if (c.tool === 'tcpreset') {
            const t = performance.now();
            const timeout = c.targets >= 100_000 ? 150_000 : 60_000;
            try {
              daemon = await SensorDaemon.start(lab, {
                config: BENCH_DAEMON_CONFIG,
                readyTimeoutMs: timeout,
                ...(c.targets > 0 ? { stateFile: stateFileWithJobs(c.targets, lab.sensor.sniffIf, lab.sensor.resetIf) } : {}),
              });
            } catch (err) {
              notes.push(`${c.name}: the daemon did not come up with ${c.targets} saved jobs within ${timeout / 1000} s (${(err as Error).message.split('\n')[0]})`);
              ctx.log(`scale: ${c.name} did not come up within ${timeout / 1000} s; skipped from now on`);
              skipBig = true;
              continue;
            }
            startMs = performance.now() - t;
            const st = await daemon.call<StatusResult>({ op: 'status' }, 60_000);
            if (st.jobs !== c.targets) notes.push(`${c.name}: the daemon restored ${st.jobs} of ${c.targets} jobs`);
            if (c.targets === big && startMs > 60_000) {
              skipBig = true;
              notes.push(`${c.name}: restoring ${c.targets} jobs took ${(startMs / 1000).toFixed(0)} s, so it ran in one round only`);
            }
          } else {
            procs = Array.from({ length: c.targets }, (_, i) => spawnTcpkill(lab, targetHost(i), join(ctx.tmp, `scale-tcpkill-${i}.log`)));
            await Promise.all(procs.map((p) => waitListening(p, 30_000)));
          }
          await sleep(700);
          const pids = daemon ? [daemon.pid] : procs.map((p) => p.child.pid!);
          const progId = daemon && c.targets > 0 ? await xdpProgId(lab.sensor.ns, lab.sensor.sniffIf) : null;
          const w = await measureWindow(ctx, pids, progId, windowS);
          if (daemon && c.targets === 1) oneJobSmaps ??= rssParts(daemon.pid);
          const r1 = (x: number): number => Math.round(x * 10) / 10;
          const run: ScaleRun = {
            config: c.name,
            tool: c.tool,
            targets: c.targets,
            round,
            pps: Math.round(w.pps),
            toolNsPerPkt: r1(w.toolNs),
            bpfNsPerPkt: r1(w.bpfNs),
            attributableNsPerPkt: r1(w.toolNs + w.bpfNs),
            irqNsPerPkt: r1(w.irqNs),
            baselineIrqNsPerPkt: r1(base.irqNs),
            kernelMarginalNsPerPkt: r1(w.irqNs - base.irqNs),
            ...(daemon ? { rssMB: r1(rssBytes(daemon.pid) / 1e6) } : {}),
            ...(startMs !== undefined ? { startMs: Math.round(startMs) } : {}),
          };
          runs.push(run);
          ctx.log(
            `scale ${c.name} round ${round + 1}/${rounds}: ${run.pps} pkt/s, attributable ${run.attributableNsPerPkt} ns/pkt ` +
              `(process ${run.toolNsPerPkt}, XDP ${run.bpfNsPerPkt}), kernel marginal ${run.kernelMarginalNsPerPkt} ns/pkt ` +
              `(irq ${run.irqNsPerPkt} vs ${run.baselineIrqNsPerPkt} without)` +
              (run.rssMB !== undefined ? `, RSS ${run.rssMB} MB` : '') +
              (startMs !== undefined ? `, start ${(startMs / 1000).toFixed(1)} s` : ''),
          );
        } finally {
          if (daemon) {
            // A throwaway daemon: an orderly stop with 100,000 jobs (saving and detaching each) is not what is measured.
            await daemon.stop(c.targets >= 10_000 ? 5_000 : 30_000);
            daemon.removeFiles();
          }
          await stopTcpkill(procs);
        }
      }
    }
  } finally {
    await tg.stop();
    await writeSysctl('kernel.bpf_stats_enabled', statsBefore).catch(() => {});
    // Leave a daemon for whatever runs after this section.
    ctx.daemon.removeFiles();
    ctx.daemon = await SensorDaemon.start(lab, { config: BENCH_DAEMON_CONFIG });
  }

  const cells: ScaleCell[] = configs.flatMap((c) => {
    const rs = runs.filter((r) => r.config === c.name);
    if (rs.length === 0) return [];
    const rss = rs.flatMap((r) => (r.rssMB === undefined ? [] : [r.rssMB]));
    const st = rs.flatMap((r) => (r.startMs === undefined ? [] : [r.startMs]));
    return [{
      config: c.name,
      tool: c.tool,
      targets: c.targets,
      rounds: rs.length,
      attributable: q(rs.map((r) => r.attributableNsPerPkt)),
      kernelMarginal: q(rs.map((r) => r.kernelMarginalNsPerPkt)),
      total: q(rs.map((r) => r.toolNsPerPkt + r.kernelMarginalNsPerPkt)),
      processNsPerPkt: Math.round(median(rs.map((r) => r.toolNsPerPkt)) * 10) / 10,
      bpfNsPerPkt: Math.round(median(rs.map((r) => r.bpfNsPerPkt)) * 10) / 10,
      pps: Math.round(median(rs.map((r) => r.pps))),
      ...(rss.length ? { rssMB: Math.round(median(rss) * 10) / 10 } : {}),
      ...(st.length ? { startMs: Math.round(median(st)) } : {}),
    }];
  });
  // The reference row: the no-tool windows themselves.
  cells.unshift({
    config: 'no tool',
    tool: 'none',
    targets: 0,
    rounds: runs.length,
    attributable: { p50: 0, p25: 0, p75: 0 },
    kernelMarginal: q(runs.map((r) => r.baselineIrqNsPerPkt)),
    total: { p50: 0, p25: 0, p75: 0 },
    processNsPerPkt: 0,
    bpfNsPerPkt: 0,
    pps: Math.round(median(runs.map((r) => r.pps))),
  });
  const rssOf = (n: number): number | null => cells.find((c) => c.tool === 'tcpreset' && c.targets === n)?.rssMB ?? null;
  return {
    ratePps: Math.round(median(runs.map((r) => r.pps))),
    windowS,
    cells,
    runs,
    createRate,
    createCurve,
    ...(oneJobSmaps ? { oneJobSmaps } : {}),
    memory: { idleMB: rssOf(0), oneJobMB: rssOf(1), thousandMB: rssOf(1000), hundredThousandMB: rssOf(100_000) },
    notes,
  };
}
