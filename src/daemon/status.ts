/**
 * The answer to the `status` request (protocol.ts StatusResult), built from
 * what each part of the daemon reports: the data plane's status (absent
 * until it opens), the job manager's usage per interface group, the state
 * file, the history, the metrics exporter and the control server. Typed as
 * StatusResult: a field left out, or one set here that the protocol does
 * not declare, is a compile error. (The parts copied whole from their
 * owners, such as the data plane's ring, are checked for every field the
 * protocol declares; TypeScript does not flag extra fields in them.)
 *
 * Reads sysfs (net/ifaces.ts interfaceFault) once per interface listed; no
 * other I/O. O(interfaces + interface groups), never O(jobs): status is
 * polled at 100,000 jobs.
 */
import type { ConfigStatus, HistoryStatus, InterfaceStatus, MetricsStatus, StateStatus, StatusResult } from '../control/protocol.js';
import type { EnforcerStatus } from '../dataplane/types.js';
import { interfaceFault } from '../net/ifaces.js';
import { COUNTER_NAMES } from '../bpf/contract.js';
import type { Family, IfaceRole, InjectMode } from '../core/model.js';
import type { DataPlaneFaultView } from './dataplane-health.js';

/** Jobs counted per sniff interface, reset interface, mode and family (JobManager.usage()). */
export interface JobUsage {
  jobs: number;
  groups: readonly { sniffIf: string; resetIf: string; mode: InjectMode; family: Family; jobs: number; faulty: number }[];
}

/** What status is made of; each part as its owner reports it. */
export interface StatusSources {
  version: string;
  pid: number;
  /** Epoch ms: when the daemon started, and now. */
  startedAt: number;
  now: number;
  /** The data plane's status; undefined while it is not open. */
  enforcer: EnforcerStatus | undefined;
  usage: JobUsage;
  /** Sniff interfaces to attach from start (--watch, config watch). */
  watch: readonly string[];
  /** The data plane's last failure while it lasts (null: none), and failures since start. */
  dataPlaneFault: DataPlaneFaultView | null;
  dataPlaneFailures: number;
  state: StateStatus;
  /** The configuration file's reloads and the refusal in force (reload.ts ReloadRecord). */
  config: ConfigStatus;
  /** Undefined when the daemon keeps no history. */
  history: HistoryStatus | undefined;
  /** Undefined when no exporter is configured. */
  metrics: MetricsStatus | undefined;
  /** Control connections open now and requests received since start (server.ts). */
  connections: number;
  requests: number;
  /** process.memoryUsage() in bytes. */
  memory: NodeJS.MemoryUsage;
}

/** The status answer. See StatusResult for each field's meaning. */
export function buildStatus(src: StatusSources): StatusResult {
  const e = src.enforcer;
  const { interfaces, faultyJobs } = interfaceRows(e, src.usage, src.watch);
  const counters: Record<string, number> = {};
  for (const n of COUNTER_NAMES) counters[n] = e ? Number(e.counters[n]) : 0;
  return {
    version: src.version,
    pid: src.pid,
    uptimeMs: src.now - src.startedAt,
    interfaces,
    counters,
    ring: e ? { ...e.ring } : { records: 0, wakeups: 0, stale: 0 },
    senders: e?.senders ?? [],
    resetTotals: e?.resetTotals ?? [],
    sweep: e?.sweep ?? { sent: 0, errors: 0, known: 0, verified: 0 },
    flowsReset: e?.flowsReset ?? 0,
    sniff: e?.sniff ?? [],
    jobs: src.usage.jobs,
    targets: e?.targets ?? 0,
    faultyJobs,
    dataPlane: e ? 'open' : src.dataPlaneFault ? 'fault' : 'idle',
    ...(src.dataPlaneFault ? { dataPlaneFault: src.dataPlaneFault } : {}),
    dataPlaneFailures: src.dataPlaneFailures,
    memory: memoryMb(src.memory),
    state: src.state,
    config: src.config,
    ...(src.history ? { history: src.history } : {}),
    connections: src.connections,
    ...(src.metrics ? { metrics: src.metrics } : {}),
    requests: src.requests,
  };
}

/**
 * One row per interface in use (role, name and mode), each with the fault
 * sysfs shows or else the one the data plane reports, and the jobs not
 * enforced because of a fault (as `list` marks them: a job's own fault, or
 * a data-plane fault of an interface it needs).
 */
export function interfaceRows(
  e: Pick<EnforcerStatus, 'attached' | 'senders' | 'faults'> | undefined,
  usage: JobUsage,
  watch: readonly string[],
): { interfaces: InterfaceStatus[]; faultyJobs: number } {
  // What the data plane itself reports (e.g. a failed re-attach) counts even when sysfs looks fine.
  // A fault about one sender (mode: an undeliverable l3 destination) is shown on that sender's row only.
  const dataPlaneFaults = new Map((e?.faults ?? []).map((f) => [f.mode ? `${f.role}/${f.ifname}/${f.mode}` : `${f.role}/${f.ifname}`, f]));
  const attached = e?.attached ?? [];
  const interfaces: InterfaceStatus[] = [];
  const seen = new Set<string>();
  const addIf = (ifname: string, role: IfaceRole, mode: string, family?: Family, extra: { watched?: boolean; jobs?: number } = {}): void => {
    const key = `${role}/${ifname}/${mode}`;
    if (seen.has(key)) return;
    seen.add(key);
    let fault: string | null;
    try {
      fault = interfaceFault(ifname, role, family, role === 'reset' && (mode === 'l2' || mode === 'l3') ? { mode } : {});
    } catch (err) {
      fault = (err as Error).message;
    }
    const df = dataPlaneFaults.get(`${role}/${ifname}`) ?? dataPlaneFaults.get(`${role}/${ifname}/${mode}`);
    let up = fault === null;
    if (fault === null && df) {
      fault = df.fault;
      up = df.kind !== undefined; // up; what it carries is unreadable, or some RSTs cannot leave it
    }
    interfaces.push({ ifname, role, mode, up, ...(fault !== null ? { fault } : {}), ...(df ? { since: new Date(df.since).toISOString() } : {}), ...extra });
  };
  // watched: attached from start (--watch, config watch); an interface that had a job also stays attached.
  for (const a of attached) addIf(a.ifname, 'sniff', a.mode, undefined, { watched: a.watched, jobs: a.jobs });
  // A watched interface the data plane could not attach (yet) is listed with its fault.
  for (const w of watch) if (!attached.some((a) => a.ifname === w)) addIf(w, 'sniff', 'detached', undefined, { watched: true, jobs: 0 });
  for (const s of e?.senders ?? []) addIf(s.ifname, 'reset', s.mode);
  let faultyJobs = 0;
  for (const g of usage.groups) {
    if (!attached.some((a) => a.ifname === g.sniffIf)) addIf(g.sniffIf, 'sniff', 'detached');
    addIf(g.resetIf, 'reset', g.mode, g.family);
    const dpFault = dataPlaneFaults.has(`sniff/${g.sniffIf}`) || dataPlaneFaults.has(`reset/${g.resetIf}`) || dataPlaneFaults.has(`reset/${g.resetIf}/${g.mode}`);
    faultyJobs += dpFault ? g.jobs : g.faulty;
  }
  return { interfaces, faultyJobs };
}

/** The process's memory in MiB (one decimal): rss, and V8's heap (used/total) and off-heap (external, arrayBuffers). */
function memoryMb(m: NodeJS.MemoryUsage): StatusResult['memory'] {
  const mb = (n: number): number => Math.round(n / 104857.6) / 10;
  return { rss: mb(m.rss), heapUsed: mb(m.heapUsed), heapTotal: mb(m.heapTotal), external: mb(m.external), arrayBuffers: mb(m.arrayBuffers) };
}
