/**
 * Reaction latency: from a matching segment arriving on the sniff interface
 * to each RST leaving the reset interface, for both tools, measured the
 * same way: two tcpdump captures in the sensor namespace (sniff0 and
 * reset0, kernel timestamps in ns), RSTs paired with their trigger by
 * sequence arithmetic (lib/pair.ts).
 *
 * Triggers: trafgen writes TCP ACK segments client -> server (random source
 * port, seq and ack) into the mirror port at a fixed rate; each one is a
 * matching packet for a target "host CLIENT". They reach only the sensor;
 * the RSTs reach the client's and server's kernels, which have no such
 * connection and drop them silently.
 *
 * Note: tcpdump's timestamp on sniff0 is taken when the packet enters the
 * stack, which for tcpreset is after its XDP program ran (~0.2 µs), so the
 * figure omits that much of tcpreset's path; tcpkill has no XDP stage.
 */
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { BENCH_ENGID, sleep, toolOrder, type BenchContext, type Tool } from './context.js';
import { startCapture } from './lib/capture.js';
import { pairResets } from './lib/pair.js';
import { summarize, roundSummary, type Summary } from './lib/stats.js';
import { spawnTcpkill, stopTcpkill, waitListening } from './lib/tcpkill.js';
import { startTrafgen, tcpFrameConfig } from './lib/traffic.js';

export interface ReactionToolResult {
  /** Per RST, µs. */
  latencyUs: Record<keyof Summary, number | null>;
  /** Per trigger: its first RST, µs. */
  firstUs: Record<keyof Summary, number | null>;
  /** p50 of each run, µs (spread across runs). */
  runP50Us: number[];
  triggers: number;
  answered: number;
  rsts: number;
  unpaired: number;
  captureDrops: number;
}

export interface ReactionResult {
  ratePps: number;
  packetsPerRun: number;
  runs: number;
  tools: Record<Tool, ReactionToolResult>;
  /** All per-RST latencies, µs, for the plot (not written to the JSON). */
  samples: Record<Tool, number[]>;
}

export async function runReaction(ctx: BenchContext): Promise<ReactionResult> {
  const { lab } = ctx;
  const rate = 1000;
  const count = ctx.quick ? 1000 : 3000;
  const runs = ctx.quick ? 2 : 6;
  const client = lab.hosts.client;
  const server = lab.hosts.server;
  const cfg = tcpFrameConfig({ smac: client.mac, dmac: server.mac, src: client.v4, dst: server.v4, dport: 2222 });
  // Neighbour entries resolved beforehand: the first RST must not wait for ARP, for either tool.
  await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', client.v4]);
  await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', server.v4]);

  const acc: Record<Tool, { lat: number[]; first: number[]; runP50: number[]; triggers: number; answered: number; rsts: number; unpaired: number; drops: number }> = {
    tcpreset: { lat: [], first: [], runP50: [], triggers: 0, answered: 0, rsts: 0, unpaired: 0, drops: 0 },
    tcpkill: { lat: [], first: [], runP50: [], triggers: 0, answered: 0, rsts: 0, unpaired: 0, drops: 0 },
  };

  for (let i = 0; i < runs; i++) {
    for (const tool of toolOrder(i)) {
      let stopTool: () => Promise<void>;
      if (tool === 'tcpreset') {
        const res = await ctx.daemon.call<{ job: { id: string } }>({
          op: 'create', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: client.v4, duration: 3600,
        });
        stopTool = async () => void (await ctx.daemon.call({ op: 'cancel', jobId: res.job.id }));
      } else {
        const p = spawnTcpkill(lab, client.v4, join(ctx.tmp, `reaction-tcpkill-${i}.log`));
        await waitListening(p);
        stopTool = () => stopTcpkill([p]);
      }
      const sniffPcap = join(ctx.tmp, `reaction-${tool}-${i}-sniff.pcap`);
      const resetPcap = join(ctx.tmp, `reaction-${tool}-${i}-reset.pcap`);
      const capS = await startCapture(lab, lab.sensor.ns, lab.sensor.sniffIf, sniffPcap, 'tcp');
      const capR = await startCapture(lab, lab.sensor.ns, lab.sensor.resetIf, resetPcap, 'tcp[tcpflags] & tcp-rst != 0');
      let end: { code: number | null; stderr: string };
      try {
        end = await startTrafgen(lab, join(ctx.tmp, 'reaction.cfg'), cfg, { gapUs: Math.round(1e6 / rate), count }).done;
        // tcpkill hands packets over in libpcap blocks with a 512 ms timeout: let the last block through.
        if (end.code === 0) await sleep(700);
      } finally {
        await stopTool();
      }
      const [s, r] = await Promise.all([capS.stop(), capR.stop()]);
      if (end.code !== 0) throw new Error(`trafgen failed (${end.code}): ${end.stderr.trim()}`);
      const pr = pairResets(s.segments, r.segments);
      const a = acc[tool];
      a.lat.push(...pr.latencyUs);
      a.first.push(...pr.firstUs);
      a.runP50.push(summarize(pr.latencyUs).p50);
      a.triggers += pr.triggers;
      a.answered += pr.answered;
      a.rsts += pr.rsts;
      a.unpaired += pr.unpaired;
      a.drops += s.dropped + r.dropped;
      ctx.log(`reaction ${tool} run ${i + 1}/${runs}: ${pr.answered}/${pr.triggers} triggers answered, ${pr.rsts} RSTs, p50 ${summarize(pr.latencyUs).p50.toFixed(1)} µs`);
      rmSync(sniffPcap, { force: true });
      rmSync(resetPcap, { force: true });
      await sleep(200);
    }
  }
  const tools = {} as Record<Tool, ReactionToolResult>;
  for (const tool of ['tcpreset', 'tcpkill'] as const) {
    const a = acc[tool];
    tools[tool] = {
      latencyUs: roundSummary(summarize(a.lat)),
      firstUs: roundSummary(summarize(a.first)),
      runP50Us: a.runP50.map((x) => Math.round(x * 10) / 10),
      triggers: a.triggers,
      answered: a.answered,
      rsts: a.rsts,
      unpaired: a.unpaired,
      captureDrops: a.drops,
    };
  }
  return { ratePps: rate, packetsPerRun: count, runs, tools, samples: { tcpreset: acc.tcpreset.lat, tcpkill: acc.tcpkill.lat } };
}
