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
import { startClient, startServer, type Peer, type PeerEvent } from '../src/lab/peer-control.js';
import { wallMs } from '../src/demo/sensor.js';
import { BENCH_ENGID, sleep, toolOrder, type BenchContext, type Tool } from './context.js';
import { roundSummary, summarize, type Summary } from './lib/stats.js';
import { spawnTcpkill, stopTcpkill } from './lib/tcpkill.js';

export type SessionKind = 'interactive' | 'bulk';
const KINDS: readonly SessionKind[] = ['interactive', 'bulk'];
const PORTS: Record<SessionKind, number> = { interactive: 2222, bulk: 8080 };
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

export async function runKill(ctx: BenchContext): Promise<KillResult> {
  const { lab } = ctx;
  const client = lab.hosts.client;
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
          const peer = await startClient(lab, client.ns, server.v4, PORTS[kind], kind === 'interactive' ? 'interactive' : 'bulk', {
            intervalMs: 50,
            reportMs: 0,
          });
          try {
            const c = await peer.waitFor((e) => e.ev === 'connected', 5000, 'connected');
            const acc = await server$.waitFor((e) => e.ev === 'accept' && e.rport === c.lport && e.remote === c.local, 5000, 'accept');
            await sleep(300); // the session is under way (the download at full speed)
            const t0 = wallMs();
            let stop: () => Promise<void>;
            let commandMs: number | undefined;
            if (tool === 'tcpreset') {
              const cli = ctx.daemon.cli([BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', client.v4, '-d', '30']);
              stop = async () => {
                const r = await cli;
                if (r.code !== 0) throw new Error(`tcpreset exited ${r.code}: ${r.stderr.trim()}`);
                commandMs = r.exitedAt - t0;
                await ctx.daemon.call({ op: 'cancel', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, host: client.v4 });
              };
            } else {
              const p = spawnTcpkill(lab, client.v4, join(ctx.tmp, `kill-${i}-${kind}.log`));
              stop = () => stopTcpkill([p]);
            }
            const [ce, se] = await Promise.all([waitError(peer, 'c', t0 + TIMEOUT_MS), waitError(server$, acc.conn!, t0 + TIMEOUT_MS)]);
            await stop();
            const trial: KillTrial = {
              tool,
              kind,
              ok: ce !== null && se !== null,
              clientMs: ce ? ce.t - t0 : null,
              serverMs: se ? se.t - t0 : null,
              ...(ce?.code ? { clientCode: ce.code } : {}),
              ...(se?.code ? { serverCode: se.code } : {}),
              ...(commandMs !== undefined ? { commandMs } : {}),
            };
            all.push(trial);
            ctx.log(
              `kill ${tool} ${kind} ${i + 1}/${trials}: ${trial.ok ? 'ok' : 'FAILED'} client ${trial.clientMs?.toFixed(1) ?? '-'} ms, server ${trial.serverMs?.toFixed(1) ?? '-'} ms`,
            );
          } finally {
            await peer.kill();
          }
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
