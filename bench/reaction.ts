/**
 * Reaction latency: from a matching segment arriving on the sniff interface
 * to each RST leaving the reset interface, for both tools, measured the
 * same way: tcpdump captures (kernel timestamps in ns), RSTs paired with
 * their trigger by sequence arithmetic (lib/pair.ts).
 *
 * Where the trigger is stamped matters. The primary figure stamps it where
 * the frame is handed to sniff0's cable: the egress of its peer p-mirror
 * in the switch namespace ("on the wire"). The tap on sniff0 itself fires
 * only once the receive path has run (veth NAPI scheduling, and for
 * tcpreset its XDP program), some 20 µs later on this machine, which would
 * hide part of both tools' delay; it is reported as the secondary figure.
 * RSTs are stamped on reset0's egress, in the sensor namespace.
 *
 * Triggers: trafgen writes TCP ACK segments client -> server (random source
 * port, seq and ack), evenly spaced, into the mirror port (through its
 * transmit path, so the capture there sees them); each one is a matching
 * packet for a target "host CLIENT". They reach only the sensor; the RSTs
 * reach the client's and server's kernels, which have no such connection
 * and drop them silently.
 */
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { BENCH_ENGID, toolOrder, type BenchContext, type Tool } from './context.js';
import { startCapture } from '../testkit/capture.js';
import { pairResets } from './lib/pair.js';
import { summarize, roundSummary, type Summary } from '../testkit/stats.js';
import { spawnTcpkill, stopTcpkill, waitListening } from './lib/tcpkill.js';
import { startTrafgen, tcpFrameConfig } from '../testkit/trafgen.js';
import { sleep } from '../testkit/time.js';

export interface ReactionToolResult {
  /** Per RST, µs, from the trigger on the wire (p-mirror egress). */
  latencyUs: Record<keyof Summary, number | null>;
  /** Per RST, µs, from the trigger at sniff0's packet tap (after the receive path ran). */
  tapLatencyUs: Record<keyof Summary, number | null>;
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

  type Acc = { lat: number[]; tap: number[]; first: number[]; runP50: number[]; triggers: number; answered: number; rsts: number; unpaired: number; drops: number };
  const fresh = (): Acc => ({ lat: [], tap: [], first: [], runP50: [], triggers: 0, answered: 0, rsts: 0, unpaired: 0, drops: 0 });
  const acc: Record<Tool, Acc> = { tcpreset: fresh(), tcpkill: fresh() };

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
      const wirePcap = join(ctx.tmp, `reaction-${tool}-${i}-wire.pcap`);
      const sniffPcap = join(ctx.tmp, `reaction-${tool}-${i}-sniff.pcap`);
      const resetPcap = join(ctx.tmp, `reaction-${tool}-${i}-reset.pcap`);
      const capW = await startCapture(lab, lab.sw.ns, lab.sw.ports.mirror, wirePcap, 'tcp');
      const capS = await startCapture(lab, lab.sensor.ns, lab.sensor.sniffIf, sniffPcap, 'tcp');
      const capR = await startCapture(lab, lab.sensor.ns, lab.sensor.resetIf, resetPcap, 'tcp[tcpflags] & tcp-rst != 0');
      let end: { code: number | null; stderr: string };
      try {
        end = await startTrafgen(lab, join(ctx.tmp, 'reaction.cfg'), cfg, { gapUs: Math.round(1e6 / rate), count, qdiscPath: true }).done;
        // tcpkill hands packets over in libpcap blocks with a 512 ms timeout: let the last block through.
        if (end.code === 0) await sleep(700);
      } finally {
        await stopTool();
      }
      const [w, s, r] = await Promise.all([capW.stop(), capS.stop(), capR.stop()]);
      if (end.code !== 0) throw new Error(`trafgen failed (${end.code}): ${end.stderr.trim()}`);
      const pr = pairResets(w.segments, r.segments);
      const a = acc[tool];
      a.lat.push(...pr.latencyUs);
      a.tap.push(...pairResets(s.segments, r.segments).latencyUs);
      a.first.push(...pr.firstUs);
      a.runP50.push(summarize(pr.latencyUs).p50);
      a.triggers += pr.triggers;
      a.answered += pr.answered;
      a.rsts += pr.rsts;
      a.unpaired += pr.unpaired;
      a.drops += w.dropped + s.dropped + r.dropped;
      ctx.log(`reaction ${tool} run ${i + 1}/${runs}: ${pr.answered}/${pr.triggers} triggers answered, ${pr.rsts} RSTs, p50 ${summarize(pr.latencyUs).p50.toFixed(1)} µs`);
      rmSync(wirePcap, { force: true });
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
      tapLatencyUs: roundSummary(summarize(a.tap)),
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
