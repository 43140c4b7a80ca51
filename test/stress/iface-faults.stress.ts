/**
 * The sniff and the reset interface fail under a running job: they go down
 * and come back, or are deleted and re-created (a new ifindex, a new MAC),
 * again and again, with the REAL daemon in the lab's sensor namespace.
 *
 * Each time: the fault is reported (status: the interface is not up and
 * says why; list: the job carries the fault; log: a warning naming the job),
 * a session opened during the fault lives (nothing can enforce), and once
 * the interface is back the same daemon process (no restart) kills that
 * session and the job keeps its end time. After a re-created sniff
 * interface the kernel's targets map is keyed by the new ifindex.
 */
import type { ExecutionContext } from 'ava';
import { ptest } from '../helpers/privileged.js';
import { run } from '../../testkit/lab/netns.js';
import type { Lab } from '../../testkit/lab/lab.js';
import type { LogLine } from '../../testkit/daemon.js';
import { scaled } from './scale.js';
import { KILL_WAIT_MS, createReq, dumpTargets, ifindexIn, killed, labDaemon, ok, session, targetsMapId, type LabDaemon } from './fault-lab.js';
import { sleep } from '../../testkit/time.js';

/** The Enforcer checks interfaces every 500 ms. */
const HEALTH_MS = 500;
const OFFLOADS = ['tx', 'off', 'rx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'];

interface IfaceRow { ifname: string; role: string; mode: string; up: boolean; fault?: string; since?: string }

interface Scenario {
  name: string;
  ifname: (lab: Lab) => string;
  role: 'sniff' | 'reset';
  /** What the data plane calls the fault. */
  fault: RegExp;
  breakIt: (lab: Lab) => Promise<void>;
  heal: (lab: Lab) => Promise<void>;
}

async function ip(ns: string, ...lines: string[]): Promise<void> {
  await run(['ip', '-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n' });
}
const ethtoolOff = (lab: Lab, ns: string, dev: string): Promise<unknown> => lab.exec(ns, ['ethtool', '-K', dev, ...OFFLOADS]);

/** A new mirror port pair (new sniff ifindex), and the mirror filters pointed at it (the old ones lost their target). */
async function recreateSniff(lab: Lab): Promise<void> {
  const { sw, sensor } = lab;
  await ip(sw.ns, `link add ${sw.ports.mirror} type veth peer name ${sensor.sniffIf} netns ${sensor.ns}`, `link set ${sw.ports.mirror} up`);
  await ethtoolOff(lab, sw.ns, sw.ports.mirror);
  await ethtoolOff(lab, sensor.ns, sensor.sniffIf);
  const tc: string[] = [];
  for (const port of [sw.ports.client, sw.ports.bystander]) {
    for (const dir of ['ingress', 'egress']) {
      tc.push(`filter del dev ${port} ${dir}`);
      tc.push(`filter add dev ${port} ${dir} protocol all u32 match u32 0 0 action mirred egress mirror dev ${sw.ports.mirror}`);
    }
  }
  await run(['tc', '-n', sw.ns, '-batch', '-'], { input: tc.join('\n') + '\n' });
  await ip(sensor.ns, `link set ${sensor.sniffIf} up`);
}

/** A new reset port pair on the bridge, with the sensor's addresses. */
async function recreateReset(lab: Lab): Promise<void> {
  const { sw, sensor } = lab;
  await ip(sw.ns, `link add ${sw.ports.reset} type veth peer name ${sensor.resetIf} netns ${sensor.ns}`, `link set ${sw.ports.reset} master ${sw.bridge}`, `link set ${sw.ports.reset} up`);
  await ethtoolOff(lab, sw.ns, sw.ports.reset);
  await ethtoolOff(lab, sensor.ns, sensor.resetIf);
  await ip(sensor.ns, `addr add ${sensor.v4}/24 dev ${sensor.resetIf}`, `addr add ${sensor.v6}/64 dev ${sensor.resetIf} nodad`, `link set ${sensor.resetIf} up`);
}

const SCENARIOS: Scenario[] = [
  {
    name: 'sniff interface down, then up',
    ifname: (lab) => lab.sensor.sniffIf,
    role: 'sniff',
    fault: /interface is down/,
    breakIt: (lab) => ip(lab.sensor.ns, `link set ${lab.sensor.sniffIf} down`),
    heal: (lab) => ip(lab.sensor.ns, `link set ${lab.sensor.sniffIf} up`),
  },
  {
    name: 'sniff interface deleted, then re-created',
    ifname: (lab) => lab.sensor.sniffIf,
    role: 'sniff',
    fault: /interface is gone/,
    breakIt: (lab) => ip(lab.sw.ns, `link del ${lab.sw.ports.mirror}`),
    heal: recreateSniff,
  },
  {
    name: 'reset interface down, then up',
    ifname: (lab) => lab.sensor.resetIf,
    role: 'reset',
    fault: /interface is down/,
    breakIt: (lab) => ip(lab.sensor.ns, `link set ${lab.sensor.resetIf} down`),
    // IPv6 addresses go with the link (keep_addr_on_down=0); the operator's config would put them back.
    heal: (lab) => ip(lab.sensor.ns, `link set ${lab.sensor.resetIf} up`, `addr replace ${lab.sensor.v6}/64 dev ${lab.sensor.resetIf} nodad`),
  },
  {
    name: 'reset interface deleted, then re-created',
    ifname: (lab) => lab.sensor.resetIf,
    role: 'reset',
    fault: /interface is gone/,
    breakIt: (lab) => ip(lab.sw.ns, `link del ${lab.sw.ports.reset}`),
    heal: recreateReset,
  },
];

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | null | false>): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

const after = (since: number) => (l: LogLine): boolean => Date.parse(String(l.time)) >= since - 2;

async function faultCycle(t: ExecutionContext, ld: LabDaemon, sc: Scenario, jobId: string, expiresAt: string): Promise<{ reportMs: number; resumeMs: number }> {
  const { lab, daemon } = ld;
  const ifname = sc.ifname(lab);
  const row = async (): Promise<IfaceRow | undefined> =>
    ((await ok(daemon, { v: 1, op: 'status' })).interfaces as IfaceRow[]).find((i) => i.ifname === ifname && i.role === sc.role);
  const jobView = async (): Promise<{ id: string; expiresAt: string; fault?: string }> =>
    ((await ok(daemon, { v: 1, op: 'list' })).jobs as { id: string; expiresAt: string; fault?: string }[]).find((j) => j.id === jobId)!;

  const brokeAt = Date.now();
  await sc.breakIt(lab);
  // Reported: the data plane's warning, the jobs it suspends, the status row and the job itself.
  const warn = await daemon.waitLog((l) => after(brokeAt)(l) && l.msg === 'interface fault: enforcement on it is suspended' && l.ifname === ifname && l.role === sc.role, 3 * HEALTH_MS + 2000, `${sc.name}: fault warning`);
  t.regex(String(warn.fault), sc.fault, sc.name);
  t.is(warn.level, 40);
  const jobsLine = await daemon.waitLog((l) => after(brokeAt)(l) && l.msg === 'jobs not enforced: interface fault' && l.ifname === ifname, 2000, `${sc.name}: jobs line`);
  t.true((jobsLine.jobIds as string[]).includes(jobId), `${sc.name}: the log names the suspended job`);
  const reportMs = Date.parse(String(warn.time)) - brokeAt;
  const bad = await until(`${sc.name}: status shows the fault`, 2000, async () => {
    const r = await row();
    return r && !r.up ? r : undefined;
  });
  t.truthy(bad.fault, `${sc.name}: status says why`);
  const jv = await jobView();
  t.regex(jv.fault ?? '', new RegExp(`${sc.role} interface ${ifname}: `), `${sc.name}: the job carries the fault`);
  t.regex(jv.fault ?? '', sc.fault);

  // A session opened during the fault lives: nothing can enforce it now.
  const s = await session(ld, 'v4');
  await sleep(300);
  t.is(s.client.errorOf('c'), undefined, `${sc.name}: nothing enforces while the ${sc.role} interface is out`);

  const healedAt = Date.now();
  await sc.heal(lab);
  const rec = await daemon.waitLog((l) => after(healedAt)(l) && l.msg === 'interface recovered: enforcement resumed' && l.ifname === ifname && l.role === sc.role, 3 * HEALTH_MS + 3000, `${sc.name}: recovered line`);
  t.true(Number(rec.downMs) > 0);
  await daemon.waitLog((l) => after(healedAt)(l) && l.msg === 'jobs enforced again: interface back' && l.ifname === ifname, 2000, `${sc.name}: jobs resumed line`);
  // The same process kills the session that was opened during the fault.
  const k = await killed(ld, s, KILL_WAIT_MS + 3 * HEALTH_MS);
  t.is(k.client, 'ECONNRESET', `${sc.name}: client end reset after recovery`);
  t.is(k.server, 'ECONNRESET', `${sc.name}: server end reset after recovery`);
  const resumeMs = k.at - healedAt;

  const good = await until(`${sc.name}: status clear`, 2000, async () => {
    const r = await row();
    return r && r.up ? r : undefined;
  });
  t.is(good.fault, undefined);
  const after2 = await jobView();
  t.is(after2.fault, undefined, `${sc.name}: the job's fault is cleared`);
  t.is(after2.expiresAt, expiresAt, `${sc.name}: the job keeps its end time`);
  return { reportMs, resumeMs };
}

ptest.serial('sniff and reset interfaces go down, come back, are deleted and re-created under a job: reported in status, list and log; enforcement resumes without a restart', async (t) => {
  const ROUNDS = scaled(1, 5);
  t.timeout(scaled(110_000, 15 * 60_000));
  const ld = await labDaemon(t);
  const { lab, daemon } = ld;
  const pid = daemon.pid;
  // Enforced to begin with.
  const first = await session(ld, 'v4');
  const job = (await ok(daemon, createReq(lab, lab.hosts.client.v4, 3600))).job as { id: string; expiresAt: string };
  t.is((await killed(ld, first)).client, 'ECONNRESET');

  let survived = 0;
  const byScenario = new Map<string, { n: number; worstReportMs: number; worstResumeMs: number }>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const sc of SCENARIOS) {
      const sniffBefore = ifindexIn(lab.ns.sensor, lab.sensor.sniffIf);
      const r = await faultCycle(t, ld, sc, job.id, job.expiresAt);
      survived++;
      const f = byScenario.get(sc.name) ?? { n: 0, worstReportMs: 0, worstResumeMs: 0 };
      byScenario.set(sc.name, { n: f.n + 1, worstReportMs: Math.max(f.worstReportMs, r.reportMs), worstResumeMs: Math.max(f.worstResumeMs, r.resumeMs) });
      if (sc.role === 'sniff') {
        // The kernel map follows the interface's ifindex (a new one after re-creation).
        const now = ifindexIn(lab.ns.sensor, lab.sensor.sniffIf);
        if (sc.name.includes('re-created')) t.not(now, sniffBefore, 'a re-created interface has a new ifindex');
        const entries = dumpTargets(targetsMapId(daemon.pid)!);
        t.deepEqual(entries.map((e) => e.ifindex), [now], `${sc.name}: the target is keyed by the current ifindex`);
      }
    }
  }
  t.is(daemon.pid, pid);
  t.is(daemon.exit, null, 'no restart: the same daemon process throughout');
  t.falsy(daemon.logs.find((l) => l.level >= 50), `no error lines: ${JSON.stringify(daemon.logs.find((l) => l.level >= 50))}`);
  for (const [name, f] of byScenario) t.log(`${name}: ${f.n}x, reported within ${f.worstReportMs} ms, session killed ${f.worstResumeMs.toFixed(0)} ms after the interface was back (worst)`);
  t.log(`FIGURE interface faults survived: ${survived} (${ROUNDS} round(s) of ${SCENARIOS.length} kinds), one daemon process`);
});
