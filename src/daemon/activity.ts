/**
 * What the log says about enforcement. Each reset flow is logged once (the
 * Enforcer emits 'flow-reset' once per new flow per target) with engid, job
 * id and 4-tuple. Per-packet activity is never logged line by line: a
 * periodic summary per job reports the counters when they moved. A flood
 * of new flows (a scan through a target, a SYN flood) is capped at
 * `flowLogLimit` flow lines per job per period; the summary then says how
 * many flows were not logged individually, so the log cannot be used to
 * drown the journal.
 */
import type { FlowResetInfo } from '../dataplane/types.js';
import { MPTCP_NO_KEYS } from '../dataplane/mptcp.js';
import type { Clock, TimerHandle } from './clock.js';
import type { JobRecord } from './jobs.js';
import type { LogSink, JobCounters, EpochMs } from '../core/model.js';

export interface JobSource {
  jobOfTarget(targetId: number): JobRecord | undefined;
  /** Every job whose counters are not all zero, with its totals (jobs that saw nothing cost no allocation). */
  forEachActive(fn: (job: { id: string; engid: string; host: string; port: number | null; expiresAt: number }, counters: JobCounters<EpochMs>) => void): void;
}

export interface ActivityOptions {
  log: LogSink;
  clock: Clock;
  jobs: JobSource;
  intervalMs: number;
  flowLogLimit: number;
  /**
   * Called once per summary with the jobs whose counters moved since the
   * last one (totals, not deltas), when there are any: the service journals
   * them as a counters checkpoint (state.ts), so a kill -9 loses at most
   * one period of counts.
   */
  onMoved?: (moved: { id: string; counters: JobCounters<EpochMs> }[]) => void;
}

interface PerJob {
  logged: number;
  notLogged: number;
  last: JobCounters<EpochMs>;
  /** The MPTCP-without-keys warning was given for this job (once per job: the counter says how many). */
  mptcpWarned?: boolean;
}

export class ActivityLog {
  private readonly o: ActivityOptions;
  private readonly perJob = new Map<string, PerJob>();
  private timer: TimerHandle | undefined;

  constructor(opts: ActivityOptions) {
    this.o = opts;
  }

  start(): void {
    if (this.timer) return;
    this.timer = this.o.clock.setTimer(() => {
      this.timer = undefined;
      this.summarize();
      this.start();
    }, this.o.intervalMs);
  }

  stop(): void {
    if (this.timer) this.o.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  /** New period and cap from a reloaded configuration; a running timer restarts with the new period. */
  configure(c: { intervalMs: number; flowLogLimit: number }): void {
    const running = this.timer !== undefined;
    const periodChanged = c.intervalMs !== this.o.intervalMs;
    this.o.intervalMs = c.intervalMs;
    this.o.flowLogLimit = c.flowLogLimit;
    if (running && periodChanged) {
      this.stop();
      this.start();
    }
  }

  private entry(jobId: string): PerJob {
    let e = this.perJob.get(jobId);
    if (!e) {
      e = { logged: 0, notLogged: 0, last: { matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null } };
      this.perJob.set(jobId, e);
    }
    return e;
  }

  onFlowReset(f: FlowResetInfo): void {
    const job = this.o.jobs.jobOfTarget(f.targetId);
    if (!job) {
      this.o.log.debug({ label: f.label, src: f.src, sport: f.sport, dst: f.dst, dport: f.dport }, 'flow reset for a target that has ended');
      return;
    }
    const e = this.entry(job.id);
    if (f.mptcp === MPTCP_NO_KEYS && !e.mptcpWarned) {
      e.mptcpWarned = true;
      this.o.log.warn(
        {
          engid: job.engid, jobId: job.id, host: job.host, port: job.port,
          flow: { src: f.src, sport: f.sport, dst: f.dst, dport: f.dport, family: f.family },
          fix: 'the subflows are reset but the MPTCP connection stays open: watch the sniff interface (--watch) so that keys are seen in the handshake; a job on every address of both ends stops the data',
        },
        MPTCP_NO_KEYS,
      );
    }
    if (e.logged >= this.o.flowLogLimit) {
      e.notLogged++;
      return;
    }
    e.logged++;
    this.o.log.info(
      {
        engid: job.engid, jobId: job.id, host: job.host, port: job.port,
        flow: { src: f.src, sport: f.sport, dst: f.dst, dport: f.dport, family: f.family },
        firstLatencyUs: Math.round(f.firstLatencyUs),
        ...(f.atCreate ? { atCreate: true } : {}),
        ...(f.encap ? { encap: f.encap } : {}),
        ...(f.mptcp ? { mptcp: f.mptcp } : {}),
        ...(f.mptcpSubflows ? { mptcpSubflows: f.mptcpSubflows } : {}),
      },
      'flow reset',
    );
  }

  /**
   * One line per job whose counters moved (or whose flows were not all
   * logged) since the last summary. Only jobs that saw traffic are visited
   * and remembered: with 100,000 quiet jobs this keeps nothing per job.
   */
  summarize(): number {
    let lines = 0;
    const seen = new Set<string>();
    const movedJobs: { id: string; counters: JobCounters<EpochMs> }[] = [];
    this.o.jobs.forEachActive((job, c) => {
      seen.add(job.id);
      const e = this.entry(job.id);
      const moved = c.matched !== e.last.matched || c.rstsSent !== e.last.rstsSent || c.flows !== e.last.flows;
      if (moved) movedJobs.push({ id: job.id, counters: { ...c } });
      if (moved || e.notLogged > 0) {
        lines++;
        this.o.log.info(
          {
            engid: job.engid, jobId: job.id, host: job.host, port: job.port,
            counters: { matched: c.matched, rstsSent: c.rstsSent, flows: c.flows },
            since: { matched: c.matched - e.last.matched, rstsSent: c.rstsSent - e.last.rstsSent, flows: c.flows - e.last.flows },
            ...(e.notLogged > 0 ? { flowsNotLogged: e.notLogged } : {}),
            remainingMs: Math.max(0, job.expiresAt - this.o.clock.now()),
          },
          'job activity',
        );
      }
      e.last = { ...c };
      e.logged = 0;
      e.notLogged = 0;
    });
    for (const id of this.perJob.keys()) if (!seen.has(id)) this.perJob.delete(id);
    if (movedJobs.length) this.o.onMoved?.(movedJobs);
    return lines;
  }
}
