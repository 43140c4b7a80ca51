/**
 * What each tool can do, tried for real rather than asserted: one trial per
 * case and tool, in the same lab (and, for the tagged mirror, a second lab
 * whose mirror copies carry an 802.1Q tag, VID 100, as many SPAN ports
 * deliver them). A case fails when the endpoints' kernels do not report
 * what the case needs within the time allowed.
 *
 *   IPv4 session      the reference: an interactive session, both ends reset
 *   IPv6 session      the same over IPv6 (tcpkill gets `host V6ADDR`, which
 *                     libpcap compiles; its decoder reads IPv4 only)
 *   tagged mirror     the IPv4 session again, seen through a tagged mirror
 *   new connection    a connection attempt to a target while the tool runs:
 *                     refused = no data gets through
 *   duration          the target's connections work again once the tool's
 *                     time is up, without anyone stopping it (tcpreset -d 2;
 *                     tcpkill has no duration: it is left running 2 s and
 *                     the attempt is made then)
 */
import { join } from 'node:path';
import { createLab, type Lab } from '../testkit/lab/lab.js';
import { connectOnce, startServer, type Peer } from '../testkit/lab/peer-control.js';
import { BENCH_DAEMON_CONFIG, BENCH_ENGID, type BenchContext, type Tool } from './context.js';
import { PORTS, killOnce } from './kill.js';
import { ensureSniffAddress, spawnTcpkill, stopTcpkill, waitListening } from './lib/tcpkill.js';
import { sleep } from '../testkit/time.js';
import { SensorDaemon } from '../testkit/daemon.js';

export interface Outcome {
  ok: boolean;
  detail: string;
}

export interface CapabilityRow {
  case: string;
  tcpreset: Outcome;
  tcpkill: Outcome;
}

export interface CapabilitiesResult {
  rows: CapabilityRow[];
}

async function killCase(ctx: BenchContext, lab: Lab, daemon: SensorDaemon, server: Peer, family: 4 | 6, tag: string): Promise<Record<Tool, Outcome>> {
  const out = {} as Record<Tool, Outcome>;
  for (const tool of ['tcpreset', 'tcpkill'] as const) {
    const t = await killOnce({ lab, daemon, server, tool, kind: 'interactive', family, logPath: join(ctx.tmp, `cap-${tag}-${tool}.log`), timeoutMs: 3000 });
    out[tool] = t.ok
      ? { ok: true, detail: `both ends reset, ${Math.max(t.clientMs!, t.serverMs!).toFixed(0)} ms after the command` }
      : { ok: false, detail: `not reset within 3 s (client ${t.clientCode ?? 'alive'}, server ${t.serverCode ?? 'alive'})` };
    await sleep(200);
  }
  return out;
}

/** Starts the tool against the client, then tries a new connection; returns what happened and a stop function. */
async function withTool<T>(ctx: BenchContext, lab: Lab, daemon: SensorDaemon, tool: Tool, durationS: number, f: () => Promise<T>): Promise<T> {
  const client = lab.hosts.client.v4;
  if (tool === 'tcpreset') {
    const r = await daemon.cli([BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', client, '-d', String(durationS)]);
    if (r.code !== 0) throw new Error(`tcpreset exited ${r.code}: ${r.stderr.trim()}`);
    try {
      return await f();
    } finally {
      await daemon.request({ op: 'cancel', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, host: client });
    }
  }
  const p = spawnTcpkill(lab, client, join(ctx.tmp, `cap-tcpkill-${Date.now()}.log`));
  await waitListening(p);
  try {
    return await f();
  } finally {
    await stopTcpkill([p]);
  }
}

function attemptOutcome(r: { ok?: boolean; code?: string }, wantRefused: boolean): Outcome {
  const what = r.ok ? 'connected and exchanged data' : `refused (${r.code ?? 'failed'})`;
  return { ok: wantRefused ? !r.ok : r.ok === true, detail: what };
}

export async function runCapabilities(ctx: BenchContext): Promise<CapabilitiesResult> {
  const { lab } = ctx;
  const rows: CapabilityRow[] = [];
  const server = await startServer(lab, lab.hosts.server.ns, [
    { port: PORTS.interactive, mode: 'echo' },
    { port: PORTS.bulk, mode: 'bulk' },
  ]);
  try {
    rows.push({ case: 'IPv4 interactive session: both ends reset', ...(await killCase(ctx, lab, ctx.daemon, server, 4, 'v4')) });
    rows.push({ case: 'IPv6 interactive session: both ends reset', ...(await killCase(ctx, lab, ctx.daemon, server, 6, 'v6')) });

    const refused = {} as Record<Tool, Outcome>;
    const after = {} as Record<Tool, Outcome>;
    for (const tool of ['tcpreset', 'tcpkill'] as const) {
      refused[tool] = await withTool(ctx, lab, ctx.daemon, tool, 2, async () => {
        await sleep(300);
        const r = await connectOnce(lab, lab.hosts.client.ns, lab.hosts.server.v4, PORTS.interactive, { timeoutMs: 2000 });
        // Time is up for tcpreset (-d 2) by now; tcpkill is still running, as it always is until stopped.
        await sleep(2500);
        const a = await connectOnce(lab, lab.hosts.client.ns, lab.hosts.server.v4, PORTS.interactive, { timeoutMs: 2000, holdMs: 1000 });
        after[tool] = a.ok
          ? { ok: true, detail: tool === 'tcpreset' ? 'the job expired on its own; connected and held 1 s' : 'connected and held 1 s' }
          : { ok: false, detail: tool === 'tcpkill' ? `still killing (${a.code}): it has no duration, it runs until stopped` : `failed (${a.code})` };
        return attemptOutcome(r, true);
      });
      await sleep(200);
    }
    rows.push({ case: 'New connection while the tool runs: refused', ...refused });
    rows.push({ case: 'Connections work again when the time is up (-d 2, nobody stops the tool)', ...after });
  } finally {
    await server.kill();
  }

  // The same session, seen through an 802.1Q-tagged mirror: a lab of its own.
  let vlab: Lab | undefined;
  let vd: SensorDaemon | undefined;
  try {
    vlab = await createLab({ vlanMirror: 100 });
    await ensureSniffAddress(vlab);
    vd = await SensorDaemon.start(vlab, { config: BENCH_DAEMON_CONFIG });
    const vserver = await startServer(vlab, vlab.hosts.server.ns, [
      { port: PORTS.interactive, mode: 'echo' },
      { port: PORTS.bulk, mode: 'bulk' },
    ]);
    try {
      rows.push({ case: 'IPv4 session seen on an 802.1Q-tagged mirror (VID 100): both ends reset', ...(await killCase(ctx, vlab, vd, vserver, 4, 'vlan')) });
    } finally {
      await vserver.kill();
    }
  } finally {
    await vd?.stop();
    vd?.removeFiles();
    await vlab?.destroy();
  }
  for (const r of rows) ctx.log(`capability: ${r.case}: tcpreset ${r.tcpreset.ok ? 'yes' : 'NO'} (${r.tcpreset.detail}); tcpkill ${r.tcpkill.ok ? 'yes' : 'NO'} (${r.tcpkill.detail})`);
  return { rows };
}
