/**
 * Jobs on disk: a snapshot + journal whose records replay to the current
 * set, group commit, compaction that replaces the file atomically (a
 * concurrent reader never sees half a file, no temp files left, even on a
 * full disk), torn and corrupt tails dropped with a warning, the old format
 * migrated, corrupt and unreadable
 * files kept aside without crashing, restarts that keep unexpired jobs with
 * their ORIGINAL end times and never revive expired ones, and the policy
 * for an unwritable state directory (the job is accepted with a warning).
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, ptest } from './helpers/privileged.js';
import { crc32 } from 'node:zlib';
import { StateStore, decodeState, decodeStateDetailed, encodeChange, encodeCounters, encodeLegacyState, encodeState } from '../src/daemon/state.js';
import { createLab } from '../testkit/lab/lab.js';
import { connectOnce, startServer } from '../testkit/lab/peer-control.js';
import type { JobChange, JobRecord } from '../src/daemon/jobs.js';
import { CLI_BIN, sensorNetns, startDaemon } from '../testkit/daemon.js';
import { sleep } from '../testkit/time.js';
import type { LogSink } from '../src/core/model.js';

function memLog(): LogSink & { lines: { level: string; msg?: string; obj: Record<string, unknown> }[] } {
  const lines: { level: string; msg?: string; obj: Record<string, unknown> }[] = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, msg, obj: obj as Record<string, unknown> });
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') };
}

function record(i: number, over: Partial<JobRecord> = {}): JobRecord {
  return {
    id: `job${String(i).padStart(9, '0')}`, engid: 'ENG', sniffIf: 'sniff0', resetIf: 'reset0', host: `198.51.100.${i % 250}`,
    port: i % 2 ? 443 : null, mode: 'l3', createdAt: Date.UTC(2025, 0, 1), expiresAt: Date.UTC(2025, 0, 1, 1) + i,
    counters: { matched: i, rstsSent: 2 * i, flows: 1, firstHitAt: Date.UTC(2025, 0, 1, 0, 1), lastHitAt: null },
    ...over,
  };
}

const tmp = (tag: string): string => mkdtempSync(join(tmpdir(), `tcpresetd-${tag}-`));
const litter = (dir: string): string[] => readdirSync(dir).filter((n) => n.includes('.tmp-'));

test('encode/decode round-trips every field (format 2 and the old format 1); bad headers and documents name the problem', (t) => {
  const recs = [record(1), record(2, { mode: 'l2', port: null })];
  t.deepEqual(decodeState(encodeState(recs)), recs);
  t.deepEqual(decodeState(encodeLegacyState(recs)), recs, 'format 1 is still read (migration)');
  t.throws(() => decodeState('{"v":1,"jobs":[{"id":"x"}]}'), { message: /jobs\[0\]\.port/ });
  t.throws(() => decodeState('{"v":9,"jobs":[]}'), { message: /unsupported version 9/ });
  t.throws(() => decodeState('{"v":1,"jobs":['), { message: /not JSON/ });
  t.throws(() => decodeState(encodeState(recs).replace('"v":2', '"v":3')), { message: /line 1 \(header\): checksum mismatch/ });
  t.throws(() => decodeState(''), { message: /empty file/ });
  // A record with a valid checksum but a bad field ends the replay there, like a torn one.
  const lines = encodeState([record(1)]).split('\n');
  const bad = lines[1]!.slice(9).replace('"l3"', '"l9"');
  const d = decodeStateDetailed([lines[0], `${(crc32(bad) >>> 0).toString(16).padStart(8, '0')} ${bad}`, ''].join('\n'));
  t.deepEqual(d.jobs, []);
  t.regex(d.dropped?.reason ?? '', /line 2\.put\.mode/);
});

/** A journal as the store writes it: a snapshot of `base` then one record per change. */
function journal(base: JobRecord[], changes: JobChange[]): string {
  return encodeState(base) + changes.map((c) => encodeChange(c as Exclude<JobChange, { op: 'all' }>)).join('');
}

test('a journal replays to the current set: put replaces, del removes', (t) => {
  const a = record(1);
  const b = record(2);
  const text = journal([a], [
    { op: 'put', rec: b },
    { op: 'put', rec: { ...a, expiresAt: a.expiresAt + 60_000 } },
    { op: 'del', id: b.id, why: 'cancelled' },
    { op: 'put', rec: record(3) },
  ]);
  const d = decodeStateDetailed(text);
  t.deepEqual(d.jobs, [{ ...a, expiresAt: a.expiresAt + 60_000 }, record(3)]);
  t.is(d.records, 5);
  t.is(d.snapshotJobs, 1);
  t.is(d.dropped, undefined);
});

test('a counters checkpoint (ctr) sets the counters of the live jobs it names, keeps their order, ignores ended ones; a bad one ends the replay unapplied', (t) => {
  const a = record(1);
  const b = record(2);
  const moved = { matched: 9, rstsSent: 18, flows: 1, firstHitAt: Date.UTC(2025, 0, 1, 0, 2), lastHitAt: Date.UTC(2025, 0, 1, 0, 3) };
  const text = journal([a, b], [{ op: 'del', id: b.id, why: 'cancelled' }]) +
    encodeCounters([{ id: a.id, counters: moved }, { id: b.id, counters: moved }]) + encodeChange({ op: 'put', rec: record(3) });
  const d = decodeStateDetailed(text);
  t.deepEqual(d.jobs, [{ ...a, counters: moved }, record(3)], 'a keeps its place; b (ended) is not revived');
  t.is(d.records, 5, 'the checkpoint is one record for both jobs');
  t.is(d.dropped, undefined);
  // Positive control: without the checkpoint, a's counters are those of its last put.
  t.deepEqual(decodeState(journal([a, b], [])), [a, b]);
  // A checkpoint with a bad entry is not half applied.
  const bad = encodeCounters([{ id: a.id, counters: moved }, { id: b.id, counters: { ...moved, flows: -1 } }]);
  const d2 = decodeStateDetailed(encodeState([a, b]) + bad); // checksum right, a field wrong
  t.deepEqual(d2.jobs, [a, b]);
  t.regex(d2.dropped?.reason ?? '', /line 4\.ctr\[1\]\.flows: expected a count/);
});

test('a torn last record, cut at every byte, is dropped and the jobs are those before it; a corrupt record in the middle ends the replay there', (t) => {
  const before = journal([record(1)], [{ op: 'put', rec: record(2) }]);
  const last = encodeChange({ op: 'del', id: record(1).id, why: 'cancelled' });
  for (let cut = 0; cut < last.length - 1; cut++) {
    const d = decodeStateDetailed(before + last.slice(0, cut));
    t.deepEqual(d.jobs.map((j) => j.id), [record(1).id, record(2).id], `cut at ${cut}`);
    t.is(d.dropped?.records ?? 0, cut === 0 ? 0 : 1, `cut at ${cut}`);
  }
  // Positive control: the whole record applies (its newline only missing, too).
  t.deepEqual(decodeState(before + last).map((j) => j.id), [record(2).id]);
  t.deepEqual(decodeState(before + last.slice(0, -1)).map((j) => j.id), [record(2).id]);
  // One flipped byte in the middle: the replay stops before it, the records after are reported dropped.
  const text = journal([record(1)], [{ op: 'put', rec: record(2) }, { op: 'put', rec: record(3) }, { op: 'put', rec: record(4) }]);
  const lines = text.split('\n');
  lines[3] = lines[3]!.replace('"ENG"', '"ENX"');
  const d = decodeStateDetailed(lines.join('\n'));
  t.deepEqual(d.jobs.map((j) => j.id), [record(1).id, record(2).id]);
  t.deepEqual(d.dropped && { line: d.dropped.line, records: d.dropped.records }, { line: 4, records: 2 });
  t.regex(d.dropped!.reason, /checksum mismatch/);
});

test('changes recorded in one tick, or while a write is in flight, share one write and one fdatasync (group commit)', async (t) => {
  const dir = tmp('group');
  const live = new Map<string, JobRecord>();
  const store = new StateStore(dir, memLog(), () => [...live.values()]);
  t.true((await store.save()).ok, 'the first save writes a snapshot');
  const put = (i: number): void => {
    const rec = record(i);
    live.set(rec.id, rec);
    store.record({ op: 'put', rec });
  };
  for (let i = 0; i < 50; i++) put(i);
  t.true((await store.save()).ok);
  t.is(store.stats().appends, 1, 'one write for 50 changes of one tick');
  t.is(store.stats().journalRecords, 50);
  // 200 changes, one per tick, while writes are in flight: fewer writes than changes, every change saved.
  const outcomes: Promise<unknown>[] = [];
  for (let i = 50; i < 250; i++) {
    put(i);
    outcomes.push(store.save());
    await new Promise((r) => setImmediate(r));
  }
  t.true((await Promise.all(outcomes)).every((o) => (o as { ok: boolean }).ok));
  const writes = store.stats().appends - 1;
  t.true(writes < 200, `${writes} writes for 200 changes`);
  t.deepEqual(decodeState(readFileSync(store.path, 'utf8')), [...live.values()]);
  t.log(`200 changes one per tick: ${writes} writes`);
});

test('the journal is compacted past its bound: the file stays proportional to the jobs, a concurrent reader always decodes the current set or a moment before it', async (t) => {
  const dir = tmp('compact');
  const live = new Map<string, JobRecord>();
  const store = new StateStore(dir, memLog(), () => [...live.values()], { compactFloor: 64 });
  for (let i = 0; i < 100; i++) live.set(record(i).id, record(i));
  t.true((await store.save()).ok);
  const snapshotBytes = statSync(store.path).size;
  const reader = spawn(process.execPath, ['--input-type=module', '-e', `
    import { existsSync, readFileSync } from 'node:fs';
    const { decodeState } = await import(process.argv[2]);
    let reads = 0, bad = 0; const end = Date.now() + 30000;
    while (Date.now() < end && !existsSync(process.argv[1] + '.stop')) {
      try { const n = decodeState(readFileSync(process.argv[1], 'utf8')).length; if (n !== 100) bad++; reads++; } catch (e) { bad++; }
      if (reads + bad === 1) console.log('reading');
    }
    console.log(JSON.stringify({ reads, bad }));`, store.path, new URL('../src/daemon/state.js', import.meta.url).href], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  reader.stdout!.on('data', (d) => (out += d));
  // Changes start once the reader reads (its start-up can take longer than the changes on a loaded machine).
  while (!out.includes('reading')) await new Promise((r) => setTimeout(r, 10));
  const inodes = new Set<number>();
  let changes = 0;
  let maxSize = 0;
  while (changes < 300) {
    // Extend a job: the set keeps 100 jobs, the journal grows by one record.
    const rec = { ...record(changes % 100), expiresAt: record(0).expiresAt + changes };
    live.set(rec.id, rec);
    store.record({ op: 'put', rec });
    t.true((await store.save()).ok);
    changes++;
    inodes.add(statSync(store.path).ino);
    maxSize = Math.max(maxSize, statSync(store.path).size);
  }
  writeFileSync(`${store.path}.stop`, '');
  await new Promise((r) => reader.once('close', r));
  rmSync(`${store.path}.stop`);
  const { reads, bad } = JSON.parse(out.split('\n').filter(Boolean).pop()!) as { reads: number; bad: number };
  t.true(reads > 20, `${reads} reads`);
  t.is(bad, 0, 'every read decoded 100 jobs');
  t.true(store.stats().compactions >= 4, `${store.stats().compactions} compactions for 300 changes to 100 jobs`);
  t.true(inodes.size > 1, 'a compaction is a new file renamed into place');
  // Bound: the snapshot (100 jobs) plus at most max(64, 100 / 4) records of about a snapshot line each.
  t.true(maxSize < snapshotBytes * 1.7, `largest file ${maxSize} B, snapshot ${snapshotBytes} B`);
  t.deepEqual(decodeState(readFileSync(store.path, 'utf8')), [...live.values()]);
  t.deepEqual(litter(dir), []);
  t.is(statSync(store.path).mode & 0o777, 0o600);
});

test('an unwritable state directory: save reports the failure (logged once per streak) and recovers with a full rewrite', async (t) => {
  const dir = tmp('gone');
  const log = memLog();
  let recs = [record(1)];
  const store = new StateStore(join(dir, 'state'), log, () => recs);
  store.ensureDir();
  t.true((await store.save()).ok);
  rmSync(join(dir, 'state'), { recursive: true });
  recs = [record(1), record(2)];
  store.record({ op: 'put', rec: record(2) });
  const r1 = await store.save();
  t.false(r1.ok, 'an append to a removed file is a failure, not a write to nothing');
  t.regex(r1.ok ? '' : r1.error.message, /ENOENT/);
  t.false((await store.save()).ok, 'retried on the next save');
  t.is(log.lines.filter((l) => l.level === 'error').length, 1, 'one error line per failure streak');
  t.truthy(store.stats().fault);
  mkdirSync(join(dir, 'state'));
  t.true((await store.save()).ok);
  t.truthy(log.lines.find((l) => l.msg === 'state saved again'));
  t.is(store.stats().fault, undefined);
  t.deepEqual(decodeState(readFileSync(store.path, 'utf8')), recs, 'the rewrite holds every change, the failed one included');
});

ptest('disk full (ENOSPC): the file still decodes to the last state that fit, no temp file is left, and everything is saved once space is back', async (t) => {
  const dir = tmp('full');
  t.is(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tcpreset-test', dir]).status, 0);
  t.teardown(() => void spawnSync('umount', [dir]));
  const live = new Map<string, JobRecord>();
  const store = new StateStore(dir, memLog(), () => [...live.values()]);
  t.true((await store.save()).ok);
  spawnSync('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=4k', 'count=100'], { stdio: 'ignore' });
  let failed = 0;
  let okBeforeFailure = 0;
  // 150 jobs fit in the 64 KiB once the filler is gone.
  for (let i = 0; i < 150; i++) {
    live.set(record(i).id, record(i));
    store.record({ op: 'put', rec: record(i) });
    const r = await store.save();
    if (r.ok && failed === 0) okBeforeFailure++;
    if (!r.ok) {
      failed++;
      t.regex(r.error.message, /ENOSPC|no space/i);
    }
  }
  t.true(failed > 0);
  const onDisk = decodeState(readFileSync(store.path, 'utf8'));
  t.true(onDisk.length >= okBeforeFailure && onDisk.length < 150, `${onDisk.length} jobs on disk, ${okBeforeFailure} acknowledged before the disk filled`);
  t.deepEqual(litter(dir), []);
  rmSync(join(dir, 'filler'));
  t.true((await store.save()).ok);
  t.is(decodeState(readFileSync(store.path, 'utf8')).length, 150);
});

test('temp files of saves a crash interrupted are removed on load; the state file is untouched', async (t) => {
  const dir = tmp('crashlitter');
  const store = new StateStore(dir, memLog(), () => [record(1)]);
  t.true((await store.save()).ok);
  const whole = readFileSync(store.path, 'utf8');
  // What a kill -9 inside writeOnce leaves: a partial temp file per crash, never renamed.
  writeFileSync(join(dir, '.jobs.json.tmp-4242-17'), whole.slice(0, 40));
  writeFileSync(join(dir, '.jobs.json.tmp-4343-0'), '');
  writeFileSync(join(dir, 'unrelated'), 'kept');
  const log = memLog();
  const loaded = new StateStore(dir, log, () => []).load();
  t.deepEqual(loaded.jobs, [record(1)]);
  t.deepEqual(litter(dir), []);
  t.deepEqual(readdirSync(dir).sort(), ['jobs.json', 'unrelated']);
  t.is(readFileSync(store.path, 'utf8'), whole);
  t.deepEqual(log.lines.find((l) => l.msg === 'removed temp files of interrupted saves')?.obj.removed, ['.jobs.json.tmp-4242-17', '.jobs.json.tmp-4343-0']);
});

test('a corrupt state file is kept aside, logged as an error, and the daemon starts empty', async (t) => {
  const dir = tmp('corrupt');
  mkdirSync(join(dir, 'state'));
  const garbage = '{"v":1,"jobs":[{"id":"abc", truncated';
  writeFileSync(join(dir, 'state', 'jobs.json'), garbage);
  const d = await startDaemon({ dir });
  t.teardown(() => d.stop());
  t.deepEqual((await d.request({ v: 1, op: 'list' })).result, { jobs: [] });
  const err = d.logs.find((l) => l.level === 50 && /state file corrupt/.test(String(l.msg)));
  t.truthy(err);
  const copies = readdirSync(join(dir, 'state')).filter((n) => n.startsWith('jobs.json.corrupt-'));
  t.is(copies.length, 1);
  t.is(err!.keptAs, join(dir, 'state', copies[0]));
  t.is(readFileSync(join(dir, 'state', copies[0]), 'utf8'), garbage, 'the bad bytes are kept for a post-mortem');
  t.deepEqual(decodeState(readFileSync(join(dir, 'state', 'jobs.json'), 'utf8')), [], 'a fresh valid file replaces it');
});

test('an unreadable state file (a directory, a wrong version) does not stop the daemon', async (t) => {
  for (const make of [
    (p: string) => mkdirSync(p),
    (p: string) => writeFileSync(p, JSON.stringify({ v: 99, jobs: [] })),
  ]) {
    const dir = tmp('unreadable');
    mkdirSync(join(dir, 'state'));
    make(join(dir, 'state', 'jobs.json'));
    const d = await startDaemon({ dir });
    t.true((await d.request({ v: 1, op: 'version' })).ok);
    t.truthy(d.logs.find((l) => l.level === 50 && /state file (unreadable|corrupt)/.test(String(l.msg))));
    t.is(readdirSync(join(dir, 'state')).filter((n) => n.startsWith('jobs.json.corrupt-')).length, 1);
    t.deepEqual(await d.stop(), { code: 0, signal: null });
  }
});

test('restart from a saved file (a journal, or the old format 1 it migrates): the unexpired job keeps its original end time, the expired one is not revived', async (t) => {
  for (const [format, encode] of [['journal', encodeState], ['format 1', encodeLegacyState]] as const) {
    const dir = tmp('restore');
    mkdirSync(join(dir, 'state'));
    const now = Date.now();
    const live = record(1, { id: 'live00000001', sniffIf: 'nosuch0', createdAt: now - 60_000, expiresAt: now + 600_000 });
    const dead = record(2, { id: 'dead00000002', createdAt: now - 60_000, expiresAt: now - 1000 });
    writeFileSync(join(dir, 'state', 'jobs.json'), encode([live, dead]));
    const d = await startDaemon({ dir });
    const { jobs } = (await d.request({ v: 1, op: 'list' })).result as { jobs: { id: string; expiresAt: string; remainingMs: number; fault?: string; counters: { matched: number } }[] };
    t.deepEqual(jobs.map((j) => j.id), ['live00000001'], format);
    t.is(jobs[0].expiresAt, new Date(live.expiresAt).toISOString(), 'original end time');
    t.true(jobs[0].remainingMs <= 600_000 && jobs[0].remainingMs > 590_000);
    t.is(jobs[0].counters.matched, 1, 'counters carried over');
    // Its sniff interface does not exist here (or BPF is not allowed): kept, marked, retried.
    t.truthy(jobs[0].fault);
    t.truthy(d.logs.find((l) => l.msg === 'saved job already expired: not restored'));
    t.is(Boolean(d.logs.find((l) => /old format/.test(String(l.msg)))), format === 'format 1', `${format}: migration logged only for format 1`);
    const text = readFileSync(join(dir, 'state', 'jobs.json'), 'utf8');
    t.false(text.startsWith('{'), `${format}: rewritten as a journal`);
    const saved = decodeState(text);
    t.deepEqual(saved.map((r) => r.id), ['live00000001'], 'the expired job is dropped from the file too');
    t.is(saved[0].expiresAt, live.expiresAt);
    t.deepEqual(await d.stop(), { code: 0, signal: null });
  }
});

test('a torn last record is dropped with a warning and the jobs before it are restored; a corrupt record before others is dropped with them and the file kept aside', async (t) => {
  const now = Date.now();
  const job = (i: number): JobRecord => record(i, { id: `job${i}`.padEnd(12, '0'), sniffIf: 'nosuch0', createdAt: now, expiresAt: now + 600_000 });
  const base = journal([job(1)], [{ op: 'put', rec: job(2) }]);
  const torn = encodeChange({ op: 'put', rec: job(3) });
  const cases = [
    { name: 'torn tail', text: base + torn.slice(0, 40), restored: [job(1).id, job(2).id], dropped: 1, keptAside: false },
    {
      name: 'corrupt middle',
      text: journal([job(1)], [{ op: 'put', rec: job(2) }, { op: 'put', rec: job(3) }, { op: 'del', id: job(1).id, why: 'cancelled' }]).replace(`"${job(2).id}"`, `"${job(2).id.replace('0', '1')}"`),
      restored: [job(1).id], dropped: 3, keptAside: true,
    },
  ];
  for (const c of cases) {
    const dir = tmp('torn');
    mkdirSync(join(dir, 'state'));
    writeFileSync(join(dir, 'state', 'jobs.json'), c.text);
    const d = await startDaemon({ dir });
    const { jobs } = (await d.request({ v: 1, op: 'list' })).result as { jobs: { id: string }[] };
    t.deepEqual(jobs.map((j) => j.id).sort(), c.restored, c.name);
    const warn = d.logs.find((l) => l.level === 40 && /torn or corrupt records at the end dropped/.test(String(l.msg)));
    t.truthy(warn, `${c.name}: a warning`);
    t.is(warn?.records, c.dropped, `${c.name}: records dropped`);
    t.falsy(d.logs.find((l) => /state file (corrupt|unreadable)/.test(String(l.msg))), `${c.name}: not a corrupt file`);
    const copies = readdirSync(join(dir, 'state')).filter((n) => n.startsWith('jobs.json.corrupt-'));
    t.is(copies.length, c.keptAside ? 1 : 0, `${c.name}: copy kept aside`);
    if (c.keptAside) t.is(readFileSync(join(dir, 'state', copies[0]!), 'utf8'), c.text);
    const st = (await d.request({ v: 1, op: 'status' })).result as { state: { droppedAtLoad: number; fault?: string } };
    t.is(st.state.droppedAtLoad, c.dropped, `${c.name}: status counts the records dropped`);
    t.is(st.state.fault, undefined, `${c.name}: saving works: no fault`);
    const cli = spawnSync(process.execPath, [CLI_BIN, 'status', '--socket', d.socket], { encoding: 'utf8' });
    t.is(cli.status, 0, cli.stderr);
    t.regex(cli.stdout, new RegExp(`^saved jobs: ${c.dropped} torn or corrupt record\\(s\\) dropped`, 'm'));
    t.notRegex(cli.stdout, /saved jobs: FAULT/);
    t.deepEqual(decodeStateDetailed(readFileSync(join(dir, 'state', 'jobs.json'), 'utf8')).dropped, undefined, `${c.name}: rewritten whole`);
    await d.stop();
  }
});

// ---- with the data plane (root) -------------------------------------------


const createReq = (host: string, duration: number) => ({ v: 1, op: 'create', engid: 'ENG', sniffIf: 'sniff0', resetIf: 'reset0', host, duration });

ptest('SIGKILL and restart: the job is enforced again until its original end; one that ended meanwhile is not revived', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('kill');
  const d1 = await startDaemon({ dir, netns: ns });
  const long = await d1.request(createReq('198.51.100.20', 600));
  t.true(long.ok, JSON.stringify(long));
  const short = await d1.request(createReq('198.51.100.21', 2));
  t.true(short.ok, JSON.stringify(short));
  t.deepEqual(await d1.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });
  await sleep(2500); // the short job ends while the daemon is down

  const d2 = await startDaemon({ dir, netns: ns });
  t.teardown(() => d2.stop());
  const { jobs } = (await d2.request({ v: 1, op: 'list' })).result;
  t.deepEqual(jobs.map((j: { id: string }) => j.id), [long.result.job.id]);
  t.is(jobs[0].expiresAt, long.result.job.expiresAt, 'original end time');
  t.is(jobs[0].fault, undefined, 'enforced');
  const st = (await d2.request({ v: 1, op: 'status' })).result;
  t.deepEqual(st.interfaces.filter((i: { role: string }) => i.role === 'sniff').map((i: { ifname: string; up: boolean }) => [i.ifname, i.up]), [['sniff0', true]]);
  t.true(['native', 'generic'].includes(st.interfaces.find((i: { role: string }) => i.role === 'sniff').mode), 'XDP attached again');
  t.truthy(d2.logs.find((l) => l.msg === 'saved jobs restored' && l.restored === 1 && l.expired === 1));
});

ptest('an unwritable state directory: the job is accepted and enforced, with a warning in the response and the log', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('rofs');
  const d = await startDaemon({ dir, netns: ns });
  t.teardown(() => d.stop());
  rmSync(d.stateDir, { recursive: true });
  writeFileSync(d.stateDir, 'not a directory'); // even root cannot write inside a file
  // On reset0's network: the only warning is the one about saving (no "no route" one).
  const r = await d.request(createReq('192.0.2.30', 60));
  t.true(r.ok, JSON.stringify(r));
  t.is(r.result.action, 'created');
  t.is(r.result.warnings.length, 1);
  t.regex(r.result.warnings[0], /could not be saved .*will not survive a daemon restart/);
  t.is((await d.request({ v: 1, op: 'list' })).result.jobs.length, 1);
  t.truthy(d.logs.find((l) => l.level === 50 && l.msg === 'cannot save jobs: they will not survive a restart'));
  t.true(existsSync(d.stateDir) && statSync(d.stateDir).isFile(), 'nothing was clobbered');
  // The fault is in status while it lasts: the JSON and what `tcpreset status` prints.
  const st = (await d.request({ v: 1, op: 'status' })).result as { state: { fault?: string; saveFailures: number } };
  t.regex(st.state.fault ?? '', /cannot save jobs to .*jobs\.json/);
  t.true(st.state.saveFailures >= 1);
  const cli = spawnSync(process.execPath, [CLI_BIN, 'status', '--socket', d.socket], { encoding: 'utf8' });
  t.is(cli.status, 0, cli.stderr);
  t.regex(cli.stdout, /^saved jobs: FAULT cannot save jobs to .*will not survive a daemon restart$/m);
});

// Serial: a lab (network namespaces, 2 vCPUs).
const pserial: typeof test.serial = isRoot || process.env.CI ? test.serial : (test.skip as unknown as typeof test.serial);

type Listed = { id: string; counters: { matched: number; rstsSent: number; flows: number; firstHitAt: string | null; lastHitAt: string | null } };

pserial('kill -9 keeps the counters of a job that reset a connection: the summary checkpoints them into the journal (summaryIntervalMs), and `tcpreset list --json` after the restart shows them exactly', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const dir = tmp('ctr');
  const state = join(dir, 'state');
  const cfg = { summaryIntervalMs: 300 };
  const d1 = await startDaemon({ dir, stateDir: state, netns: lab.ns.sensor, config: cfg });
  t.teardown(() => d1.stop());
  await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  const probe = () => connectOnce(lab, lab.ns.client, lab.hosts.server.v4, 5001, { timeoutMs: 1500, holdMs: 300 });
  t.true((await probe()).ok, 'the lab works before any job');
  const cli = (sock: string, args: string[]) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const c = spawn('ip', ['netns', 'exec', lab.ns.sensor, process.execPath, CLI_BIN, ...args, '--socket', sock], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout!.setEncoding('utf8').on('data', (x: string) => (stdout += x));
    c.stderr!.setEncoding('utf8').on('data', (x: string) => (stderr += x));
    c.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  const list = async (sock: string): Promise<Listed[]> => {
    const r = await cli(sock, ['list', '--json']);
    if (r.code !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout).jobs as Listed[];
  };
  const c = await cli(d1.socket, ['ENG-CTR', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', lab.hosts.client.v4, '-d', '120', '--json']);
  t.is(c.code, 0, c.stderr);
  const id = JSON.parse(c.stdout).job.id as string;
  t.false((await probe()).ok, 'a new connection is reset');
  // Settle: the counters stop moving once the reset connection is gone.
  let before: Listed | undefined;
  for (let i = 0; i < 50; i++) {
    const now = (await list(d1.socket)).find((j) => j.id === id);
    if (before && now && now.counters.flows > 0 && JSON.stringify(now.counters) === JSON.stringify(before.counters)) break;
    before = now;
    await sleep(400);
  }
  t.truthy(before);
  t.is(before!.counters.flows, 1, 'positive control before the kill: the job reset one connection');
  t.true(before!.counters.matched > 0 && before!.counters.rstsSent > 0, JSON.stringify(before));
  t.truthy(before!.counters.firstHitAt);
  // Wait past a checkpoint: the file replays to the listed counters (ms times).
  const file = join(state, 'jobs.json');
  const want = { matched: before!.counters.matched, rstsSent: before!.counters.rstsSent, flows: before!.counters.flows };
  let onDisk: JobRecord | undefined;
  for (let i = 0; i < 50; i++) {
    onDisk = decodeState(readFileSync(file, 'utf8')).find((j) => j.id === id);
    if (onDisk && onDisk.counters.matched === want.matched && onDisk.counters.rstsSent === want.rstsSent) break;
    await sleep(100);
  }
  t.like(onDisk?.counters, want, 'checkpointed');
  const text = readFileSync(file, 'utf8');
  t.true(text.includes('{"ctr":['), 'by a ctr record');
  // Without it the journal would restore the job as created (the loss the checkpoint fixes).
  const withoutCtr = text.split('\n').filter((l) => !l.includes('{"ctr":[')).join('\n');
  t.like(decodeState(withoutCtr).find((j) => j.id === id)?.counters, { matched: 0, rstsSent: 0, flows: 0 });

  t.deepEqual(await d1.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });
  const d2 = await startDaemon({ dir, stateDir: state, netns: lab.ns.sensor, socket: join(dir, 'b.sock'), config: cfg });
  t.teardown(() => d2.stop());
  const after = (await list(d2.socket)).find((j) => j.id === id);
  const five = (j?: Listed) => j && { matched: j.counters.matched, rstsSent: j.counters.rstsSent, flows: j.counters.flows, firstHitAt: j.counters.firstHitAt, lastHitAt: j.counters.lastHitAt };
  t.deepEqual(five(after), five(before), 'exactly the counters (and hit times) before the kill');
  t.false((await probe()).ok, 'and the restored job still resets');
});
