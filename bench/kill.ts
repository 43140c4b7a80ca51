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
 *
 * Then (runKillWatch, issue 9) sessions that were there before the tool:
 * one idle since 2 s before the command and silent after it, one
 * interactive (a line every 500 ms), killed by a tcpresetd that watched the
 * sniff interface (--watch: it remembers the flow and resets it at job
 * creation) or by a fresh tcpresetd without --watch (the job attaches XDP,
 * so only the session's next segment is answered), against tcpkill. The
 * tcpreset commands run with `--wait 2 --json`, whose flows {known, reset,
 * verified} are kept; a session not reset within 5 s is reported as alive.
 */
import { join } from 'node:path';
import type { Lab } from '../testkit/lab/lab.js';
import { startClient, startServer, type Peer, type PeerEvent } from '../testkit/lab/peer-control.js';
import { BENCH_DAEMON_CONFIG, BENCH_ENGID, freeSniffPort, toolOrder, type BenchContext, type Tool } from './context.js';
import { roundSummary, summarize, type Summary } from '../testkit/stats.js';
import { spawnTcpkill, stopTcpkill } from './lib/tcpkill.js';
import { sleep, wallMs } from '../testkit/time.js';
import { SensorDaemon } from '../testkit/daemon.js';
import type { StatusResult } from '../src/control/protocol.js';

export type SessionKind = 'interactive' | 'bulk';
const KINDS: readonly SessionKind[] = ['interactive', 'bulk'];
export const PORTS: Record<SessionKind, number> = { interactive: 2222, bulk: 8080 };
const TIMEOUT_MS = 5000;

/**
 * The command's environment: an operator's shell, without the NODE_EXTRA_CA_CERTS this
 * machine sets for every process (Node reads that bundle at each start: ~70-115 ms here; bench/command.ts).
 */
export function operatorEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

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
  /** Idle and interactive sessions with and without --watch (issue 9); absent in older results. */
  watch?: WatchResult;
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
      const cli = o.daemon.cli([BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', client, '-d', '30'], 15_000, operatorEnv());
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

// ---- idle and interactive sessions, with and without --watch (issue 9) ----------------

/**
 * How the tool meets the session:
 *   watch          tcpresetd started with the sniff interface in `watch` before the session
 *                  began (it remembers the flow), job created with the CLI (`--wait 2 --json`)
 *   watch-request  the same daemon, the job created by one control request from the bench
 *                  process: the daemon's own share of the time, without starting the CLI
 *   cold           a tcpresetd started afresh without --watch, whose first job this is: XDP
 *                  is attached by the job, so the flow memory starts empty (CLI, `--wait 2 --json`)
 *   tcpkill        `tcpkill -i sniff0 host CLIENT`, no tcpresetd running
 */
export type WatchCase = 'watch' | 'watch-request' | 'cold' | 'tcpkill';
export type WatchSession = 'idle' | 'interactive';
export const WATCH_CASES: readonly WatchCase[] = ['watch', 'watch-request', 'cold', 'tcpkill'];
/** The goal of issue 9: an idle session dies within this long after the command starts, ms. */
export const IDLE_GOAL_MS = 20;
/** The idle session's silence before the command, ms (issue 9: idle since 2 s before). */
const IDLE_BEFORE_MS = 2000;
/** The interactive session's line interval, ms (issue 9's test: a line every 500 ms). */
const LINE_MS = 500;
const WAIT_S = 2;

/** What `--wait --json` (or the create reply) said about the sessions found at creation. */
export interface WaitFlows {
  known: number;
  reset: number;
  verified?: number;
  unverified?: number;
}

export interface WatchTrial {
  case: WatchCase;
  session: WatchSession;
  ok: boolean;
  clientMs: number | null;
  serverMs: number | null;
  /** When the command returned (CLI exited / request answered), ms after t0; with --wait, after verification. */
  returnedMs?: number;
  flows?: WaitFlows;
  /** Both ends still without an error when the timeout passed (the sessions tcpkill never kills). */
  aliveAtEnd: boolean;
}

export interface WatchCell {
  case: WatchCase;
  session: WatchSession;
  trials: number;
  successes: number;
  /** Time until both ends were reset, from the command's start (successful trials), ms. */
  bothMs: Record<keyof Summary, number | null>;
  /** Both ends reset, minus when the command returned (negative: before it returned), ms. */
  afterReturnMs: Record<keyof Summary, number | null>;
  returnedMs: Record<keyof Summary, number | null>;
  /** Trials whose both ends were reset within IDLE_GOAL_MS of the command's start. */
  withinGoal: number;
  /** Trials in which neither end had an error when the timeout passed. */
  aliveAtEnd: number;
  /** Per trial, what the command said (tcpreset cases). */
  flows: WaitFlows[];
}

export interface WatchResult {
  trialsPerCell: number;
  idleBeforeMs: number;
  lineIntervalMs: number;
  waitS: number;
  timeoutMs: number;
  goalMs: number;
  cells: WatchCell[];
}

interface WatchOnceOptions {
  lab: Lab;
  daemon: SensorDaemon | null;
  server: Peer;
  case: WatchCase;
  session: WatchSession;
  logPath: string;
  timeoutMs: number;
}

async function watchOnce(o: WatchOnceOptions): Promise<WatchTrial> {
  const { lab } = o;
  const client = lab.hosts.client.v4;
  const peer = await startClient(lab, lab.hosts.client.ns, lab.hosts.server.v4, PORTS.interactive, 'interactive', {
    // Idle: nothing after the handshake (the first line would be due in 10 minutes).
    intervalMs: o.session === 'idle' ? 600_000 : LINE_MS,
    reportMs: 0,
  });
  try {
    const c = await peer.waitFor((e) => e.ev === 'connected', 5000, 'connected');
    const acc = await o.server.waitFor((e) => e.ev === 'accept' && e.rport === c.lport && e.remote === c.local, 5000, 'accept');
    // Idle: silent for 2 s; interactive: two lines have crossed, the command lands anywhere in the third interval.
    await sleep(o.session === 'idle' ? IDLE_BEFORE_MS : 2.4 * LINE_MS);
    if (peer.errorOf('c') || o.server.errorOf(acc.conn!)) throw new Error(`${o.case} ${o.session}: the session died before the command (positive control)`);
    let stop: () => Promise<void>;
    let returnedMs: number | undefined;
    let flows: WaitFlows | undefined;
    const t0 = wallMs();
    if (o.case === 'tcpkill') {
      const p = spawnTcpkill(lab, client, o.logPath);
      stop = () => stopTcpkill([p]);
    } else {
      const d = o.daemon!;
      const cancel = (): Promise<unknown> => d.call({ op: 'cancel', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, host: client });
      if (o.case === 'watch-request') {
        const req = d
          .call<{ flows?: WaitFlows }>({ op: 'create', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host: client, duration: 30 })
          .then((r) => ((returnedMs = wallMs() - t0), (flows = r.flows)));
        stop = async () => {
          await req;
          await cancel();
        };
      } else {
        const cli = d.cli([BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', client, '-d', '30', '--wait', String(WAIT_S), '--json'], 15_000, operatorEnv());
        stop = async () => {
          const r = await cli;
          if (r.code !== 0) throw new Error(`tcpreset exited ${r.code}: ${r.stderr.trim()}`);
          returnedMs = r.exitedAt - t0;
          flows = (JSON.parse(r.stdout) as { flows?: WaitFlows }).flows;
          await cancel();
        };
      }
    }
    const [ce, se] = await Promise.all([waitError(peer, 'c', t0 + o.timeoutMs), waitError(o.server, acc.conn!, t0 + o.timeoutMs)]);
    await stop();
    const unverified = flows?.unverified as unknown;
    return {
      case: o.case,
      session: o.session,
      ok: ce !== null && se !== null,
      clientMs: ce ? ce.t - t0 : null,
      serverMs: se ? se.t - t0 : null,
      ...(returnedMs !== undefined ? { returnedMs } : {}),
      // flows.unverified is a list of flows in --json; kept as a count.
      ...(flows ? { flows: { ...flows, ...(Array.isArray(unverified) ? { unverified: unverified.length } : {}) } } : {}),
      aliveAtEnd: ce === null && se === null,
    };
  } finally {
    await peer.kill();
  }
}

/**
 * Waits until the watched interface's XDP program is attached: the daemon answers before its
 * data plane is open, and a session set up before that is unknown to the flow memory.
 */
async function attached(d: SensorDaemon, ifname: string, timeoutMs = 15_000): Promise<void> {
  const until = wallMs() + timeoutMs;
  for (;;) {
    const st = await d.call<StatusResult>({ op: 'status' });
    const sniff = st.interfaces.find((i) => i.ifname === ifname && i.role === 'sniff');
    if (st.dataPlane === 'open' && sniff?.watched && sniff.mode !== 'detached' && sniff.up && !sniff.fault) return;
    if (wallMs() > until) throw new Error(`watched ${ifname} not attached after ${timeoutMs} ms: ${JSON.stringify({ dataPlane: st.dataPlane, sniff })}`);
    await sleep(50);
  }
}

/** Trial order for repetition i: every case first as often as last. */
function rotate<T>(xs: readonly T[], i: number): T[] {
  const k = i % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/**
 * Time to kill idle and interactive sessions with and without --watch,
 * against tcpkill. Stops the shared daemon (the watched and fresh daemons
 * need the sniff port's XDP hook) and leaves it stopped: sharedDaemon()
 * brings it back for the next section.
 */
export async function runKillWatch(ctx: BenchContext): Promise<WatchResult> {
  const { lab } = ctx;
  const trials = ctx.quick ? 2 : 10;
  const timeoutMs = TIMEOUT_MS;
  await freeSniffPort(ctx);
  // Which daemon runs now: 'watch' (kept across trials), 'cold' (used once), or none.
  let current: 'watch' | 'cold' | null = null;
  const use = async (c: WatchCase): Promise<SensorDaemon | null> => {
    const want = c === 'tcpkill' ? null : c === 'cold' ? 'cold' : 'watch';
    if (want === 'watch' && current === 'watch' && !ctx.daemon.exited) return ctx.daemon;
    await freeSniffPort(ctx);
    current = null;
    if (want === null) return null;
    const config = want === 'watch' ? { ...BENCH_DAEMON_CONFIG, watch: [lab.sensor.sniffIf] } : BENCH_DAEMON_CONFIG;
    ctx.daemon = await SensorDaemon.start(lab, { config });
    current = want;
    if (want === 'watch') await attached(ctx.daemon, lab.sensor.sniffIf);
    await sleep(500);
    return ctx.daemon;
  };
  const server$ = await startServer(lab, lab.hosts.server.ns, [{ port: PORTS.interactive, mode: 'echo' }]);
  const all: WatchTrial[] = [];
  try {
    for (let i = 0; i < trials; i++) {
      for (const session of rotate<WatchSession>(['idle', 'interactive'], i)) {
        for (const c of rotate(WATCH_CASES, i)) {
          // The control request is the daemon's share of the idle kill; for interactive sessions the CLI rows say it.
          if (c === 'watch-request' && session === 'interactive') continue;
          const daemon = await use(c);
          const trial = await watchOnce({ lab, daemon, server: server$, case: c, session, logPath: join(ctx.tmp, `kill-watch-${i}-${c}-${session}.log`), timeoutMs });
          all.push(trial);
          ctx.log(
            `kill ${c} ${session} ${i + 1}/${trials}: ${trial.ok ? 'ok' : 'not reset'} client ${trial.clientMs?.toFixed(1) ?? '-'} ms, server ${trial.serverMs?.toFixed(1) ?? '-'} ms` +
              (trial.returnedMs !== undefined ? `, returned ${trial.returnedMs.toFixed(1)} ms` : '') +
              (trial.flows ? ` flows ${JSON.stringify(trial.flows)}` : ''),
          );
          await sleep(150);
        }
      }
    }
  } finally {
    await server$.kill();
    await freeSniffPort(ctx);
  }
  const cells: WatchCell[] = [];
  for (const session of ['idle', 'interactive'] as const) {
    for (const c of WATCH_CASES) {
      const ts = all.filter((t) => t.case === c && t.session === session);
      if (!ts.length) continue;
      const ok = ts.filter((t) => t.ok);
      const both = ok.map((t) => Math.max(t.clientMs!, t.serverMs!));
      cells.push({
        case: c,
        session,
        trials: ts.length,
        successes: ok.length,
        bothMs: roundSummary(summarize(both)),
        afterReturnMs: roundSummary(summarize(ok.flatMap((t) => (t.returnedMs === undefined ? [] : [Math.max(t.clientMs!, t.serverMs!) - t.returnedMs])))),
        returnedMs: roundSummary(summarize(ts.flatMap((t) => (t.returnedMs === undefined ? [] : [t.returnedMs])))),
        withinGoal: both.filter((x) => x <= IDLE_GOAL_MS).length,
        aliveAtEnd: ts.filter((t) => t.aliveAtEnd).length,
        flows: ts.flatMap((t) => (t.flows ? [t.flows] : [])),
      });
    }
  }
  return { trialsPerCell: trials, idleBeforeMs: IDLE_BEFORE_MS, lineIntervalMs: LINE_MS, waitS: WAIT_S, timeoutMs, goalMs: IDLE_GOAL_MS, cells };
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
  const watch = await runKillWatch(ctx);
  return { trialsPerCell: trials, interactiveIntervalMs: 50, timeoutMs: TIMEOUT_MS, cells, watch };
}
