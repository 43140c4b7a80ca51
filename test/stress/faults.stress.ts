/**
 * Faults of the daemon's process and disk, on a namespace lab with the REAL
 * daemon in the sensor namespace:
 *
 * - kill -9 in the middle of active jobs (while clients create, extend and
 *   cancel, so most kills land inside a state-file write), then a restart,
 *   many times in a row: every acknowledged unexpired job is enforced again
 *   with its original end time (checked in the kernel's targets map, and by
 *   a refused handshake of a targeted lab host), nothing expired or
 *   cancelled comes back, the state file is always whole, and the temp
 *   files of interrupted writes do not pile up;
 * - the state directory on a tmpfs that fills up: jobs are accepted and
 *   enforced with a warning, and none is lost once space is back.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ptest } from '../helpers/privileged.js';
import { decodeState } from '../../src/daemon/state.js';
import { scaled } from './scale.js';
import { Conn, addrText, bulk, bulkHost, createReq, deadlineSkewMs, dumpTargets, ifindexIn, labDaemon, ok, targetsMapId, tryConnect, type LabDaemon } from './fault-lab.js';
import { sleep } from '../../testkit/time.js';
import { Rng, seedFromEnv } from '../../testkit/rng.js';

interface Known {
  host: string;
  expiresAt: number;
}

type Doubt =
  | { kind: 'create'; host: string; sentAt: number; durMs: number }
  | { kind: 'extend'; host: string; before: number; sentAt: number; durMs: number }
  | { kind: 'cancel'; host: string; before: number };

interface ListedJob {
  id: string;
  host: string;
  expiresAt: string;
  fault?: string;
}

const tmpLitter = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).filter((n) => n.includes('.tmp-')) : []);

ptest.serial('kill -9 during active jobs, again and again: unexpired jobs come back enforced with their original end, nothing expired or cancelled does, the state file is never corrupt', async (t) => {
  const CYCLES = scaled(3, 20);
  const BACKGROUND = scaled(400, 2000);
  t.timeout(scaled(110_000, 20 * 60_000));
  const seed = seedFromEnv();
  const rng = new Rng(seed);
  t.log(`seed ${seed} (STRESS_SEED replays it)`);

  const ld = await labDaemon(t, { maxJobs: 8192 });
  const { lab } = ld;
  const sniffIndex = ifindexIn(lab.ns.sensor, lab.sensor.sniffIf);
  const known = new Map<string, Known>(); // by host: acknowledged jobs
  let hostSeq = 0;

  // A sentinel on a real lab host, so enforcement is judged by a real handshake too.
  const sentinel = lab.hosts.client.v4;
  const s = await ok(ld.daemon, createReq(lab, sentinel, 3600));
  known.set(sentinel, { host: sentinel, expiresAt: Date.parse(s.job.expiresAt) });
  // Enough jobs that each save writes a few hundred KB: kills land inside writes.
  const bg = await bulk(ld.daemon.socket, BACKGROUND, 8, () => createReq(lab, bulkHost(hostSeq++), 3600));
  for (const r of bg) {
    t.true(r.ok, JSON.stringify(r.error));
    known.set(r.result.job.host, { host: r.result.job.host, expiresAt: Date.parse(r.result.job.expiresAt) });
  }

  const figures = { restarts: 0, killsMidWrite: 0, jobsRestored: 0, expiredWhileDown: 0, cancelledBeforeKill: 0, extended: 0, inDoubt: 0, maxRestartMs: 0 };
  let doubts: Doubt[] = [];
  let killedAt = 0;

  const verify = async (cycle: number): Promise<void> => {
    const d = ld.daemon;
    const before = Date.now();
    const jobs = (await ok(d, { v: 1, op: 'list' })).jobs as ListedJob[];
    const listedAt = Date.now();
    const byHost = new Map(jobs.map((j) => [j.host, j]));
    const doubtByHost = new Map(doubts.map((x) => [x.host, x]));
    const where = `cycle ${cycle}`;

    // Every acknowledged, unexpired job is back with its original end time.
    let missing = 0;
    let wrongEnd = 0;
    for (const k of known.values()) {
      if (k.expiresAt <= before + 100) continue;
      const doubt = doubtByHost.get(k.host);
      const j = byHost.get(k.host);
      if (!j) {
        if (doubt?.kind !== 'cancel') missing++;
        continue;
      }
      if (doubt?.kind === 'extend' && Date.parse(j.expiresAt) !== k.expiresAt) {
        const e = Date.parse(j.expiresAt);
        if (e < doubt.sentAt + doubt.durMs - 5 || e > killedAt + doubt.durMs + 5) wrongEnd++;
        continue;
      }
      if (Date.parse(j.expiresAt) !== k.expiresAt) wrongEnd++;
    }
    t.is(missing, 0, `${where}: acknowledged unexpired jobs missing after the restart`);
    t.is(wrongEnd, 0, `${where}: jobs whose end time changed`);

    // Nothing comes back that was cancelled, expired, or never acknowledged.
    let revived = 0;
    let unknown = 0;
    for (const j of jobs) {
      const e = Date.parse(j.expiresAt);
      if (e <= listedAt - 500) revived++;
      const doubt = doubtByHost.get(j.host);
      if (!known.has(j.host)) {
        if (doubt?.kind !== 'create') unknown++;
        else if (e < doubt.sentAt + doubt.durMs - 5 || e > killedAt + doubt.durMs + 5) unknown++;
      }
      t.is(j.fault, undefined, `${where}: job ${j.id} not enforced: ${j.fault}`);
    }
    t.is(revived, 0, `${where}: expired jobs listed`);
    t.is(unknown, 0, `${where}: jobs that were never acknowledged (or cancelled) listed`);

    // The kernel enforces exactly those jobs, with their end times.
    const mapId = targetsMapId(d.pid);
    t.truthy(mapId, `${where}: the daemon holds its targets map`);
    const entries = dumpTargets(mapId!);
    const dumpedAt = Date.now();
    const entryByHost = new Map(entries.map((e) => [addrText(e), e]));
    t.is(entryByHost.size, entries.length);
    let notInMap = 0;
    let worstSkew = 0;
    for (const j of jobs) {
      const e = entryByHost.get(j.host);
      if (!e) {
        if (Date.parse(j.expiresAt) > dumpedAt + 200) notInMap++;
        continue;
      }
      t.is(e.ifindex, sniffIndex);
      worstSkew = Math.max(worstSkew, Math.abs(deadlineSkewMs(e, Date.parse(j.expiresAt))));
    }
    t.is(notInMap, 0, `${where}: listed jobs absent from the kernel map`);
    t.is(entries.filter((e) => !byHost.has(addrText(e))).length, 0, `${where}: map entries without a job`);
    t.true(worstSkew < 100, `${where}: kernel deadlines within ${worstSkew.toFixed(1)} ms of the jobs' end times`);
    const conn = await tryConnect(ld, 'v4', 500);
    t.is(conn.outcome, 'reset', `${where}: the sentinel host's new connection is reset after its handshake again (${JSON.stringify(conn)})`);

    // The model now follows what the daemon says for the requests in doubt.
    for (const x of doubts) {
      const j = byHost.get(x.host);
      if (j) known.set(x.host, { host: x.host, expiresAt: Date.parse(j.expiresAt) });
      else known.delete(x.host);
    }
    for (const [h, k] of known) if (k.expiresAt <= listedAt) known.delete(h);
    doubts = [];
  };

  for (let cycle = 0; cycle < CYCLES; cycle++) {
    if (cycle > 0) await verify(cycle);

    // Clients create (short jobs that will end while the daemon is down, and long ones), extend and cancel.
    const inflight = new Map<number, Doubt>();
    let reqSeq = 0;
    let stop = false;
    const worker = async (): Promise<void> => {
      const c = await Conn.open(ld.daemon.socket);
      while (!stop) {
        const roll = rng.int(10);
        const busy = new Set([...inflight.values()].map((x) => x.host));
        const live = [...known.values()].filter((k) => k.host !== sentinel && !busy.has(k.host));
        const id = reqSeq++;
        if (roll < 6 || live.length === 0) {
          const host = bulkHost(hostSeq++);
          const dur = rng.chance(0.5) ? rng.range(1, 4) : 3600;
          inflight.set(id, { kind: 'create', host, sentAt: Date.now(), durMs: dur * 1000 });
          const r = await c.request(createReq(lab, host, dur));
          if (stop && !r.ok) break;
          inflight.delete(id);
          if (!r.ok) throw new Error(`create refused: ${JSON.stringify(r.error)}`);
          known.set(r.result.job.host, { host: r.result.job.host, expiresAt: Date.parse(r.result.job.expiresAt) });
        } else if (roll < 8) {
          const k = rng.pick(live);
          const dur = 7200;
          inflight.set(id, { kind: 'extend', host: k.host, before: k.expiresAt, sentAt: Date.now(), durMs: dur * 1000 });
          const r = await c.request(createReq(lab, k.host, dur));
          if (stop && !r.ok) break;
          inflight.delete(id);
          if (!r.ok) throw new Error(`extend refused: ${JSON.stringify(r.error)}`);
          figures.extended++;
          known.set(k.host, { host: k.host, expiresAt: Date.parse(r.result.job.expiresAt) });
        } else {
          const k = rng.pick(live);
          inflight.set(id, { kind: 'cancel', host: k.host, before: k.expiresAt });
          const r = await c.request({ v: 1, op: 'cancel', engid: 'STRESS', sniffIf: lab.sensor.sniffIf, host: k.host });
          if (stop && !r.ok) break;
          inflight.delete(id);
          if (r.ok) figures.cancelledBeforeKill++;
          else if (r.error?.code !== 'E_NOT_FOUND') throw new Error(`cancel failed: ${JSON.stringify(r.error)}`);
          known.delete(k.host); // cancelled, or it had already expired
        }
      }
      c.close();
    };
    const workers = Array.from({ length: 4 }, () => worker());
    await sleep(rng.range(300, 1500));
    // Every other kill is aimed at a state write in progress (its temp file exists); the rest land wherever.
    if (cycle % 2 === 1) {
      const mine = `.tmp-${ld.daemon.pid}-`;
      const until = Date.now() + 3000;
      while (Date.now() < until && !tmpLitter(ld.daemon.stateDir).some((n) => n.includes(mine))) await new Promise((r) => setImmediate(r));
    }
    ld.daemon.child.kill('SIGKILL');
    stop = true;
    killedAt = Date.now();
    const exit = await ld.daemon.wait();
    t.is(exit.signal, 'SIGKILL');
    await Promise.all(workers);
    doubts = [...inflight.values()];
    figures.inDoubt += doubts.length;

    const litter = tmpLitter(ld.daemon.stateDir);
    if (litter.length > 0) figures.killsMidWrite++;
    // Whatever the moment, the file is whole: the old version or the new one.
    const saved = decodeState(readFileSync(join(ld.daemon.stateDir, 'jobs.json'), 'utf8'));
    t.true(saved.length > 0);

    // Down for a while: some short jobs end meanwhile and must stay ended.
    await sleep(rng.range(0, 1500));
    const t0 = Date.now();
    const d = await ld.restart();
    figures.maxRestartMs = Math.max(figures.maxRestartMs, Date.now() - t0);
    figures.restarts++;
    const restoredLine = await d.waitLog((l) => l.msg === 'saved jobs restored', 5000, 'restore line');
    figures.jobsRestored += Number(restoredLine.restored);
    figures.expiredWhileDown += Number(restoredLine.expired);
    t.is(restoredLine.faulty, 0, 'every restored job is enforced at once');
    t.is(restoredLine.dropped, 0);
    t.falsy(d.logs.find((l) => /state file (corrupt|unreadable)/.test(String(l.msg))), 'the state file loaded cleanly');
    t.deepEqual(tmpLitter(d.stateDir).filter((n) => !n.includes(`.tmp-${d.pid}-`)), [], 'temp files of interrupted writes are cleared on start');
  }
  await verify(CYCLES);

  t.true(figures.killsMidWrite >= 1, 'at least one kill interrupted a state write');
  t.true(figures.expiredWhileDown > 0, 'some jobs ended while the daemon was down (and were checked not to come back)');
  t.log(`kill -9 cycles: ${JSON.stringify(figures)}`);
  t.log(`FIGURE restarts survived: ${figures.restarts} (kills inside a state write: ${figures.killsMidWrite}; jobs restored: ${figures.jobsRestored}; ended while down, not revived: ${figures.expiredWhileDown}; slowest restart ${figures.maxRestartMs} ms)`);
});

ptest.serial('state directory on a tmpfs that fills up: jobs are accepted and enforced with a warning, and none is lost once space is back', async (t) => {
  const base = await labDaemon(t, {}, { waitReady: true });
  await base.daemon.stop('SIGKILL'); // only its lab and paths are wanted: restart on a small tmpfs below
  const stateDir = base.daemon.stateDir;
  spawnSync('rm', ['-rf', stateDir]);
  spawnSync('mkdir', ['-p', stateDir]);
  t.is(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tcpreset-stress', stateDir]).status, 0);
  t.teardown(() => void spawnSync('umount', ['-l', stateDir]));
  const ld: LabDaemon = base;
  const d = await ld.restart();
  const { lab } = ld;

  const accepted: { host: string; expiresAt: string; warned: boolean }[] = [];
  const create = async (host: string): Promise<void> => {
    const r = await d.request(createReq(lab, host, 600));
    t.true(r.ok, JSON.stringify(r.error));
    // Other warnings may come too (e.g. the bulk hosts are off-link of reset0: "no route ..."); only the save warning counts here.
    const saveWarnings = ((r.result.warnings ?? []) as string[]).filter((w) => /could not be saved/.test(w));
    accepted.push({ host: r.result.job.host, expiresAt: r.result.job.expiresAt, warned: saveWarnings.length > 0 });
    for (const w of saveWarnings) t.regex(w, /could not be saved .*will not survive a daemon restart/);
  };
  for (let i = 0; i < 20; i++) await create(bulkHost(i));
  t.true(accepted.every((a) => !a.warned), 'no warning while there is space');

  // Fill the disk.
  spawnSync('dd', ['if=/dev/zero', `of=${join(stateDir, 'filler')}`, 'bs=4k', 'count=1000'], { stdio: 'ignore' });
  const full = accepted.length;
  for (let i = 20; i < 60; i++) await create(bulkHost(i));
  const warned = accepted.slice(full).filter((a) => a.warned).length;
  t.true(warned > 0, 'jobs accepted on a full disk carry a warning');
  // Log lines are written at the end of the daemon's turn, after the reply: wait for them, do not peek.
  await d.waitLog((l) => l.level === 50 && l.msg === 'cannot save jobs: they will not survive a restart', 5000, 'the save error');
  // Accepted means enforced: the real client host is refused while the disk is full.
  await create(lab.hosts.client.v4);
  t.is((await tryConnect(ld, 'v4', 500)).outcome, 'reset', 'a job accepted on a full disk is enforced');
  const list = (await ok(d, { v: 1, op: 'list' })).jobs as ListedJob[];
  t.is(list.length, accepted.length, 'nothing accepted was dropped');
  t.deepEqual(tmpLitter(stateDir), [], 'failed writes leave no temp files');
  const onDisk = decodeState(readFileSync(join(stateDir, 'jobs.json'), 'utf8'));
  t.true(onDisk.length >= 20 && onDisk.length < accepted.length, `the file holds the last state that fit (${onDisk.length} jobs)`);

  // Space comes back: the next change saves everything, so a crash loses nothing.
  spawnSync('rm', ['-f', join(stateDir, 'filler')]);
  await create(bulkHost(1000));
  t.false(accepted[accepted.length - 1]!.warned);
  await d.waitLog((l) => l.msg === 'state saved again', 5000, 'state saved again');
  await d.stop('SIGKILL');
  const d2 = await ld.restart();
  const back = (await ok(d2, { v: 1, op: 'list' })).jobs as ListedJob[];
  t.deepEqual(back.map((j) => [j.host, j.expiresAt]).sort(), accepted.map((a) => [a.host, a.expiresAt]).sort(), 'every accepted job survives the crash');
  t.is((await tryConnect(ld, 'v4', 500)).outcome, 'reset', 'and is enforced again');
  t.log(`FIGURE full disk: ${accepted.length} jobs accepted, ${warned} of them with a warning while the disk was full, ${back.length} back after kill -9`);
});
