/**
 * Fixtures of the daemon's unit tests: a log sink that keeps lines, the
 * Enforcer's target bookkeeping without packets, and a JobManager on a
 * stepped clock.
 */
import { ManualClock } from '../../src/daemon/clock.js';
import { JobManager, type JobChecks, type TargetBackend } from '../../src/daemon/jobs.js';
import { TcpresetError } from '../../src/core/errors.js';
import { parseHost } from '../../src/core/addr.js';
import type { TargetInfo, TargetSpec } from '../../src/dataplane/types.js';
import type { LogSink } from '../../src/core/model.js';

export interface Line { level: string; obj: Record<string, unknown>; msg?: string }

export function memLog(): LogSink & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, obj: obj as Record<string, unknown>, msg });
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') };
}

/** Target bookkeeping as the Enforcer exposes it (ids, expiresAt, counters); no packets. */
export class TargetTable implements TargetBackend {
  readonly targets = new Map<number, TargetInfo>();
  private next = 1;
  adds = 0;
  failAdd: Error | null = null;
  add(spec: TargetSpec): TargetInfo {
    if (this.failAdd) throw this.failAdd;
    this.adds++;
    const host = typeof spec.host === 'string' ? spec.host : spec.host.canonical;
    const info: TargetInfo = {
      id: this.next++, sniffIf: spec.sniffIf, resetIf: spec.resetIf, host, port: spec.port ?? 0,
      mode: spec.mode ?? 'l3', expiresAt: spec.expiresAt, label: spec.label ?? '', family: host.includes(':') ? 6 : 4,
      counters: { matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null },
    };
    this.targets.set(info.id, info);
    return { ...info };
  }
  extend(id: number, expiresAt: number): TargetInfo {
    const t = this.targets.get(id);
    if (!t) throw new TcpresetError('E_NOT_FOUND', `no target ${id}`);
    t.expiresAt = expiresAt;
    return { ...t };
  }
  remove(id: number): boolean {
    return this.targets.delete(id);
  }
  get(id: number): TargetInfo | undefined {
    const t = this.targets.get(id);
    return t ? { ...t, counters: { ...t.counters } } : undefined;
  }
  hit(id: number, at: number, packets = 1, rsts = 2): void {
    const c = this.targets.get(id)!.counters;
    c.matched += packets;
    c.rstsSent += rsts;
    c.flows += 1;
    c.firstHitAt ??= at;
    c.lastHitAt = at;
  }
}

export const okChecks: JobChecks = { protectedBy: () => null, interfaces: () => {} };

export function setup(over: Partial<ConstructorParameters<typeof JobManager>[0]> = {}) {
  const clock = new ManualClock();
  const table = new TargetTable();
  const log = memLog();
  let changes = 0;
  const jobs = new JobManager({
    clock, backend: () => table, checks: okChecks, log, maxJobs: 4, maxDurationSec: 86400,
    onChange: () => void changes++, ...over,
  });
  return { clock, table, log, jobs, changes: () => changes };
}

/** A create as parseRequest returns it (the host parsed). */
export const base = { engid: 'ENG1', sniffIf: 'sniff0', resetIf: 'reset0', host: parseHost('198.51.100.7'), duration: 60 };
