/**
 * Reaction from idle (issue 8): how fast a QUIET tool answers one matching
 * segment after an idle gap, against the floor of tcpreset's design, side
 * by side in the same run.
 *
 * The floor is bench/floor/floor.c (build/floor): the same XDP object on
 * the same sniff interface, ring_buffer__poll() with libbpf's default
 * adaptive wake-up, the same RSTs sent with sendmmsg on raw sockets bound
 * to the reset interface. tcpreset is the real daemon (bin/tcpresetd, the
 * bench's SensorDaemon) with jobs created and cancelled by the real CLI
 * (bin/tcpreset). The two cannot share the sniff interface's XDP hook, so
 * they take turns, alternating order between repetitions.
 *
 * Timestamps: tcpdump (AF_PACKET, kernel timestamps in ns) on the egress
 * of the sniff interface's peer port p-mirror (the trigger handed to
 * sniff0's cable, as in section 1) and on reset0's egress (the RST leaving
 * the reset interface); per trigger, its first RST (lib/pair.ts's
 * sequence rules). Captures cost both tools the same.
 *
 * Parts:
 * - gaps: trafgen writes one matching segment every 1 ms, 10 ms, 100 ms,
 *   1 s, of two kinds: 'syn', a SYN of a new flow each time (tcpreset logs
 *   a `flow reset` line per new flow), and 'data', PSH|ACK segments of one
 *   flow (random seq/ack, so the XDP program's duplicate suppression lets
 *   each through; the first of a run, a new flow, is left out).
 * - connections: real TCP during a job. A client in the client namespace
 *   opens connections to an echo server 300 ms apart and sends a request
 *   (a) as soon as connect completes, (b) 0.5 ms later; an attempt
 *   "crossed" when the server application read a byte or the client got
 *   one back.
 * - fresh: the first connection (b) right after a job is created with the
 *   CLI, and right after tcpresetd is killed with SIGKILL and started again
 *   on its saved state (the floor: right after it is started).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startServer, type Peer } from '../testkit/lab/peer-control.js';
import { BENCH_DAEMON_CONFIG, BENCH_ENGID, type BenchContext, freeSniffPort, sharedDaemon } from './context.js';
import { startCapture } from '../testkit/capture.js';
import { pairResets } from './lib/pair.js';
import { roundSummary, summarize, type Summary } from '../testkit/stats.js';
import { startTrafgen } from '../testkit/trafgen.js';
import { sleep } from '../testkit/time.js';
import { REPO_ROOT, SensorDaemon } from '../testkit/daemon.js';

export type IdleTool = 'tcpreset' | 'floor';
export const IDLE_TOOLS: readonly IdleTool[] = ['tcpreset', 'floor'];
export type IdleKind = 'syn' | 'data';

export const FLOOR_BIN = join(REPO_ROOT, 'build', 'floor');
export const BPF_OBJECT = join(REPO_ROOT, 'build', 'tcpreset.bpf.o');
/**
 * The floor runs at the nice value tcpresetd gives its event thread
 * (src/dataplane/event-path.ts, default -10): the two are compared at the
 * same scheduling priority, so a ratio measures the work, not the priority.
 */
export const FLOOR_NICE = -10;
const CONN_CLIENT = fileURLToPath(new URL('./lib/conn-client.js', import.meta.url));
const ECHO_PORT = 7777;
const TH_SYN = 0x02;
const TH_RST = 0x04;
const TH_ACK = 0x10;

type Stats = Record<keyof Summary, number | null>;

export interface IdleCell {
  tool: IdleTool;
  kind: IdleKind;
  gapMs: number;
  triggers: number;
  answered: number;
  /** Per trigger, its first RST, µs from the trigger on the wire. */
  firstUs: Stats;
}

/** tcpreset against the floor for one kind and gap, and the goals for it. */
export interface IdleRatio {
  kind: IdleKind;
  gapMs: number;
  p50Ratio: number | null;
  p99Ratio: number | null;
  /** 1.5 × floor p50 + 20 µs. */
  goalP50Us: number | null;
  /** 2 × floor p99. */
  goalP99Us: number | null;
  met: boolean | null;
}

export interface ConnCell {
  tool: IdleTool;
  /** 'a': request right after connect; 'b': 0.5 ms after. */
  kind: 'a' | 'b';
  attempts: number;
  /** Any application byte crossed (server read one, or client got one back). */
  crossed: number;
  /** Client's connect completed (the handshake finished before a RST reached it). */
  connected: number;
  /** SYN on the wire -> first RST of that connection on reset0, µs. */
  firstRstUs: Stats;
  /** SYN -> the client's first data segment on the wire, µs (the lab's round trip plus the client's delay). */
  requestUs: Stats;
}

export interface FreshCell {
  tool: IdleTool;
  when: 'after-create' | 'after-restart';
  attempts: number;
  crossed: number;
  firstRstUs: Stats;
  /** tcpresetd only: SIGKILL -> answering on its socket again, ms. */
  restartMs?: Stats;
}

export interface IdleResult {
  method: string;
  floorXdpMode: string;
  /** Nice value the floor ran at. */
  floorNice: number;
  gapsMs: number[];
  kinds: IdleKind[];
  runsPerCell: number;
  triggersPerRun: Record<string, number>;
  cells: IdleCell[];
  ratios: IdleRatio[];
  connections: ConnCell[];
  connIntervalMs: number;
  fresh: FreshCell[];
  captureDrops: number;
}

// ---- tools ------------------------------------------------------------------

interface Running {
  stop(): Promise<void>;
}

/** The floor must exist: `make bench` builds it; a bare `node dist/bench/run.js` builds it here. */
export function ensureFloor(): void {
  if (existsSync(FLOOR_BIN)) return;
  execFileSync('make', ['-C', REPO_ROOT, 'build/floor'], { stdio: 'inherit' });
}

function createArgs(ctx: BenchContext, host: string): string[] {
  return [BENCH_ENGID, '-i', ctx.lab.sensor.sniffIf, '-o', ctx.lab.sensor.resetIf, '-h', host, '-d', '3600'];
}

async function cliOk(ctx: BenchContext, args: string[]): Promise<void> {
  const r = await (await sharedDaemon(ctx)).cli(args);
  if (r.code !== 0) throw new Error(`tcpreset ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
}

async function startTcpreset(ctx: BenchContext, host: string): Promise<Running> {
  await cliOk(ctx, createArgs(ctx, host));
  return { stop: () => cliOk(ctx, ['cancel', BENCH_ENGID, '-i', ctx.lab.sensor.sniffIf, '-h', host]) };
}

let floorMode = 'not started';

async function startFloor(ctx: BenchContext, host: string): Promise<Running> {
  await freeSniffPort(ctx);
  const { lab } = ctx;
  const child = lab.spawn(lab.sensor.ns, [FLOOR_BIN, BPF_OBJECT, lab.sensor.sniffIf, lab.sensor.resetIf, host, String(FLOOR_NICE)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const ready = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`floor not ready after 10 s: ${stderr.trim()}`)), 10_000);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`floor exited ${code}: ${stderr.trim()}`));
    });
  });
  floorMode = ready.split(' ')[2] ?? 'unknown';
  return {
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

function startTool(ctx: BenchContext, tool: IdleTool, host: string): Promise<Running> {
  return tool === 'tcpreset' ? startTcpreset(ctx, host) : startFloor(ctx, host);
}

function order(i: number): IdleTool[] {
  return i % 2 === 0 ? ['tcpreset', 'floor'] : ['floor', 'tcpreset'];
}

// ---- triggers -----------------------------------------------------------------

const bytes = (s: string, sep: string, radix: number, pre = ''): string =>
  s.split(sep).map((b) => `${pre}${Number.parseInt(b, radix).toString(radix === 16 ? 16 : 10)}`).join(', ');

/**
 * trafgen frame, client -> server: 'syn' = SYN of a new flow (random source
 * port and ISN), 'data' = PSH|ACK with an 8-byte request on one flow
 * (source port 40001), random seq and ack.
 */
export function idleFrameConfig(kind: IdleKind, f: { smac: string; dmac: string; src: string; dst: string; dport: number }): string {
  const head = `${bytes(f.dmac, ':', 16, '0x')},\n  ${bytes(f.smac, ':', 16, '0x')},\n  c16(0x0800),`;
  const src = bytes(f.src, '.', 10);
  const dst = bytes(f.dst, '.', 10);
  if (kind === 'syn') {
    return `{
  ${head}
  0x45, 0x00, c16(40), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),
  ${src},
  ${dst},
  drnd(2), c16(${f.dport}),
  drnd(4), c32(0),
  0x50, 0x02, c16(64240), csumtcp(14, 34), c16(0)
}
`;
  }
  return `{
  ${head}
  0x45, 0x00, c16(48), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),
  ${src},
  ${dst},
  c16(40001), c16(${f.dport}),
  drnd(4), drnd(4),
  0x50, 0x18, c16(512), csumtcp(14, 34), c16(0),
  0x72, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x0a
}
`;
}

// ---- part 1: gaps ---------------------------------------------------------------

async function runGaps(ctx: BenchContext, acc: { drops: number }): Promise<{ cells: IdleCell[]; ratios: IdleRatio[]; gapsMs: number[]; kinds: IdleKind[]; runs: number; perRun: Record<string, number> }> {
  const { lab } = ctx;
  const client = lab.hosts.client;
  const server = lab.hosts.server;
  const gapsMs = [1, 10, 100, 1000];
  const kinds: IdleKind[] = ['syn', 'data'];
  const runs = ctx.quick ? 1 : 2;
  // Per run: enough for a p90 at every gap, without a 1 s gap taking minutes.
  const perRun: Record<string, number> = ctx.quick ? { 1: 60, 10: 40, 100: 15, 1000: 5 } : { 1: 300, 10: 200, 100: 80, 1000: 25 };
  const samples = new Map<string, { first: number[]; triggers: number; answered: number }>();
  const keyOf = (tool: IdleTool, kind: IdleKind, gap: number): string => `${tool}/${kind}/${gap}`;
  for (const gap of gapsMs) {
    for (const kind of kinds) {
      const cfg = idleFrameConfig(kind, { smac: client.mac, dmac: server.mac, src: client.v4, dst: server.v4, dport: 2222 });
      for (let i = 0; i < runs; i++) {
        for (const tool of order(i)) {
          const running = await startTool(ctx, tool, client.v4);
          const wirePcap = join(ctx.tmp, `idle-${tool}-wire.pcap`);
          const resetPcap = join(ctx.tmp, `idle-${tool}-reset.pcap`);
          let w: Awaited<ReturnType<Awaited<ReturnType<typeof startCapture>>['stop']>>;
          let r: typeof w;
          try {
            const capW = await startCapture(lab, lab.sw.ns, lab.sw.ports.mirror, wirePcap, 'tcp');
            const capR = await startCapture(lab, lab.sensor.ns, lab.sensor.resetIf, resetPcap, 'tcp[tcpflags] & tcp-rst != 0');
            // Idle before the first trigger too.
            await sleep(Math.max(gap, 200));
            const end = await startTrafgen(lab, join(ctx.tmp, 'idle.cfg'), cfg, { gapUs: gap * 1000, count: perRun[gap], qdiscPath: true }).done;
            await sleep(50);
            [w, r] = await Promise.all([capW.stop(), capR.stop()]);
            if (end.code !== 0) throw new Error(`trafgen failed (${end.code}): ${end.stderr.trim()}`);
          } finally {
            await running.stop();
          }
          let triggers = w.segments.filter((s) => !(s.flags & 0x04)).sort((a, b) => (a.tNs < b.tNs ? -1 : 1));
          // The first segment of a 'data' run is a new flow to the tool; the rest are not.
          if (kind === 'data') triggers = triggers.slice(1);
          const pr = pairResets(triggers, r.segments);
          const k = keyOf(tool, kind, gap);
          const s = samples.get(k) ?? { first: [], triggers: 0, answered: 0 };
          s.first.push(...pr.firstUs);
          s.triggers += pr.triggers;
          s.answered += pr.answered;
          samples.set(k, s);
          acc.drops += w.dropped + r.dropped;
          const sm = summarize(pr.firstUs);
          ctx.log(`idle ${kind} gap ${gap} ms ${tool} run ${i + 1}/${runs}: ${pr.answered}/${pr.triggers} answered, first RST p50 ${sm.p50.toFixed(0)} µs p90 ${sm.p90.toFixed(0)} µs`);
          rmSync(wirePcap, { force: true });
          rmSync(resetPcap, { force: true });
        }
      }
    }
  }
  const cells: IdleCell[] = [];
  const ratios: IdleRatio[] = [];
  for (const kind of kinds) {
    for (const gap of gapsMs) {
      const sum: Partial<Record<IdleTool, Summary>> = {};
      for (const tool of IDLE_TOOLS) {
        const s = samples.get(keyOf(tool, kind, gap))!;
        sum[tool] = summarize(s.first);
        cells.push({ tool, kind, gapMs: gap, triggers: s.triggers, answered: s.answered, firstUs: roundSummary(sum[tool]!) });
      }
      const t = sum.tcpreset!;
      const f = sum.floor!;
      const ok = (x: number): boolean => Number.isFinite(x);
      const goalP50 = 1.5 * f.p50 + 20;
      const goalP99 = 2 * f.p99;
      ratios.push({
        kind,
        gapMs: gap,
        p50Ratio: ok(t.p50 / f.p50) ? round2(t.p50 / f.p50) : null,
        p99Ratio: ok(t.p99 / f.p99) ? round2(t.p99 / f.p99) : null,
        goalP50Us: ok(goalP50) ? Math.round(goalP50) : null,
        goalP99Us: ok(goalP99) ? Math.round(goalP99) : null,
        met: ok(t.p50) && ok(f.p50) ? t.p50 <= goalP50 && t.p99 <= goalP99 : null,
      });
    }
  }
  return { cells, ratios, gapsMs, kinds, runs, perRun };
}

const round2 = (x: number): number => Math.round(x * 100) / 100;

// ---- part 2: real connections ------------------------------------------------------

interface Attempt {
  i: number;
  lport: number;
  connected: boolean;
  rx: number;
  code?: string;
}

interface ConnOutcome {
  attempts: Attempt[];
  crossed: number;
  connected: number;
  firstRstUs: number[];
  requestUs: number[];
}

let portBase = 20000;

/**
 * `count` attempts from the client to the echo server, `intervalMs` apart,
 * request after `delayUs`; captures on p-mirror (the client's SYN and
 * request as mirrored to the sensor) and reset0 (the tool's RSTs).
 */
async function connectionRun(
  ctx: BenchContext, server: Peer, count: number, intervalMs: number, delayUs: number, tag: string, before?: () => Promise<void>,
): Promise<ConnOutcome> {
  const { lab } = ctx;
  const client = lab.hosts.client;
  const base = portBase;
  portBase += count + 10; // fresh local ports: no TIME_WAIT from an earlier run
  if (portBase > 30000) portBase = 20000;
  const wirePcap = join(ctx.tmp, `conn-${tag}-wire.pcap`);
  const resetPcap = join(ctx.tmp, `conn-${tag}-reset.pcap`);
  const capW = await startCapture(lab, lab.sw.ns, lab.sw.ports.mirror, wirePcap, `tcp port ${ECHO_PORT}`);
  const capR = await startCapture(lab, lab.sensor.ns, lab.sensor.resetIf, resetPcap, 'tcp[tcpflags] & tcp-rst != 0');
  const serverEvents0 = server.events.length;
  let out = '';
  let err = '';
  const child = lab.spawn(client.ns, [
    process.execPath, CONN_CLIENT, '--host', lab.hosts.server.v4, '--port', String(ECHO_PORT), '--count', String(count),
    '--interval-ms', String(intervalMs), '--delay-us', String(delayUs), '--local-port-base', String(base), '--go-on-stdin', '1',
  ], { stdio: ['pipe', 'pipe', 'pipe'] });
  const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  // The client is up (Node started) before `before` runs: the first attempt follows it within a millisecond.
  await new Promise<void>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('"ready"')) resolve();
    });
    void closed.then((c) => reject(new Error(`conn-client exited ${c} before it was ready: ${err.trim()}`)));
  });
  if (before) await before();
  child.stdin?.end('go\n');
  const code = await closed;
  await sleep(100); // the server's close events of the last attempt
  const [w, r] = await Promise.all([capW.stop(), capR.stop()]);
  rmSync(wirePcap, { force: true });
  rmSync(resetPcap, { force: true });
  if (code !== 0) throw new Error(`conn-client exited ${code}: ${err.trim()}`);
  const attempts = out.split('\n').filter((l) => l.startsWith('{"i"')).map((l) => JSON.parse(l) as Attempt);
  if (attempts.length !== count) throw new Error(`conn-client reported ${attempts.length} of ${count} attempts: ${err.trim()}`);
  // The server's side: bytes its application read, per client port.
  const serverRx = new Map<number, number>();
  const portOfConn = new Map<string, number>();
  for (const ev of server.events.slice(serverEvents0)) {
    if (ev.ev === 'accept' && ev.conn && ev.rport) portOfConn.set(ev.conn, ev.rport);
    if ((ev.ev === 'close' || ev.ev === 'error') && ev.conn && (ev.rx ?? 0) > 0) {
      const p = portOfConn.get(ev.conn);
      if (p !== undefined) serverRx.set(p, Math.max(serverRx.get(p) ?? 0, ev.rx ?? 0));
    }
  }
  const cl = client.v4;
  const syn = new Map<number, bigint>();
  const req = new Map<number, bigint>();
  for (const s of w.segments) {
    if (s.src !== cl || s.flags & TH_RST) continue;
    if (s.flags & TH_SYN && !(s.flags & TH_ACK) && !syn.has(s.sport)) syn.set(s.sport, s.tNs);
    if (s.len > 0 && !req.has(s.sport)) req.set(s.sport, s.tNs);
  }
  const firstRst = new Map<number, bigint>();
  for (const s of r.segments) {
    const p = s.src === cl ? s.sport : s.dst === cl ? s.dport : -1;
    if (p < 0) continue;
    const have = firstRst.get(p);
    if (have === undefined || s.tNs < have) firstRst.set(p, s.tNs);
  }
  const res: ConnOutcome = { attempts, crossed: 0, connected: 0, firstRstUs: [], requestUs: [] };
  for (const a of attempts) {
    if (a.rx > 0 || (serverRx.get(a.lport) ?? 0) > 0) res.crossed++;
    if (a.connected) res.connected++;
    const t0 = syn.get(a.lport);
    if (t0 === undefined) continue;
    const tr = firstRst.get(a.lport);
    if (tr !== undefined) res.firstRstUs.push(Number(tr - t0) / 1000);
    const tq = req.get(a.lport);
    if (tq !== undefined) res.requestUs.push(Number(tq - t0) / 1000);
  }
  return res;
}

async function runConnections(ctx: BenchContext, server: Peer): Promise<ConnCell[]> {
  const count = ctx.quick ? 20 : 200;
  const cells: ConnCell[] = [];
  for (const [k, kind] of (['a', 'b'] as const).entries()) {
    for (const tool of order(k)) {
      const running = await startTool(ctx, tool, ctx.lab.hosts.client.v4);
      let o: ConnOutcome;
      try {
        await sleep(300);
        o = await connectionRun(ctx, server, count, 300, kind === 'a' ? 0 : 500, `${tool}-${kind}`);
      } finally {
        await running.stop();
      }
      const f = summarize(o.firstRstUs);
      ctx.log(`idle connections (${kind}) ${tool}: ${o.crossed}/${count} exchanged a byte, ${o.connected} connected, first RST p50 ${f.p50.toFixed(0)} µs, request sent p50 ${summarize(o.requestUs).p50.toFixed(0)} µs after the SYN`);
      cells.push({
        tool, kind, attempts: count, crossed: o.crossed, connected: o.connected,
        firstRstUs: roundSummary(f), requestUs: roundSummary(summarize(o.requestUs)),
      });
    }
  }
  return cells;
}

// ---- part 3: the first connection after a job is created, after a restart ------------

async function runFresh(ctx: BenchContext, server: Peer): Promise<FreshCell[]> {
  const { lab } = ctx;
  const host = lab.hosts.client.v4;
  const trials = ctx.quick ? 3 : 10;
  const acc = {
    'tcpreset/after-create': { crossed: 0, rst: [] as number[] },
    'tcpreset/after-restart': { crossed: 0, rst: [] as number[], restartMs: [] as number[] },
    'floor/after-create': { crossed: 0, rst: [] as number[] },
  };
  const note = (a: { crossed: number; rst: number[] }, o: ConnOutcome): void => {
    a.crossed += o.crossed;
    a.rst.push(...o.firstRstUs);
  };
  for (let t = 0; t < trials; t++) {
    // tcpreset: create with the CLI and connect at once; then kill -9 and start again on the saved state.
    note(acc['tcpreset/after-create'], await connectionRun(ctx, server, 1, 0, 500, `fresh-create-${t}`, () => cliOk(ctx, createArgs(ctx, host))));
    await sleep(300);
    const restart = async (): Promise<void> => {
      const old = ctx.daemon;
      const saved = readFileSync(join(old.dir, 'state', 'jobs.json'), 'utf8');
      const t0 = performance.now();
      old.child.kill('SIGKILL');
      await new Promise<void>((resolve) => (old.exited ? resolve() : old.child.once('exit', () => resolve())));
      old.removeFiles();
      // The same saved jobs in a fresh directory: what the daemon reads at start is the same.
      ctx.daemon = await SensorDaemon.start(lab, { config: BENCH_DAEMON_CONFIG, stateFile: saved });
      acc['tcpreset/after-restart'].restartMs.push(performance.now() - t0);
    };
    note(acc['tcpreset/after-restart'], await connectionRun(ctx, server, 1, 0, 500, `fresh-restart-${t}`, restart));
    await cliOk(ctx, ['cancel', BENCH_ENGID, '-i', lab.sensor.sniffIf, '-h', host]);
    // The floor: start it and connect at once.
    let floor: Running | undefined;
    try {
      note(acc['floor/after-create'], await connectionRun(ctx, server, 1, 0, 500, `fresh-floor-${t}`, async () => void (floor = await startFloor(ctx, host))));
    } finally {
      await floor?.stop();
    }
  }
  const cells: FreshCell[] = [
    { tool: 'tcpreset', when: 'after-create', attempts: trials, crossed: acc['tcpreset/after-create'].crossed, firstRstUs: roundSummary(summarize(acc['tcpreset/after-create'].rst)) },
    {
      tool: 'tcpreset', when: 'after-restart', attempts: trials, crossed: acc['tcpreset/after-restart'].crossed,
      firstRstUs: roundSummary(summarize(acc['tcpreset/after-restart'].rst)), restartMs: roundSummary(summarize(acc['tcpreset/after-restart'].restartMs)),
    },
    { tool: 'floor', when: 'after-create', attempts: trials, crossed: acc['floor/after-create'].crossed, firstRstUs: roundSummary(summarize(acc['floor/after-create'].rst)) },
  ];
  for (const c of cells) ctx.log(`idle fresh ${c.tool} ${c.when}: ${c.crossed}/${c.attempts} exchanged a byte, first RST p50 ${c.firstRstUs.p50} µs`);
  return cells;
}

// ---- entry --------------------------------------------------------------------------

export async function runIdle(ctx: BenchContext): Promise<IdleResult> {
  ensureFloor();
  const { lab } = ctx;
  // Neighbour entries resolved beforehand: the first RST must not wait for ARP, for either tool.
  await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', lab.hosts.client.v4]);
  await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', lab.hosts.server.v4]);
  const acc = { drops: 0 };
  const gaps = await runGaps(ctx, acc);
  const server = await startServer(lab, lab.hosts.server.ns, [{ port: ECHO_PORT, mode: 'echo' }]);
  let connections: ConnCell[];
  let fresh: FreshCell[];
  try {
    connections = await runConnections(ctx, server);
    fresh = await runFresh(ctx, server);
  } finally {
    await server.kill();
  }
  return {
    method: 'tcpdump (AF_PACKET, kernel timestamps, ns): trigger at p-mirror egress, RST at reset0 egress',
    floorXdpMode: floorMode,
    floorNice: FLOOR_NICE,
    gapsMs: gaps.gapsMs,
    kinds: gaps.kinds,
    runsPerCell: gaps.runs,
    triggersPerRun: gaps.perRun,
    cells: gaps.cells,
    ratios: gaps.ratios,
    connections,
    connIntervalMs: 300,
    fresh,
    captureDrops: acc.drops,
  };
}

