/**
 * The job manager (src/daemon/jobs.ts) without I/O: a stepped clock and an
 * in-memory target table standing in for the Enforcer's bookkeeping (the
 * real Enforcer is exercised end to end through the daemon), the protected
 * list (src/daemon/protect.ts) as it refuses jobs, and the once-per-turn
 * host facts (src/daemon/turn.ts).
 */
import test from 'ava';
import { ManualClock } from '../src/daemon/clock.js';
import { JobManager } from '../src/daemon/jobs.js';
import { ProtectList, parseProtected } from '../src/daemon/protect.js';
import { passedRecently, recent } from '../src/daemon/turn.js';
import { TcpresetError } from '../src/core/errors.js';
import { parseHost } from '../src/core/addr.js';
import { memLog, TargetTable, okChecks, setup, base } from './helpers/job-fixtures.js';

test('create makes one target; re-create with the same identity extends to the later end', (t) => {
  const { clock, table, jobs } = setup();
  const a = jobs.create(base);
  t.is(a.action, 'created');
  t.regex(a.job.id, /^[0-9a-f]{12}$/);
  t.is(table.targets.size, 1);
  t.is(Date.parse(a.job.expiresAt), clock.now() + 60_000);
  t.is(a.job.port, null);
  t.is(a.job.remainingMs, 60_000);

  clock.advance(10_000);
  const b = jobs.create({ ...base, duration: 120 });
  t.is(b.action, 'extended');
  t.is(b.job.id, a.job.id);
  t.is(Date.parse(b.job.expiresAt), clock.now() + 120_000);
  t.is(table.targets.size, 1, 'still one target');
  t.is([...table.targets.values()][0].expiresAt, clock.now() + 120_000, 'target extended too');

  // A shorter re-create keeps the later end time.
  const c = jobs.create({ ...base, duration: 5 });
  t.is(c.action, 'kept', 'said as it is: not extended');
  t.is(c.job.expiresAt, b.job.expiresAt);
  t.is(c.switched, undefined);
});

test('identity is (engid, sniffIf, host canonical, port): spellings of one host are one job', (t) => {
  const { jobs } = setup({ maxJobs: 10 });
  const a = jobs.create({ ...base, host: parseHost('2001:db8::7') });
  t.is(jobs.create({ ...base, host: parseHost('2001:DB8:0:0::7') }).job.id, a.job.id);
  const v4 = jobs.create(base);
  t.is(jobs.create({ ...base, host: parseHost('::ffff:198.51.100.7') }).job.id, v4.job.id, 'IPv4-mapped is the IPv4 host');
  t.is(jobs.create({ ...base, host: parseHost('::ffff:198.51.100.7') }).job.host, '198.51.100.7');
  t.not(jobs.create({ ...base, port: 443 }).job.id, v4.job.id, 'a port makes another job');
  t.not(jobs.create({ ...base, engid: 'ENG2' }).job.id, v4.job.id, 'another engine makes another job');
  t.not(jobs.create({ ...base, sniffIf: 'sniff1' }).job.id, v4.job.id, 'another sniff interface makes another job');
  t.is(jobs.create({ ...base, port: 0 }).job.id, v4.job.id, 'port 0 means the whole host');
  t.is(jobs.size, 5);
});

test('a re-create naming another reset interface swaps the target without a gap and keeps counters', (t) => {
  const { clock, table, jobs } = setup();
  const a = jobs.create(base);
  const firstTarget = [...table.targets.keys()][0];
  table.hit(firstTarget, clock.now(), 3, 6);
  const b = jobs.create({ ...base, resetIf: 'reset1', duration: 120 });
  t.is(b.action, 'extended');
  t.deepEqual(b.switched, { resetIf: base.resetIf, mode: 'l3' }, 'the switch is reported with what it was');
  t.is(b.job.id, a.job.id);
  t.is(b.job.resetIf, 'reset1');
  t.is(table.targets.size, 1);
  t.false(table.targets.has(firstTarget), 'old target removed');
  t.is(b.job.counters.matched, 3, 'counters carried over');
  t.is(b.job.counters.rstsSent, 6);
});

test('expiry removes the job and its target exactly at the end time', (t) => {
  const { clock, table, jobs, log } = setup();
  jobs.create({ ...base, duration: 10 });
  jobs.create({ ...base, host: parseHost('198.51.100.8'), duration: 20 });
  clock.advance(9_999);
  t.is(jobs.size, 2);
  t.is(table.targets.size, 2);
  clock.advance(1);
  t.is(jobs.size, 1, 'gone at exactly 10 s');
  t.is(table.targets.size, 1);
  t.true(log.lines.some((l) => l.msg === 'job expired'));
  clock.advance(10_000);
  t.is(jobs.size, 0);
  t.is(table.targets.size, 0);
});

test('an extension moves the expiry', (t) => {
  const { clock, jobs } = setup();
  jobs.create({ ...base, duration: 10 });
  clock.advance(5_000);
  jobs.create({ ...base, duration: 10 });
  clock.advance(9_999);
  t.is(jobs.size, 1, 'not expired at the old end time');
  clock.advance(1);
  t.is(jobs.size, 0);
});

test('cancel by id and by identity stops the target at once; unknown ones are E_NOT_FOUND', (t) => {
  const { table, jobs } = setup();
  const a = jobs.create(base);
  const b = jobs.create({ ...base, port: 22 });
  t.is(jobs.cancelById(a.job.id).id, a.job.id);
  t.is(table.targets.size, 1);
  t.is(jobs.cancelByIdentity({ engid: 'ENG1', sniffIf: 'sniff0', host: parseHost('198.51.100.7'), port: 22 }).id, b.job.id);
  t.is(table.targets.size, 0);
  t.is(jobs.size, 0);
  const e1 = t.throws(() => jobs.cancelById(a.job.id), { instanceOf: TcpresetError });
  t.is(e1?.code, 'E_NOT_FOUND');
  const e2 = t.throws(() => jobs.cancelByIdentity({ engid: 'ENG1', sniffIf: 'sniff0', host: parseHost('198.51.100.7'), port: null }), { instanceOf: TcpresetError });
  t.is(e2?.code, 'E_NOT_FOUND');
  t.regex(e2!.message, /ENG1.*sniff0.*198\.51\.100\.7/);
});

test('limits: max jobs (E_LIMIT, extension still allowed) and max duration (E_INVALID)', (t) => {
  const { jobs, table } = setup({ maxJobs: 2, maxDurationSec: 100 });
  jobs.create(base);
  jobs.create({ ...base, port: 1 });
  const e = t.throws(() => jobs.create({ ...base, port: 2 }), { instanceOf: TcpresetError });
  t.is(e?.code, 'E_LIMIT');
  t.is(table.targets.size, 2, 'nothing added for a refused job');
  t.is(jobs.create({ ...base, duration: 100 }).action, 'extended', 'extending at the limit is fine');
  const d = t.throws(() => jobs.create({ ...base, duration: 101 }), { instanceOf: TcpresetError });
  t.is(d?.code, 'E_INVALID');
  t.regex(d!.message, /maximum of 100/);
  t.is(t.throws(() => jobs.create({ ...base, duration: 0 }))?.message.includes('duration'), true);
});

test('protected hosts are refused with E_PROTECTED naming address and entry; checks run before anything is added', (t) => {
  const entries = parseProtected(['10.0.0.0/8', '2001:db8:1::/48', '192.0.2.5']);
  const protect = new ProtectList(entries, () => [{ ifname: 'eth0', address: '203.0.113.9' }]);
  const { jobs, table } = setup({ checks: { protectedBy: (h) => protect.check(h), interfaces: () => {} } });
  for (const [host, entry] of [
    ['10.1.2.3', '10.0.0.0/8'],
    ['::ffff:10.1.2.3', '10.0.0.0/8'],
    ['::ffff:a01:203', '10.0.0.0/8'],
    ['2001:db8:1:ffff::1', '2001:db8:1::/48'],
    ['192.0.2.5', '192.0.2.5'],
    ['203.0.113.9', '203.0.113.9 on eth0'],
  ] as const) {
    const e = t.throws(() => jobs.create({ ...base, host: parseHost(host) }), { instanceOf: TcpresetError }, host);
    t.is(e?.code, 'E_PROTECTED', host);
    t.true(e!.message.includes(entry), `${host}: ${e!.message}`);
    t.is((e!.details as { entry: string }).entry.startsWith(entry.split(' ')[0]), true);
  }
  t.is(table.adds, 0);
  t.is(jobs.create({ ...base, host: parseHost('11.0.0.1') }).action, 'created', 'outside the networks is fine');
});

test('interface check failures (E_IFACE) refuse the job and add nothing', (t) => {
  let asked: unknown;
  const { jobs, table } = setup({
    checks: {
      protectedBy: () => null,
      interfaces: (q) => {
        asked = q;
        throw new TcpresetError('E_IFACE', `reset interface "${q.resetIf}" has no IPv${q.family} address`);
      },
    },
  });
  const e = t.throws(() => jobs.create({ ...base, host: parseHost('2001:db8::9'), mode: 'l3' }), { instanceOf: TcpresetError });
  t.is(e?.code, 'E_IFACE');
  t.deepEqual(asked, { sniffIf: 'sniff0', resetIf: 'reset0', host: parseHost('2001:db8::9'), family: 6, mode: 'l3' });
  t.is(table.adds, 0);
  t.is(jobs.size, 0);
});

test('a failing Enforcer.add leaves no job', (t) => {
  const { jobs, table } = setup();
  table.failAdd = new TcpresetError('E_PERM', 'bpf: Operation not permitted');
  t.is(t.throws(() => jobs.create(base))?.message, 'bpf: Operation not permitted');
  t.is(jobs.size, 0);
  table.failAdd = null;
  t.is(jobs.create(base).action, 'created');
});

test('list reports remaining time and counters (ISO hit times)', (t) => {
  const { clock, table, jobs } = setup();
  const a = jobs.create(base);
  clock.advance(1500);
  table.hit([...table.targets.keys()][0], clock.now(), 4, 8);
  const [j] = jobs.list();
  t.is(j.id, a.job.id);
  t.is(j.remainingMs, 58_500);
  t.deepEqual(j.counters, { matched: 4, rstsSent: 8, flows: 1, firstHitAt: new Date(clock.now()).toISOString(), lastHitAt: new Date(clock.now()).toISOString() });
});

test('restore keeps original end times, drops expired and newly protected jobs, retries faulty ones', (t) => {
  const first = setup();
  const keep = first.jobs.create({ ...base, duration: 100 });
  first.jobs.create({ ...base, host: parseHost('198.51.100.8'), duration: 10 });
  first.jobs.create({ ...base, host: parseHost('10.9.9.9'), duration: 100 });
  first.table.hit([...first.table.targets.keys()][0], first.clock.now(), 2, 4);
  const saved = first.jobs.snapshot();
  t.is(saved[0].counters.matched, 2);

  // "Restart" 30 s later with a config that now protects 10.0.0.0/8.
  const clock = new ManualClock(first.clock.now() + 30_000);
  const table = new TargetTable();
  const log = memLog();
  const protect = new ProtectList(parseProtected(['10.0.0.0/8']), () => []);
  const jobs = new JobManager({ clock, backend: () => table, checks: { protectedBy: (h) => protect.check(h), interfaces: () => {} }, log, maxJobs: 10, maxDurationSec: 86400 });
  const r = jobs.restore(saved);
  t.deepEqual(r, { restored: 1, expired: 1, dropped: 1, faulty: 0 });
  const [j] = jobs.list();
  t.is(j.id, keep.job.id);
  t.is(j.expiresAt, keep.job.expiresAt, 'original end time');
  t.is(j.remainingMs, 70_000);
  t.is([...table.targets.values()][0].expiresAt, Date.parse(keep.job.expiresAt), 're-enforced until the original end');
  t.is(j.counters.matched, 2, 'counters survive');
  clock.advance(70_000);
  t.is(jobs.size, 0, 'expires at the original time');

  // A target that cannot be added now: kept with a fault, retried until it works.
  const clock2 = new ManualClock(first.clock.now());
  const table2 = new TargetTable();
  table2.failAdd = new TcpresetError('E_NATIVE', 'attach XDP on sniff0 failed: No such device');
  const jobs2 = new JobManager({ clock: clock2, backend: () => table2, checks: okChecks, log, maxJobs: 10, maxDurationSec: 86400, retryMs: 1000 });
  t.deepEqual(jobs2.restore([saved[0]]), { restored: 0, expired: 0, dropped: 0, faulty: 1 });
  t.regex(jobs2.list()[0].fault ?? '', /No such device/);
  clock2.advance(1000);
  t.is(table2.targets.size, 0);
  table2.failAdd = null;
  clock2.advance(1000);
  t.is(table2.targets.size, 1, 'enforced once the interface is back');
  t.is(jobs2.list()[0].fault, undefined);
});

test('expiry logs the final counters: the job manager, the one owner of expiry, reads them before it drops the target', (t) => {
  // A clock whose timers run only when told.
  let now = Date.UTC(2025, 0, 1);
  const timers = new Set<{ at: number; fn: () => void }>();
  const clock = {
    now: () => now,
    setTimer: (fn: () => void, ms: number) => {
      const h = { at: now + ms, fn };
      timers.add(h);
      return h;
    },
    clearTimer: (h: object) => void timers.delete(h as { at: number; fn: () => void }),
  };
  const runDue = (): void => {
    for (const h of [...timers]) if (h.at <= now && timers.delete(h)) h.fn();
  };
  const { table, jobs, log } = setup({ clock });
  const a = jobs.create({ ...base, duration: 10 });
  const tid = [...table.targets.keys()][0]!;
  now += 2000;
  table.hit(tid, now, 5, 10);
  const listed = jobs.get(a.job.id)!.counters;
  t.is(listed.matched, 5);
  now += 8000;
  runDue();
  t.is(jobs.size, 0);
  t.is(table.targets.size, 0);
  const lines = log.lines.filter((l) => l.msg === 'job expired');
  t.is(lines.length, 1);
  t.deepEqual(lines[0]?.obj.counters, listed, 'the expired line carries what list showed');
});

test('random creates, extensions, cancels and time steps: the jobs alive are always exactly those whose end is ahead', (t) => {
  const { clock, table, jobs } = setup({ maxJobs: 10_000 });
  let seed = 7;
  const rnd = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  const model = new Map<string, number>(); // host -> end
  for (let step = 0; step < 3000; step++) {
    const host = `198.51.100.${rnd(200) + 1}`;
    const op = rnd(10);
    if (op < 6) {
      const r = jobs.create({ ...base, host: parseHost(host), duration: rnd(30) + 1 });
      const end = Math.max(model.get(host) ?? 0, Date.parse(r.job.expiresAt));
      model.set(host, end);
      t.is(Date.parse(r.job.expiresAt), end);
    } else if (op < 8 && model.has(host)) {
      jobs.cancelByIdentity({ engid: base.engid, sniffIf: base.sniffIf, host: parseHost(host), port: null });
      model.delete(host);
    } else {
      clock.advance(rnd(3000));
      for (const [h, end] of model) if (end <= clock.now()) model.delete(h);
    }
    const alive = jobs.list().map((j) => [j.host, Date.parse(j.expiresAt)]).sort();
    if (JSON.stringify(alive) !== JSON.stringify([...model].sort())) {
      t.fail(`step ${step}: jobs ${JSON.stringify(alive)} != model ${JSON.stringify([...model].sort())}`);
      return;
    }
    t.is(table.targets.size, model.size);
  }
});

test('100,000 jobs: half expiring at the same moment and the rest cancelled take linear time, not a scan of every job per job', (t) => {
  const { clock, table, jobs } = setup({ maxJobs: 100_000, log: { info() {}, warn() {}, error() {}, debug() {} } });
  const host = (i: number): string => `2001:db8::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`;
  for (let i = 0; i < 50_000; i++) jobs.create({ ...base, host: parseHost(host(i)), duration: 60 });
  for (let i = 50_000; i < 100_000; i++) jobs.create({ ...base, host: parseHost(host(i)), duration: 3600 });
  t.is(jobs.size, 100_000);
  const t0 = performance.now();
  clock.advance(60_000);
  const expireMs = performance.now() - t0;
  t.is(jobs.size, 50_000);
  t.is(table.targets.size, 50_000);
  const t1 = performance.now();
  for (let i = 99_999; i >= 50_000; i -= 2) jobs.cancelByIdentity({ engid: base.engid, sniffIf: base.sniffIf, host: parseHost(host(i)), port: null });
  for (let i = 50_000; i < 100_000; i += 2) jobs.cancelByIdentity({ engid: base.engid, sniffIf: base.sniffIf, host: parseHost(host(i)), port: null });
  const cancelMs = performance.now() - t1;
  t.is(jobs.size, 0);
  t.is(table.targets.size, 0);
  // A scan per job was ~1.25e9 steps for the expiry alone (tens of seconds, past systemd's 30 s watchdog).
  t.true(expireMs < 3000, `50,000 expiries in ${expireMs.toFixed(0)} ms`);
  t.true(cancelMs < 3000, `50,000 cancels in ${cancelMs.toFixed(0)} ms`);
  t.log(`50,000 simultaneous expiries ${expireMs.toFixed(0)} ms, 50,000 cancels ${cancelMs.toFixed(0)} ms`);
  clock.advance(3600_000);
  t.is(clock.pending, 0, 'no timer left behind');
});

test('after the table is given back (the last of more than 1,024 jobs gone), new jobs are created in a fresh one, with their own hosts', (t) => {
  const { clock, table, jobs } = setup({ maxJobs: 5_000, log: { info() {}, warn() {}, error() {}, debug() {} } });
  const host = (i: number): string => `198.51.${100 + (i >> 8)}.${i & 0xff}`;
  for (let i = 0; i < 2_000; i++) jobs.create({ ...base, host: parseHost(host(i)), duration: 60 });
  clock.advance(60_000);
  t.is(jobs.size, 0);
  // Before: the host-bytes column was kept at its old size when the table was emptied, and the
  // next growth copied it into a smaller one: "offset is out of bounds" on every later create
  // (the full-scale load stress: 50,000 refused with E_INTERNAL).
  for (let i = 0; i < 1_500; i++) jobs.create({ ...base, host: parseHost(host(i + 7)), duration: 60 });
  t.is(jobs.size, 1_500);
  t.is(table.targets.size, 1_500);
  t.deepEqual(jobs.list().map((j) => j.host).sort(), Array.from({ length: 1_500 }, (_, i) => host(i + 7)).sort());
});

test('every change notifies (persistence hook)', (t) => {
  const s = setup();
  s.jobs.create(base);
  s.jobs.create(base);
  const id = s.jobs.list()[0].id;
  s.jobs.cancelById(id);
  t.is(s.changes(), 3);
  s.jobs.create({ ...base, duration: 1 });
  s.clock.advance(1000);
  t.is(s.changes(), 5, 'expiry too');
});

test('host facts (addresses, interface checks) are read at most every 100 ms, not per request; failed checks are never remembered', (t) => {
  let now = 1000;
  const clock = (): number => now;
  let reads = 0;
  const addrs = recent(() => ++reads, 100, clock);
  t.is(addrs(), 1);
  now += 99;
  t.is(addrs(), 1, 'younger than 100 ms: not read again');
  now += 1;
  t.is(addrs(), 2, '100 ms old: read again');
  const checked = passedRecently(100, clock);
  let checks = 0;
  let down = false;
  const check = (): void => {
    checks++;
    if (down) throw new Error('interface is down');
  };
  checked('sniff/a', check);
  checked('sniff/a', check);
  t.is(checks, 1);
  down = true;
  t.throws(() => checked('sniff/b', check), { message: 'interface is down' });
  t.throws(() => checked('sniff/b', check), { message: 'interface is down' });
  t.is(checks, 3, 'a failure is checked again each time');
  checked('sniff/a', check);
  t.is(checks, 3, 'a pass holds for 100 ms');
  now += 100;
  t.throws(() => checked('sniff/a', check), { message: 'interface is down' }, 'then it is checked afresh');
  // The protected check parses the local addresses once per list its source hands out.
  let lists = 0;
  const list = [{ ifname: 'eth0', address: '203.0.113.9' }];
  const protect = new ProtectList([], () => (lists++, list));
  t.is(protect.check('203.0.113.9')?.entry, '203.0.113.9 on eth0');
  t.is(protect.check('203.0.113.10'), null);
  list.push({ ifname: 'eth1', address: '203.0.113.10' });
  t.is(protect.check('203.0.113.10'), null, 'the same list object (a cached read): its parse is reused');
  t.is(lists, 3, 'the source is still asked on every check');
  const fresh = new ProtectList([], () => [...list]);
  t.is(fresh.check('203.0.113.10')?.entry, '203.0.113.10 on eth1', 'a new list is parsed');
});

test('usage: jobs per (sniff, reset, mode, family) with their own faults, counted without a view of each job, agreeing with list', (t) => {
  const { jobs, table } = setup({ maxJobs: 100 });
  jobs.create({ ...base, host: parseHost('198.51.100.1') });
  jobs.create({ ...base, host: parseHost('198.51.100.2'), port: 443 });
  jobs.create({ ...base, host: parseHost('2001:db8::1') });
  jobs.create({ ...base, host: parseHost('198.51.100.3'), resetIf: 'reset1', mode: 'l2' });
  // Two jobs whose target cannot be added (restored while the data plane refuses): faulty.
  table.failAdd = new TcpresetError('E_NATIVE', 'attach XDP on sniff1 failed: No such device');
  const now = Date.now();
  const rec = (id: string, host: string) => ({
    id, engid: 'ENG2', sniffIf: 'sniff1', resetIf: 'reset0', host, port: null, mode: 'l3' as const, createdAt: now, expiresAt: now + 3_600_000,
    counters: { matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null },
  });
  t.is(jobs.restore([rec('aaaaaaaaaaaa', '198.51.100.9'), rec('bbbbbbbbbbbb', '198.51.100.10')]).faulty, 2);
  table.failAdd = null;
  const u = jobs.usage();
  t.is(u.jobs, 6);
  t.deepEqual(u.groups.map((g) => [g.sniffIf, g.resetIf, g.mode, g.family, g.jobs, g.faulty]), [
    ['sniff0', 'reset0', 'l3', 4, 2, 0],
    ['sniff0', 'reset0', 'l3', 6, 1, 0],
    ['sniff0', 'reset1', 'l2', 4, 1, 0],
    ['sniff1', 'reset0', 'l3', 4, 2, 2],
  ]);
  // The same numbers list gives, job by job.
  const listed = jobs.list();
  t.is(listed.length, u.jobs);
  t.is(listed.filter((j) => j.fault !== undefined).length, u.groups.reduce((n, g) => n + g.faulty, 0));
});
