/**
 * The daemon put together: configuration, job manager, state file, the
 * Enforcer (opened on first need: loading BPF needs privileges that
 * read-only requests do not), activity log, control server and systemd
 * notification; the request handler; start-up and orderly shutdown.
 */
import { readFileSync } from 'node:fs';
import { TcpresetError } from '../core/errors.js';
import type { CreateResult, Request, Job, StatusResult } from '../control/protocol.js';
import type { Enforcer } from '../dataplane/enforcer.js';
import type { FlowResetInfo, InterfaceFault } from '../dataplane/types.js';
import { checkResetInterface, checkSniffInterface, interfaceAddresses, subnetEdgeProblem, type IfaceAddress } from '../net/ifaces.js';
import { ActivityLog } from './activity.js';
import { systemClock, type Clock } from './clock.js';
import type { DaemonConfig } from './config.js';
import { JobManager, type JobChange } from './jobs.js';
import { ProtectList, localAddresses } from './protect.js';
import { passedRecently, recent } from './turn.js';
import type { ProtectedEntry } from './protect.js';
import { Notifier } from './sd-notify.js';
import { ControlServer, socketActivationFd, type Peer } from './server.js';
import { StateStore } from './state.js';
import { StateDirLock } from './lockfile.js';
import { DataPlaneHealth } from './dataplane-health.js';
import { applyReload, ReloadRecord, type ReloadOutcome } from './reload.js';
import type { LoadedConfig } from './config.js';
import type { LogLevel } from './log.js';
import { JobEventCounts } from './job-events.js';
import { buildStatus } from './status.js';
import { History } from './history.js';
import type { MetricsExporter } from './metrics.js';
import type { Registry } from 'prom-client';
import type { IfaceRole, LogSink } from '../core/model.js';

export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export interface DaemonOptions {
  socketPath: string;
  stateDir: string;
  config: DaemonConfig;
  protectedEntries: ProtectedEntry[];
  log: LogSink;
  /** The configuration file (--config), named in status; default "(none)". */
  configFile?: string;
  clock?: Clock;
  /** Opens the data plane; default: Enforcer.open (loaded lazily). */
  openEnforcer?: (log: LogSink) => Enforcer;
}

type EnforcerModule = typeof import('../dataplane/enforcer.js');

export class Daemon {
  readonly version = packageVersion();
  readonly startedAt = Date.now();
  private readonly o: DaemonOptions;
  private readonly log: LogSink;
  readonly jobs: JobManager;
  readonly store: StateStore;
  private readonly activity: ActivityLog;
  private enforcer: Enforcer | undefined;
  private enforcerModule: EnforcerModule | undefined;
  private enforcerLoadError: unknown;
  private server: ControlServer | undefined;
  private notifier: Notifier | undefined;
  private stopping: Promise<void> | undefined;
  /** Set once the state directory is ours (locked, or unlockable and so unwritable): only then is jobs.json written. */
  private stateOwned = false;
  private stateLock: StateDirLock | null = null;
  /** Data plane failures: E_DATAPLANE, logged at error, shown by status. */
  readonly dataPlaneHealth: DataPlaneHealth;
  private readonly protect: ProtectList;
  private readonly jobEvents = new JobEventCounts();
  /** What was cut and when (history.ts). */
  readonly history: History;
  private metrics: MetricsExporter | undefined;
  /** Reloads applied and refused, and the refusal in force (status config). */
  readonly reloads: ReloadRecord;

  constructor(opts: DaemonOptions) {
    this.o = opts;
    this.reloads = new ReloadRecord(opts.configFile ?? '(none)');
    this.log = opts.log;
    this.dataPlaneHealth = new DataPlaneHealth(opts.log);
    this.history = new History(opts.stateDir, opts.log, opts.config.historyMaxRecords);
    const clock = opts.clock ?? systemClock;
    const protect = (this.protect = new ProtectList(opts.protectedEntries, recent(localAddresses)));
    const ifaceChecked = passedRecently();
    const addrReaders = new Map<string, () => IfaceAddress[]>();
    const resetAddrs = (ifname: string): IfaceAddress[] => {
      let read = addrReaders.get(ifname);
      if (!read) {
        if (addrReaders.size >= 64) addrReaders.clear();
        read = recent(() => interfaceAddresses(ifname));
        addrReaders.set(ifname, read);
      }
      return read();
    };
    this.jobs = new JobManager({
      clock,
      log: opts.log,
      maxJobs: opts.config.maxJobs,
      maxDurationSec: opts.config.maxDurationSec,
      defaultMode: opts.config.defaultMode,
      backend: () => this.dataPlaneHealth.backend(() => this.openEnforcer()),
      checks: {
        protectedBy: (host) => protect.check(host),
        interfaces: ({ sniffIf, resetIf, host: parsed, family, mode }) => {
          const host = parsed.canonical;
          ifaceChecked(`sniff/${sniffIf}`, () => checkSniffInterface(sniffIf));
          // Only a link-local IPv6 host changes what the reset interface needs.
          const linkLocal = family === 6 && /^fe[89ab]/i.test(host);
          ifaceChecked(`reset/${resetIf}/${family}/${mode}/${linkLocal ? host : ''}`, () => checkResetInterface(resetIf, family, { mode, host }));
          // Per host, on the interface's addresses as recently read: its network or broadcast address is no host.
          if (family === 4 && mode === 'l3') {
            const edge = subnetEdgeProblem(parsed, resetAddrs(resetIf));
            if (edge) throw new TcpresetError('E_IFACE', `reset interface "${resetIf}" ${edge}`, { details: { ifname: resetIf, role: 'reset', host } });
          }
        },
      },
      onChange: (change) => this.onJobsChanged(change),
    });
    this.store = new StateStore(opts.stateDir, opts.log, () => this.jobs.snapshot(), { uidOf: (id) => this.history.creatorOf(id) });
    this.activity = new ActivityLog({
      log: opts.log, clock, jobs: this.jobs, intervalMs: opts.config.summaryIntervalMs, flowLogLimit: opts.config.flowLogLimit,
      // Counters move without a job change: checkpoint them each summary, or a kill -9 loses every hit since the job's last record.
      onMoved: (moved) => this.store.recordCounters(moved),
    });
  }

  /** Load saved jobs, listen, tell systemd. Throws when the socket cannot be had. */
  /**
   * Load the data plane code (koffi, libbpf) on first need: an idle daemon
   * does without it (~6 MB less resident). A failure is remembered and
   * reported by the create that needed it.
   */
  private dataPlaneLoading: Promise<void> | undefined;

  private loadDataPlane(): Promise<void> {
    return (this.dataPlaneLoading ??= this.importDataPlane());
  }

  private async importDataPlane(): Promise<void> {
    try {
      this.enforcerModule = await import('../dataplane/enforcer.js');
      // libbpf's reasons go to the log at their level, not to stderr (journald's info).
      (await import('../native/libbpf.js')).setLibbpfSink((level, line) => this.dataPlaneHealth.libbpfLine(level, line));
    } catch (err) {
      this.enforcerLoadError = err;
      this.log.error({ err }, 'data plane module failed to load');
    }
  }

  async start(): Promise<void> {
    this.store.ensureDir();
    // Before anything reads or writes jobs.json: throws when another daemon holds the directory.
    this.stateLock = await StateDirLock.acquire(this.o.stateDir, this.log);
    this.stateOwned = true;
    this.history.open();
    const loaded = this.store.load();
    if (loaded.jobs.length) {
      await this.loadDataPlane();
      // Before restore: its change rewrites jobs.json, which carries each job's creator uid.
      for (const rec of loaded.jobs) this.history.noteCreator(rec.id, rec.uid ?? null);
      const r = this.jobs.restore(loaded.jobs);
      // Saved jobs not restored end here, in the history: expired while the daemon was stopped, or dropped (how "restart").
      const gone = loaded.jobs.filter((rec) => this.jobs.counters(rec.id) === undefined);
      // oldest end first; counted in tcpreset_jobs_ended_total under the history's word
      for (const rec of gone.sort((a, b) => a.expiresAt - b.expiresAt)) this.jobEvents.notRestored(this.history.notRestored(rec));
      // READY only once restored jobs are answered: the first segment after a restart must not wait for the event thread.
      await this.dataPlaneReady();
      this.log.info({ saved: loaded.jobs.length, ...r }, 'saved jobs restored');
    }
    // Rewrite what was restored as one snapshot: drops expired ones and the replayed journal, replaces a
    // torn tail or a corrupt file, migrates the old format.
    if (loaded.jobs.length || loaded.corruptCopy || loaded.dropped || loaded.migrated) await this.store.compact();
    await this.startWatching();
    // Nothing above opened the data plane (no saved job, no --watch): check bpf() now, so a daemon
    // that cannot load BPF (e.g. started as nobody) says so at start, not at the first alert's job.
    if (!this.enforcer && !this.dataPlaneHealth.faulty) await this.probeBpf();
    this.activity.start();

    const listenFd = socketActivationFd();
    this.server = await ControlServer.listen({
      path: this.o.socketPath,
      listenFd,
      handler: (req, peer) => this.handle(req, peer),
      log: this.log,
      idleTimeoutMs: this.o.config.clientIdleTimeoutMs,
      maxClients: this.o.config.maxClients,
      group: 'tcpreset',
    });
    await this.startMetrics();
    this.notifier = await Notifier.create({ log: this.log });
    this.notifier.ready(this.statusLine());
    this.log.info({ version: this.version, socket: this.o.socketPath, stateDir: this.o.stateDir, jobs: this.jobs.size }, 'tcpresetd ready');
  }

  /**
   * Apply a reloaded, already validated configuration (SIGHUP). What applies
   * live and what needs a restart: reload.ts. Tells systemd RELOADING=1 ...
   * READY=1 around it (sd_notify(3); harmless where Type=notify-reload is not used).
   */
  reload(loaded: LoadedConfig, setLogLevel?: (level: LogLevel) => void): ReloadOutcome | null {
    if (this.stopping) return null;
    this.notifier?.notify(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`);
    const out = applyReload({
      log: this.log,
      logLevelFollowsFile: setLogLevel !== undefined,
      setJobLimits: (l) => this.jobs.setLimits(l),
      setProtected: (entries) => void (this.protect.entries = entries),
      protectedJobs: () => this.jobs.list().filter((j) => this.protect.check(j.host) !== null),
      endProtectedJob: (id) => this.jobs.cancelById(id, 'protected'),
      setServerLimits: (l) => this.server?.setLimits(l),
      setActivity: (c) => this.activity.configure(c),
    }, this.o.config, loaded.config, loaded.protectedEntries);
    this.o.config = out.config;
    this.reloads.apply();
    this.notifier?.notify('READY=1');
    this.log.info({ config: loaded.source ?? '(defaults: no file)', applied: out.applied, needRestart: out.needRestart, ended: out.ended }, 'configuration reloaded');
    if (out.applied.includes('logLevel')) setLogLevel?.(out.config.logLevel);
    return out;
  }

  /**
   * A reload refused (the file did not validate; the caller logged why at
   * error): counted, and a config fault in status until a reload applies.
   */
  reloadRefused(message: string): void {
    if (!this.stopping) this.reloads.refuse(message);
  }

  /**
   * Attach to every watched interface (config watch + --watch) now and for
   * the daemon's life. A data plane that cannot load is the usual
   * E_DATAPLANE fault (logged, in status); a watched interface that cannot
   * be attached yet is an interface fault, retried by the data plane. The
   * daemon serves either way.
   */
  /**
   * The start-up check of bpf() (libbpf.ts probeBpfMapCreate: one map
   * created and closed). Refused: the data-plane 'load' fault in status and
   * an error record at start (DataPlaneHealth.refusedAtStart); the daemon
   * serves anyway, and a later load that works clears the fault. It loads
   * libbpf's binding (koffi), not the enforcer.
   */
  private async probeBpf(): Promise<void> {
    try {
      const L = await import('../native/libbpf.js');
      const r = L.probeBpfMapCreate();
      if (r < 0) {
        const { lastError } = await import('../native/libc.js');
        this.dataPlaneHealth.refusedAtStart(lastError('bpf(BPF_MAP_CREATE) start-up check', undefined, -r));
      }
    } catch (err) {
      this.log.warn({ err }, 'start-up check of bpf() could not run: a data plane problem shows at the first job');
    }
  }

  private async startWatching(): Promise<void> {
    const watch = this.o.config.watch;
    if (watch.length === 0) return;
    await this.loadDataPlane();
    let e: Enforcer;
    try {
      e = this.dataPlaneHealth.guard('load', () => this.openEnforcer());
    } catch (err) {
      this.log.error({ err, watch }, 'watched interfaces not attached: the data plane cannot load');
      return;
    }
    for (const ifname of watch) {
      const r = e.watch(ifname);
      if (r.attached) this.log.info({ ifname }, 'watching interface: XDP attached until the daemon stops');
      else this.log.warn({ ifname, error: r.error }, 'watched interface not attached yet: retried while the daemon runs');
    }
    await this.dataPlaneReady();
  }

  private openEnforcer(): Enforcer {
    if (this.enforcer) return this.enforcer;
    const open = this.o.openEnforcer ?? ((log: LogSink) => {
      if (!this.enforcerModule) {
        throw new TcpresetError('E_INTERNAL', `the data plane is unavailable: ${(this.enforcerLoadError as Error)?.message ?? 'not loaded'}`, {
          cause: this.enforcerLoadError,
        });
      }
      return this.enforcerModule.Enforcer.open({
        logger: log, maxTargets: Math.max(this.o.config.maxJobs, 1), eventSpinUs: this.o.config.eventSpinUs,
        eventNice: this.o.config.eventNice, eventThreads: this.o.config.eventThreads, eventKeepWarmMs: this.o.config.eventKeepWarmMs,
        eventRtPriority: this.o.config.eventRtPriority,
        flowMemory: this.o.config.flowMemory,
        tunnelPorts: this.o.config.tunnelPorts, parseWindowMs: this.o.config.parseCheckSec * 1000,
        xdpAttach: this.o.config.xdpAttach,
      });
    });
    const e = open(this.log);
    // Listeners run inside the Enforcer's ring-buffer and timer callbacks: a
    // bug here must be logged, never thrown into the data plane.
    e.on('flow-reset', (f: FlowResetInfo) => this.guard('flow-reset', () => this.activity.onFlowReset(f)));
    // The Enforcer logs the interface; these lines name the jobs it suspends and resumes.
    e.on('fault', (f: InterfaceFault) => this.guard('fault', () => {
      this.log.warn({ ifname: f.ifname, role: f.role, fault: f.fault, ...this.jobsOn(f.ifname, f.role) }, 'jobs not enforced: interface fault');
    }));
    e.on('recovered', (f: Omit<InterfaceFault, 'fault'>) => this.guard('recovered', () => {
      this.log.info({ ifname: f.ifname, role: f.role, downMs: Date.now() - f.since, ...this.jobsOn(f.ifname, f.role) }, 'jobs enforced again: interface back');
    }));
    this.enforcer = e;
    this.log.info({}, 'data plane opened');
    return e;
  }

  private registry: Registry | undefined;

  /** The metrics registry (metrics.ts, prom-client), made on first need. */
  private async metricsRegistry(): Promise<Registry> {
    if (!this.registry) {
      const m = await import('./metrics.js');
      this.registry ??= m.createRegistry({
        status: () => this.status(), jobs: () => this.jobs.list(), latency: () => this.enforcer?.reactionLatency() ?? null,
      }, this.jobEvents);
    }
    return this.registry;
  }

  /** Prometheus exposition (metrics.ts), loaded only when configured. */
  private async startMetrics(): Promise<void> {
    const c = this.o.config;
    if (!c.metricsListen && !c.metricsTextfile) return;
    const m = await import('./metrics.js');
    const reg = await this.metricsRegistry();
    this.metrics = new m.MetricsExporter(reg, { listen: c.metricsListen, textfile: c.metricsTextfile, intervalSec: c.metricsIntervalSec, log: this.log });
    await this.metrics.start();
  }

  /** Wait for the event thread; a thread that cannot start is logged (its restarts are the Enforcer's). */
  private async dataPlaneReady(): Promise<void> {
    if (!this.enforcer) return;
    try {
      await this.enforcer.ready();
    } catch (err) {
      this.log.error({ err }, 'event thread failed to start');
    }
  }

  /** The jobs that need `ifname` in `role` (ids capped for the log line). */
  private jobsOn(ifname: string, role: IfaceRole): { jobs: number; jobIds: string[] } {
    const ids = this.jobs.list().filter((j) => (role === 'sniff' ? j.sniffIf : j.resetIf) === ifname).map((j) => j.id);
    return { jobs: ids.length, jobIds: ids.slice(0, 100) };
  }

  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err, event: what }, 'data plane event handler failed');
    }
  }

  private statusLine(): string {
    const n = this.jobs.size;
    return `${n} job${n === 1 ? '' : 's'} active`;
  }

  /** The uid of the client whose create is in progress (jobs.create runs synchronously inside it), else null. */
  private creatingUid: number | null = null;

  private onJobsChanged(change: JobChange): void {
    // A new job's first journal record carries its creator (state.ts asks History), so a restart keeps it.
    if (change.op === 'put' && this.history.creatorOf(change.rec.id) === undefined) this.history.noteCreator(change.rec.id, this.creatingUid);
    this.jobEvents.onChange(change, () => this.jobs.list().map((j) => j.id));
    if (change.op === 'del' && change.job) this.history.ended(change.job, change.why);
    this.notifier?.status(this.statusLine());
    // Every change is journaled; failures are reported by the caller that awaits it.
    this.store.record(change);
  }

  /** Wait for the state file to hold the current jobs; a warning when it cannot. */
  private async persisted(): Promise<string[]> {
    const r = await this.store.save();
    return r.ok ? [] : [`the job change is in force but could not be saved to ${this.store.path} (${r.error.message}); it will not survive a daemon restart`];
  }

  async handle(req: Request, peer: Peer): Promise<unknown> {
    // The control server starts a connection's next request while the previous one is still
    // in progress. The first create waits here for the data plane code before it applies, so
    // a pipelined status, list or cancel behind it waits too, and sees its job (it resumes first).
    if (this.dataPlaneLoading && !this.enforcerModule && !this.enforcerLoadError && req.op !== 'create') await this.dataPlaneLoading;
    switch (req.op) {
      case 'version':
        return { version: this.version };
      case 'status':
        return this.status();
      case 'metrics':
        return { text: await (await this.metricsRegistry()).metrics() };
      case 'history':
        return { records: this.history.read(req.since ?? 0), enabled: this.history.enabled };
      case 'list':
        return { jobs: markFaults(this.jobs.list(), this.enforcer?.status().faults ?? []) };
      case 'create': {
        await this.loadDataPlane();
        this.enforcer?.takeSweep(); // a restore's or an earlier request's is not this one's
        let created: ReturnType<JobManager['create']>;
        this.creatingUid = peer.uid;
        try {
          created = this.jobs.create({
            engid: req.engid, sniffIf: req.sniffIf, resetIf: req.resetIf, host: req.host, port: req.port ?? null,
            duration: req.duration, mode: req.mode,
          });
        } finally {
          this.creatingUid = null;
        }
        const sweep = this.enforcer?.takeSweep();
        // previousExpiresAt is for the history only; the response's shape is the protocol's CreateResult.
        const { previousExpiresAt, ...answer } = created;
        let r: typeof answer & { flows?: CreateResult['flows'] } = sweep ? { ...answer, flows: { known: sweep.flows, reset: sweep.flows } } : answer;
        if (r.action === 'created') this.history.created(r.job, peer.uid);
        else this.history.recreated({ action: r.action, job: r.job, ...(r.switched ? { switched: r.switched } : {}) }, previousExpiresAt!, peer.uid);
        // "created" means enforced: the first job of a daemon also starts its event thread.
        await this.dataPlaneReady();
        if (req.wait !== undefined && sweep && this.enforcer) {
          // The probes' answers cross the mirror after the RSTs: wait for them, bounded by the request.
          const o = await this.enforcer.verification(sweep.targetId, req.wait * 1000);
          if (o) r = { ...r, flows: { known: o.known, reset: o.reset, verified: o.verified, unverified: o.unverified } };
        }
        const warnings = await this.persisted();
        // -p names HOST's peer's port; HOST has sessions on its own port -p instead (Sweeper.ownPort): not silent.
        if (sweep?.warning) warnings.push(sweep.warning);
        if (r.job.mode === 'l3') {
          const w = this.enforcer?.hostRouteWarning(r.job.resetIf, req.host);
          if (w) warnings.push(`${w} (the job is in force; RSTs to ${r.job.host} are counted as undeliverable until then)`);
        }
        return warnings.length ? { ...r, warnings } : r;
      }
      case 'cancel': {
        const job: Job = 'jobId' in req
          ? this.jobs.cancelById(req.jobId)
          : this.jobs.cancelByIdentity({ engid: req.engid, sniffIf: req.sniffIf, host: req.host, port: req.port ?? null });
        const warnings = await this.persisted();
        return warnings.length ? { job, warnings } : { job };
      }
      default:
        throw new TcpresetError('E_USAGE', `unknown op ${JSON.stringify((req as { op: unknown }).op)}`);
    }
  }

  /** The status answer (status.ts). */
  status(): StatusResult {
    return buildStatus({
      version: this.version,
      pid: process.pid,
      startedAt: this.startedAt,
      now: Date.now(),
      enforcer: this.enforcer?.status(),
      // Counted per interface group, not from a view of every job (O(jobs) allocation at 100,000 jobs).
      usage: this.jobs.usage(),
      watch: this.o.config.watch,
      dataPlaneFault: this.dataPlaneHealth.view(),
      dataPlaneFailures: this.dataPlaneHealth.failures,
      state: this.store.stats(),
      config: this.reloads.status(),
      history: this.history.enabled ? this.history.status() : undefined,
      metrics: this.metrics?.status(),
      connections: this.server?.connections ?? 0,
      requests: this.server?.requests ?? 0,
      memory: process.memoryUsage(),
    });
  }

  /**
   * Orderly stop: tell systemd, stop accepting (requests in progress are
   * answered), stop the timers, save the jobs with their current counters
   * (before the data plane goes: counters live there), detach XDP and close
   * the data plane. Idempotent.
   */
  shutdown(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info({ reason, jobs: this.jobs.size }, 'shutting down');
      this.notifier?.stopping();
      await this.server?.close().catch((err: unknown) => this.log.error({ err }, 'closing the control socket failed'));
      await this.metrics?.close().catch((err: unknown) => this.log.error({ err }, 'closing the metrics listener failed'));
      this.activity.summarize();
      this.activity.stop();
      this.jobs.close();
      // A daemon refused at start (the directory is another's) must not overwrite that one's jobs.json.
      if (this.stateOwned) {
        // One snapshot with the counters as they are now (the journal has them as of each job's last change).
        const saved = await this.store.compact();
        await this.store.close();
        if (saved.ok) this.log.info({ path: this.store.path, jobs: this.jobs.size }, 'jobs saved');
      }
      try {
        await this.enforcer?.close();
      } catch (err) {
        this.log.error({ err }, 'closing the data plane failed');
      }
      this.history.flush();
      this.history.close();
      if (this.history.status().unwritten) this.log.error({ ...this.history.status() }, 'job history: records the disk refused are lost with this stop');
      this.stateLock?.release();
      this.log.info({}, 'stopped');
    })();
    return this.stopping;
  }
}

/**
 * Jobs as listed, each marked with the fault of an interface it needs while
 * the data plane reports one (enforcement on it is suspended; the data plane
 * resumes it by itself when the interface is back).
 */
function markFaults(jobs: Job[], faults: readonly InterfaceFault[]): Job[] {
  if (faults.length === 0) return jobs;
  // Undeliverable destinations are the affected jobs' own fault (set by the job manager), not every job's on the interface.
  // So are MPTCP connections reset without keys (mptcp.ts): the interface itself is fine.
  const byIface = new Map(faults.filter((f) => f.kind !== 'undeliverable' && f.kind !== 'mptcp').map((f) => [`${f.role}/${f.ifname}`, f]));
  return jobs.map((j) => {
    if (j.fault !== undefined) return j;
    const f = byIface.get(`sniff/${j.sniffIf}`) ?? byIface.get(`reset/${j.resetIf}`);
    return f ? { ...j, fault: `${f.role} interface ${f.ifname}: ${f.fault} (since ${new Date(f.since).toISOString()})` } : j;
  });
}

