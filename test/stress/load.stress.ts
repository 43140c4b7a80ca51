/**
 * Load, on a namespace lab with the REAL daemon in the sensor namespace:
 *
 * - 100,000 concurrent targets (10,000 in the short form) created through
 *   the control socket, half of them ending at one moment and the rest
 *   cancelled in bulk: the kernel map, the job table and the data plane's
 *   target table end empty, the daemon answers throughout, and its memory
 *   returns to the idle level;
 * - background traffic at the highest rate trafgen makes in the lab, none
 *   of it matching, for a minute (10 s short) while jobs come and go: every
 *   job kills its session, and the daemon's CPU stays near idle because the
 *   filtering happens in the kernel;
 * - a flood of matching segments from many flows overflows the ring buffer:
 *   the losses are counted and shown by `tcpreset status`, and once the
 *   flood ends the daemon kills a real session again by itself.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ptest } from '../helpers/privileged.js';
import { decodeState } from '../../src/daemon/state.js';
import { scaled } from './scale.js';
import { KILL_WAIT_MS, addrText, bulk, bulkHost, cli, createReq, dumpTargets, ifindexIn, killed, labDaemon, ok, rxPackets, session, targetsMapId, tryConnect } from './fault-lab.js';
import { sleep, wallMs as wall } from '../../testkit/time.js';
import { cpuMs, threadCpuNs } from '../../testkit/proc.js';
import { startTrafgen, tcpFrames } from '../../testkit/trafgen.js';

/** Asked of trafgen when it must flood for a while: more than it makes, so it stays on its per-packet path (see startTrafgen). */
const FULL_RATE = 10_000_000;
const frameFile = (): string => join(mkdtempSync(join(tmpdir(), 'trafgen-')), 'frames.cfg');

interface Memory { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number }

interface Status {
  memory: Memory;
  jobs: number;
  targets: number;
  interfaces: { ifname: string; role: string; up: boolean }[];
  counters: Record<string, number>;
  ring: Record<string, number>;
  pid: number;
}

ptest.serial('100,000 concurrent targets through the control socket, ended by one expiry and a bulk cancel: map and tables empty, daemon responsive, memory back to idle', async (t) => {
  const N = scaled(10_000, 100_000);
  const CONNS = 256;
  t.timeout(scaled(115_000, 40 * 60_000));
  const ld = await labDaemon(t, { maxJobs: N, summaryIntervalMs: 10_000 });
  const { lab, daemon: d } = ld;
  const status = async (): Promise<Status> => (await ok(d, { v: 1, op: 'status' }, 60_000)) as Status;

  // Idle level: the data plane open (one job created and cancelled), nothing else.
  await ok(d, createReq(lab, bulkHost(N + 1), 60));
  await ok(d, { v: 1, op: 'cancel', engid: 'STRESS', sniffIf: lab.sensor.sniffIf, host: bulkHost(N + 1) });
  await sleep(2000);
  const idle = (await status()).memory;

  // Half that stay (an hour), created first, to learn the rate.
  const half = N / 2;
  const tA = Date.now();
  const longs = await bulk(d.socket, half, CONNS, (i) => createReq(lab, bulkHost(i), 3600));
  const aSec = (Date.now() - tA) / 1000;
  t.is(longs.filter((r) => !r.ok).length, 0, JSON.stringify(longs.find((r) => !r.ok)?.error));
  // The other half all end at one moment (to the second) after they all exist. Each create
  // waits for a save of the whole state, so this half (more jobs to save) goes up to ~3x slower.
  const endAt = Date.now() + aSec * 1000 * 4 + 5_000;
  t.log(`first half created in ${aSec.toFixed(1)} s`);
  const tB = Date.now();
  const shorts = await bulk(d.socket, half, CONNS, (i) => createReq(lab, bulkHost(half + i), Math.max(1, Math.ceil((endAt - Date.now()) / 1000))));
  const bSec = (Date.now() - tB) / 1000;
  t.is(shorts.filter((r) => !r.ok).length, 0, JSON.stringify(shorts.find((r) => !r.ok)?.error));
  t.log(`second half created in ${bSec.toFixed(1)} s`);
  t.true(Date.now() < endAt - 2000, 'all created before the common end');
  const createRate = N / (aSec + bSec);

  // Peak: every target in the job table, the data plane and the kernel.
  const peak = await status();
  t.is(peak.jobs, N);
  t.is(peak.targets, N);
  const mapId = targetsMapId(d.pid)!;
  t.truthy(mapId);
  let entries = dumpTargets(mapId);
  t.is(entries.length, N, 'one kernel map entry per target');
  const sniffIndex = ifindexIn(lab.ns.sensor, lab.sensor.sniffIf);
  t.true(entries.every((e) => e.ifindex === sniffIndex));
  const peakMem = (await status()).memory;

  // The mass expiry: the daemon keeps answering while half its jobs end at once.
  let worstStatusMs = 0;
  while (Date.now() < endAt + 3000) {
    const t0 = performance.now();
    await status();
    worstStatusMs = Math.max(worstStatusMs, performance.now() - t0);
    await sleep(200);
  }
  const expiredLine = await d.waitLog((l) => l.msg === 'job expired', 5000, 'expiry');
  void expiredLine;
  const afterExpiry = await status();
  t.is(afterExpiry.jobs, half, 'the expiring half is gone, the rest stays');
  t.is(afterExpiry.targets, half);
  entries = dumpTargets(mapId);
  t.is(entries.length, half);
  const longHosts = new Set(longs.map((r) => r.result.job.host as string));
  t.true(entries.every((e) => longHosts.has(addrText(e))), 'only the long jobs remain in the kernel map');
  t.true(worstStatusMs < 5000, `status answered within ${worstStatusMs.toFixed(0)} ms during the mass expiry`);

  // Bulk cancel of the rest, by identity.
  const tC = Date.now();
  const cancels = await bulk(d.socket, half, CONNS, (i) => ({ v: 1, op: 'cancel', engid: 'STRESS', sniffIf: lab.sensor.sniffIf, host: longs[i]!.result.job.host }));
  const cSec = (Date.now() - tC) / 1000;
  t.is(cancels.filter((r) => !r.ok).length, 0, JSON.stringify(cancels.find((r) => !r.ok)?.error));

  const end = await status();
  t.is(end.jobs, 0);
  t.is(end.targets, 0, "the data plane's table is empty");
  // An interface that had a job stays attached until the daemon stops (issue 9: re-attaching native XDP resets a NIC's rings under the IDS).
  t.deepEqual((end.interfaces as { jobs?: number }[]).map((i) => i.jobs ?? 0).filter((n: number) => n > 0), [], 'no interface holds a job any more');
  // The map is still the daemon's (XDP stays attached, so the object stays loaded): read, not assumed empty when gone.
  t.is(targetsMapId(d.pid), mapId, 'the daemon still holds the same targets map');
  t.is(dumpTargets(mapId).length, 0, 'the kernel map is empty');
  t.deepEqual(decodeState(readFileSync(join(d.stateDir, 'jobs.json'), 'utf8')), [], 'the state file is empty');

  // Memory: V8 gives its heap back once the daemon is idle (its memory reducer runs a few
  // seconds after allocation stops); wait for it, then every JS table must be gone: the heap
  // as small as at idle. RSS keeps an unpredictable share of the allocator's freed pages
  // (glibc does not trim fragmented arenas: 35-80 % of the growth was seen retained at short
  // scale), so it is bounded by the peak and then by a second round that must reuse it.
  let mem = (await status()).memory;
  const memDeadline = Date.now() + 120_000;
  while (mem.heapUsed > idle.heapUsed + 5 && Date.now() < memDeadline) {
    await sleep(2000);
    mem = (await status()).memory;
  }
  t.true(mem.heapUsed <= idle.heapUsed + 5, `V8 heap used ${mem.heapUsed} MB after the bulk end, ${idle.heapUsed} MB at idle, ${peakMem.heapUsed} MB at the peak`);
  t.true(mem.rss <= peakMem.rss, `RSS ${mem.rss} MB after the bulk end, idle ${idle.rss} MB, peak ${peakMem.rss} MB`);
  // What the kept RSS is: pages the allocator reuses, not tables still held. A second round of half
  // as many jobs, created and cancelled, must leave every table JS accounts for back at idle: the
  // V8 heap, and the typed-array job table and other buffers (arrayBuffers, external). Had the first
  // round's tables been held, those would sit at least half of their peak growth above idle. RSS is
  // reported, not bounded: it moves by +-20 MB between identical rounds (three by hand: 132, 152,
  // 133 MB), and both of the bounds tried failed in CI without a leak ("a quarter of the first
  // round's growth": 204.2 against 204 MB; "under the first round's peak": 238.7 against 221.6 MB,
  // with the heap check passing).
  const round2 = await bulk(d.socket, half, CONNS, (i) => createReq(lab, bulkHost(i), 3600));
  t.is(round2.filter((r) => !r.ok).length, 0, JSON.stringify(round2.find((r) => !r.ok)?.error));
  const cancels2 = await bulk(d.socket, half, CONNS, (i) => ({ v: 1, op: 'cancel', jobId: round2[i]!.result.job.id }));
  t.is(cancels2.filter((r) => !r.ok).length, 0, JSON.stringify(cancels2.find((r) => !r.ok)?.error));
  let mem2 = (await status()).memory;
  const memDeadline2 = Date.now() + 120_000;
  while (mem2.heapUsed > idle.heapUsed + 5 && Date.now() < memDeadline2) {
    await sleep(2000);
    mem2 = (await status()).memory;
  }
  t.true(mem2.heapUsed <= idle.heapUsed + 5, `V8 heap used ${mem2.heapUsed} MB after the second round, ${idle.heapUsed} MB at idle`);
  for (const k of ['arrayBuffers', 'external'] as const) {
    // MiB with one decimal: 0.2 of slack for the rounding of both figures.
    const bound = idle[k] + Math.max(0.2, (peakMem[k] - idle[k]) / 4);
    t.true(mem2[k] <= bound, `${k} ${mem2[k]} MB after the second round: idle ${idle[k]}, first round's peak ${peakMem[k]}, bound ${bound.toFixed(1)}`);
  }
  t.is(d.exit, null, 'the daemon lived through it');

  t.log(`created ${N} jobs at ${createRate.toFixed(0)}/s over ${CONNS} connections; ${half} expired at one moment (worst status ${worstStatusMs.toFixed(0)} ms); ${half} cancelled at ${(half / cSec).toFixed(0)}/s`);
  t.log(`memory (MB) idle ${JSON.stringify(idle)}, peak ${JSON.stringify(peakMem)}, after ${JSON.stringify(mem)}, after a second round of ${half} ${JSON.stringify(mem2)}`);
  t.log(`FIGURE peak targets: ${N} (map, job table and data plane), all ended, map empty; V8 heap ${idle.heapUsed} -> ${peakMem.heapUsed} -> ${mem.heapUsed} MB, RSS ${idle.rss} -> ${peakMem.rss} -> ${mem.rss} MB`);
});

ptest.serial('an idle daemon with its data plane open keeps its memory: 40 s of keep-warm ticks (eventKeepWarmMs 1) add under 20 MB of anonymous RSS', async (t) => {
  t.timeout(120_000);
  const ld = await labDaemon(t, { eventKeepWarmMs: 1 });
  const { lab, daemon: d } = ld;
  await ok(d, createReq(lab, bulkHost(1), 600));
  const pid = ((await ok(d, { v: 1, op: 'status' })) as Status).pid;
  const anonMb = (): number => Number(/RssAnon:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  const eventCpuMs = (): number => [...threadCpuNs(pid, 'tcpreset-event').values()].reduce((a, b) => a + b, 0) / 1e6;
  await sleep(2000);
  const cpu0 = eventCpuMs();
  const samples: number[] = [];
  for (let i = 0; i < 9; i++) {
    samples.push(anonMb());
    if (i < 8) await sleep(5000);
  }
  const cpu = eventCpuMs() - cpu0;
  const first = samples[0]!;
  const worst = Math.max(...samples) - first;
  t.log(`RssAnon MB every 5 s: ${samples.map((m) => m.toFixed(1)).join(' ')}; event thread CPU ${cpu.toFixed(0)} ms in 40 s`);
  // The control: the ticks ran (each warms the segment path, ~20-100 µs of CPU).
  t.true(cpu > 200, `the event thread ran its keep-warm ticks: ${cpu.toFixed(0)} ms of CPU in 40 s`);
  // Each tick posted a message to a port whose peer was closed, which Node 20 never frees:
  // 42.6 -> 78.6 MB over these 40 s before the fix, 41.9 -> 48.1 after (what is left is the
  // worker's garbage, freed by its GC: a sawtooth, 39-56 MB over 4 minutes at the 2 ms default).
  t.true(worst < 20, `anonymous RSS grew ${worst.toFixed(1)} MB in 40 s of idle ticks: ${samples.map((m) => m.toFixed(1)).join(' ')}`);
  t.log(`FIGURE idle daemon, data plane open: RssAnon ${first.toFixed(1)} -> ${samples[samples.length - 1]!.toFixed(1)} MB over 40 s of 1 ms keep-warm ticks (worst +${worst.toFixed(1)})`);
});

ptest.serial('background traffic at the lab\'s highest rate, none matching, while jobs come and go: no job missed, the traffic adds next to nothing to the daemon\'s CPU', async (t) => {
  const SECONDS = scaled(10, 60);
  /**
   * What the traffic and the jobs' own work (create, the sweep's scan of the flow memory, the kills)
   * add to the daemon's CPU, as a share of one core, over its level with the same standing job and no
   * traffic (the event thread's keep-warm tick, eventKeepWarmMs, costs a few % by itself, more on a
   * loaded machine: 10.5 % in all was measured in CI). Filtering in user space would need more than a
   * whole core at this rate. CPU_CAP bounds the total loosely.
   */
  const CPU_BOUND = 0.1;
  const CPU_CAP = 0.25;
  t.timeout(scaled(100_000, 10 * 60_000));
  const ld = await labDaemon(t);
  const { lab, daemon: d } = ld;
  // XDP stays attached all along: a job on an address that never appears.
  await ok(d, createReq(lab, '198.51.100.77', 3600));
  // The daemon's own level: the same job, no traffic.
  await sleep(500);
  const idleCpu0 = cpuMs(d.pid);
  const idleW0 = wall();
  await sleep(3000);
  const idleCpu = (cpuMs(d.pid) - idleCpu0) / (wall() - idleW0);
  const v4 = lab.prefix.v4.replace(/\.0\/24$/, '');
  const tg = startTrafgen(lab, frameFile(), tcpFrames({ src: `${v4}.200`, dst: `${v4}.201`, dport: 443 }), { rate: FULL_RATE, tuneMachine: true });
  t.teardown(() => void tg.stop());
  // Running at full rate before the window opens.
  const rxStart = rxPackets(lab);
  await sleep(1000);
  t.true(rxPackets(lab) > rxStart + 10_000, 'background traffic flowing');

  const st0 = (await ok(d, { v: 1, op: 'status' })) as Status;
  const rx0 = rxPackets(lab);
  const cpu0 = cpuMs(d.pid);
  const w0 = wall();
  let jobs = 0;
  let worstKillMs = 0;
  const modes: string[] = [];
  while (wall() - w0 < SECONDS * 1000) {
    const fam = jobs % 2 ? 'v6' : 'v4';
    const byExpiry = jobs % 3 === 2;
    const s = await session(ld, fam);
    const host = lab.hosts.client[fam];
    const created = wall();
    const job = (await ok(d, createReq(lab, host, byExpiry ? 2 : 600))).job as { id: string; expiresAt: string };
    const k = await killed(ld, s, KILL_WAIT_MS);
    t.is(k.client, 'ECONNRESET', `job ${jobs}: client end`);
    t.is(k.server, 'ECONNRESET', `job ${jobs}: server end`);
    worstKillMs = Math.max(worstKillMs, k.at - created);
    if (byExpiry) {
      await d.waitLog((l) => l.msg === 'job expired' && (l.job as { id?: string })?.id === job.id, 5000, 'expiry');
    } else {
      await ok(d, { v: 1, op: 'cancel', jobId: job.id });
    }
    const after = await tryConnect(ld, fam, 300);
    t.true(after.ok, `job ${jobs}: connections work once it has ${byExpiry ? 'expired' : 'been cancelled'} (${JSON.stringify(after)})`);
    modes.push(`${fam}/${byExpiry ? 'expired' : 'cancelled'}`);
    jobs++;
  }
  const secs = (wall() - w0) / 1000;
  const cpu = (cpuMs(d.pid) - cpu0) / (secs * 1000);
  const rx = rxPackets(lab) - rx0;
  const st1 = (await ok(d, { v: 1, op: 'status' })) as Status;
  const run = await tg.stop();
  t.false(run.exitedEarly, `trafgen ran throughout: ${run.output.slice(-300)}`);

  const rate = rx / secs;
  const xdpSeen = st1.counters.packets - st0.counters.packets;
  const events = st1.counters.events - st0.counters.events;
  t.true(jobs >= SECONDS / 4, `${jobs} jobs in ${secs.toFixed(1)} s`);
  t.true(rate > 100_000, `background rate ${rate.toFixed(0)} packets/s`);
  t.true(xdpSeen >= rx * 0.99, `XDP saw ${xdpSeen} of ${rx} packets: the filter ran on all of them`);
  t.true(events < rx / 1000, `${events} events reached user space out of ${rx} packets`);
  t.true(cpu - idleCpu < CPU_BOUND, `traffic added ${((cpu - idleCpu) * 100).toFixed(1)}% of a core to the daemon's ${(idleCpu * 100).toFixed(1)}% without it (bound ${CPU_BOUND * 100}%)`);
  t.true(cpu < CPU_CAP, `daemon CPU ${(cpu * 100).toFixed(1)}% of a core (cap ${CPU_CAP * 100}%)`);
  t.log(`${jobs} jobs (${modes.join(' ')}), all killed their session (worst ${worstKillMs.toFixed(0)} ms after create) and released it`);
  t.log(`background: ${rx} packets in ${secs.toFixed(1)} s = ${(rate / 1e6).toFixed(2)} Mpps at ${lab.sensor.sniffIf}, ${events} events to user space, daemon CPU ${(cpu * 100).toFixed(1)}% of one core (${(idleCpu * 100).toFixed(1)}% with no traffic)`);
  t.log(`FIGURE background packet rate held: ${(rate / 1e6).toFixed(2)} Mpps for ${secs.toFixed(0)} s, ${jobs} jobs none missed, daemon CPU ${(cpu * 100).toFixed(1)}%`);
});

ptest.serial('a flood of matching segments from many flows overflows the ring: losses counted and shown by tcpreset status; the daemon recovers by itself and kills again', async (t) => {
  const FLOOD_MS = scaled(4000, 20_000);
  t.timeout(scaled(60_000, 5 * 60_000));
  // The event thread at nice -10, not SCHED_FIFO (the default): here the flood's producer (trafgen)
  // shares the two CPUs with it, and a FIFO thread preempts the producer at every wake-up, so the
  // offered rate falls to what the thread drains and the ring never overflows (CI: 45k-100k frames/s
  // offered and no loss, against ~200k/s at nice -10). On a sensor the producer is the NIC. That a
  // flood demotes a FIFO thread is e2e/service.test.ts's subject.
  const ld = await labDaemon(t, { eventRtPriority: 0 });
  const { lab, daemon: d } = ld;
  const pid = d.pid;
  const victim = lab.hosts.client.v4;
  await ok(d, createReq(lab, victim, 3600));
  // Every frame a new flow or a new sequence number: nothing is suppressed as a duplicate. The peer address is unused.
  const frames = tcpFrames({ src: victim, dst: lab.prefix.v4.replace(/\.0\/24$/, '.99'), dport: 5001 });
  const floodStart = Date.now();
  let runs = 0;
  let sent = 0;
  // As fast as trafgen goes; restarted should it stop early.
  while (Date.now() - floodStart < FLOOD_MS) {
    const tg = startTrafgen(lab, frameFile(), frames, { rate: FULL_RATE, tuneMachine: true });
    runs++;
    while (!tg.exited && Date.now() - floodStart < FLOOD_MS) await sleep(100);
    const r = await tg.stop();
    sent += r.packets ?? 0;
    if (r.exitedEarly && runs <= 2) t.log(`trafgen stopped early: ${r.output.replace(/Cannot set system socket memory[^\n]*\n/g, '')}`);
  }
  const during = (await ok(d, { v: 1, op: 'status' })) as Status & { senders: { sent: number; errors: number }[] };
  t.true(during.counters.lost > 0, `ring losses counted: ${JSON.stringify(during.counters)}`);
  t.true(during.counters.events > 0);

  // What an operator sees.
  const human = await cli(ld, ['status']);
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, new RegExp(`lost=${during.counters.lost}\\b`));
  const json = await cli(ld, ['status', '--json']);
  t.is(json.code, 0, json.stderr);
  const js = JSON.parse(json.stdout) as Status;
  t.true(js.counters.lost >= during.counters.lost);

  // Recovers by itself: the ring drains, the victim's handshakes are refused, and a new job
  // kills a live interactive session of the same client (over IPv6, untouched until then).
  // Wait until the backlog the flood left in the ring is drained (records stop moving), at most 20 s:
  // segments queued behind it wait their turn; what is claimed is that the daemon gets back on its own.
  for (let last = -1, t0 = Date.now(); Date.now() - t0 < 20_000; ) {
    const rec = ((await ok(d, { v: 1, op: 'status' })) as Status & { ring: { records: number } }).ring.records;
    if (rec === last) break;
    last = rec;
    await sleep(300);
  }
  const conn = await tryConnect(ld, 'v4', 500);
  t.is(conn.outcome, 'reset', `after the flood the victim's connections are still reset (${JSON.stringify(conn)})`);
  const s = await session(ld, 'v6');
  await ok(d, createReq(lab, lab.hosts.client.v6, 600));
  const k = await killed(ld, s, KILL_WAIT_MS);
  t.is(k.client, 'ECONNRESET');
  t.is(k.server, 'ECONNRESET');
  const after = (await ok(d, { v: 1, op: 'status' })) as Status;
  t.true(after.counters.events > during.counters.events, 'events flow again');
  t.is(after.ring.errors ?? 0, 0, 'no record failed');
  t.is(d.pid, pid);
  t.is(d.exit, null, 'the same daemon process, no restart');
  t.log(`flood: ${sent} matching frames in ${((Date.now() - floodStart) / 1000).toFixed(1)} s (${runs} trafgen run(s)); events ${during.counters.events}, lost ${during.counters.lost}, records read ${during.ring.records}, RSTs sent ${during.senders.reduce((a, x) => a + x.sent, 0)}`);
  t.log(`FIGURE ring overflow: ${during.counters.lost} events lost and counted out of ${during.counters.matched} matched; kills continued after`);
});
