/**
 * Prometheus metrics (text exposition format 0.0.4, through prom-client):
 * served over HTTP at /metrics (config metricsListen) and/or written to a
 * node_exporter textfile (metricsTextfile), both off by default. Values are
 * read from the daemon at scrape time, so a scrape costs one status() and
 * one walk of the job table and nothing is counted twice.
 *
 * Names follow the field's conventions: the tcpreset_ prefix, _total for
 * counters, labels only where the set is bounded (interfaces, the live jobs,
 * at most MAX_JOB_SERIES of them).
 */
import http from 'node:http';
import { renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { LATENCY_BOUNDS_US } from '../dataplane/event-wire.js';
import type { LatencyHistogram } from '../dataplane/types.js';
import type { JobEventCounts } from './job-events.js';
import type { LogSink } from '../core/model.js';
import type { Job } from '../control/protocol.js';

/** Per-job series are exported for this many live jobs at most (the oldest first); the rest are in the global counters. */
export const MAX_JOB_SERIES = 1000;

/** What the daemon's status() returns, as far as the metrics read it. */
export interface StatusView {
  jobs: number;
  counters: Record<string, number>;
  ring: { records: number; wakeups: number; fifoDemotions?: number };
  /** Per reset interface and mode since the daemon started (Enforcer resetTotals): never decreasing. */
  resetTotals: { ifname: string; mode: string; sent: number; errors: number; rsts: number; probes: number; sweepErrors: number; refused?: number }[];
  interfaces: { ifname: string; role: string; mode: string; up: boolean; fault?: string }[];
  dataPlane: string;
  dataPlaneFailures: number;
  history?: { unwritten: number; writeFailures: number; lost: number };
  metrics?: { textfileFailures?: number };
  /** Configuration reloads since start (status config.reloads). */
  config?: { reloads: { applied: number; refused: number } };
  /** Create-time sweeps since start (Enforcer): connections found open (known) and of those verified dead. */
  sweep?: { known: number; verified: number };
  /** Flows reset since start (Enforcer flowsReset). */
  flowsReset?: number;
}

export interface MetricsSource {
  status(): StatusView;
  jobs(): Job[];
  /** The event threads' reaction latency histogram; null while the data plane is not open (all zero). */
  latency(): LatencyHistogram | null;
}

type HistogramValues = Awaited<ReturnType<Histogram['get']>>;

/**
 * A prom-client Histogram whose counts are read at scrape time instead of
 * observed: the event threads keep them in shared memory (event-wire.ts
 * LATENCY_*), since they cannot call prom-client (other threads) and a
 * message per event is a cost the hot path must not pay. get() builds the
 * usual _bucket (cumulative, le in seconds), _sum and _count samples from
 * one read, and the registry formats them as any histogram's; _count is the
 * sum of the buckets, so +Inf always equals _count.
 */
class ReadHistogram extends Histogram {
  constructor(
    reg: Registry,
    private readonly metricName: string,
    private readonly helpText: string,
    private readonly read: () => LatencyHistogram | null,
  ) {
    super({ name: metricName, help: helpText, buckets: LATENCY_BOUNDS_US.map((us) => us / 1e6), registers: [reg] });
  }

  override async get(): Promise<HistogramValues> {
    const h = this.read();
    const n = LATENCY_BOUNDS_US.length;
    const name = this.metricName;
    const bucket = `${name}_bucket`;
    const values: HistogramValues['values'] = [];
    let count = 0;
    for (let i = 0; i < n; i++) {
      count += h?.counts[i] ?? 0;
      values.push({ metricName: bucket, labels: { le: LATENCY_BOUNDS_US[i] / 1e6 }, value: count });
    }
    count += h?.counts[n] ?? 0;
    values.push(
      { metricName: bucket, labels: { le: '+Inf' }, value: count },
      { metricName: `${name}_sum`, labels: {}, value: (h?.sumUs ?? 0) / 1e6 },
      { metricName: `${name}_count`, labels: {}, value: count },
    );
    // MetricType is a type-only enum in prom-client's typings (index.js exports no MetricType).
    const type = 'histogram' as unknown as HistogramValues['type'];
    return { name, help: this.helpText, type, values, aggregator: 'sum', collect: () => undefined };
  }

  /** What the registry calls when it formats (prom-client registry.js), when a metric has it. */
  getForPromString(): Promise<HistogramValues> {
    return this.get();
  }
}

/** The data plane's counters (bpf/contract.ts COUNTER_NAMES) under their exported names. */
const DATAPLANE: Record<string, [string, string]> = {
  packets: ['tcpreset_packets_total', 'Packets the XDP program saw on the sniff interfaces.'],
  tcp: ['tcpreset_tcp_packets_total', 'TCP segments among them.'],
  matched: ['tcpreset_matched_packets_total', 'Segments that matched a job.'],
  events: ['tcpreset_events_total', 'Events sent to user space through the ring buffers.'],
  lost: ['tcpreset_events_lost_total', 'Events lost because a ring buffer was full (ring drops).'],
  suppressed: ['tcpreset_events_suppressed_total', 'Matching segments not sent up: nothing new since the last event of the flow.'],
  rstSeen: ['tcpreset_rst_seen_total', 'RST segments seen on matched flows (ours or the endpoints\').'],
  expired: ['tcpreset_targets_expired_total', 'Matches dropped because their target had passed its end time in the kernel.'],
  fmNew: ['tcpreset_flow_memory_new_total', 'Connections entered into the flow memory.'],
  fmEvicted: ['tcpreset_flow_memory_evicted_total', 'Open connections the flow memory forgot to make room.'],
};

function counter(reg: Registry, name: string, help: string, labelNames: string[], fill: (c: Counter<string>) => void): void {
  new Counter({
    name, help, labelNames, registers: [reg],
    collect() {
      this.reset();
      fill(this);
    },
  });
}

function gauge(reg: Registry, name: string, help: string, labelNames: string[], fill: (g: Gauge<string>) => void): void {
  new Gauge({
    name, help, labelNames, registers: [reg],
    collect() {
      this.reset();
      fill(this);
    },
  });
}

/** A registry whose every metric is read from `src` (and `events`) at scrape time. */
export function createRegistry(src: MetricsSource, events: JobEventCounts): Registry {
  const reg = new Registry();
  let st: StatusView | undefined;
  let jobs: Job[] | undefined;
  // One status() and one job walk per scrape, shared by every metric's collect().
  const status = (): StatusView => (st ??= src.status());
  const liveJobs = (): Job[] => (jobs ??= src.jobs().slice(0, MAX_JOB_SERIES));
  const origMetrics = reg.metrics.bind(reg);
  reg.metrics = async () => {
    st = undefined;
    jobs = undefined;
    return origMetrics();
  };

  gauge(reg, 'tcpreset_jobs', 'Jobs in force.', [], (g) => g.set(status().jobs));
  counter(reg, 'tcpreset_jobs_created_total', 'Jobs created (an extension of a running job is not a new one).', [], (c) => c.inc(events.created));
  counter(reg, 'tcpreset_jobs_ended_total', 'Jobs ended, by how, as tcpreset history words it: expired (also a saved job whose end passed while the daemon was stopped, counted at the restart), cancelled, protected (a configuration reload protected the host), or restart (a saved job the restarted daemon did not restore: its host is protected now, or its record is invalid).', ['how'], (c) => {
    c.inc({ how: 'expired' }, events.expired);
    c.inc({ how: 'cancelled' }, events.cancelled);
    c.inc({ how: 'protected' }, events.protected);
    c.inc({ how: 'restart' }, events.restart);
  });
  for (const [key, [name, help]] of Object.entries(DATAPLANE)) {
    counter(reg, name, help, [], (c) => c.inc(Number(status().counters[key] ?? 0)));
  }
  // From the data plane's lifetime totals: a reset interface's series stay (and keep their value) after its last job ends.
  const resets = (): StatusView['resetTotals'] => status().resetTotals ?? [];
  counter(reg, 'tcpreset_rsts_sent_total', 'RSTs sent, per reset interface, injection mode and kind: "event" (answering a segment the XDP program sent up) or "sweep" (a create-time sweep of the flow memory).', ['ifname', 'mode', 'kind'], (c) => {
    for (const x of resets()) {
      c.inc({ ifname: x.ifname, mode: x.mode, kind: 'event' }, x.sent);
      c.inc({ ifname: x.ifname, mode: x.mode, kind: 'sweep' }, x.rsts);
    }
  });
  counter(reg, 'tcpreset_rsts_undeliverable_total', 'RSTs of the event path and the create-time sweeps that did not leave their reset interface, per interface, mode and reason: "refused" (not sent: the interface cannot deliver them, no route in l3, a next hop failing address resolution, or no MACs in l2; the jobs\' UNDELIVERABLE in tcpreset list, kept after they end) or "send_error" (the event threads\' sendmmsg failed).', ['ifname', 'mode', 'reason'], (c) => {
    for (const x of resets()) {
      c.inc({ ifname: x.ifname, mode: x.mode, reason: 'refused' }, x.refused ?? 0);
      c.inc({ ifname: x.ifname, mode: x.mode, reason: 'send_error' }, x.errors);
    }
  });
  counter(reg, 'tcpreset_sweep_probes_sent_total', 'Out-of-window ACK probes the create-time sweeps sent (first probes and re-probes), per reset interface and mode.', ['ifname', 'mode'], (c) => {
    for (const x of resets()) c.inc({ ifname: x.ifname, mode: x.mode }, x.probes);
  });
  counter(reg, 'tcpreset_sweep_send_errors_total', 'Sweep packets (RSTs and probes) the kernel refused to send, per reset interface and mode.', ['ifname', 'mode'], (c) => {
    for (const x of resets()) c.inc({ ifname: x.ifname, mode: x.mode }, x.sweepErrors);
  });
  counter(reg, 'tcpreset_ring_records_total', 'Ring buffer records the event threads read.', [], (c) => c.inc(Number(status().ring.records ?? 0)));
  counter(reg, 'tcpreset_ring_wakeups_total', 'Event thread wake-ups.', [], (c) => c.inc(Number(status().ring.wakeups ?? 0)));
  counter(reg, 'tcpreset_event_thread_fifo_demotions_total', 'Times a SCHED_FIFO event thread went back to SCHED_OTHER (eventNice) because a flood kept it busy (2 ms without sleeping, or over half of 10 ms), until 10 ms passed without a segment: reactions then take milliseconds (status ring.fifoDemotions; a warning is logged). Since the data plane opened.', [], (c) => c.inc(Number(status().ring.fifoDemotions ?? 0)));
  gauge(reg, 'tcpreset_xdp_attached', 'XDP program attached to a sniff interface (1), with its mode.', ['ifname', 'mode'], (g) => {
    for (const i of status().interfaces) if (i.role === 'sniff' && i.mode !== 'detached') g.set({ ifname: i.ifname, mode: i.mode }, 1);
  });
  gauge(reg, 'tcpreset_interface_fault', 'An interface in use has a fault (1: the FAULT tcpreset status shows on any of its rows, e.g. missing, down, RSTs undeliverable from it, traffic unreadable) or none (0).', ['ifname', 'role'], (g) => {
    const fault = new Map<string, number>();
    for (const i of status().interfaces) {
      const k = `${i.role}/${i.ifname}`;
      fault.set(k, Math.max(fault.get(k) ?? 0, i.up && i.fault === undefined ? 0 : 1));
    }
    for (const i of status().interfaces) g.set({ ifname: i.ifname, role: i.role }, fault.get(`${i.role}/${i.ifname}`)!);
  });
  gauge(reg, 'tcpreset_dataplane_up', 'The data plane loads (1), or its last load failed (0): see tcpreset status.', [], (g) => g.set(status().dataPlane === 'fault' ? 0 : 1));
  counter(reg, 'tcpreset_dataplane_failures_total', 'Failed loads of the BPF program and failed target changes (E_DATAPLANE).', [], (c) => c.inc(status().dataPlaneFailures));
  counter(reg, 'tcpreset_history_write_failures_total', 'Failed writes of the job history file (e.g. a full disk); its records wait in memory.', [], (c) => c.inc(status().history?.writeFailures ?? 0));
  gauge(reg, 'tcpreset_history_unwritten_records', 'Job history records waiting in memory for the disk (0 when the file takes them).', [], (g) => g.set(status().history?.unwritten ?? 0));
  counter(reg, 'tcpreset_history_records_lost_total', 'Job history records dropped because more waited for the disk than memory holds.', [], (c) => c.inc(status().history?.lost ?? 0));
  counter(reg, 'tcpreset_config_reloads_total', 'Configuration reloads (SIGHUP, systemctl reload) since the daemon started, by result: "applied" (the file validated) or "refused" (it did not: the running configuration stays, and tcpreset status shows a config FAULT until a reload is applied).', ['result'], (c) => {
    c.inc({ result: 'applied' }, status().config?.reloads.applied ?? 0);
    c.inc({ result: 'refused' }, status().config?.reloads.refused ?? 0);
  });
  counter(reg, 'tcpreset_metrics_textfile_failures_total', 'Failed writes of the metrics textfile (metricsTextfile); the last error is in tcpreset status.', [], (c) => c.inc(status().metrics?.textfileFailures ?? 0));
  const perJob = (name: string, help: string, pick: (j: Job) => number): void =>
    counter(reg, name, help, ['job_id', 'engid'], (c) => {
      for (const j of liveJobs()) c.inc({ job_id: j.id, engid: j.engid }, pick(j));
    });
  counter(reg, 'tcpreset_flows_reset_total', 'Connections reset, by the event path or a create-time sweep, each counted once per job (as the job\'s flows in tcpreset list). Since the daemon started; it keeps counting past the end of the jobs.', [], (c) => c.inc(status().flowsReset ?? 0));
  counter(reg, 'tcpreset_flows_verified_total', 'Connections a create-time sweep reset and then verified dead: both ends answered an out-of-window ACK probe with a RST (RFC 793 section 3.4), as the job\'s verified in tcpreset list. Since the daemon started.', [], (c) => c.inc(status().sweep?.verified ?? 0));
  new ReadHistogram(reg, 'tcpreset_reaction_latency_seconds',
    'Reaction latency of the event path, seconds: from the XDP program\'s timestamp of a matching segment (bpf_ktime_get_ns) to the return of the sendmmsg that sent its RSTs, one observation per segment with at least one RST sent (create-time sweeps are not in it). Since the data plane opened.',
    () => src.latency());
  perJob('tcpreset_job_matched_total', `Segments that matched the job (live jobs, at most ${MAX_JOB_SERIES}).`, (j) => j.counters.matched);
  perJob('tcpreset_job_rsts_sent_total', `RSTs sent for the job (live jobs, at most ${MAX_JOB_SERIES}).`, (j) => j.counters.rstsSent);
  perJob('tcpreset_job_flows_total', `Flows the job reset (live jobs, at most ${MAX_JOB_SERIES}).`, (j) => j.counters.flows);
  collectDefaultMetrics({ register: reg, prefix: 'tcpreset_' });
  return reg;
}

/** The HTTP listener and the textfile writer. Failures are logged and kept for status; the daemon runs on. */
export class MetricsExporter {
  private server: http.Server | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The listener's or the textfile's last failure, for status. */
  error: string | null = null;
  /** Scrapes answered and textfile writes done. */
  scrapes = 0;
  writes = 0;
  /** Failed textfile writes (daemon lifetime). */
  textfileFailures = 0;
  private textfileFailing = false;

  constructor(
    private readonly reg: Registry,
    private readonly o: { listen: string; textfile: string; intervalSec: number; log: LogSink },
  ) {}

  async start(): Promise<void> {
    if (this.o.listen) await this.listen();
    if (this.o.textfile) {
      await this.writeTextfile();
      this.timer = setInterval(() => void this.writeTextfile(), this.o.intervalSec * 1000);
      this.timer.unref();
    }
  }

  private async listen(): Promise<void> {
    const i = this.o.listen.lastIndexOf(':');
    const host = this.o.listen.slice(0, i).replace(/^\[|\]$/g, '');
    const port = Number(this.o.listen.slice(i + 1));
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('tcpreset: metrics are at /metrics\n');
        return;
      }
      this.reg.metrics().then((text) => {
        this.scrapes++;
        res.writeHead(200, { 'content-type': this.reg.contentType }).end(text);
      }, (err: unknown) => {
        this.o.log.error({ err }, 'metrics scrape failed');
        res.writeHead(500).end();
      });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 10_000;
    await new Promise<void>((resolve) => {
      server.once('error', (err) => {
        this.error = `cannot listen on ${this.o.listen}: ${err.message}`;
        this.o.log.error({ err, listen: this.o.listen }, `metrics: ${this.error}`);
        resolve();
      });
      server.listen({ host, port }, () => {
        this.server = server;
        this.o.log.info({ listen: this.o.listen }, 'metrics listening');
        resolve();
      });
    });
  }

  /** Write the textfile atomically: a reader (node_exporter) sees the old file or the new one. */
  async writeTextfile(): Promise<void> {
    const tmp = `${this.o.textfile}.tmp-${process.pid}`;
    try {
      writeFileSync(tmp, await this.reg.metrics(), { mode: 0o644 });
      renameSync(tmp, this.o.textfile);
      this.writes++;
      if (this.textfileFailing) this.o.log.info({ path: this.o.textfile }, 'metrics textfile written again');
      this.textfileFailing = false;
      if (this.error?.startsWith('cannot write')) this.error = null;
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // not created
      }
      this.textfileFailures++;
      this.error = `cannot write ${this.o.textfile}: ${(err as Error).message}`;
      if (!this.textfileFailing) this.o.log.error({ err, path: this.o.textfile }, `metrics: ${this.error}`);
      this.textfileFailing = true;
    }
  }

  status(): object {
    return {
      ...(this.o.listen ? { listen: this.o.listen, listening: this.server !== undefined, scrapes: this.scrapes } : {}),
      ...(this.o.textfile ? { textfile: this.o.textfile, writes: this.writes, textfileFailures: this.textfileFailures } : {}),
      ...(this.error ? { error: this.error } : {}),
    };
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
