/**
 * Shared tools of the fault and load stress tests: a lab with the REAL
 * daemon in its sensor namespace, a view of the daemon's BPF targets map
 * from outside the process (bpftool, found through /proc/PID/fdinfo),
 * trafgen runs into the sniff path, bulk control-socket clients and TCP session helpers whose verdicts come
 * from the endpoints' kernels.
 */
import type { ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { CLI_BIN, startDaemon, type DaemonProc, type Resp, type StartOptions } from '../../testkit/daemon.js';
import { createLab, type Lab } from '../../testkit/lab/lab.js';
import { connectOnce, connectOutcome, startClient, startServer, type Peer } from '../../testkit/lab/peer-control.js';
import { processMaps } from '../../testkit/proc.js';
import { bulkRequests } from '../../testkit/control.js';

export const ECHO_PORT = 5001;
/**
 * How long to wait for both ends of a live session to be reset: a deadline
 * for the wait, not a speed claim (2 cores shared with a flood; a kill takes
 * tens of ms unloaded). How fast a kill is belongs to make bench (kill
 * section, against its 20 ms goal); these tests claim that it happens.
 */
export const KILL_WAIT_MS = 3000;


export interface LabDaemon {
  lab: Lab;
  daemon: DaemonProc;
  server: Peer;
  /** Starts a fresh daemon on the same socket, state dir and config (after a kill). */
  restart(): Promise<DaemonProc>;
}

/** A lab, a server listening on ECHO_PORT, and the real daemon in the sensor namespace; all removed at teardown. */
export async function labDaemon(t: ExecutionContext, config: object = {}, opts: Partial<StartOptions> = {}): Promise<LabDaemon> {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  let daemon = await startDaemon({ netns: lab.ns.sensor, config: { summaryIntervalMs: 1000, ...config }, ...opts });
  t.teardown(async () => {
    await ld.daemon.stop('SIGKILL');
  });
  const server = await startServer(lab, lab.ns.server, [{ port: ECHO_PORT, mode: 'echo' }]);
  const ld: LabDaemon = {
    lab,
    daemon,
    server,
    async restart() {
      const prev = ld.daemon;
      daemon = await startDaemon({
        dir: prev.dir, socket: prev.socket, stateDir: prev.stateDir, netns: lab.ns.sensor,
        args: ['--config', join(prev.dir, 'config.json')], env: opts.env,
      });
      ld.daemon = daemon;
      return daemon;
    },
  };
  return ld;
}

export function createReq(lab: Lab, host: string, duration: number, extra: object = {}): object {
  return { v: 1, op: 'create', engid: 'STRESS', sniffIf: lab.sensor.sniffIf, resetIf: lab.sensor.resetIf, host, duration, ...extra };
}

/** Runs the real CLI in the sensor namespace. */
export function cli(ld: LabDaemon, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn('ip', ['netns', 'exec', ld.lab.ns.sensor, process.execPath, CLI_BIN, ...args, '--socket', ld.daemon.socket], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

export async function ok(d: DaemonProc, req: object, timeoutMs = 30_000): Promise<any> {
  const r = await d.request(req, timeoutMs);
  if (!r.ok) throw new Error(`${JSON.stringify(req)} -> ${JSON.stringify(r.error)}`);
  return r.result;
}

// ---- TCP sessions, judged by the endpoints' kernels --------------------------

export interface Session {
  client: Peer;
  serverConn: string;
}

/** An interactive session client -> server with echoes flowing. */
export async function session(ld: LabDaemon, fam: 'v4' | 'v6' = 'v4'): Promise<Session> {
  const { lab, server } = ld;
  const client = await startClient(lab, lab.ns.client, lab.hosts.server[fam], ECHO_PORT, 'interactive', { reportMs: 50 });
  const c = await client.waitFor((e) => e.ev === 'connected', 5000, 'connected');
  const acc = await server.waitFor((e) => e.ev === 'accept' && e.rport === c.lport && e.lport === ECHO_PORT, 5000, 'accept');
  await client.waitFor((e) => e.ev === 'progress' && (e.rx ?? 0) >= 32, 5000, 'echoes');
  return { client, serverConn: acc.conn! };
}

/** Both ends saw ECONNRESET; returns the later of the two times (epoch ms). */
export async function killed(ld: LabDaemon, s: Session, timeoutMs = KILL_WAIT_MS): Promise<{ client: string; server: string; at: number }> {
  const c = await s.client.waitFor((e) => e.ev === 'error' && e.conn === 'c', timeoutMs, 'client reset');
  const sv = await ld.server.waitFor((e) => e.ev === 'error' && e.conn === s.serverConn, timeoutMs, 'server reset');
  await s.client.kill();
  return { client: c.code ?? '', server: sv.code ?? '', at: Math.max(c.t, sv.t) };
}

/** A fresh connection client -> server: ok, or what the kernel said, and connectOutcome()'s name for it ('works', 'reset', ...). */
export async function tryConnect(ld: LabDaemon, fam: 'v4' | 'v6' = 'v4', holdMs = 200): Promise<{ ok: boolean; code?: string; outcome: ReturnType<typeof connectOutcome> }> {
  const r = await connectOnce(ld.lab, ld.lab.ns.client, ld.lab.hosts.server[fam], ECHO_PORT, { timeoutMs: 1500, holdMs });
  return { ok: r.ok === true, code: r.code, outcome: connectOutcome(r) };
}

// ---- the daemon's BPF targets map, seen from outside -------------------------

export interface MapEntry {
  ifindex: number;
  port: number;
  family: number;
  addr: number[];
  targetId: number;
  expiresNs: bigint;
}

/** The id of the daemon's "targets" map, or null when it has none open (data plane idle). */
export function targetsMapId(pid: number): number | null {
  for (const m of processMaps(pid)) {
    if (m.type !== 1) continue; // BPF_MAP_TYPE_HASH
    const show = spawnSync('bpftool', ['map', 'show', 'id', String(m.id), '-j'], { encoding: 'utf8' });
    if (show.status === 0 && (JSON.parse(show.stdout) as { name?: string }).name === 'targets') return m.id;
  }
  return null;
}

/** Every entry of the map (bpftool, formatted through the object's BTF). */
export function dumpTargets(mapId: number): MapEntry[] {
  const r = spawnSync('bpftool', ['map', 'dump', 'id', String(mapId), '-j'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`bpftool map dump id ${mapId}: ${r.stderr}`);
  const rows = JSON.parse(r.stdout) as { formatted: { key: { ifindex: number; port: number; family: number; addr: number[] }; value: { target_id: number; expires_ns: number } } }[];
  return rows.map(({ formatted: { key, value } }) => ({
    ifindex: key.ifindex, port: key.port, family: key.family, addr: key.addr, targetId: value.target_id, expiresNs: BigInt(value.expires_ns),
  }));
}

export function addrText(e: MapEntry): string {
  if (e.family === 4) return e.addr.slice(0, 4).join('.');
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((e.addr[i]! << 8) | e.addr[i + 1]!).toString(16));
  // Canonical enough for comparison with the daemon's RFC 5952 text: compress the longest zero run.
  const text = words.join(':');
  const runs = [...text.matchAll(/(^|:)0(:0)+(:|$)/g)].sort((a, b) => b[0].length - a[0].length);
  return runs.length ? text.replace(runs[0]![0], '::') : text;
}

/** CLOCK_MONOTONIC now (what bpf_ktime_get_ns reads), for comparing map deadlines with wall-clock end times. */
export const monoNowNs = (): bigint => process.hrtime.bigint();

/** How far a map deadline is from a wall-clock end time, in ms (positive: the map says later). */
export function deadlineSkewMs(e: MapEntry, expiresAtMs: number): number {
  const mapRemainingMs = Number(e.expiresNs - monoNowNs()) / 1e6;
  const wallRemainingMs = expiresAtMs - Date.now();
  return mapRemainingMs - wallRemainingMs;
}

export function ifindexIn(ns: string, ifname: string): number {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${ifname}/ifindex`], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

// ---- /proc figures -------------------------------------------------------------

export function rxPackets(lab: Lab, ifname = lab.sensor.sniffIf): number {
  const r = spawnSync('ip', ['netns', 'exec', lab.ns.sensor, 'cat', `/sys/class/net/${ifname}/statistics/rx_packets`], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

// ---- bulk control-socket clients ------------------------------------------------

/** One connection that sends requests one at a time (the daemon answers a connection's requests in order). */
export class Conn {
  private readonly s: net.Socket;
  private buf = '';
  private waiting: ((r: Resp) => void) | null = null;
  private failure: Error | null = null;

  private constructor(s: net.Socket) {
    this.s = s;
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiting;
        this.waiting = null;
        w?.(JSON.parse(line) as Resp);
      }
    });
    s.on('error', (err) => (this.failure = err));
    s.on('close', () => {
      this.failure ??= new Error('connection closed');
      const w = this.waiting;
      this.waiting = null;
      w?.({ v: 1, ok: false, error: { code: 'E_CLOSED', message: this.failure.message } });
    });
  }

  static open(path: string): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path });
      s.once('connect', () => resolve(new Conn(s)));
      s.once('error', reject);
    });
  }

  request(req: object): Promise<Resp> {
    if (this.failure) return Promise.resolve({ v: 1, ok: false, error: { code: 'E_CLOSED', message: this.failure.message } });
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.s.write(`${JSON.stringify(req)}\n`);
    });
  }

  close(): void {
    this.s.end();
  }
}

/**
 * Sends `count` requests made by `make(i)` over `conns` connections at once,
 * one at a time on each. Returns the responses by index (those that got
 * none: E_CLOSED).
 */
export async function bulk(path: string, count: number, conns: number, make: (i: number) => object, onResp?: (i: number, r: Resp) => void): Promise<Resp[]> {
  return (await bulkRequests<Resp>(path, count, make, { connections: conns, onResponse: onResp })).responses;
}

/** Documentation/benchmark addresses, one distinct host per index (never a lab or local address), in canonical form. */
export function bulkHost(i: number): string {
  if (i % 2) return `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 255}.${i & 255}`;
  const v = (i >> 1) + 1;
  return v >> 16 ? `2001:db8::${(v >> 16).toString(16)}:${(v & 0xffff).toString(16)}` : `2001:db8::${v.toString(16)}`;
}
