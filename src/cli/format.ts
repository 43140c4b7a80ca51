/** Human-readable output of the CLI: one line per result, aligned tables. Pure. */
import type { CancelResult, CreateResult, Job, ListResult, StatusResult } from '../control/protocol.js';

/** ISO time without milliseconds: "2026-11-24T12:00:00Z". */
export function shortIso(iso: string): string {
  return iso.replace(/\.\d+Z$/, 'Z');
}

/** 185000 -> "3m05s"; 3 h and more -> "3h02m"; under a minute -> "42s". */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

function target(job: Job): string {
  const port = job.port === null ? '' : ` port ${job.port}`;
  return `ENGID=${job.engid} host ${job.host}${port} on ${job.sniffIf} -> ${job.resetIf}${job.mode === 'l2' ? ' (l2)' : ''}`;
}

export function formatCreate(r: CreateResult): string {
  const secs = Math.round(r.job.remainingMs / 1000);
  // kept: a shorter -d never shortens a job; say so rather than "extended".
  const kept = r.action === 'kept' ? ': it already ended later than asked' : '';
  const sw = r.switched ? `; switched from ${r.switched.resetIf}${r.switched.mode === 'l2' ? ' (l2)' : ' (l3)'}` : '';
  const line = `${r.action} job ${r.job.id} ${target(r.job)} until ${shortIso(r.job.expiresAt)} (${secs} s)${kept}${sw}\n`;
  if (!r.flows) return line;
  const n = r.flows.known;
  const of = `${r.job.host}${r.job.port === null ? '' : ` port ${r.job.port}`}`;
  // With --wait: "3 sessions of 10.0.0.5 reset, 3 confirmed dead".
  if (r.flows.verified !== undefined) return `${line}${r.flows.reset} session${r.flows.reset === 1 ? '' : 's'} of ${of} reset, ${r.flows.verified} confirmed dead\n`;
  return `${line}${n} remembered session${n === 1 ? '' : 's'} of ${of} reset at once\n`;
}

export function formatCancel(r: CancelResult): string {
  const c = r.job.counters;
  return `cancelled job ${r.job.id} ${target(r.job)} (${c.rstsSent} RSTs sent, ${c.flows} flows reset)\n`;
}

export function table(header: string[], rows: string[][], rightAligned: Set<number> = new Set()): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]) : i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [header, ...rows].map(line).join('\n') + '\n';
}

export function formatList(r: ListResult): string {
  if (r.jobs.length === 0) return 'no jobs\n';
  // The FAULT column appears only when some job is not being enforced.
  const faulty = r.jobs.some((j) => j.fault);
  const undeliv = r.jobs.some((j) => j.counters.undeliverable);
  // KNOWN / VERIFIED: connections the create-time sweeps found, and of those confirmed dead; only once some job has any.
  const swept = r.jobs.some((j) => j.counters.known);
  const header = ['ID', 'ENGID', 'HOST', 'PORT', 'SNIFF', 'RESET', 'MODE', 'REMAINING', 'MATCHED', 'RSTS', 'FLOWS', ...(swept ? ['KNOWN', 'VERIFIED'] : []), ...(undeliv ? ['UNDELIVERABLE'] : []), ...(faulty ? ['FAULT'] : [])];
  const rows = r.jobs.map((j) => [
    j.id,
    j.engid,
    j.host,
    j.port === null ? 'any' : String(j.port),
    j.sniffIf,
    j.resetIf,
    j.mode,
    humanDuration(j.remainingMs),
    String(j.counters.matched),
    String(j.counters.rstsSent),
    String(j.counters.flows),
    ...(swept ? [String(j.counters.known ?? 0), String(j.counters.verified ?? 0)] : []),
    ...(undeliv ? [String(j.counters.undeliverable ?? 0)] : []),
    ...(faulty ? [j.fault ?? ''] : []),
  ]);
  const n = swept ? 13 : 11;
  return table(header, rows, new Set([7, 8, 9, 10, ...(swept ? [11, 12] : []), ...(undeliv ? [n] : [])]));
}

export function formatStatus(r: StatusResult): string {
  const out: string[] = [];
  out.push(`tcpresetd ${r.version}  pid ${r.pid}  up ${humanDuration(r.uptimeMs)}  jobs ${r.jobs}`);
  if (r.interfaces.length === 0) {
    out.push('interfaces: none in use');
  } else {
    out.push('interfaces:');
    const rows = r.interfaces.map((i) => [i.ifname, i.role + (i.watched ? ' (watched)' : ''), i.mode, i.up ? 'up' : 'DOWN', i.fault ?? '']);
    for (const l of table(['IFNAME', 'ROLE', 'MODE', 'STATE', 'FAULT'], rows).trimEnd().split('\n')) out.push(`  ${l}`);
  }
  // Every key the daemon reports, in its order: these two lines are for whoever debugs the data plane.
  const kv = (o: object | undefined): string =>
    Object.entries(o ?? {})
      .map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`)
      .join(' ');
  const f = r.dataPlaneFault;
  if (f) out.push(`data plane: FAULT since ${f.since} (${f.failures} failure${f.failures === 1 ? '' : 's'}): ${f.message}`);
  // Typed as this daemon sends it; a daemon of another version (or a stand-in) may send less, and what is absent is not printed.
  const st = r.state as StatusResult['state'] | undefined;
  if (st?.fault) out.push(`saved jobs: FAULT ${st.fault}; job changes are in force but will not survive a daemon restart`);
  // Absent from a daemon of an older version.
  const cf = (r.config as StatusResult['config'] | undefined)?.fault;
  if (cf) out.push(`config: FAULT reload of ${cf.file} refused at ${cf.at}: ${cf.message}; the running configuration stays`);
  if (r.metrics?.error) out.push(`metrics: FAULT ${r.metrics.error}${r.metrics.textfileFailures ? ` (${r.metrics.textfileFailures} failed textfile write(s))` : ''}`);
  const h = r.history;
  if (h?.fault) out.push(`history: FAULT ${h.fault}; written when the disk takes them`);
  if (h?.lost) out.push(`history: ${h.lost} record(s) lost: more waited for the disk than memory holds`);
  if (st?.droppedAtLoad) out.push(`saved jobs: ${st.droppedAtLoad} torn or corrupt record(s) dropped from the end of ${st.path} at start`);
  out.push(`counters: ${kv(r.counters) || '-'}`);
  out.push(`ring: ${kv(r.ring) || '-'}`);
  if (r.sweep) out.push(`sweeps: sent=${r.sweep.sent} errors=${r.sweep.errors} known=${r.sweep.known} verified=${r.sweep.verified}`);
  for (const s of r.sniff ?? []) {
    out.push(`sniff ${s.ifname}: packets=${s.packets} tcp=${s.tcp} decapsulated=${s.decap}${s.unparsableWindows ? ` windows-without-parsable-tcp=${s.unparsableWindows}` : ''}`);
  }
  return out.join('\n') + '\n';
}

interface HistoryRecordView {
  at: string;
  /** created, extended, kept, switched or ended (history.ts HistoryEvent). */
  event: string;
  how?: string;
  job: { id: string; engid: string; sniffIf: string; resetIf: string; host: string; port: number | null };
  uid: number | null;
  counters?: { matched: number; rstsSent: number; flows: number };
}

/** `tcpreset history`: one line per event, oldest first. */
export function formatHistory(r: { records: HistoryRecordView[]; enabled?: boolean }): string {
  if (r.enabled === false) return 'no history: the daemon keeps none (historyMaxRecords is 0)\n';
  if (r.records.length === 0) return 'no jobs created or ended in that time\n';
  const rows = r.records.map((h) => [
    h.at, h.event === 'ended' ? h.how ?? 'ended' : h.event, h.job.id, h.job.engid,
    h.job.port === null ? h.job.host : h.job.host.includes(':') ? `[${h.job.host}]:${h.job.port}` : `${h.job.host}:${h.job.port}`,
    `${h.job.sniffIf}>${h.job.resetIf}`, h.uid === null ? '-' : String(h.uid),
    h.counters ? String(h.counters.matched) : '', h.counters ? String(h.counters.rstsSent) : '', h.counters ? String(h.counters.flows) : '',
  ]);
  return table(['TIME', 'EVENT', 'JOB', 'ENGID', 'HOST', 'SNIFF>RESET', 'UID', 'MATCHED', 'RSTS', 'FLOWS'], rows);
}
