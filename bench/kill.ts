/**
 * Time to kill: a real TCP session between the lab's client and server
 * (an interactive one: 16 bytes every 50 ms, echoed; or a download at full
 * speed), then the command, then what each endpoint's kernel reports. The
 * time is from the command's spawn to each endpoint's ECONNRESET, as the
 * peers stamp it (same wall clock). A trial succeeds when both endpoints
 * are reset within 5 s.
 *
 * The command is what an operator would run on the sensor (both spawned
 * with `ip netns exec SENSOR`): `tcpreset bench -i sniff0 -o reset0 -h
 * CLIENT -d 30` for tcpreset (its process start, the control request and
 * the job creation are included), `tcpkill -i sniff0 host CLIENT` for
 * tcpkill (its start, pcap and libnet set-up are included). After each
 * trial the job is cancelled / tcpkill is stopped; tools and session kinds
 * alternate.
 */
import { join } from 'node:path';
import type { Lab } from '../testkit/lab/lab.js';
import { startClient, startServer, type Peer, type PeerEvent } from '../testkit/lab/peer-control.js';
import { BENCH_ENGID, toolOrder, type BenchContext, type Tool } from './context.js';
import { roundSummary, summarize, type Summary } from '../testkit/stats.js';
import { spawnTcpkill, stopTcpkill } from './lib/tcpkill.js';
import { sleep, wallMs } from '../testkit/time.js';
import { SensorDaemon } from '../testkit/daemon.js';

export type SessionKind = 'interactive' | 'bulk';
const KINDS: readonly SessionKind[] = ['interactive', 'bulk'];
export const PORTS: Record<SessionKind, number> = { interactive: 2222, bulk: 8080 };
const TIMEOUT_MS = 5000;

export interface KillTrial {
  tool: Tool;
  kind: SessionKind;
  ok: boolean;
  clientMs: number | null;
  serverMs: number | null;
  clientCode?: string;
  serverCode?: string;
  /** tcpreset: when the command had exited (job created and answered), ms after it was spawned. */
  commandMs?: number;
}

export interface KillCell {
  trials: number;
  successes: number;
  successRate: number;
  /** Time until BOTH ends were reset (successful trials), ms. */
  bothMs: Record<keyof Summary, number | null>;
  clientMs: Record<keyof Summary, number | null>;
  serverMs: Record<keyof Summary, number | null>;
  failures: { clientCode?: string; serverCode?: string }[];
  /** tcpreset: the command's own spawn-to-exit time, ms. */
  commandMs?: Record<keyof Summary, number | null>;
}

export interface KillResult {
  trialsPerCell: number;
  interactiveIntervalMs: number;
  timeoutMs: number;
  cells: Record<Tool, Record<SessionKind, KillCell>>;
}

function waitError(peer: Peer, conn: string, untilMs: number): Promise<PeerEvent | null> {
  const left = Math.max(1, untilMs - wallMs());
  return peer.waitFor((e) => e.ev === 'error' && e.conn === conn, left, `reset of ${conn}`).catch(() => null);
}

export interface KillOnceOptions {
  lab: Lab;
  daemon: SensorDaemon;
  /** A running lab server peer with the echo and bulk ports of PORTS. */
  server: Peer;
  tool: Tool;
  kind: SessionKind;
  family: 4 | 6;
  /** tcpkill's log file. */
  logPath: string;
  timeoutMs?: number;
}

/** One trial: a session client -> server, the command, what both endpoints' kernels report. */
export async function killOnce(o: KillOnceOptions): Promise<KillTrial> {
  const { lab, tool, kind } = o;
  const client = o.family === 4 ? lab.hosts.client.v4 : lab.hosts.client.v6;
  const server = o.family === 4 ? lab.hosts.server.v4 : lab.hosts.server.v6;
  const timeoutMs = o.timeoutMs ?? TIMEOUT_MS;
  const peer = await startClient(lab, lab.hosts.client.ns, server, PORTS[kind], kind, { intervalMs: 50, reportMs: 0 });
  try {
    const c = await peer.waitFor((e) => e.ev === 'connected', 5000, 'connected');
    const acc = await o.server.waitFor((e) => e.ev === 'accept' && e.rport === c.lport && e.remote === c.local, 5000, 'accept');
    await sleep(300); // the session is under way (the download at full speed)
    const t0 = wallMs();
    let stop: () => Promise<void>;
    let commandMs: number | undefined;
    if (tool === 'tcpreset') {
      const cli = o.daemon.cli([BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', client, '-d', '30']);
      stop = async () => {
        const r = await cli;
        if (r.code !== 0) throw new Error(`tcpreset exited ${r.code}: ${r.stderr.trim()}`);
        commandMs = r.exitedAt - t0;
        await o.daemon.call({ op: 'cancel', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, host: client });
      };
    } else {
      const p = spawnTcpkill(lab, client, o.logPath);
      stop = () => stopTcpkill([p]);
    }
    const [ce, se] = await Promise.all([waitError(peer, 'c', t0 + timeoutMs), waitError(o.server, acc.conn!, t0 + timeoutMs)]);
    await stop();
    return {
      tool,
      kind,
      ok: ce !== null && se !== null,
      clientMs: ce ? ce.t - t0 : null,
      serverMs: se ? se.t - t0 : null,
      ...(ce?.code ? { clientCode: ce.code } : {}),
      ...(se?.code ? { serverCode: se.code } : {}),
      ...(commandMs !== undefined ? { commandMs } : {}),
    };
  } finally {
    await peer.kill();
  }
}

export async function runKill(ctx: BenchContext): Promise<KillResult> {
  const { lab } = ctx;
  const server = lab.hosts.server;
  const trials = ctx.quick ? 3 : 20;
  const server$ = await startServer(lab, server.ns, [
    { port: PORTS.interactive, mode: 'echo' },
    { port: PORTS.bulk, mode: 'bulk' },
  ]);
  const all: KillTrial[] = [];
  try {
    for (let i = 0; i < trials; i++) {
      for (const kind of KINDS) {
        for (const tool of toolOrder(i + (kind === 'bulk' ? 1 : 0))) {
          const trial = await killOnce({ lab, daemon: ctx.daemon, server: server$, tool, kind, family: 4, logPath: join(ctx.tmp, `kill-${i}-${kind}.log`) });
          all.push(trial);
          ctx.log(
            `kill ${tool} ${kind} ${i + 1}/${trials}: ${trial.ok ? 'ok' : 'FAILED'} client ${trial.clientMs?.toFixed(1) ?? '-'} ms, server ${trial.serverMs?.toFixed(1) ?? '-'} ms`,
          );
          await sleep(150);
        }
      }
    }
  } finally {
    await server$.kill();
  }
  const cells = {} as Record<Tool, Record<SessionKind, KillCell>>;
  for (const tool of ['tcpreset', 'tcpkill'] as const) {
    cells[tool] = {} as Record<SessionKind, KillCell>;
    for (const kind of KINDS) {
      const ts = all.filter((t) => t.tool === tool && t.kind === kind);
      const ok = ts.filter((t) => t.ok);
      cells[tool][kind] = {
        trials: ts.length,
        successes: ok.length,
        successRate: ts.length ? ok.length / ts.length : 0,
        bothMs: roundSummary(summarize(ok.map((t) => Math.max(t.clientMs!, t.serverMs!)))),
        clientMs: roundSummary(summarize(ts.flatMap((t) => (t.clientMs === null ? [] : [t.clientMs])))),
        serverMs: roundSummary(summarize(ts.flatMap((t) => (t.serverMs === null ? [] : [t.serverMs])))),
        failures: ts.filter((t) => !t.ok).map((t) => ({ clientCode: t.clientCode, serverCode: t.serverCode })),
        ...(tool === 'tcpreset' ? { commandMs: roundSummary(summarize(ts.flatMap((t) => (t.commandMs === undefined ? [] : [t.commandMs])))) } : {}),
      };
    }
  }
  return { trialsPerCell: trials, interactiveIntervalMs: 50, timeoutMs: TIMEOUT_MS, cells };
}
