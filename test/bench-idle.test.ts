/**
 * The measuring machinery of `make bench`'s reaction-from-idle section
 * (bench/idle.ts, bench/split.ts, bench/floor/floor.c):
 *
 * - pure: the report's goal verdicts against the floor, the split's parsing
 *   of bpftrace lines into stage deltas;
 * - as root: the floor, the yardstick every tcpreset figure is divided by,
 *   must really do tcpreset's job: it resets a real connection (and the
 *   same connection works without it), and its RSTs carry exactly the
 *   sequence numbers and flags of src/packet/forge.ts for the same segments.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ptest } from './helpers/privileged.js';
import { renderBenchmarks, type BenchResults } from '../bench/lib/report.js';
import { parseSplitLines, splitTable } from '../bench/split.js';
import { BPF_OBJECT, FLOOR_BIN, idleFrameConfig, type IdleResult } from '../bench/idle.js';
import { startCapture } from '../testkit/capture.js';
import { startTrafgen } from '../testkit/trafgen.js';
import { createLab, type Lab } from '../testkit/lab/lab.js';
import { connectOnce, connectOutcome, startServer } from '../testkit/lab/peer-control.js';
import { forgeResets } from '../src/packet/forge.js';
import { parseIp } from '../src/core/addr.js';
import type { TcpEvent } from '../src/bpf/contract.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const stats = (p50: number, p90: number, p99: number) => ({ n: 10, min: p50 / 2, p25: p50, p50, p75: p50, p90, p99, max: p99, mean: p50 });

function idleFixture(tcpresetP50: number, blockedB: number): IdleResult {
  const cells: IdleResult['cells'] = [];
  const ratios: IdleResult['ratios'] = [];
  for (const gap of [1, 1000]) {
    cells.push({ tool: 'floor', kind: 'syn', gapMs: gap, triggers: 10, answered: 10, firstUs: stats(100, 150, 200) });
    cells.push({ tool: 'tcpreset', kind: 'syn', gapMs: gap, triggers: 10, answered: 10, firstUs: stats(gap === 1 ? 100 : tcpresetP50, 300, 400) });
    const t = gap === 1 ? 100 : tcpresetP50;
    ratios.push({ kind: 'syn', gapMs: gap, p50Ratio: t / 100, p99Ratio: 2, goalP50Us: 170, goalP99Us: 400, met: t <= 170 });
  }
  return {
    method: 'tcpdump', floorXdpMode: 'native', floorNice: -10, gapsMs: [1, 1000], kinds: ['syn'], runsPerCell: 1, triggersPerRun: { 1: 10, 1000: 10 },
    cells, ratios,
    connections: [
      { tool: 'tcpreset', kind: 'b', attempts: 200, crossed: 200 - blockedB, connected: 200, firstRstUs: stats(900, 1000, 1100), requestUs: stats(800, 900, 950) },
      { tool: 'floor', kind: 'b', attempts: 200, crossed: 0, connected: 10, firstRstUs: stats(150, 170, 200), requestUs: stats(800, 900, 950) },
    ],
    connIntervalMs: 300, fresh: [], captureDrops: 0,
  };
}

function report(idle: IdleResult): string {
  const r: BenchResults = {
    version: 1, quick: false, startedAt: '2026-12-01T10:00:00.000Z', durationS: 60,
    machine: { nproc: 2, model: 'x', kernel: 'k', memGiB: 1, node: 'v20', tcpkill: 'dsniff' }, idle,
  };
  return renderBenchmarks(r);
}

test('report: the idle goals are met only when every gap is within 1.5x floor p50 + 20 us and (b) blocks >= 199 of 200', (t) => {
  const good = report(idleFixture(160, 199));
  t.regex(good, /\| Reaction from idle, every gap \(1 ms – 1 s\) \| [^\n]* \| met \|/);
  t.regex(good, /\| New connections during a job, request 0\.5 ms after connect: no byte crosses \| ≥ 199 of 200 \| 199 of 200 \(floor: 200 of 200\) \| n\/a \| met \|/);
  t.regex(good, /## 1b\. Reaction from idle/);
  t.notRegex(good, /Reaction from idle misses/);

  const bad = report(idleFixture(400, 198));
  t.regex(bad, /\| Reaction from idle, every gap \(1 ms – 1 s\) \| [^|]* \| worst p50 4\.00× floor \(syn, 1 s\)[^\n]* \| \*\*missed\*\* \|/);
  t.regex(bad, /\| 198 of 200 \(floor: 200 of 200\) \| n\/a \| \*\*missed\*\* \|/);
  t.regex(bad, /Reaction from idle misses the floor-relative goal at SYN of a new flow, 1 s \(p50 400 µs against 170 µs\)/);
  t.regex(bad, /New connections, request 0\.5 ms after connect: 2 of 200 exchanged a byte before the RSTs \(floor 0\)/);
});

test('split: bpftrace lines become stage times from wire-in; a missing stage is left out, steps skip it', (t) => {
  const t0 = 1_000_000_000;
  const line = (notify: number, woken: number, handler: number, send: number, wire: number): string =>
    `T ${t0} ${t0 + notify} ${woken ? t0 + woken : 0} ${woken ? t0 + woken + 1000 : 0} ${woken ? t0 + woken + 2000 : 0} ${t0 + handler} ${t0 + handler + 1000} ${t0 + send} ${t0 + wire} ${t0 + wire + 500} 2 300000`;
  const samples = parseSplitLines(['noise', line(10_000, 20_000, 40_000, 60_000, 70_000), line(10_000, 0, 40_000, 60_000, 70_000), 'T 1 2'].join('\n'));
  t.is(samples.length, 2);
  t.deepEqual(samples[0]!.at, { notify: 10, woken: 20, running: 21, returned: 22, handler: 40, forged: 41, send: 60, wireOut: 70, sent: 70.5 });
  t.is(samples[1]!.at.woken, undefined);
  t.is(samples[0]!.writes, 2);
  t.is(samples[0]!.writeUs, 300);
  const rows = splitTable({ tcpreset: samples, floor: [samples[0]!] });
  const handler = rows.find((r) => r.stage === 'handler')!;
  t.is(handler.cum.tcpreset.p50, 40);
  // Trigger 1: returned (22) -> handler (40) = 18; trigger 2 has no wake-up stages: notify (10) -> handler = 30.
  t.deepEqual(samples.map((s) => s.at.handler! - (s.at.returned ?? s.at.notify!)), [18, 30]);
  t.is(handler.step.tcpreset.p50, 24);
  // sendmmsg returns after the frame left: its step is measured from "send", not from "wire-out".
  t.is(rows.find((r) => r.stage === 'sent')!.step.floor.p50, 10.5);
});

/** Captures on p-mirror (triggers) and reset0 (RSTs) around `fn`. */
async function captured(lab: Lab, dir: string, fn: () => Promise<void>) {
  const w = await startCapture(lab, lab.sw.ns, lab.sw.ports.mirror, join(dir, 'w.pcap'), 'tcp');
  const r = await startCapture(lab, lab.sensor.ns, lab.sensor.resetIf, join(dir, 'r.pcap'), 'tcp[tcpflags] & tcp-rst != 0');
  await fn();
  return { wire: (await w.stop()).segments, rst: (await r.stop()).segments };
}

async function startFloorIn(lab: Lab, host: string) {
  const child = lab.spawn(lab.sensor.ns, [FLOOR_BIN, BPF_OBJECT, lab.sensor.sniffIf, lab.sensor.resetIf, host, '-10']);
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('close', (code) => reject(new Error(`floor exited ${code}`)));
  });
  return {
    line,
    stop: async () => {
      const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
      child.kill('SIGTERM');
      return closed;
    },
  };
}

ptest('floor: resets a real connection the way tcpreset does, RST for RST (forge.ts rules), and exits 0 on SIGTERM', async (t) => {
  execFileSync('make', ['-C', ROOT, 'build/floor'], { stdio: 'ignore' });
  const lab = await createLab();
  const dir = mkdtempSync(join(tmpdir(), 'floor-test-'));
  try {
    const { client, server } = lab.hosts;
    await startServer(lab, server.ns, [{ port: 7777, mode: 'echo' }]);
    // Positive control: without the floor the connection works.
    t.true((await connectOnce(lab, client.ns, server.v4, 7777, { holdMs: 200 })).ok, 'connects without the floor');
    await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', client.v4]);
    await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', server.v4]);

    const floor = await startFloorIn(lab, client.v4);
    t.regex(floor.line, /^ready \d+ (native|generic) -10$/);
    let refused: Awaited<ReturnType<typeof connectOnce>> | undefined;
    const real = await captured(lab, dir, async () => {
      refused = await connectOnce(lab, client.ns, server.v4, 7777, { holdMs: 300 });
    });
    t.is(connectOutcome(refused!), 'reset', `connection during the floor: reset after its handshake (${JSON.stringify(refused)})`);
    t.true(real.rst.length > 0);

    // Synthetic SYN and PSH|ACK segments: the floor's RSTs must be forge.ts's, in number, direction, seq, ack and flags.
    const fake = await captured(lab, dir, async () => {
      for (const kind of ['syn', 'data'] as const) {
        const cfg = idleFrameConfig(kind, { smac: client.mac, dmac: server.mac, src: client.v4, dst: server.v4, dport: 2222 });
        const end = await startTrafgen(lab, join(dir, `${kind}.cfg`), cfg, { gapUs: 20_000, count: 3, qdiscPath: true }).done;
        t.is(end.code, 0, end.stderr);
      }
    });
    t.is(await floor.stop(), 0);
    const triggers = fake.wire.filter((s) => !(s.flags & 0x04) && s.dport === 2222);
    t.is(triggers.length, 6);
    const want = triggers.flatMap((s) => {
      const ev = {
        family: 4, saddr: parseIp(s.src, 'src').bytes, daddr: parseIp(s.dst, 'dst').bytes, sport: s.sport, dport: s.dport,
        seq: s.seq, ack: s.ack, tcpFlags: s.flags, payloadLen: s.len, ttl: 64, tos: 0, flowLabel: 0,
      } as unknown as TcpEvent;
      return forgeResets(ev).map((r) => {
        const toDst = r.toward === 'dst';
        return `${toDst ? s.src : s.dst}:${toDst ? s.sport : s.dport}>${toDst ? s.dst : s.src}:${toDst ? s.dport : s.sport} seq ${r.seq} ack ${r.ack} flags ${r.flags}`;
      });
    });
    const got = fake.rst.filter((s) => s.sport === 2222 || s.dport === 2222).map((s) => `${s.src}:${s.sport}>${s.dst}:${s.dport} seq ${s.seq} ack ${s.ack} flags ${s.flags}`);
    t.is(want.length, 3 * 1 + 3 * 2, 'a SYN gets one RST, a PSH|ACK two');
    t.deepEqual([...got].sort(), [...want].sort());
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await lab.destroy();
  }
});

ptest('floor: a HOST that is no address, or a NICE out of range, is refused with exit 64 and names the value', (t) => {
  execFileSync('make', ['-C', ROOT, 'build/floor'], { stdio: 'ignore' });
  for (const [args, msg] of [
    [['lo', 'lo', '10.1.2'], /HOST 10\.1\.2 is not an IPv4 or IPv6 address/],
    [['lo', 'lo', '10.1.2.3', '-21'], /NICE -21 is not an integer from -20 to 19/],
    [['lo', 'lo', '10.1.2.3', '1x'], /NICE 1x is not an integer from -20 to 19/],
  ] as const) {
    const err = t.throws(() => execFileSync(FLOOR_BIN, [BPF_OBJECT, ...args], { stdio: 'pipe' })) as Error & { status: number; stderr: Buffer };
    t.is(err.status, 64);
    t.regex(err.stderr.toString(), msg);
  }
});
