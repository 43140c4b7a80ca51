/**
 * src/daemon/status.ts: the status answer built from its parts. Interfaces
 * are read from this machine's sysfs: "lo" (always there and active) and a
 * name no machine has. The daemon's own status over the socket is
 * test/protocol.test.ts (no data plane) and test/e2e/service.test.ts (jobs).
 */
import test from 'ava';
import { buildStatus, interfaceRows, type JobUsage, type StatusSources } from '../src/daemon/status.js';
import { COUNTER_NAMES } from '../src/bpf/contract.js';
import type { EnforcerStatus, InterfaceFault } from '../src/dataplane/types.js';

const MISSING = 'nosuch9z';

function sources(over: Partial<StatusSources> = {}): StatusSources {
  return {
    version: '9.9.9', pid: 77, startedAt: 1_000, now: 6_000, enforcer: undefined,
    usage: { jobs: 0, groups: [] }, watch: [], dataPlaneFault: null, dataPlaneFailures: 0,
    state: { path: '/s/jobs.json', journalRecords: 0, snapshotJobs: 0, compactions: 0, appends: 0, saveFailures: 0, droppedAtLoad: 0 },
    config: { file: '/etc/tcpreset/config.json', reloads: { applied: 0, refused: 0 } },
    history: undefined, metrics: undefined, connections: 2, requests: 5,
    memory: { rss: 104857600, heapTotal: 52428800, heapUsed: 5242880, external: 1048576, arrayBuffers: 209716 },
    ...over,
  };
}

test('before the data plane opens: every counter 0, idle, uptime from the clock, memory in MiB with one decimal, absent parts left out', (t) => {
  const s = buildStatus(sources());
  t.is(s.uptimeMs, 5_000);
  t.is(s.dataPlane, 'idle');
  t.deepEqual(Object.keys(s.counters), [...COUNTER_NAMES]);
  t.true(Object.values(s.counters).every((v) => v === 0));
  t.deepEqual(s.ring, { records: 0, wakeups: 0, stale: 0 });
  t.deepEqual(s.sweep, { sent: 0, errors: 0, known: 0, verified: 0 });
  t.deepEqual([s.senders, s.resetTotals, s.sniff, s.interfaces], [[], [], [], []]);
  t.is(s.targets, 0);
  t.deepEqual(s.memory, { rss: 100, heapTotal: 50, heapUsed: 5, external: 1, arrayBuffers: 0.2 });
  t.false('history' in s);
  t.false('metrics' in s);
  t.false('dataPlaneFault' in s);
  // A failure of the data plane makes it 'fault', with the failure shown.
  const fault = { step: 'load' as const, message: 'bpf() refused', since: '2026-12-01T00:00:00.000Z', failures: 3, libbpf: [] };
  const f = buildStatus(sources({ dataPlaneFault: fault, dataPlaneFailures: 3 }));
  t.is(f.dataPlane, 'fault');
  t.deepEqual(f.dataPlaneFault, fault);
  t.is(f.dataPlaneFailures, 3);
});

test('interfaces: one row per role, name and mode; sysfs faults first, else the data plane\'s; jobs not enforced counted per group', (t) => {
  const dpFault: InterfaceFault = { ifname: 'lo', role: 'sniff', fault: 'no parsable TCP', since: Date.UTC(2026, 11, 1), kind: 'parse' };
  const e: Pick<EnforcerStatus, 'attached' | 'senders' | 'faults'> = {
    attached: [{ ifname: 'lo', ifindex: 1, mode: 'generic', jobs: 3, watched: false, kept: true }],
    senders: [{ ifname: 'lo', mode: 'l2', sent: 1, errors: 0 }],
    faults: [dpFault],
  };
  const usage: JobUsage = {
    jobs: 5,
    groups: [
      // 3 jobs on lo (the data plane reports a fault on it: all 3 not enforced)...
      { sniffIf: 'lo', resetIf: 'lo', mode: 'l2', family: 4, jobs: 3, faulty: 0 },
      // ...2 on a missing interface, 1 of them with a fault of its own.
      { sniffIf: MISSING, resetIf: MISSING, mode: 'l3', family: 4, jobs: 2, faulty: 1 },
    ],
  };
  const { interfaces, faultyJobs } = interfaceRows(e, usage, ['lo', `${MISSING}w`]);
  t.is(faultyJobs, 4);
  t.deepEqual(interfaces.map((i) => `${i.role}/${i.ifname}/${i.mode}`), [
    'sniff/lo/generic', `sniff/${MISSING}w/detached`, 'reset/lo/l2', `sniff/${MISSING}/detached`, `reset/${MISSING}/l3`,
  ], 'the sender on lo/l2 and the group on lo/l2 are one row');
  const lo = interfaces[0];
  // lo is fine in sysfs: the data plane's parse fault is shown, and it is up (the fault is what it carries).
  t.deepEqual(lo, { ifname: 'lo', role: 'sniff', mode: 'generic', up: true, fault: 'no parsable TCP', since: '2026-12-01T00:00:00.000Z', watched: false, jobs: 3 });
  // Positive control: lo as a reset interface has no data-plane fault, so no fault at all.
  t.deepEqual(interfaces[2], { ifname: 'lo', role: 'reset', mode: 'l2', up: true });
  for (const i of interfaces.filter((x) => x.ifname.startsWith(MISSING))) {
    t.false(i.up, i.ifname);
    t.regex(i.fault ?? '', new RegExp(MISSING), i.ifname);
  }
  t.like(interfaces[1], { watched: true, jobs: 0 });
});
