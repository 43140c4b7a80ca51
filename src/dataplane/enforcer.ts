/**
 * The Enforcer: the data plane's facade, and its one owner. It keeps a set
 * of timed targets and coordinates the units that each own one part:
 *
 * - targets.ts: one flat record per target (no timer: the job manager owns
 *   expiry, the kernel ignores an entry past its deadline);
 * - slots.ts: the BPF targets map, one entry per key shared by targets;
 * - attachments.ts: XDP on each sniff interface, refcounted;
 * - senders.ts: the reset sockets, refcounted, handed to the event threads;
 * - event-pool.ts / event-path.ts / event-worker.ts: the event threads that
 *   drain the ring buffers and forge and send the RSTs; what they did comes
 *   back here afterwards (onReport) for counters, flow sets and logs;
 * - sweeper.ts: the create-time sweep of remembered connections and its
 *   verification;
 * - delivery-faults.ts (over undeliverable.ts): RSTs that cannot leave the
 *   reset interface, the jobs' delivery faults, the main thread's route check;
 * - mptcp-resets.ts: the other subflows of a reset MPTCP connection;
 * - health.ts: interfaces going down, away and back;
 * - tunnels.ts: extra tunnel ports, and sniff interfaces whose traffic holds no TCP it can read.
 *
 * An event is charged to every live target of its slot, and each distinct
 * reset sender fires once.
 *
 * Trust inside: the daemon's job manager hands add() a Host (core/addr.ts),
 * parsed once by the protocol; the Enforcer checks invariants and parses
 * nothing. Text hosts (tests, the enforcer agent) are parsed here.
 */
import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import {
  MAP_COUNTERS,
  MAP_EVENTS,
  MAP_EVENT_RINGS,
  MAP_FLOWMEM,
  MAP_TARGETS,
  RINGBUF_BYTES,
  RING_SLOTS,
  encapName,
  encodeTargetKey,
  sumCounters,
  type Counters,
} from '../bpf/contract.js';
import { TcpresetError, ValidationError } from '../core/errors.js';
import { BpfObject, numPossibleCpus, type BpfMap } from '../bpf/object.js';
import { FlowMemoryView } from './flow-memory.js';
import { formatIp, parseIp, unmapV4, type Host, type ParsedIp } from '../core/addr.js';
import { Prefilter } from './prefilter.js';
import { EventPool } from './event-pool.js';
import { HIT, HIT_BYTES, type EventReport } from './event-wire.js';
import { Attachments } from './attachments.js';
import { ResetSenders, type SenderLifetime } from './senders.js';
import { InterfaceHealth } from './health.js';
import { SlotTable, type Slot } from './slots.js';
import { Target, binaryKey, flowKeyOf } from './targets.js';
import { ParseWatch, setTunnelPorts } from './tunnels.js';
import { Sweeper } from './sweeper.js';
import { DeliveryFaults } from './delivery-faults.js';
import { MptcpResets, hitSubflow } from './mptcp-resets.js';
import { readInterface } from '../net/ifaces.js';
import type { EnforcerOptions, EnforcerStatus, FlowResetInfo, LatencyHistogram, SweepInfo, SweepOutcome, TargetInfo, TargetSpec } from './types.js';
import type { InjectMode, Family, LogSink } from '../core/model.js';

const noopLogger: LogSink = { info() {}, warn() {}, error() {}, debug() {} };

export class Enforcer extends EventEmitter {
  private readonly obj: BpfObject;
  private readonly countersMap: BpfMap;
  private readonly events: EventPool;
  private readonly slots: SlotTable<Target>;
  private readonly attachments: Attachments;
  private readonly senders: ResetSenders;
  private readonly health: InterfaceHealth;
  /** The XDP program's flow memory, mapped read-only (issue 9). */
  private readonly flowMemory: FlowMemoryView;
  private readonly sweeper: Sweeper;
  private readonly undeliverable: DeliveryFaults;
  private readonly mptcp: MptcpResets;
  private readonly parseWatch: ParseWatch;
  /** Per event thread, as each last reported. */
  private readonly threadStats: { records: number; wakeups: number; stale: number; errors: number; fifoDemotions: number; selfAddressed: number }[];
  private readonly log: LogSink;
  private readonly ncpu: number;
  private readonly targets = new Map<number, Target>();
  private readonly healthTimer: NodeJS.Timeout;
  private nextTargetId = 1;
  private staleEvents = 0;
  /** Flows the targets counted as reset (Target.noteFlow true), by the event path or a sweep, daemon lifetime: the metrics' flows reset. */
  private flowsReset = 0;
  private closed = false;

  private constructor(obj: BpfObject, log: LogSink, opts: EnforcerOptions) {
    super();
    this.obj = obj;
    this.log = log;
    this.countersMap = obj.map(MAP_COUNTERS);
    this.ncpu = numPossibleCpus();
    const threads = opts.eventThreads ?? 1;
    if (!Number.isInteger(threads) || threads < 1 || threads > RING_SLOTS) throw new ValidationError('eventThreads', threads, `must be an integer 1..${RING_SLOTS}`);
    const ringFds = [obj.map(MAP_EVENTS).fd];
    for (let i = 1; i < threads; i++) ringFds.push(obj.createRingBuffer(`events${i}`, RINGBUF_BYTES));
    if (threads > 1) {
      // Empty slots mean the "events" ring; with one thread they stay empty.
      const rings = obj.map(MAP_EVENT_RINGS);
      for (let i = 0; i < RING_SLOTS; i++) rings.update(u32(i), u32(ringFds[i % threads]));
    }
    this.threadStats = ringFds.map(() => ({ records: 0, wakeups: 0, stale: 0, errors: 0, fifoDemotions: 0, selfAddressed: 0 }));
    const nice = opts.eventNice;
    let rtPriority = opts.eventRtPriority ?? 0;
    if (rtPriority > 0 && threads >= availableParallelism()) {
      log.warn({ eventThreads: threads, cpus: availableParallelism(), eventRtPriority: rtPriority },
        'event threads not made SCHED_FIFO: as many threads as CPUs would leave the control thread no CPU under a flood; they run at eventNice');
      rtPriority = 0;
    }
    this.events = new EventPool({
      ringFds, ringBytes: RINGBUF_BYTES, spinUs: opts.eventSpinUs, keepWarmMs: opts.eventKeepWarmMs, nice, rtPriority,
      // SCHED_FIFO is the default, and running at eventNice where it is refused is the documented
      // fallback (e.g. a cgroup with no real-time budget): said at info; a refused nice is a warning.
      onFifoError: (message) => log.info({ eventRtPriority: rtPriority, nice, error: message }, 'event thread not made SCHED_FIFO: it runs at eventNice'),
      onNiceError: (message) => log.warn({ nice, error: message }, 'event thread priority not raised (needs CAP_SYS_NICE, or systemd LimitRTPRIO=/LimitNICE=): first responses may wait behind other work on a loaded sensor'),
      onReport: (r, thread) => this.onReport(r, thread),
      onCrash: (err, restarts, thread) => this.log.error({ err, restarts, thread }, 'event thread died: restarted, enforcement resumed'),
    });
    this.slots = new SlotTable<Target>(obj.map(MAP_TARGETS), new Prefilter(obj), this.events);
    this.attachments = new Attachments(obj, log, { libxdp: opts.xdpAttach === 'libxdp' });
    this.senders = new ResetSenders(this.events, threads);
    this.undeliverable = new DeliveryFaults(log, (ifname) => this.events.forgetDelivery(ifname));
    this.health = new InterfaceHealth(this.attachments, this.senders, log, {
      rekey: (ifname, ifindex) => this.slots.rekey(ifname, ifindex),
      fault: (f) => {
        if (f.role === 'reset') this.undeliverable.forget(f.ifname, this.targets.values());
        this.emit('fault', f);
      },
      recovered: (f) => {
        if (f.role === 'reset') this.undeliverable.forget(f.ifname, this.targets.values());
        this.emit('recovered', f);
      },
    });
    this.flowMemory = new FlowMemoryView(obj.map(MAP_FLOWMEM));
    this.mptcp = new MptcpResets({ flowMemory: this.flowMemory, senders: this.senders, undeliverable: this.undeliverable, log });
    this.sweeper = new Sweeper({
      flowMemory: this.flowMemory, attachments: this.attachments, senders: this.senders, undeliverable: this.undeliverable,
      mptcp: this.mptcp, targets: this.targets, log,
      remembered: () => this.counters().fmNew !== 0n,
      noteFlow: (target, key) => this.noteFlow(target, key),
      emit: (event: string, info: unknown) => this.emit(event, info),
    });
    this.parseWatch = new ParseWatch(obj, this.ncpu, { windowMs: opts.parseWindowMs, warn: (o, m) => log.warn(o, m), info: (o, m) => log.info(o, m) });
    this.healthTimer = setInterval(() => {
      this.health.check();
      this.parseWatch.check(this.attachments.live());
      this.undeliverable.refresh(8); // the sweep's stale verdicts, between sweeps
    }, opts.healthIntervalMs ?? 500);
    this.healthTimer.unref();
  }

  static open(opts: EnforcerOptions = {}): Enforcer {
    const obj = BpfObject.load(opts.objectPath, { maxTargets: opts.maxTargets, flowMemory: opts.flowMemory });
    try {
      if (opts.tunnelPorts) setTunnelPorts(obj, opts.tunnelPorts);
      return new Enforcer(obj, opts.logger ?? noopLogger, opts);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** Resolves once every event thread waits on its ring: a target added before then is answered from that moment. */
  ready(): Promise<void> {
    return this.events.ready();
  }

  add(spec: TargetSpec): TargetInfo {
    this.assertOpen();
    const host = targetHost(spec.host);
    const port = spec.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ValidationError('port', spec.port, 'must be an integer 0..65535');
    if (!Number.isFinite(spec.expiresAt)) throw new ValidationError('expiresAt', spec.expiresAt, 'must be epoch milliseconds');
    const mode: InjectMode = spec.mode ?? 'l3';
    if (mode !== 'l3' && mode !== 'l2') throw new ValidationError('mode', spec.mode, 'must be "l3" or "l2"');

    // Acquire in order (XDP on the sniff side, then the sender), undo in reverse on failure.
    const att = this.attachments.acquire(spec.sniffIf);
    let senderKey: string;
    try {
      senderKey = this.senders.acquire(spec.resetIf, mode);
    } catch (err) {
      this.releaseAttachment(spec.sniffIf);
      throw err;
    }
    // A watched interface that was missing until now: attach at once rather than at the next check.
    if (!att.link) this.health.check();

    const id = this.nextTargetId++;
    const keyBytes = encodeTargetKey({ ifindex: att.ifindex, family: host.family, addr: host.bytes, port });
    let slot: Slot<Target> | undefined;
    let target: Target;
    try {
      slot = this.slots.join(keyBytes, spec.sniffIf);
      // The Host's own canonical string (the job manager's): one copy per job, not two.
      target = new Target(
        id, spec.sniffIf, spec.resetIf, host.canonical, port, mode, host.family,
        spec.expiresAt, spec.label ?? `target-${id}`, slot, senderKey,
      );
      slot.targets.push(target);
      this.slots.sync(slot);
      this.targets.set(id, target);
    } catch (err) {
      if (slot) this.slots.leave(slot, id);
      this.releaseSender(senderKey);
      this.releaseAttachment(spec.sniffIf);
      throw err;
    }
    this.attachments.keep(att);
    // Debug: the job manager's "job created" line names the target; at 100,000 jobs a second line each cost more than the rest of a create.
    this.log.debug({ target: target.info(), xdpMode: att.mode }, 'target added');
    if (spec.sweep !== false) this.sweeper.sweep(target, 'create');
    return target.info();
  }

  /**
   * The sweep the last add() or extend() ran (null: none ran, e.g. the
   * interface is away), once: the create request reports what it found.
   */
  takeSweep(): SweepInfo | null {
    return this.sweeper.take();
  }

  /**
   * Attach to `ifname` now and keep it attached until close(), job or no
   * job, so its connections are remembered before a job names them. An
   * interface that cannot be attached yet (missing, refused) is a fault in
   * status and is attached by the health check as soon as it can be.
   */
  watch(ifname: string): { ifname: string; attached: boolean; error?: string } {
    this.assertOpen();
    const { att, error } = this.attachments.watch(ifname);
    if (error) this.health.check(); // records the fault now, not at the next tick
    return { ifname, attached: att.link !== null, ...(error ? { error: error.message } : {}) };
  }

  extend(id: number, expiresAt: number): TargetInfo {
    this.assertOpen();
    const target = this.targets.get(id);
    if (!target) throw new TcpresetError('E_NOT_FOUND', `no target with id ${id}`, { details: { id } });
    if (!Number.isFinite(expiresAt)) throw new ValidationError('expiresAt', expiresAt, 'must be epoch milliseconds');
    target.expiresAt = expiresAt;
    this.slots.sync(target.slot);
    this.sweeper.sweep(target, 'extend');
    return target.info();
  }

  remove(id: number): boolean {
    const target = this.targets.get(id);
    if (!target) return false;
    this.targets.delete(id);
    this.sweeper.forget(id);
    // The map first: enforcement stops the moment the caller is told it did.
    this.slots.leave(target.slot, id);
    this.releaseSender(target.senderKey);
    this.releaseAttachment(target.sniffIf);
    this.log.info({ targetId: id, label: target.label }, 'target removed');
    return true;
  }

  get(id: number): TargetInfo | undefined {
    const t = this.targets.get(id);
    return t?.info();
  }

  /** A target's counters alone (the job manager's totals for every job of a compaction or a list), without its TargetInfo. */
  targetCounters(id: number): TargetInfo['counters'] | undefined {
    return this.targets.get(id)?.counters();
  }

  list(): TargetInfo[] {
    return [...this.targets.values()].map((t) => t.info());
  }

  counters(): Counters {
    const value = this.countersMap.lookup(new Uint8Array(4));
    if (!value) throw new TcpresetError('E_INTERNAL', 'counters map has no slot 0');
    return sumCounters(value, this.ncpu);
  }

  /** The event threads' reaction latency histogram, read now (no message to them: shared memory). */
  reactionLatency(): LatencyHistogram {
    return this.events.latency();
  }

  status(): EnforcerStatus {
    return {
      attached: this.attachments.live(),
      sweep: this.sweeper.status(),
      flowsReset: this.flowsReset,
      senders: this.senders.status(),
      resetTotals: withRefused(this.senders.lifetime(), this.undeliverable.refusedLifetime()),
      counters: this.counters(),
      ring: {
        records: sum(this.threadStats, 'records'), wakeups: sum(this.threadStats, 'wakeups'),
        stale: this.staleEvents + sum(this.threadStats, 'stale'), errors: sum(this.threadStats, 'errors'), threads: this.threadStats.length,
        fifoDemotions: sum(this.threadStats, 'fifoDemotions'), selfAddressed: sum(this.threadStats, 'selfAddressed'),
        perThread: this.threadStats.map((s) => s.records),
      },
      targets: this.targets.size,
      // Parse faults first: where an interface has both, its own fault is the one shown.
      faults: [...this.undeliverable.faults(), ...this.mptcp.faults(this.targets.values()), ...this.parseWatch.faults(), ...this.health.list()],
      sniff: this.parseWatch.traffic(this.attachments.live()),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.healthTimer);
    this.sweeper.close();
    for (const id of [...this.targets.keys()]) this.remove(id);
    await this.events.stop();
    this.undeliverable.close();
    this.senders.closeAll();
    this.attachments.closeAll();
    this.flowMemory.close();
    this.obj.close();
  }

  // ---- events -------------------------------------------------------------

  /** What the event thread did, after it did it: counters, flow sets and logs. */
  private onReport(r: EventReport, thread: number): void {
    if (r.type === 'stats') {
      const st = this.threadStats[thread];
      const before = st.errors;
      // A demotion is why reaction latency jumps under a flood (ms instead of µs): say so, once per report.
      if (r.fifoDemotions > st.fifoDemotions) {
        this.log.warn({ thread, fifoDemotions: r.fifoDemotions, demoted: r.fifoDemotions - st.fifoDemotions },
          'event thread left SCHED_FIFO: a flood kept it busy (2 ms without sleeping, or over half of 10 ms); it runs at eventNice until 10 ms pass without a segment, so reactions may take milliseconds');
      }
      this.threadStats[thread] = { records: r.records, wakeups: r.wakeups, stale: r.stale, errors: r.errors, fifoDemotions: r.fifoDemotions, selfAddressed: r.selfAddressed };
      // Bounded: a flood of bad records must not become a flood of log lines.
      if (r.errors > before && (before < 10 || Math.floor(before / 10000) !== Math.floor(r.errors / 10000))) {
        this.log.error({ err: r.lastError, recordErrors: r.errors, thread }, 'event handling failed');
      }
      return;
    }
    if (r.type === 'delivery') return this.undeliverable.onVerdict(r.ifname, r.dst, r.reason);
    if (r.type !== 'hits') return;
    this.senders.report(thread, r.senders);
    const dv = new DataView(r.hits);
    const bytes = new Uint8Array(r.hits);
    for (let i = 0; i < r.count; i++) this.onHit(dv, bytes, i * HIT_BYTES, r.at);
  }

  private onHit(dv: DataView, bytes: Uint8Array, o: number, now: number): void {
    const slot = this.slots.get(dv.getUint32(o + HIT.slotId, true));
    if (!slot) {
      // Raced with a removal: the segment was in the ring when the target went away.
      this.staleEvents++;
      return;
    }
    const rsts = dv.getUint8(o + HIT.rsts);
    let flowKey: string | undefined;
    for (const target of slot.targets) {
      // Past its end: the kernel stops matching at the deadline, and the job manager removes it.
      if (target.expiresAt <= now) continue;
      target.hit(now);
      if (rsts === 0) continue;
      const refused = dv.getUint8(o + HIT.undeliverable);
      target.rstsSent += rsts - refused;
      if (refused || target.deliveryFault !== undefined) this.undeliverable.noteHit(target, refused, bytes, o);
      const family = dv.getUint8(o + HIT.family) as Family;
      const alen = family === 4 ? 4 : 16;
      const sport = dv.getUint16(o + HIT.sport, true);
      const dport = dv.getUint16(o + HIT.dport, true);
      flowKey ??= flowKeyOf(binaryKey(bytes, o + HIT.saddr, alen), sport, binaryKey(bytes, o + HIT.daddr, alen), dport);
      if (this.noteFlow(target, flowKey)) {
        const info: FlowResetInfo = {
          targetId: target.id, label: target.label, family,
          src: formatIp(bytes.slice(o + HIT.saddr, o + HIT.saddr + alen)), sport,
          dst: formatIp(bytes.slice(o + HIT.daddr, o + HIT.daddr + alen)), dport,
          firstLatencyUs: Math.round(dv.getFloat32(o + HIT.latencyUs, true)),
          ...(bytes[o + HIT.encap] ? { encap: encapName(bytes[o + HIT.encap]) } : {}),
          ...(bytes[o + HIT.mptcp] ? this.mptcp.connection(target, bytes[o + HIT.mptcp], hitSubflow(bytes, o, alen)) : {}),
        };
        this.emit('flow-reset', info);
      }
    }
  }

  /**
   * For `tcpreset create` in l3 mode: a warning when HOST itself has no
   * route through RESET_IF. The job is still created: its peers are only
   * known later, and a route may be added meanwhile. undefined when fine.
   */
  hostRouteWarning(resetIf: string, host: Host | string): string | undefined {
    // The l3 sender's sockets know the interface's index (kept current by health.ts): reading
    // it from sysfs was four file reads per create.
    const ifindex = this.senders.get(`${resetIf}/l3`)?.sockets?.ifindex ?? readInterface(resetIf)?.ifindex;
    if (ifindex === undefined) return undefined; // the interface checks at receipt report this
    return this.undeliverable.routeProblem(resetIf, ifindex, targetHost(host).bytes) ?? undefined;
  }

  /**
   * The outcome of the target's last sweep (Sweeper.verification): at once
   * when `waitMs` is 0 or it is settled, else once it settles or `waitMs`
   * passes. null: the target had no sweep (interface away, flow memory off).
   */
  verification(targetId: number, waitMs = 0): Promise<SweepOutcome | null> {
    return this.sweeper.verification(targetId, waitMs);
  }

  /**
   * A flow `target` reset (event path or sweep), by its direction-free key
   * (flowKeyOf): true the first time, counted then in the target and in
   * the daemon's flows-reset total.
   */
  private noteFlow(target: Target, key: string): boolean {
    if (!target.noteFlow(key)) return false;
    this.flowsReset++;
    return true;
  }

  // ---- shared resources ----------------------------------------------------

  private releaseAttachment(ifname: string): void {
    if (this.attachments.release(ifname)) this.health.forget(ifname, 'sniff');
  }

  private releaseSender(key: string): void {
    const ifname = key.slice(0, key.lastIndexOf('/'));
    if (this.senders.release(key) && !this.senders.has(ifname)) this.health.forget(ifname, 'reset');
  }

  private assertOpen(): void {
    if (this.closed) throw new TcpresetError('E_INTERNAL', 'enforcer is closed');
  }
}

/**
 * A target's host: a Host as it is (parsed at the daemon's boundary; its
 * bytes must fit its family, a cheap check, not a parse), text parsed
 * strictly (callers outside the daemon). Throws ValidationError.
 */
function targetHost(host: Host | string): ParsedIp {
  if (typeof host !== 'string') {
    if (host.bytes.length !== (host.family === 4 ? 4 : 16)) throw new ValidationError('host', host.canonical, `has ${host.bytes.length} address bytes for IPv${host.family}`);
    return host;
  }
  const parsed = parseIp(host, 'host');
  return unmapV4(parsed) ?? parsed;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function sum<K extends string>(rows: Record<K, number>[], k: K): number {
  let n = 0;
  for (const r of rows) n += r[k];
  return n;
}

/**
 * The senders' lifetime totals with each row's refused RSTs (RSTs the
 * route check kept from leaving: delivery-faults.ts) added as `refused`;
 * a key with refusals but no sender row yet gets a row of its own.
 */
function withRefused(rows: SenderLifetime[], refused: { ifname: string; mode: InjectMode; refused: number }[]): EnforcerStatus['resetTotals'] {
  const out: EnforcerStatus['resetTotals'] = rows.map((r) => ({ ...r, refused: 0 }));
  for (const x of refused) {
    const row = out.find((r) => r.ifname === x.ifname && r.mode === x.mode);
    if (row) row.refused = x.refused;
    else out.push({ ifname: x.ifname, mode: x.mode, sent: 0, errors: 0, rsts: 0, probes: 0, sweepErrors: 0, refused: x.refused });
  }
  return out;
}
