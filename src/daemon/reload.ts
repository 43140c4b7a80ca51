/**
 * Configuration reload (SIGHUP, the unit's ExecReload): which keys apply to
 * the running daemon and how, which need a restart, and the log lines that
 * say so, one per changed key. Jobs, the data plane and control connections
 * are untouched; a new file that does not validate is refused by the caller
 * before anything here runs, so the running configuration stays whole.
 */
import type { DaemonConfig } from './config.js';
import type { ProtectedEntry } from './protect.js';
import type { InjectMode, LogSink } from '../core/model.js';
import type { ConfigStatus, Job } from '../control/protocol.js';

/**
 * Keys a reload applies. The event thread's settings (eventThreads,
 * eventNice, eventSpinUs, eventKeepWarmMs, eventRtPriority) are fixed when the data plane starts: changing
 * them needs a restart, and so does any key not listed here.
 */
export const LIVE_KEYS: ReadonlySet<keyof DaemonConfig> = new Set<keyof DaemonConfig>([
  'logLevel', 'maxJobs', 'maxDurationSec', 'defaultMode', 'protected',
  'clientIdleTimeoutMs', 'maxClients', 'summaryIntervalMs', 'flowLogLimit',
]);

/** What a reload changes in the running daemon (Daemon implements it). */
export interface ReloadTarget {
  log: LogSink;
  /** Whether the level may follow the file (false when --log-level fixed it). The caller sets it last. */
  logLevelFollowsFile: boolean;
  setJobLimits(l: { maxJobs: number; maxDurationSec: number; defaultMode: InjectMode }): void;
  setProtected(entries: ProtectedEntry[]): void;
  /** Jobs whose host the (new) protected list covers. */
  protectedJobs(): Job[];
  /** End the job as 'protected' (its log line, journal and history record say so, not 'cancelled'). */
  endProtectedJob(id: string): Job;
  setServerLimits(l: { idleTimeoutMs: number; maxClients: number }): void;
  setActivity(c: { intervalMs: number; flowLogLimit: number }): void;
}

export interface ReloadOutcome {
  /** Keys changed and applied. */
  applied: string[];
  /** Keys changed in the file that keep their running value until a restart. */
  needRestart: string[];
  /** Jobs ended because the new protected list covers their host. */
  ended: string[];
  /** The configuration now in force (restart-only keys keep their running values). */
  config: DaemonConfig;
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * Apply `next` (already validated) over `running`. Logs one line per
 * changed key: info when applied, warning when it needs a restart.
 */
export function applyReload(t: ReloadTarget, running: DaemonConfig, next: DaemonConfig, protectedEntries: ProtectedEntry[]): ReloadOutcome {
  const keys = [...new Set([...Object.keys(running), ...Object.keys(next)])] as (keyof DaemonConfig)[];
  const changed = keys.filter((k) => !same(running[k], next[k]));
  const applied: string[] = [];
  const needRestart: string[] = [];
  const config = { ...next } as DaemonConfig;
  for (const k of changed) {
    const from = running[k];
    const to = next[k];
    if (k === 'logLevel' && !t.logLevelFollowsFile) {
      t.log.warn({ key: k, from, to }, `config key ${k} changed to ${JSON.stringify(to)} but --log-level fixes the level: ignored`);
      (config as unknown as Record<string, unknown>)[k] = from;
    } else if (LIVE_KEYS.has(k)) {
      applied.push(k);
      t.log.info({ key: k, from, to }, `config key ${k}: applied`);
    } else {
      needRestart.push(k);
      (config as unknown as Record<string, unknown>)[k] = from;
      t.log.warn({ key: k, from, to }, `config key ${k} changed: restart the daemon to apply it (running with ${JSON.stringify(from)})`);
    }
  }
  const has = (k: keyof DaemonConfig): boolean => applied.includes(k);
  // logLevel is left to the caller, after its summary line (a new level of "warn" would hide it).
  if (has('maxJobs') || has('maxDurationSec') || has('defaultMode')) {
    t.setJobLimits({ maxJobs: config.maxJobs, maxDurationSec: config.maxDurationSec, defaultMode: config.defaultMode });
  }
  if (has('clientIdleTimeoutMs') || has('maxClients')) t.setServerLimits({ idleTimeoutMs: config.clientIdleTimeoutMs, maxClients: config.maxClients });
  if (has('summaryIntervalMs') || has('flowLogLimit')) t.setActivity({ intervalMs: config.summaryIntervalMs, flowLogLimit: config.flowLogLimit });
  const ended: string[] = [];
  if (has('protected')) {
    t.setProtected(protectedEntries);
    // "Never reset" holds for running jobs too: a restart would drop them as well (JobManager.restore).
    for (const job of t.protectedJobs()) {
      try {
        // Logged by the job manager ("job ended: the reloaded configuration protects its host", at warning, with the final counters).
        t.endProtectedJob(job.id);
        ended.push(job.id);
      } catch (err) {
        t.log.error({ err, jobId: job.id }, 'cannot end a job whose host the reloaded configuration protects');
      }
    }
  }
  return { applied, needRestart, ended, config };
}

/**
 * The reloads since start and the last refusal, for status (ConfigStatus)
 * and the metrics (tcpreset_config_reloads_total). A refused reload is
 * otherwise one log line: the operator who ran `systemctl reload` (or sent
 * SIGHUP) would not learn from status that the file on disk is not what
 * runs. The fault stays until a reload is applied.
 */
export class ReloadRecord {
  applied = 0;
  refused = 0;
  private fault: { message: string; file: string; at: string } | null = null;

  /** `file`: the configuration file the daemon reads (--config). */
  constructor(readonly file: string) {}

  /** A reload refused: `message` is the reason as logged (the validation error naming file, key and value); `now` epoch ms. */
  refuse(message: string, now = Date.now()): void {
    this.refused++;
    this.fault = { message, file: this.file, at: new Date(now).toISOString() };
  }

  /** A reload applied: the running configuration is the file's again. */
  apply(): void {
    this.applied++;
    this.fault = null;
  }

  status(): ConfigStatus {
    return { file: this.file, reloads: { applied: this.applied, refused: this.refused }, ...(this.fault ? { fault: { ...this.fault } } : {}) };
  }
}
