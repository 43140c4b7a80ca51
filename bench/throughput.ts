/**
 * Throughput: the most RSTs per second forged and sent when many flows
 * match at once. trafgen floods the sniff path with matching segments
 * (client -> server, every one a new flow: random port, seq, ack) at a
 * ladder of offered rates (trafgen cannot simply blast: once native XDP is
 * attached on the receiving veth, a full ring makes it abort with "Flushing
 * TX_RING failed"); the rate of RSTs leaving reset0 (its tx counter) is
 * taken over a steady window, and the best rate over the ladder is reported
 * with the ring-buffer loss at that offered rate. For tcpreset the ring-buffer loss comes from
 * its BPF counters (events the XDP program could not queue / events + lost).
 * tcpkill gets the same flood; it answers each packet it reads with 3 RSTs
 * to the sender, so its answered fraction is RSTs / (3 x packets).
 */
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import type { StatusResult } from '../src/control/protocol.js';
import { BENCH_ENGID, toolOrder, type BenchContext, type Tool } from './context.js';
import { median } from '../testkit/stats.js';
import { ifCounters, machineBusyNs, machineIrqNs, processesCpuNs, threadCpuNs } from '../testkit/proc.js';
import { spawnTcpkill, stopTcpkill, waitListening } from './lib/tcpkill.js';
import { startTrafgen, tcpFrameConfig } from '../testkit/trafgen.js';
import { sleep } from '../testkit/time.js';
import { fileURLToPath } from 'node:url';
import { BENCH_DAEMON_CONFIG, freeSniffPort, sharedDaemon } from './context.js';
import { SensorDaemon } from '../testkit/daemon.js';

export interface ThroughputRun {
  tool: Tool;
  /** Packets/s asked of trafgen (sent in bursts). */
  targetPps: number;
  /** Matching packets/s arriving on sniff0 during the window. */
  offeredPps: number;
  /** RSTs/s leaving reset0 during the window. */
  rstPerSec: number;
  /** RSTs sent / RSTs the tool's rule calls for (2 per packet for tcpreset, 3 for tcpkill), whole run. */
  answered: number;
  /** tcpreset: events lost at the ring buffer / (events + lost), whole run. */
  ringLoss?: number;
  ringLost?: number;
  /** CPU of the tool's process during the window, in cores (1.0 = one CPU busy). */
  toolCores: number;
}

export interface ThroughputPoint {
  tool: Tool;
  targetPps: number;
  runs: number;
  offeredPps: number;
  rstPerSec: number;
  answered: number;
  ringLoss?: number;
  toolCores: number;
}

export interface ThroughputResult {
  windowS: number;
  runs: ThroughputRun[];
  /** Medians per tool and offered rate. */
  points: ThroughputPoint[];
  /** Per tool: the point with the most RSTs/s. */
  best: Record<Tool, ThroughputPoint>;
  /** tcpreset with 1 and 2 event threads against the sender alone, same run (issue 13). */
  floods?: FloodResult;
}

export interface FloodPoint {
  threads: number;
  targetPps: number;
  runs: number;
  offeredPps: number;
  rstPerSec: number;
  /** RSTs sent / 2 per matching segment, whole run. */
  answered: number;
  ringLoss: number;
  /** Daemon CPU in cores during the window. */
  cores: number;
  /** CPU of each event thread during the window, cores (absent in results from before it was taken). */
  threadCores?: number[];
  /** The machine's interrupt + softirq time during the window, cores (the receive path: veth NAPI, XDP, mirred). */
  softirqCores?: number;
  /** Everything the machine did during the window (all CPUs but idle), cores: how close to saturated it was. */
  machineCores?: number;
  /** Records drained per wake-up from epoll_wait (all threads): a thread that never sleeps through a flood drains thousands per wake-up. */
  recordsPerWakeup?: number;
  /** Matching segments the kernel did not send up as events (an exact repeat of the flow's last event within 10 ms) / matching non-RST segments. */
  suppressed?: number;
}

/**
 * The kernel's suppression of exact repeats (bpf/tcpreset.bpf.c
 * is_duplicate): a flood that cycles over a few fixed flows whose seq and
 * ack never move (a mirror delivering the same segments again and again),
 * 1 event thread. What share of the matching segments never became an event.
 */
export interface RepeatFlood {
  flows: number;
  targetPps: number;
  offeredPps: number;
  /** Matching non-RST segments per second that reached the program. */
  matchingPps: number;
  /** Suppressed / matching non-RST segments. */
  suppressed: number;
  /** Events sent up per second, and lost at the ring per second. */
  eventsPerSec: number;
  lostPerSec: number;
  rstPerSec: number;
  cores: number;
  /** As FloodPoint.recordsPerWakeup. */
  recordsPerWakeup?: number;
}

export interface FloodResult {
  /** RSTs/s the daemon's Sender pushes out of reset0 with nothing else running (l3, batches of 64). */
  senderAlone: number;
  /** Each measurement of the sender alone (one per round, before the round's floods). */
  senderAloneRuns?: number[];
  windowS: number;
  points: FloodPoint[];
  repeat?: RepeatFlood;
}

const SENDER_ALONE = fileURLToPath(new URL('./tools/sender-alone.js', import.meta.url));

async function senderAlone(ctx: BenchContext, seconds: number): Promise<number> {
  const { lab } = ctx;
  const r = await lab.exec(lab.sensor.ns, [process.execPath, SENDER_ALONE, lab.sensor.resetIf, lab.hosts.client.v4, String(seconds)]);
  return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { perSec: number }).perSec;
}

/** One flood at `targetPps` against `daemon` (a job on the client host): RSTs/s, answered share, ring loss, CPU. */
async function floodOnce(ctx: BenchContext, daemon: SensorDaemon, targetPps: number, windowS: number, cfgText?: string): Promise<Omit<FloodPoint, 'threads' | 'runs'> & { c0: Record<string, number>; c1: Record<string, number>; secs: number; tgSecs: number; packets: number }> {
  const { lab } = ctx;
  const client = lab.hosts.client;
  const server = lab.hosts.server;
  const cfg = cfgText ?? tcpFrameConfig({ smac: client.mac, dmac: server.mac, src: client.v4, dst: server.v4, dport: 2222 });
  const job = await daemon.call<{ job: { id: string } }>({
    op: 'create', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: client.v4, duration: 3600,
  });
  try {
    const s0 = await daemon.call<StatusResult>({ op: 'status' });
    const c0 = s0.counters;
    const r0 = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
    const tg = startTrafgen(lab, join(ctx.tmp, 'flood.cfg'), cfg, { rate: targetPps });
    const tgStart = performance.now();
    try {
      await sleep(500);
      const wr = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
      const cpu0 = processesCpuNs([daemon.pid]);
      const th0 = threadCpuNs(daemon.pid, 'tcpreset-event');
      const irq0 = machineIrqNs();
      const busy0 = machineBusyNs();
      const w0 = performance.now();
      await sleep(windowS * 1000);
      const wre = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
      const cpu1 = processesCpuNs([daemon.pid]);
      const th1 = threadCpuNs(daemon.pid, 'tcpreset-event');
      const irq1 = machineIrqNs();
      const busy1 = machineBusyNs();
      const secs = (performance.now() - w0) / 1000;
      await tg.stop();
      const tgSecs = (performance.now() - tgStart) / 1000;
      const end = await tg.done;
      if (end.packets === null) throw new Error(`trafgen printed no packet count: ${end.stderr.trim()}`);
      await sleep(1500);
      const r1 = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
      const s1 = await daemon.call<StatusResult>({ op: 'status' });
      const c1 = s1.counters;
      const lost = (c1.lost ?? 0) - (c0.lost ?? 0);
      const events = (c1.events ?? 0) - (c0.events ?? 0);
      const wakeups = s1.ring.wakeups - s0.ring.wakeups;
      const suppressed = (c1.suppressed ?? 0) - (c0.suppressed ?? 0);
      const r2 = (x: number): number => Math.round(x * 100) / 100;
      return {
        targetPps,
        offeredPps: Math.round(end.packets / tgSecs),
        rstPerSec: Math.round((wre.txPackets - wr.txPackets) / secs),
        answered: Math.round(((r1.txPackets - r0.txPackets) / (2 * end.packets)) * 1000) / 1000,
        ringLoss: events + lost > 0 ? Math.round((lost / (events + lost)) * 10000) / 10000 : 0,
        cores: r2((cpu1 - cpu0) / 1e9 / secs),
        threadCores: [...th1].map(([tid, ns]) => r2((ns - (th0.get(tid) ?? ns)) / 1e9 / secs)),
        softirqCores: r2((irq1 - irq0) / 1e9 / secs),
        machineCores: r2((busy1 - busy0) / 1e9 / secs),
        recordsPerWakeup: Math.round((s1.ring.records - s0.ring.records) / Math.max(1, wakeups)),
        suppressed: events + lost + suppressed > 0 ? Math.round((suppressed / (events + lost + suppressed)) * 10000) / 10000 : 0,
        c0, c1, secs, tgSecs, packets: end.packets,
      };
    } finally {
      await tg.stop();
    }
  } finally {
    await daemon.call({ op: 'cancel', jobId: job.job.id });
  }
}

/**
 * Floods answered by 1 and 2 event threads, each on a daemon of its own,
 * beside the sender alone, in one run. The shared daemon holds no job
 * meanwhile (XDP is attached by whichever daemon has the job).
 */
export async function runFloods(ctx: BenchContext): Promise<FloodResult> {
  const rates = ctx.quick ? [200_000] : [200_000, 400_000];
  const reps = ctx.quick ? 1 : 2;
  const windowS = ctx.quick ? 1.5 : 3;
  const alone: number[] = [];
  const runs: FloodPoint[] = [];
  await freeSniffPort(ctx); // each thread count gets a daemon of its own on sniff0
  for (let rep = 0; rep < reps; rep++) {
    alone.push(await senderAlone(ctx, 2));
    ctx.log(`floods: sender alone ${alone[alone.length - 1]} RST/s`);
    for (const threads of rep % 2 === 0 ? [1, 2] : [2, 1]) {
      const daemon = await SensorDaemon.start(ctx.lab, { config: { ...BENCH_DAEMON_CONFIG, eventThreads: threads } });
      try {
        for (const targetPps of rates) {
          const { c0: _c0, c1: _c1, secs: _s, tgSecs: _t, packets: _p, ...r } = await floodOnce(ctx, daemon, targetPps, windowS);
          runs.push({ threads, runs: 1, ...r });
          ctx.log(
            `floods: ${threads} thread(s), ${targetPps / 1000}k asked: offered ${r.offeredPps}/s, ${r.rstPerSec} RST/s, answered ${(r.answered * 100).toFixed(1)} %, ` +
              `ring loss ${(r.ringLoss * 100).toFixed(1)} %, suppressed ${((r.suppressed ?? 0) * 100).toFixed(1)} %, daemon ${r.cores} cores ` +
              `(event threads ${(r.threadCores ?? []).join(' + ')}, ${r.recordsPerWakeup} records per wake-up), irq+softirq ${r.softirqCores} cores, machine ${r.machineCores} of ${availableParallelism()} cores`,
          );
          await sleep(500);
        }
      } finally {
        await daemon.stop();
        daemon.removeFiles();
      }
    }
  }
  const points: FloodPoint[] = [];
  for (const threads of [1, 2]) {
    for (const targetPps of rates) {
      const rs = runs.filter((r) => r.threads === threads && r.targetPps === targetPps);
      points.push({
        threads, targetPps, runs: rs.length,
        offeredPps: Math.round(median(rs.map((r) => r.offeredPps))),
        rstPerSec: Math.round(median(rs.map((r) => r.rstPerSec))),
        answered: median(rs.map((r) => r.answered)),
        ringLoss: median(rs.map((r) => r.ringLoss)),
        cores: median(rs.map((r) => r.cores)),
        threadCores: Array.from({ length: threads }, (_, i) => median(rs.map((r) => [...(r.threadCores ?? [])].sort((a, b) => b - a)[i] ?? 0))),
        softirqCores: median(rs.map((r) => r.softirqCores ?? 0)),
        machineCores: median(rs.map((r) => r.machineCores ?? 0)),
        recordsPerWakeup: median(rs.map((r) => r.recordsPerWakeup ?? 0)),
        suppressed: median(rs.map((r) => r.suppressed ?? 0)),
      });
    }
  }
  const repeat = await repeatFlood(ctx, windowS);
  await sharedDaemon(ctx);
  return { senderAlone: Math.round(median(alone)), senderAloneRuns: alone, windowS, points, repeat };
}

/** trafgen frames cycling over `flows` fixed flows (source ports 0x9000 + i) whose seq and ack never move. */
function repeatFlowsConfig(smac: string, dmac: string, src: string, dst: string, flows: number): string {
  const b = (mac: string): string => mac.split(':').map((x) => `0x${x}`).join(', ');
  const ip = (a: string): string => a.split('.').map(Number).join(', ');
  return `{
  ${b(dmac)},
  ${b(smac)},
  c16(0x0800),
  0x45, 0x00, c16(40), c16(1), c16(0x4000), 64, 6, csumip(14, 33),
  ${ip(src)},
  ${ip(dst)},
  0x90, dinc(0, ${flows - 1}), c16(2222),
  c32(0x12345678), c32(0x9abcdef0),
  0x50, 0x10, c16(512), csumtcp(14, 34), c16(0)
}
`;
}

/** The suppression of exact repeats, measured on a flood of 256 fixed flows (see RepeatFlood). */
async function repeatFlood(ctx: BenchContext, windowS: number): Promise<RepeatFlood> {
  const { lab } = ctx;
  const flows = 256;
  const targetPps = 200_000;
  const cfg = repeatFlowsConfig(lab.hosts.client.mac, lab.hosts.server.mac, lab.hosts.client.v4, lab.hosts.server.v4, flows);
  const daemon = await SensorDaemon.start(ctx.lab, { config: { ...BENCH_DAEMON_CONFIG, eventThreads: 1 } });
  try {
    const r = await floodOnce(ctx, daemon, targetPps, windowS, cfg);
    const d = (k: string): number => (r.c1[k] ?? 0) - (r.c0[k] ?? 0);
    const matching = d('events') + d('lost') + d('suppressed');
    const whole = r.tgSecs; // the counters also cover the 1.5 s drain after it, when nothing arrives
    const out: RepeatFlood = {
      flows, targetPps, offeredPps: r.offeredPps,
      matchingPps: Math.round(matching / whole),
      suppressed: matching > 0 ? Math.round((d('suppressed') / matching) * 10000) / 10000 : 0,
      eventsPerSec: Math.round(d('events') / whole),
      lostPerSec: Math.round(d('lost') / whole),
      rstPerSec: r.rstPerSec,
      cores: r.cores,
      recordsPerWakeup: r.recordsPerWakeup,
    };
    ctx.log(`floods: ${flows} repeating flows, ${targetPps / 1000}k asked: offered ${out.offeredPps}/s, suppressed ${(out.suppressed * 100).toFixed(1)} %, ${out.eventsPerSec} events/s, ${out.lostPerSec} lost/s, ${out.rstPerSec} RST/s, ${out.cores} cores, ${out.recordsPerWakeup} records per wake-up`);
    return out;
  } finally {
    await daemon.stop();
    daemon.removeFiles();
  }
}

async function bpfCounters(ctx: BenchContext): Promise<Record<string, number>> {
  return (await ctx.daemon.call<StatusResult>({ op: 'status' })).counters;
}

export async function runThroughput(ctx: BenchContext): Promise<ThroughputResult> {
  const { lab } = ctx;
  const client = lab.hosts.client;
  const server = lab.hosts.server;
  const reps = ctx.quick ? 1 : 2;
  const rates = ctx.quick ? [300_000] : [150_000, 300_000, 600_000];
  const windowS = ctx.quick ? 1.5 : 3;
  const cfg = tcpFrameConfig({ smac: client.mac, dmac: server.mac, src: client.v4, dst: server.v4, dport: 2222 });
  await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', client.v4]);
  await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', server.v4]);
  const out: ThroughputRun[] = [];
  let i = 0;
  for (let rep = 0; rep < reps; rep++) for (const targetPps of rates) {
    i++;
    for (const tool of toolOrder(i)) {
      let stop: () => Promise<void>;
      let pids: number[];
      if (tool === 'tcpreset') {
        const r = await ctx.daemon.call<{ job: { id: string } }>({
          op: 'create', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: client.v4, duration: 3600,
        });
        stop = async () => void (await ctx.daemon.call({ op: 'cancel', jobId: r.job.id }));
        pids = [ctx.daemon.pid];
      } else {
        const p = spawnTcpkill(lab, client.v4, join(ctx.tmp, `throughput-tcpkill-${i}.log`));
        await waitListening(p);
        stop = () => stopTcpkill([p]);
        pids = [p.child.pid!];
      }
      const c0 = tool === 'tcpreset' ? await bpfCounters(ctx) : undefined;
      const r0 = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
      const tg = startTrafgen(lab, join(ctx.tmp, 'throughput.cfg'), cfg, { rate: targetPps });
      const tgStart = performance.now();
      let run: ThroughputRun;
      try {
        await sleep(500); // past the start-up transient
        const wr = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
        const cpu0 = processesCpuNs(pids);
        const w0 = performance.now();
        await sleep(windowS * 1000);
        const wre = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
        const cpu1 = processesCpuNs(pids);
        const secs = (performance.now() - w0) / 1000;
        await tg.stop();
        const tgSecs = (performance.now() - tgStart) / 1000;
        const tgEnd = await tg.done;
        if (tgEnd.code !== 0 && tgEnd.code !== null) throw new Error(`trafgen failed (${tgEnd.code}): ${tgEnd.stderr.trim()}`);
        if (tgEnd.packets === null) throw new Error(`trafgen printed no packet count: ${tgEnd.stderr.trim()}`);
        await sleep(1500); // let the tool drain what it queued
        const r1 = await ifCounters(lab.sensor.ns, lab.sensor.resetIf);
        // The sniff interface also sees the tools' RSTs (the client's port is mirrored), so the
        // segments offered are trafgen's own count, averaged over its whole run.
        const packets = tgEnd.packets;
        const rsts = r1.txPackets - r0.txPackets;
        run = {
          tool,
          targetPps,
          offeredPps: Math.round(packets / tgSecs),
          rstPerSec: Math.round((wre.txPackets - wr.txPackets) / secs),
          answered: Math.round((rsts / ((tool === 'tcpreset' ? 2 : 3) * packets)) * 1000) / 1000,
          toolCores: Math.round(((cpu1 - cpu0) / 1e9 / secs) * 100) / 100,
        };
        if (c0) {
          const c1 = await bpfCounters(ctx);
          const lost = (c1.lost ?? 0) - (c0.lost ?? 0);
          const events = (c1.events ?? 0) - (c0.events ?? 0);
          run.ringLost = lost;
          run.ringLoss = events + lost > 0 ? Math.round((lost / (events + lost)) * 10000) / 10000 : 0;
        }
      } finally {
        await tg.stop();
        await stop();
      }
      out.push(run);
      ctx.log(
        `throughput ${tool} ${targetPps / 1000}k pkt/s asked, round ${rep + 1}/${reps}: offered ${run.offeredPps} pkt/s, ${run.rstPerSec} RST/s, answered ${(run.answered * 100).toFixed(1)} %` +
          (run.ringLoss !== undefined ? `, ring loss ${(run.ringLoss * 100).toFixed(2)} %` : '') +
          `, ${run.toolCores} cores`,
      );
      await sleep(500);
    }
  }
  const points: ThroughputPoint[] = [];
  for (const tool of ['tcpreset', 'tcpkill'] as const) {
    for (const targetPps of rates) {
      const rs = out.filter((r) => r.tool === tool && r.targetPps === targetPps);
      if (!rs.length) continue;
      points.push({
        tool,
        targetPps,
        runs: rs.length,
        offeredPps: Math.round(median(rs.map((r) => r.offeredPps))),
        rstPerSec: Math.round(median(rs.map((r) => r.rstPerSec))),
        answered: median(rs.map((r) => r.answered)),
        toolCores: median(rs.map((r) => r.toolCores)),
        ...(tool === 'tcpreset' ? { ringLoss: median(rs.map((r) => r.ringLoss ?? 0)) } : {}),
      });
    }
  }
  const best = {} as Record<Tool, ThroughputPoint>;
  for (const tool of ['tcpreset', 'tcpkill'] as const) {
    best[tool] = points.filter((p) => p.tool === tool).reduce((a, b) => (b.rstPerSec > a.rstPerSec ? b : a));
  }
  return { windowS, runs: out, points, best, floods: await runFloods(ctx) };
}
