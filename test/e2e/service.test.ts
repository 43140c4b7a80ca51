/**
 * The whole product as an operator uses it: the REAL daemon runs inside the
 * lab's sensor namespace (`ip netns exec SENSOR node bin/tcpresetd ...`) and
 * the REAL CLI is run there too (`ip netns exec SENSOR node bin/tcpreset
 * ...`). Verdicts come from the endpoints' kernels (lab TCP peers):
 * ECONNRESET on both ends of a live session, new connections reset as their
 * handshake completes while a job holds, and working connections before it
 * and once it is cancelled or has expired.
 *
 * Serial: each test builds its own lab; timing bounds would only measure
 * each other on two cores.
 */
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTrafgen, tcpFrames } from '../../testkit/trafgen.js';
import { ptest } from '../helpers/privileged.js';
import { startDaemon } from '../../testkit/daemon.js';
import { ECHO_PORT, OTHER_PORT, cli, createArgs, expectKilled, jsonCli, session as labSession, setup as labSetup, type Ctx, type Session } from '../helpers/service-lab.js';
import type { Lab } from '../../testkit/lab/lab.js';
import { connectionAttempts } from '../../testkit/lab/peer-control.js';
import { expectResetAfterHandshake, expectWorks, probe, type Probe } from '../helpers/verdict.js';
import { sleep, wallMs as wall } from '../../testkit/time.js';

/** The shared lab with the second echo port: -p makes another job, for a port the first leaves alone. */
function setup(t: ExecutionContext, config?: (lab: Lab) => object): Promise<Ctx> {
  return labSetup(t, {}, config, [ECHO_PORT, OTHER_PORT]);
}

/** An interactive session client -> server (of family `fam`) with echoes flowing. */
function session(ctx: Ctx, fam: 'v4' | 'v6', port = ECHO_PORT): Promise<Session> {
  return labSession(ctx, ctx.lab.hosts.server[fam], port);
}


/**
 * A fresh connection from the client to the echo port, judged by
 * expectResetAfterHandshake/expectWorks. It is held for holdMs: the server's SYN-ACK can
 * beat the first RST (tens of microseconds either way), and then the reset
 * comes a moment after the handshake, not instead of it.
 */
function tryConnect(ctx: Ctx, fam: 'v4' | 'v6' = 'v4', holdMs = 200): Promise<Probe> {
  return probe(ctx.lab, ctx.lab.ns.client, ctx.lab.hosts.server[fam], ECHO_PORT, ctx.server, { holdMs });
}

ptest.serial('the seed command kills an interactive session (IPv4 and IPv6); re-running extends; -p makes another job; counters and flow logs', async (t) => {
  const ctx = await setup(t);
  const { lab, daemon } = ctx;
  for (const fam of ['v4', 'v6'] as const) {
    const s = await session(ctx, fam);
    const host = lab.hosts.client[fam];
    const r = await cli(ctx, createArgs(ctx, 'ENG-SSH', host, 30));
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`^created job [0-9a-f]{12} ENGID=ENG-SSH host ${host.replace(/[.:]/g, '\\$&')}`));
    await expectKilled(ctx, s, r.startedAt, `${fam} session`);
  }
  const v4 = lab.hosts.client.v4;
  const before = (await jsonCli(ctx, ['list'])).jobs.find((j: { host: string }) => j.host === v4);
  await sleep(1100);
  const again = await jsonCli(ctx, createArgs(ctx, 'ENG-SSH', v4, 30));
  t.is(again.action, 'extended');
  t.is(again.job.id, before.id);
  t.true(Date.parse(again.job.expiresAt) > Date.parse(before.expiresAt), 'later end time');
  const port = await jsonCli(ctx, createArgs(ctx, 'ENG-SSH', v4, 30, ['-p', String(OTHER_PORT)]));
  t.is(port.action, 'created');
  t.not(port.job.id, before.id);

  const list = await jsonCli(ctx, ['list']);
  t.is(list.jobs.length, 3);
  const job = list.jobs.find((j: { id: string }) => j.id === before.id);
  t.true(job.counters.matched > 0 && job.counters.rstsSent >= 2 && job.counters.flows >= 1, JSON.stringify(job.counters));
  t.truthy(job.counters.firstHitAt);
  t.true(job.remainingMs > 25_000);
  // One log line per reset flow, with engid, job id and the 4-tuple.
  const flow = await daemon.waitLog((l) => l.msg === 'flow reset' && l.jobId === before.id, 3000, 'flow reset line');
  t.is(flow.engid, 'ENG-SSH');
  const tuple = flow.flow as { src: string; dst: string; sport: number; dport: number };
  t.deepEqual([tuple.src, tuple.dst].sort(), [v4, lab.hosts.server.v4].sort());
  t.true([tuple.sport, tuple.dport].includes(ECHO_PORT));
  await daemon.waitLog((l) => l.msg === 'job activity' && l.jobId === before.id, 3000, 'activity summary');
  const flowLines = daemon.logs.filter((l) => l.msg === 'flow reset' && l.jobId === before.id);
  const tuples = flowLines.map((l) => JSON.stringify(l.flow));
  t.is(new Set(tuples).size, tuples.length, 'each flow logged once, not per packet');
  const settled = (await jsonCli(ctx, ['list'])).jobs.find((j: { id: string }) => j.id === before.id);
  t.is(flowLines.length, settled.counters.flows, 'one line per flow counted');
  t.true(settled.counters.matched > flowLines.length, 'more packets than lines');

  const status = await jsonCli(ctx, ['status']);
  t.is(status.jobs, 3);
  t.truthy(status.interfaces.find((i: { ifname: string; role: string }) => i.ifname === lab.sensor.sniffIf && i.role === 'sniff'));
  t.true(status.counters.matched > 0);
});

ptest.serial('cancel stops the resets at once: a new connection succeeds right after cancel', async (t) => {
  const ctx = await setup(t);
  const host = ctx.lab.hosts.client.v4;
  expectWorks(t, await tryConnect(ctx), 'before the job');
  t.is((await cli(ctx, createArgs(ctx, 'ENG', host, 60))).code, 0);
  expectResetAfterHandshake(t, await tryConnect(ctx), 'a new connection while the job holds');
  const c = await cli(ctx, ['cancel', 'ENG', '-i', ctx.lab.sensor.sniffIf, '-h', host]);
  t.is(c.code, 0, c.stderr);
  t.regex(c.stdout, /^cancelled job/);
  expectWorks(t, await tryConnect(ctx, 'v4', 500), 'a connection right after cancel');
  t.deepEqual((await jsonCli(ctx, ['list'])).jobs, []);
  // Cancel by id works the same; an unknown one is exit 65.
  const j = await jsonCli(ctx, createArgs(ctx, 'ENG', host, 60));
  expectResetAfterHandshake(t, await tryConnect(ctx), 'during the second job');
  t.is((await cli(ctx, ['cancel', j.job.id])).code, 0);
  expectWorks(t, await tryConnect(ctx), 'after cancel by id');
  t.is((await cli(ctx, ['cancel', j.job.id])).code, 65);
});

ptest.serial('expiry ends the job on time and restores connectivity', async (t) => {
  const ctx = await setup(t);
  expectWorks(t, await tryConnect(ctx), 'before the job');
  const j = await jsonCli(ctx, createArgs(ctx, 'ENG', ctx.lab.hosts.client.v4, 3));
  expectResetAfterHandshake(t, await tryConnect(ctx, 'v4', 500), 'during the job');
  const end = Date.parse(j.job.expiresAt);
  const expired = await ctx.daemon.waitLog((l) => l.msg === 'job expired', 6000, 'expiry');
  const late = Date.parse(String(expired.time)) - end;
  t.true(late >= 0 && late < 250, `expired ${late} ms after its end time`);
  expectWorks(t, await tryConnect(ctx), 'after expiry');
  t.deepEqual((await jsonCli(ctx, ['list'])).jobs, []);
  const st = await jsonCli(ctx, ['status']);
  // The interface had a job: it stays attached (remembering flows) until the daemon stops.
  t.deepEqual(st.interfaces.filter((i: { role: string }) => i.role === 'sniff').map((i: { ifname: string; jobs: number; watched: boolean }) => [i.ifname, i.jobs, i.watched]), [[ctx.lab.sensor.sniffIf, 0, false]]);
});

ptest.serial('a job that runs to its end with traffic logs its final counters: non-zero and equal to what list showed', async (t) => {
  const ctx = await setup(t);
  const host = ctx.lab.hosts.client.v4;
  const s = await session(ctx, 'v4');
  const r = await cli(ctx, createArgs(ctx, 'ENG-END', host, 4));
  t.is(r.code, 0, r.stderr);
  const id = /created job ([0-9a-f]{12})/.exec(r.stdout)?.[1];
  t.truthy(id, r.stdout);
  await expectKilled(ctx, s, r.startedAt, 'session');
  expectResetAfterHandshake(t, await tryConnect(ctx, 'v4', 300), 'a new connection');
  await sleep(500); // the reset flows are quiet now: nothing moves the counters after the list below
  const listed = (await jsonCli(ctx, ['list'])).jobs.find((j: { id: string }) => j.id === id);
  t.true(listed.counters.matched > 0 && listed.counters.rstsSent > 0 && listed.counters.flows >= 2, JSON.stringify(listed.counters));
  t.true(listed.remainingMs > 500, `listed ${listed.remainingMs} ms before its end`);
  const expired = await ctx.daemon.waitLog((l) => l.msg === 'job expired' && (l.job as { id?: string }).id === id, 6000, 'job expired line');
  // Traffic counters are final once the flows are dead; the sweep's verification (known/verified) may settle after the list.
  const traffic = (c: Record<string, unknown>): unknown => ({ matched: c.matched, rstsSent: c.rstsSent, flows: c.flows, firstHitAt: c.firstHitAt, lastHitAt: c.lastHitAt });
  t.deepEqual(traffic(expired.counters as Record<string, unknown>), traffic(listed.counters), 'the audit record holds the counters the job ended with');
  // And so does the history, which the incident report is made from.
  const ended = (await jsonCli(ctx, ['history'])).records.filter((h: { event: string; job: { id: string } }) => h.event === 'ended' && h.job.id === id);
  t.is(ended.length, 1);
  t.is(ended[0].how, 'expired');
  t.deepEqual(traffic(ended[0].counters), traffic(listed.counters), 'tcpreset history --json: the final counters');
});

ptest.serial('restart (SIGKILL, then start) keeps enforcing the job until its original end', async (t) => {
  const ctx = await setup(t);
  const j = await jsonCli(ctx, createArgs(ctx, 'ENG', ctx.lab.hosts.client.v4, 60));
  expectResetAfterHandshake(t, await tryConnect(ctx, 'v4', 500), 'during the job');
  await ctx.daemon.stop('SIGKILL');
  // The XDP link died with the process: nothing is enforced now (the positive control).
  expectWorks(t, await tryConnect(ctx), 'no daemon, no enforcement (the link went with the process)');
  const d2 = await startDaemon({ dir: ctx.daemon.dir, socket: ctx.daemon.socket, stateDir: ctx.daemon.stateDir, netns: ctx.lab.ns.sensor, args: ['--config', `${ctx.daemon.dir}/config.json`] });
  t.teardown(async () => {
    await d2.stop();
  });
  ctx.daemon = d2;
  const jobs = (await jsonCli(ctx, ['list'])).jobs;
  t.is(jobs.length, 1);
  t.is(jobs[0].id, j.job.id);
  t.is(jobs[0].expiresAt, j.job.expiresAt);
  expectResetAfterHandshake(t, await tryConnect(ctx, 'v4', 500), 'enforced again after restart');
  const s = await session(ctx, 'v6'); // other family: not targeted
  const since = wall();
  // Echoes still coming 300 ms later, waited for (was: a fixed sleep, then no error seen).
  const before = s.client.lastProgress('c')?.rx ?? 0;
  await s.client.waitFor((e) => e.ev === 'progress' && e.t > since + 300 && (e.rx ?? 0) > before, 5000, 'echoes of the untargeted session');
  t.is(s.client.errorOf('c'), undefined, 'untargeted traffic untouched');
  t.is(ctx.server.errorOf(s.serverConn), undefined, 'untargeted traffic untouched (server end)');
});

/**
 * New connections from the client, each sending its request `delayUs` after
 * connect: how many got a byte through in either direction (the echo came
 * back, or the server application read something), and a compact account.
 */
async function bytesThrough(ctx: Ctx, count: number, opts: { gapMs?: number; delayUs?: number } = {}): Promise<{ through: number; serverRx: number; outcomes: string }> {
  const since = wall();
  const r = await connectionAttempts(ctx.lab, ctx.lab.ns.client, ctx.lab.hosts.server.v4, ECHO_PORT, { count, gapMs: opts.gapMs ?? 300, delayUs: opts.delayUs ?? 500 });
  ctx.t.is(r.length, count, 'every attempt reported');
  // Each connection the server accepted reports its close with the bytes its application read:
  // waited for, one by one (a peek after a fixed sleep could miss a late one and count 0 bytes).
  const accepted = ctx.server.events.filter((e) => e.ev === 'accept' && e.t >= since && e.lport === ECHO_PORT);
  const closes = await Promise.all(accepted.map((a) => ctx.server.waitFor((e) => e.ev === 'close' && e.conn === a.conn, 5000, `close of ${a.conn}`)));
  const serverRx = closes.reduce((n, e) => n + (e.rx ?? 0), 0);
  const fed = closes.filter((e) => (e.rx ?? 0) > 0).length;
  return {
    through: Math.max(r.filter((e) => e.echoed).length, fed),
    serverRx,
    outcomes: r.map((e) => (e.echoed ? 'ECHO' : `${e.connected ? 'C' : '-'}/${e.code}`)).join(' '),
  };
}

// Issue 8: the first segments of a new flow reach a QUIET daemon (300 ms of
// silence before each). Every connection is reset before the request the
// client sends 0.5 ms after connect carries a byte. That race was lost 8-10
// times in 20 with the event thread at nice -10 and the keep-warm tick doing
// route lookups; SCHED_FIFO (default) and a light tick: 0 in 100 under load.
// The positive controls: the same attempts carry their bytes before the job
// and after its cancel.
ptest.serial('a quiet daemon kills every new connection before a byte crosses (20 attempts 300 ms apart, request 0.5 ms after connect)', async (t) => {
  const ctx = await setup(t);
  const host = ctx.lab.hosts.client.v4;
  const before = await bytesThrough(ctx, 3);
  t.is(before.through, 3, `before the job every request is echoed: ${before.outcomes}`);
  t.true(before.serverRx >= 3 * 5, `the server read the requests before the job (${before.serverRx} bytes)`);
  t.is((await cli(ctx, createArgs(ctx, 'ENG-C2', host, 60))).code, 0);
  await sleep(300);
  const during = await bytesThrough(ctx, 20);
  const lat = ctx.daemon.logs.filter((l) => l.msg === 'flow reset').map((l) => Number(l.firstLatencyUs)).sort((a, b) => a - b);
  t.log(`during the job: ${during.outcomes}; ${during.through}/20 carried a byte first; first RSTs sent ${lat[0]}/${lat[lat.length >> 1]}/${lat[lat.length - 1]} µs (min/median/max) after XDP`);
  t.is(during.outcomes.split(' ').length, 20);
  t.is(lat.length, 20, 'every attempt answered: one flow reset per connection');
  t.is(during.through, 0, `no request echoed and nothing read by the server: ${during.outcomes}`);
  t.is(during.serverRx, 0, 'the server application read no byte');
  t.is((await cli(ctx, ['cancel', 'ENG-C2', '-i', ctx.lab.sensor.sniffIf, '-h', host])).code, 0);
  const after = await bytesThrough(ctx, 3);
  t.is(after.through, 3, `after cancel every request is echoed: ${after.outcomes}`);
});

ptest.serial('after kill -9 and a restart, the restored job kills the first new connection before a byte crosses (3 restarts)', async (t) => {
  const ctx = await setup(t);
  const host = ctx.lab.hosts.client.v4;
  t.is((await cli(ctx, createArgs(ctx, 'ENG', host, 120))).code, 0);
  for (let i = 0; i < 3; i++) {
    await ctx.daemon.stop('SIGKILL');
    const gone = await bytesThrough(ctx, 1);
    t.is(gone.through, 1, `no daemon: the request is echoed (${gone.outcomes})`);
    const d = await startDaemon({ dir: ctx.daemon.dir, socket: ctx.daemon.socket, stateDir: ctx.daemon.stateDir, netns: ctx.lab.ns.sensor, args: ['--config', `${ctx.daemon.dir}/config.json`] });
    t.teardown(async () => {
      await d.stop();
    });
    ctx.daemon = d;
    const first = await bytesThrough(ctx, 1);
    t.log(`restart ${i + 1}: ${first.outcomes}, ${first.serverRx} bytes read by the server first`);
    t.is(first.through, 0, `restart ${i + 1}: the first connection carried no byte (${first.outcomes})`);
    t.is(first.serverRx, 0);
    const reset = await d.waitLog((l) => l.msg === 'flow reset', 3000, `restart ${i + 1}: the restored job resets the first connection`);
    t.log(`restart ${i + 1}: first RSTs sent ${reset.firstLatencyUs} µs after XDP saw the SYN`);
    t.is((reset.flow as { dport?: number; sport?: number }).dport === ECHO_PORT || (reset.flow as { sport?: number }).sport === ECHO_PORT, true);
  }
});

/** Scheduling of the daemon's event thread(s): policy (0 SCHED_OTHER, 1 SCHED_FIFO), rt priority and nice, from /proc. */
function eventThreads(pid: number): { tid: number; policy: number; rtPriority: number; nice: number }[] {
  const out = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== 'tcpreset-event') continue;
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
    out.push({ tid: Number(tid), nice: Number(f[16]), rtPriority: Number(f[37]), policy: Number(f[38]) });
  }
  return out;
}

ptest.serial('the event thread runs SCHED_FIFO 10 by default, drops to SCHED_OTHER at eventNice while a flood keeps it busy and is FIFO again once idle; eventRtPriority 0 runs it at eventNice', async (t) => {
  const ctx = await setup(t);
  const host = ctx.lab.hosts.client.v4;
  t.is((await cli(ctx, createArgs(ctx, 'ENG', host, 60))).code, 0);
  const pid = (await jsonCli(ctx, ['status'])).pid as number;
  t.deepEqual(eventThreads(pid).map((e) => [e.policy, e.rtPriority]), [[1, 10]]);
  const ring0 = (await jsonCli(ctx, ['status'])).ring as { fifoDemotions: number };
  t.is(ring0.fifoDemotions, 0, 'no flood yet: never demoted');
  // A flood of matching segments, each a new flow, in two shapes:
  // - the event thread on trafgen's CPU (trafgen --cpus 1 binds its worker to CPU 0; XDP runs in
  //   the softirq of that send): the thread starves its own producer and is woken for almost every
  //   segment, never busy 2 ms at a stretch but most of the time (CI failed this before the
  //   duty-cycle rule: 21,540 segments, 21,507 wake-ups, no demotion);
  // - unpinned: the ring fills faster than the thread drains it, busy far longer than 2 ms.
  const frames = tcpFrames({ src: host, dst: ctx.lab.prefix.v4.replace(/\.0\/24$/, '.99'), dport: 5001 });
  const cfgDir = mkdtempSync(join(tmpdir(), 'trafgen-'));
  const cpus = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1] ?? '0';
  let demotions = 0;
  for (const pinned of [true, false]) {
    const [ev] = eventThreads(pid);
    execFileSync('taskset', ['-p', '-c', pinned ? '0' : cpus, String(ev.tid)], { stdio: 'ignore' });
    const tg = startTrafgen(ctx.lab, join(cfgDir, 'frames.cfg'), frames, { rate: 10_000_000 });
    t.teardown(() => void tg.stop());
    await sleep(1500);
    const busy = eventThreads(pid).map((e) => [e.policy, e.nice]);
    await tg.stop();
    await sleep(1000);
    const ring = (await jsonCli(ctx, ['status'])).ring as { fifoDemotions: number };
    t.log(`${pinned ? 'on trafgen\'s CPU' : 'unpinned'}: during the flood ${JSON.stringify(busy)} (policy, nice); ring ${JSON.stringify(ring)}`);
    t.true(ring.fifoDemotions > demotions, `the flood (${pinned ? 'on trafgen\'s CPU' : 'unpinned'}) demoted the thread: ${JSON.stringify(ring)}`);
    demotions = ring.fifoDemotions;
    t.deepEqual(eventThreads(pid).map((e) => [e.policy, e.rtPriority]), [[1, 10]], 'FIFO again once the flood is over');
  }
  // Not silent: a warning, and the same count in the metrics (both absent before this change).
  t.true(ctx.daemon.logs.some((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.startsWith('event thread left SCHED_FIFO')), 'a warning line');
  const metric = (await cli(ctx, ['metrics'])).stdout.split('\n').find((l) => l.startsWith('tcpreset_event_thread_fifo_demotions_total '));
  t.is(metric, `tcpreset_event_thread_fifo_demotions_total ${demotions}`);
  await ctx.daemon.stop();
  const d = await startDaemon({ netns: ctx.lab.ns.sensor, config: { eventNice: -7, eventRtPriority: 0 } });
  t.teardown(async () => {
    await d.stop();
  });
  ctx.daemon = d;
  t.is((await cli(ctx, createArgs(ctx, 'ENG', ctx.lab.hosts.client.v4, 60))).code, 0);
  const pid2 = (await jsonCli(ctx, ['status'])).pid as number;
  t.deepEqual(eventThreads(pid2).map(({ policy, rtPriority, nice }) => ({ policy, rtPriority, nice })), [{ policy: 0, rtPriority: 0, nice: -7 }]);
});

ptest.serial('eventThreads 2: flows are spread over two rings and threads, and every flow is answered', async (t) => {
  const ctx = await setup(t, () => ({ eventThreads: 2 }));
  const host = ctx.lab.hosts.client.v4;
  t.is((await cli(ctx, createArgs(ctx, 'ENG', host, 60))).code, 0);
  const r = await bytesThrough(ctx, 24, { gapMs: 30, delayUs: 0 });
  t.log(r.outcomes);
  // The counters reach the main thread in the event threads' reports: waited for, then exact.
  let job = (await jsonCli(ctx, ['list'])).jobs[0];
  for (const deadline = Date.now() + 5000; job.counters.flows < 24 && Date.now() < deadline; await sleep(100)) job = (await jsonCli(ctx, ['list'])).jobs[0];
  t.is(job.counters.flows, 24, `flows answered with RSTs: ${JSON.stringify(job.counters)}`);
  const st = await jsonCli(ctx, ['status']);
  t.is(st.ring.threads, 2);
  t.is(st.ring.perThread.length, 2);
  // 24 flows with random ephemeral ports: all on one ring has probability 2^-23.
  t.true(st.ring.perThread.every((n: number) => n > 0), `records per thread: ${JSON.stringify(st.ring.perThread)}`);
  t.is(st.ring.perThread[0] + st.ring.perThread[1], st.ring.records);
  t.is(st.ring.errors, 0);
});

ptest.serial('a protected address is refused (config entry and the sensor\'s own address), exit 65', async (t) => {
  const ctx = await setup(t, (lab) => ({ protected: [`${lab.hosts.bystander.v4}/32`] }));
  const { lab } = ctx;
  const byConfig = await cli(ctx, createArgs(ctx, 'ENG', lab.hosts.bystander.v4, 60));
  t.is(byConfig.code, 65);
  t.regex(byConfig.stderr, new RegExp(`${lab.hosts.bystander.v4.replace(/\./g, '\\.')}.*protected`));
  const own = await cli(ctx, createArgs(ctx, 'ENG', lab.sensor.v6, 60));
  t.is(own.code, 65);
  t.regex(own.stderr, /protected/);
  t.true(own.stderr.includes(lab.sensor.resetIf), own.stderr);
  t.deepEqual((await jsonCli(ctx, ['list'])).jobs, []);
  expectWorks(t, await probe(lab, lab.ns.bystander, lab.hosts.server.v4, ECHO_PORT, ctx.server), 'bystander untouched');
});

ptest.serial('a wrong interface is refused with exit 65 naming it', async (t) => {
  const ctx = await setup(t);
  const host = ctx.lab.hosts.client.v4;
  const missing = await cli(ctx, [...createArgs(ctx, 'ENG', host, 60).map((a) => (a === ctx.lab.sensor.sniffIf ? 'nosuch0' : a))]);
  t.is(missing.code, 65);
  t.regex(missing.stderr, /sniff interface "nosuch0" does not exist/);
  // The sniff port has no address: it cannot be the reset interface in layer-3 mode.
  const noAddr = await cli(ctx, ['ENG', '-i', ctx.lab.sensor.sniffIf, '-o', ctx.lab.sensor.sniffIf, '-h', host, '-d', '60']);
  t.is(noAddr.code, 65);
  t.regex(noAddr.stderr, new RegExp(`reset interface "${ctx.lab.sensor.sniffIf}"`));
  // A reset interface that is down.
  await ctx.lab.exec(ctx.lab.ns.sensor, ['ip', 'link', 'set', ctx.lab.sensor.resetIf, 'down']);
  const down = await cli(ctx, createArgs(ctx, 'ENG', host, 60));
  t.is(down.code, 65);
  t.regex(down.stderr, /administratively down/);
  t.deepEqual((await jsonCli(ctx, ['list'])).jobs, []);
});
