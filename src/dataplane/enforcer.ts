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
 *   back here afterwards for counters, flow sets and logs;
 * - health.ts: interfaces going down, away and back;
 * - tunnels.ts: extra tunnel ports, and sniff interfaces whose traffic holds no TCP it can read.
 *
 * An event is charged to every live target of its slot, and each distinct
 * reset sender fires once.
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
import { Sender } from '../net/sender.js';
import { FlowMemoryView, type FlowMatch, type FlowQuery } from './flow-memory.js';
import { planSweep, type SweepPacket } from './flow-sweep.js';
import { TCP_RST, encodeFlowKey, flowClosed, fmHash, type FlowEntry, type FlowKey } from '../bpf/contract.js';
import { formatIp, parseIp, unmapV4 } from '../core/addr.js';
import { Prefilter } from './prefilter.js';
import { EventPool } from './event-pool.js';
import { HIT, HIT_BYTES, type EventReport } from './event-wire.js';
import { Attachments } from './attachments.js';
import { ResetSenders } from './senders.js';
import { InterfaceHealth } from './health.js';
import { SlotTable, type Slot } from './slots.js';
import { Target } from './targets.js';
import { ParseWatch, setTunnelPorts } from './tunnels.js';
import { Delivery } from './delivery.js';
import { UndeliverableDestinations } from './undeliverable.js';
import { HIT_MP_FASTCLOSE, HIT_MP_NO_KEYS, MPTCP_NO_KEYS, MptcpDirectory, hitMptcp, mptcpNote } from './mptcp.js';
import { readInterface } from '../net/ifaces.js';
import type { EnforcerOptions, EnforcerStatus, FlowResetInfo, LatencyHistogram, InterfaceFault, SweepInfo, SweepOutcome, TargetInfo, TargetSpec } from './types.js';
import type { InjectMode, Family, LogSink } from '../core/model.js';


/** How long a sweep's connections are watched for their ends' answers, from the sweep's last packet (ms). */
const VERIFY_WINDOW_MS = 5000;
/** Flow memory read this often while a sweep is unsettled (ms). */
const VERIFY_POLL_MS = 20;
/** An unanswered end is probed again this often: Linux rate-limits its answers (tcp_invalid_ratelimit, 500 ms). */
const REPROBE_MS = 500;
/**
 * One turn of the event loop plans and sends at most this many of a
 * sweep's connections, and stops early past SWEEP_TURN_MS; the rest go in
 * the next turns (setImmediate), so requests, timers and the event threads'
 * reports are served between them. A host with 16,000 remembered
 * connections held the main thread for seconds in one turn before.
 */
const SWEEP_TURN_FLOWS = 256;
const SWEEP_TURN_MS = 8;
/** Checked between groups of this many connections. */
const SWEEP_GROUP = 16;
/** Per verification tick at most: watched connections read, and re-probes sent. */
const VERIFY_TICK_FLOWS = 4096;
const VERIFY_TICK_PROBES = 256;

/** One swept connection being verified. */
interface Watched {
  slot: number;
  /** Its tr_fm_key as the table holds it, and the key's hash (FlowMemoryView.rstSeq). */
  key: { bytes: Uint8Array; hash: number };
  name: string;
  /** Per key end: the seq its answer must carry (null: not probed). */
  answerSeq: [number | null, number | null];
  dead: [boolean, boolean];
  probes: SweepPacket[];
  /** When its probes last went (performance.now()). */
  probedAt: number;
}

interface Verification {
  outcome: SweepOutcome;
  /** Probed connections not verified yet (verified ones leave; order not kept). */
  open: Watched[];
  /** Where the next tick goes on reading `open`. */
  cursor: number;
  /** Connections found but not probed (a lone SYN): never verified. */
  unprobed: string[];
  startedAt: number;
  /** When the sweep sent its last packet; null while it is still sending. */
  sentAt: number | null;
  senderKey: string;
  /**
   * The reset interface's MAC: a RST seen from it is one we sent, not an
   * end's answer. Where the mirror sees both ends, the event path answers
   * the copy of our probe to one end with a RST "from" the other end whose
   * seq is exactly that end's expected answer (the probe's ack).
   */
  ours: Uint8Array | null;
  waiters: Array<() => void>;
}

/** A sweep in progress: its connections are planned and sent a turn at a time (sweepTurn). */
interface SweepRun {
  target: Target;
  why: 'create' | 'extend';
  t0: number;
  query: FlowQuery;
  /** The slots the scan found; `next` is the first not yet read. */
  slots: number[];
  next: number;
  flows: number;
  rsts: number;
  probes: number;
  turns: number;
  immediate: NodeJS.Immediate | null;
  v: Verification;
  /** Its send slots, kept from turn to turn (making them costs more than a turn's sending), and the sockets they send on. */
  sender: Sender | null;
  sockets: object | null;
  /** The sender's stats as already added to sweepSent / sweepErrors. */
  counted: { sent: number; errors: number };
}

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
  /** Packets the sweeps sent, and failures (sweeps and packets). */
  private sweepSent = 0;
  private sweepErrors = 0;
  /** Connections the sweeps found open, and of those verified dead (daemon lifetime). */
  private sweepKnown = 0;
  private sweepVerified = 0;
  /** Flows the targets counted as reset (Target.noteFlow true), daemon lifetime: the metrics' flows reset. */
  private flowsReset = 0;
  /** The last sweep, for the request that caused it (takeSweep). */
  private lastSweep: SweepInfo | null = null;
  /** Sweep outcomes by target id, unsettled and settled (kept for the target's life). */
  private readonly verifications = new Map<number, Verification>();
  /** The ids of verifications not settled yet (the map keeps settled ones for the target's life). */
  private readonly unsettled = new Set<number>();
  /** Sweeps still sending, by target id. */
  private readonly sweeps = new Map<number, SweepRun>();
  private verifyTimer: NodeJS.Timeout | null = null;
  private readonly parseWatch: ParseWatch;
  /** Ties MPTCP subflows to their connections (token = SHA-256 of a key, computed here). */
  private readonly mptcp = new MptcpDirectory();
  /** Sniff interfaces where MPTCP subflows were reset without keys (mptcp.ts): since when, how many. */
  private readonly mptcpNoKeys = new Map<string, { since: number; count: number }>();
  /** Destinations the event threads reported undeliverable, grouped by reset interface (undeliverable.ts). */
  private readonly undeliverable: UndeliverableDestinations;
  /** For the route check at job creation and the create-time sweep (the event threads have their own). */
  private routeCheck: Delivery | null = null;
  /** Per event thread, as each last reported. */
  private readonly threadStats: { records: number; wakeups: number; stale: number; errors: number; fifoDemotions: number }[];
  private readonly log: LogSink;
  private readonly ncpu: number;
  private readonly targets = new Map<number, Target>();
  private readonly healthTimer: NodeJS.Timeout;
  private nextTargetId = 1;
  private staleEvents = 0;
  private closed = false;

  private constructor(obj: BpfObject, log: LogSink, opts: EnforcerOptions) {
    super();
    this.obj = obj;
    this.log = log;
    this.undeliverable = new UndeliverableDestinations(log);
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
    this.threadStats = ringFds.map(() => ({ records: 0, wakeups: 0, stale: 0, errors: 0, fifoDemotions: 0 }));
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
    this.health = new InterfaceHealth(this.attachments, this.senders, log, {
      rekey: (ifname, ifindex) => this.slots.rekey(ifname, ifindex),
      fault: (f) => {
        if (f.role === 'reset') this.forgetDelivery(f.ifname);
        this.emit('fault', f);
      },
      recovered: (f) => {
        if (f.role === 'reset') this.forgetDelivery(f.ifname);
        this.emit('recovered', f);
      },
    });
    this.flowMemory = new FlowMemoryView(obj.map(MAP_FLOWMEM));
    this.parseWatch = new ParseWatch(obj, this.ncpu, { windowMs: opts.parseWindowMs, warn: (o, m) => log.warn(o, m), info: (o, m) => log.info(o, m) });
    this.healthTimer = setInterval(() => {
      this.health.check();
      this.parseWatch.check(this.attachments.live());
      this.routeCheck?.refresh(8); // the sweep's stale verdicts, between sweeps
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
    const host = parseTargetHost(spec.host);
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
      // The caller's strings when they are already canonical (the job manager's are): one copy per job, not two.
      target = new Target(
        id, spec.sniffIf, spec.resetIf, host.canonical === spec.host ? spec.host : host.canonical, port, mode, host.family,
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
    if (spec.sweep !== false) this.sweep(target, 'create');
    return target.info();
  }

  /**
   * The sweep the last add() or extend() ran (null: none ran, e.g. the
   * interface is away), once: the create request reports what it found.
   */
  takeSweep(): SweepInfo | null {
    const s = this.lastSweep;
    this.lastSweep = null;
    return s;
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
    this.sweep(target, 'extend');
    return target.info();
  }

  remove(id: number): boolean {
    const target = this.targets.get(id);
    if (!target) return false;
    this.targets.delete(id);
    this.stopSweep(id);
    this.settle(id, 'job ended');
    this.verifications.delete(id);
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
      sweep: { sent: this.sweepSent, errors: this.sweepErrors, known: this.sweepKnown, verified: this.sweepVerified },
      flowsReset: this.flowsReset,
      senders: this.senders.status(),
      resetTotals: this.senders.lifetime(),
      counters: this.counters(),
      ring: {
        records: sum(this.threadStats, 'records'), wakeups: sum(this.threadStats, 'wakeups'),
        stale: this.staleEvents + sum(this.threadStats, 'stale'), errors: sum(this.threadStats, 'errors'), threads: this.threadStats.length,
        fifoDemotions: sum(this.threadStats, 'fifoDemotions'),
        perThread: this.threadStats.map((s) => s.records),
      },
      targets: this.targets.size,
      // Parse faults first: where an interface has both, its own fault is the one shown.
      faults: [...this.deliveryFaults(), ...this.mptcpFaults(), ...this.parseWatch.faults(), ...this.health.list()],
      sniff: this.parseWatch.traffic(this.attachments.live()),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.healthTimer);
    this.undeliverable.close();
    if (this.verifyTimer) clearInterval(this.verifyTimer);
    for (const id of [...this.targets.keys()]) this.remove(id);
    await this.events.stop();
    this.routeCheck?.close();
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
      this.threadStats[thread] = { records: r.records, wakeups: r.wakeups, stale: r.stale, errors: r.errors, fifoDemotions: r.fifoDemotions };
      // Bounded: a flood of bad records must not become a flood of log lines.
      if (r.errors > before && (before < 10 || Math.floor(before / 10000) !== Math.floor(r.errors / 10000))) {
        this.log.error({ err: r.lastError, recordErrors: r.errors, thread }, 'event handling failed');
      }
      return;
    }
    if (r.type === 'delivery') return this.onDelivery(r.ifname, r.dst, r.reason);
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
      if (refused || target.deliveryFault !== undefined) this.noteDelivery(target, refused, bytes, o);
      const family = dv.getUint8(o + HIT.family) as Family;
      const alen = family === 4 ? 4 : 16;
      const sport = dv.getUint16(o + HIT.sport, true);
      const dport = dv.getUint16(o + HIT.dport, true);
      flowKey ??= flowKeyOf(binaryKey(bytes, o + HIT.saddr, alen), sport, binaryKey(bytes, o + HIT.daddr, alen), dport);
      if (target.noteFlow(flowKey)) {
        this.flowsReset++;
        const info: FlowResetInfo = {
          targetId: target.id, label: target.label, family,
          src: formatIp(bytes.slice(o + HIT.saddr, o + HIT.saddr + alen)), sport,
          dst: formatIp(bytes.slice(o + HIT.daddr, o + HIT.daddr + alen)), dport,
          firstLatencyUs: Math.round(dv.getFloat32(o + HIT.latencyUs, true)),
          ...(bytes[o + HIT.encap] ? { encap: encapName(bytes[o + HIT.encap]) } : {}),
          ...(bytes[o + HIT.mptcp] ? this.mptcpConnection(target, bytes[o + HIT.mptcp], sameTuple(bytes, o, alen)) : {}),
        };
        this.emit('flow-reset', info);
      }
    }
  }

  // ---- create-time sweep ----------------------------------------------------

  /**
   * Reset at once the target's connections the flow memory holds open:
   * the exact RST pair from each one's last segment and a probe to each
   * end (flow-sweep.ts), sent on the target's reset sockets from this
   * thread (file descriptors are process-wide; the event threads use the
   * same sockets). Live ends answer the probes through the mirror and the
   * event path resets them from current values. Never throws: the job is
   * in force whatever the sweep finds; a failure is logged and counted.
   *
   * The scan of the table is one pass over raw bytes, here; the planning
   * and sending go a turn at a time (sweepTurn), the first one here: a
   * host with a few connections is swept before add() returns, one with
   * thousands in the turns that follow, with the daemon answering between
   * them. The returned info (and takeSweep's) counts every connection
   * found; the log line "flows reset from flow memory" and the 'sweep'
   * event come once the last packet is sent.
   */
  private sweep(target: Target, why: 'create' | 'extend'): SweepInfo | null {
    const t0 = performance.now();
    const id = target.id;
    let run: SweepRun | undefined;
    try {
      const att = this.attachments.get(target.sniffIf);
      const ref = this.senders.get(target.senderKey);
      if (!att?.link || !ref?.sockets) return null; // an interface fault, reported as such
      this.stopSweep(id); // an extend's sweep replaces the create's, sent or not
      const host = parseTargetHost(target.host);
      const query: FlowQuery = { ifindex: att.ifindex, family: host.family, addr: host.bytes, port: target.port };
      // Nothing ever remembered (no watched interface, first job): no scan of the whole table.
      const slots = this.counters().fmNew === 0n ? [] : this.flowMemory.findSlots(query);
      if (slots.length === 0) return this.emptySweep(target, why, t0);
      target.swept = false;
      const v = this.startVerification(target, slots.length, t0, ref.sockets.mac);
      run = { target, why, t0, query, slots, next: 0, flows: 0, rsts: 0, probes: 0, turns: 0, immediate: null, v, sender: null, sockets: null, counted: { sent: 0, errors: 0 } };
      this.sweeps.set(id, run);
      this.sweepTurn(run);
      // Done in this turn: the final figures; else what is known now (every connection found counts: they are being reset).
      const info: SweepInfo = this.sweeps.has(id)
        ? { targetId: id, label: target.label, flows: v.outcome.known, rsts: run.rsts, probes: run.probes, ms: round2(performance.now() - t0), why, pending: true }
        : sweepInfo(run);
      this.lastSweep = info;
      return info;
    } catch (err) {
      this.sweepErrors++;
      this.log.warn({ err, targetId: id, label: target.label }, 'sweep of remembered flows failed: the job waits for their next segment');
      if (run && this.sweeps.get(id) === run) this.finishSweep(run, 'failed'); // its verification settles on what went
      return null;
    }
  }

  /**
   * A sweep that found nothing (the common case: most jobs name a host with
   * no open connection remembered): no run and no verification to watch, and
   * its line at debug. Its outcome (verification()) is the settled zero one.
   */
  private emptySweep(target: Target, why: 'create' | 'extend', t0: number): SweepInfo {
    const id = target.id;
    this.settle(id, 'superseded');
    this.verifications.delete(id);
    target.swept = true;
    const info: SweepInfo = { targetId: id, label: target.label, flows: 0, rsts: 0, probes: 0, ms: round2(performance.now() - t0), why };
    this.lastSweep = info;
    this.log.debug(info, 'flows reset from flow memory');
    queueMicrotask(() => this.emit('sweep', info));
    return info;
  }

  /**
   * One turn of a sweep: read, plan and send its next connections, at most
   * SWEEP_TURN_FLOWS or SWEEP_TURN_MS' worth, then yield (setImmediate)
   * until all are sent. Never throws (it runs from the event loop).
   */
  private sweepTurn(run: SweepRun): void {
    run.immediate = null;
    run.turns++;
    const target = run.target;
    const id = target.id;
    const start = performance.now();
    let refused = 0;
    const resets: FlowResetInfo[] = [];
    try {
      if (this.sweeps.get(id) !== run) return; // stopped (stopSweep)
      const ref = this.senders.get(target.senderKey);
      if (!ref?.sockets) {
        // Its reset interface went away meanwhile (a fault of its own): what is left is not sent.
        this.finishSweep(run, 'reset interface gone');
        return;
      }
      if (run.sender && run.sockets !== ref.sockets) closeSender(run); // the interface's sockets were reopened
      const mac = ref.mode === 'l2' ? ref.sockets.mac : null;
      const first = run.next;
      while (run.next < run.slots.length && run.next - first < SWEEP_TURN_FLOWS && (run.next === first || performance.now() - start < SWEEP_TURN_MS)) {
        const found: FlowMatch[] = [];
        const end = Math.min(run.slots.length, run.next + SWEEP_GROUP);
        for (; run.next < end; run.next++) {
          // Read now, not at the scan: closed or replaced since, it is not one to reset.
          const m = this.flowMemory.match(run.slots[run.next]!, run.query);
          if (m) found.push(m);
        }
        const plan = planSweep(found, mac);
        run.flows += plan.flows;
        if (plan.packets.length > 0) {
          if (!run.sender) {
            run.sender = Sender.adopt(ref.sockets, { slots: Math.min(256, 4 * run.slots.length) });
            run.sockets = ref.sockets;
          }
          const sender = run.sender;
          for (const p of plan.packets) {
            // l3: the same check as the event threads' (delivery.ts): what cannot leave RESET_IF is not sent.
            if (ref.mode === 'l3') {
              const dst = p.family === 4 ? p.packet.subarray(16, 20) : p.packet.subarray(24, 40);
              if (this.delivery().verdict(ref.sockets.ifname, ref.sockets.ifindex, dst) !== null) {
                if (p.kind === 'rst') refused++;
                continue;
              }
            }
            sender.enqueue(p.frame ? { family: p.family, packet: p.packet, frame: p.frame } : { family: p.family, packet: p.packet });
            // Per interface too (ref.sweep): the event threads' totals do not see these (metrics kind="sweep").
            if (p.kind === 'rst') {
              run.rsts++;
              ref.sweep.rsts++;
              target.rstsSent++;
            } else {
              run.probes++;
              ref.sweep.probes++;
            }
          }
        }
        this.watchFlows(run.v, found, plan, start);
        for (const e of found) {
          if (flowClosed(e.state)) continue;
          const k = e.key;
          const key = flowKeyOf(binaryKey(k.addrA, 0, k.addrA.length), k.portA, binaryKey(k.addrB, 0, k.addrB.length), k.portB);
          if (!target.noteFlow(key)) continue;
          this.flowsReset++;
          const encap = e.dirs[0]?.encap || e.dirs[1]?.encap;
          resets.push({
            targetId: id, label: target.label, family: k.family,
            src: formatIp(k.addrA), sport: k.portA, dst: formatIp(k.addrB), dport: k.portB, firstLatencyUs: 0, atCreate: true,
            ...(encap ? { encap: encapName(encap) } : {}),
            ...(e.mp?.flags ? this.mptcpConnection(target, hitMptcp(e.mp.flags), e) : {}),
          });
        }
      }
      if (run.sender) {
        // Counted as they go (a full set of slots is sent from enqueue()); the stats are the sender's since adopt().
        run.sender.flush();
        const { sent, errors } = run.sender.stats;
        this.sweepSent += sent - run.counted.sent;
        this.sweepErrors += errors - run.counted.errors;
        ref.sweep.errors += errors - run.counted.errors;
        run.counted = { sent, errors };
      }
    } catch (err) {
      this.sweepErrors++;
      this.log.warn({ err, targetId: id, label: target.label }, 'sweep of remembered flows failed: the rest of them wait for their next segment');
      run.next = run.slots.length;
    }
    if (refused) {
      target.addUndeliverable(refused);
      target.deliveryFault = this.undeliverable.firstReason(target.resetIf) ?? `RSTs undeliverable from ${target.resetIf}`;
    }
    // Emitted once the caller (the job manager) knows the target: on the first turn, add() has not returned yet.
    if (resets.length) queueMicrotask(() => { for (const r of resets) this.emit('flow-reset', r); });
    if (run.next < run.slots.length) run.immediate = setImmediate(() => this.sweepTurn(run));
    else this.finishSweep(run, null);
  }

  /** A sweep has sent all it will: its log line and event; its connections are watched from now for the window. */
  private finishSweep(run: SweepRun, stopped: string | null): void {
    const id = run.target.id;
    if (this.sweeps.get(id) === run) this.sweeps.delete(id);
    if (run.immediate) clearImmediate(run.immediate);
    run.immediate = null;
    closeSender(run);
    const v = run.v;
    // What was found but not reset (closed or replaced before its turn, or not sent at all) is not known any more.
    v.outcome.known = v.outcome.reset = run.flows;
    v.sentAt = performance.now();
    const info = sweepInfo(run);
    if (stopped) this.log.warn({ ...info, left: run.slots.length - run.next, stopped }, 'sweep of remembered flows stopped before its end');
    else this.log.info(info, 'flows reset from flow memory');
    queueMicrotask(() => this.emit('sweep', info));
    if (v.open.length === 0 && v.unprobed.length === 0) this.settle(id, 'settled');
    else this.pollSoon();
  }

  /** A running sweep of the target is stopped where it is (the job ended, or a new sweep replaces it). */
  private stopSweep(id: number): void {
    const run = this.sweeps.get(id);
    if (!run) return;
    this.sweeps.delete(id);
    if (run.immediate) clearImmediate(run.immediate);
    run.immediate = null;
    closeSender(run);
    // Its outcome (settled next, by the caller) says how many went: known counts what was found.
    if (!run.v.outcome.settled) run.v.outcome.reset = run.flows;
    if (run.next < run.slots.length) this.log.info({ targetId: id, label: run.target.label, flows: run.flows, left: run.slots.length - run.next }, 'sweep of remembered flows stopped: the job ended or was extended');
  }

  // ---- MPTCP (mptcp.ts) ------------------------------------------------------

  /**
   * A newly reset flow of `target` is an MPTCP subflow (`code`: HIT_MP_*,
   * what its own RSTs did): reset the other open subflows of its connection
   * that the flow memory holds, on addresses the job does not name too,
   * each RST with MP_FASTCLOSE and the receiver's key (docs/design.md,
   * "MPTCP"). The keys come from the MP_CAPABLE subflow; an MP_JOIN subflow
   * is tied to it by token, so a job on a joined address only still closes
   * the connection. `sub`: the subflow's entry (the sweep's), or a test for
   * it (a hit's 4-tuple). Returns the flow reset line's note; without keys
   * the counter, fault and warning of noteMptcp.
   */
  private mptcpConnection(target: Target, code: number, sub: FlowMatch | ((e: FlowEntry) => boolean)): { mptcp?: string; mptcpSubflows?: number } {
    let sent = 0;
    try {
      const all = this.flowMemory.mptcpSubflows();
      const entry = typeof sub === 'function' ? all.find(sub) : sub;
      const conn = entry ? this.mptcp.connection(entry, all) : null;
      const ref = this.senders.get(target.senderKey);
      if (conn && ref?.sockets) {
        code = HIT_MP_FASTCLOSE;
        // Its own RSTs went already (event thread or sweep); the others' come from their remembered segments.
        const others = conn.subflows.filter((e) => !sameFlowKey(e.key, entry!.key) && !flowClosed(e.state));
        this.sendMptcpResets(target, mptcpSubflowResets(others, ref.mode === 'l2' ? ref.sockets.mac : null, false));
        // Again from what the ends sent since (a challenge ACK says exactly what an end expects): no probe or
        // job covers these subflows, so nothing else answers an RST that came too early or too late.
        for (const ms of MPTCP_RETRY_MS) {
          setTimeout(() => {
            try {
              const now = this.flowMemory.mptcpSubflows();
              const again = others.flatMap((o) => now.filter((e) => sameFlowKey(e.key, o.key)).map((e) => ({ ...e, mp: o.mp })));
              const r = this.senders.get(target.senderKey);
              if (again.length > 0 && r?.sockets) this.sendMptcpResets(target, mptcpSubflowResets(again, r.mode === 'l2' ? r.sockets.mac : null, true));
            } catch (err) {
              this.log.warn({ err, targetId: target.id }, 'MPTCP: a later reset of the other subflows failed');
            }
          }, ms).unref();
        }
        sent = others.length;
      }
    } catch (err) {
      this.log.warn({ err, targetId: target.id, label: target.label }, 'MPTCP: the other subflows of a reset connection could not be reset');
    }
    return { ...this.noteMptcp(target, code), ...(sent > 0 ? { mptcpSubflows: sent } : {}) };
  }

  /** Send RSTs for other subflows of an MPTCP connection on the target's reset sockets (they count in its rstsSent). */
  private sendMptcpResets(target: Target, rsts: SweepPacket[]): void {
    const ref = this.senders.get(target.senderKey);
    if (rsts.length === 0 || !ref?.sockets) return;
    const sender = Sender.adopt(ref.sockets, { slots: Math.min(256, rsts.length) });
    try {
      for (const p of rsts) {
        // The same check as the event threads' (delivery.ts): what cannot leave RESET_IF is not sent.
        if (ref.mode === 'l3') {
          const dst = p.family === 4 ? p.packet.subarray(16, 20) : p.packet.subarray(24, 40);
          if (this.delivery().verdict(ref.sockets.ifname, ref.sockets.ifindex, dst) !== null) continue;
        }
        sender.enqueue(p.frame ? { family: p.family, packet: p.packet, frame: p.frame } : { family: p.family, packet: p.packet });
      }
      sender.flush();
      target.rstsSent += sender.stats.sent;
    } finally {
      sender.close();
    }
  }


  /**
   * A newly reset flow of `target` that was an MPTCP subflow (HIT_MP_*):
   * the flow reset line's note; without keys also the per-job counter, the
   * job's fault and the sniff interface's status fault.
   */
  private noteMptcp(target: Target, code: number): { mptcp?: string } {
    const note = mptcpNote(code);
    if (note === undefined) return {};
    if (code === HIT_MP_NO_KEYS) {
      target.noteMptcpNoKeys(MPTCP_NO_KEYS);
      const have = this.mptcpNoKeys.get(target.sniffIf);
      this.mptcpNoKeys.set(target.sniffIf, { since: have?.since ?? Date.now(), count: (have?.count ?? 0) + 1 });
    }
    return { mptcp: note };
  }

  /** One status fault per sniff interface where MPTCP subflows were reset without keys, while a job there has that fault. */
  private mptcpFaults(): InterfaceFault[] {
    const out: InterfaceFault[] = [];
    for (const [ifname, m] of this.mptcpNoKeys) {
      if (![...this.targets.values()].some((t) => t.sniffIf === ifname && t.mptcpFault !== undefined)) {
        this.mptcpNoKeys.delete(ifname);
        continue;
      }
      out.push({ ifname, role: 'sniff', kind: 'mptcp', since: m.since, fault: `${MPTCP_NO_KEYS}: ${m.count} MPTCP subflow${m.count === 1 ? '' : 's'} reset without the connection's keys` });
    }
    return out;
  }

  // ---- RSTs that cannot leave the reset interface (delivery.ts) -------------

  /** A destination's verdict in an event thread: warnings grouped per interface, each naming the fix (undeliverable.ts). */
  private onDelivery(ifname: string, dst: string, reason: string | null): void {
    this.undeliverable.verdict(ifname, dst, reason);
  }

  /**
   * The reset interface went down or away, or came back: what was found
   * about its destinations meanwhile is void (a down interface has no
   * routes: "no route from reset0" would outlive its recovery). The
   * interface fault itself (health.ts) says what is wrong while it lasts.
   */
  private forgetDelivery(ifname: string): void {
    this.undeliverable.forget(ifname);
    for (const t of this.targets.values()) if (t.resetIf === ifname) t.deliveryFault = undefined;
    this.routeCheck?.forget(ifname);
    this.events.forgetDelivery(ifname);
  }

  /** Keep a target's delivery fault current from one hit: set while its RSTs are refused, cleared once they all go. */
  private noteDelivery(target: Target, refused: number, bytes: Uint8Array, o: number): void {
    if (refused === 0) {
      target.deliveryFault = undefined;
      return;
    }
    target.addUndeliverable(refused);
    const alen = bytes[o + HIT.family] === 4 ? 4 : 16;
    for (const at of [HIT.daddr, HIT.saddr]) {
      const reason = this.undeliverable.reasonFor(target.resetIf, formatIp(bytes.slice(o + at, o + at + alen)));
      if (reason !== undefined) {
        target.deliveryFault = reason;
        return;
      }
    }
    target.deliveryFault ??= `RSTs undeliverable from ${target.resetIf}`;
  }

  private delivery(): Delivery {
    this.routeCheck ??= new Delivery((ifname, dst, reason) => this.onDelivery(ifname, dst, reason));
    return this.routeCheck;
  }

  /** One fault per reset interface with undeliverable destinations: the first reason, and how many more. */
  private deliveryFaults(): InterfaceFault[] {
    return this.undeliverable.faults();
  }

  /**
   * For `tcpreset create` in l3 mode: a warning when HOST itself has no
   * route through RESET_IF. The job is still created: its peers are only
   * known later, and a route may be added meanwhile. undefined when fine.
   */
  hostRouteWarning(resetIf: string, host: string): string | undefined {
    // The l3 sender's sockets know the interface's index (kept current by health.ts): reading
    // it from sysfs was four file reads per create.
    const ifindex = this.senders.get(`${resetIf}/l3`)?.sockets?.ifindex ?? readInterface(resetIf)?.ifindex;
    if (ifindex === undefined) return undefined; // the interface checks at receipt report this
    return this.delivery().routeProblem(resetIf, ifindex, parseTargetHost(host).bytes) ?? undefined;
  }

  // ---- verification ---------------------------------------------------------

  /**
   * The outcome of the target's last sweep: at once when `waitMs` is 0 or
   * it is settled, else once it settles or `waitMs` passes, whichever is
   * first. null: the target had no sweep (interface away, flow memory off).
   */
  async verification(targetId: number, waitMs = 0): Promise<SweepOutcome | null> {
    const v = this.verifications.get(targetId);
    if (!v) {
      const t = this.targets.get(targetId);
      if (!t?.swept) return null;
      return { targetId, label: t.label, known: 0, reset: 0, verified: 0, unverified: [], settled: true, ms: 0 };
    }
    if (!v.outcome.settled && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, waitMs);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        v.waiters.push(done);
      });
    }
    return { ...v.outcome, unverified: v.outcome.settled ? [...v.outcome.unverified] : unverifiedOf(v) };
  }

  /** A sweep's outcome, watched as its connections are sent (an extend's sweep replaces the create's). */
  private startVerification(target: Target, known: number, t0: number, ours: Uint8Array | null): Verification {
    const id = target.id;
    this.settle(id, 'superseded');
    const v: Verification = {
      outcome: { targetId: id, label: target.label, known, reset: known, verified: 0, unverified: [], settled: false, ms: 0 },
      open: [], cursor: 0, unprobed: [], startedAt: t0, sentAt: null, senderKey: target.senderKey, waiters: [],
      // An all-zero MAC (no Ethernet) tells nothing apart.
      ours: ours && ours.some((x) => x !== 0) ? ours : null,
    };
    this.verifications.set(id, v);
    this.unsettled.add(id);
    return v;
  }

  /** Start watching what one turn's probes draw (flow-sweep.ts, 3.). */
  private watchFlows(v: Verification, found: readonly FlowMatch[], plan: ReturnType<typeof planSweep>, now: number): void {
    const target = this.targets.get(v.outcome.targetId);
    if (plan.flows > 0 && target) {
      target.addKnown(plan.flows);
      this.sweepKnown += plan.flows;
    }
    // planSweep emits two probes per probed connection, in the order of plan.probes.
    const probesOf = plan.packets.filter((p) => p.kind === 'probe');
    const probed = new Set<number>();
    plan.probes.forEach((p, i) => {
      const f = found[p.entry]!;
      probed.add(p.entry);
      const bytes = encodeFlowKey(f.key);
      v.open.push({
        slot: f.slot, key: { bytes, hash: fmHash(bytes) }, name: flowName(f.key), answerSeq: p.answerSeq, dead: [false, false],
        probes: probesOf.slice(2 * i, 2 * i + 2), probedAt: now,
      });
    });
    let unprobed = plan.flows - plan.probes.length;
    for (let n = 0; n < found.length && unprobed > 0; n++) {
      if (probed.has(n) || flowClosed(found[n]!.state)) continue;
      v.unprobed.push(flowName(found[n]!.key));
      unprobed--;
    }
    if (v.open.length > 0) this.pollSoon();
  }

  private pollSoon(): void {
    if (this.verifyTimer) return;
    this.verifyTimer = setInterval(() => this.pollVerifications(), VERIFY_POLL_MS);
    this.verifyTimer.unref();
  }

  /**
   * One tick of the watch: at most VERIFY_TICK_FLOWS watched connections
   * read (a few raw bytes each, FlowMemoryView.rstSeq), round robin, and
   * at most VERIFY_TICK_PROBES re-probes sent, whatever the sweep's size.
   */
  private pollVerifications(): void {
    const now = performance.now();
    for (const id of [...this.unsettled]) {
      const v = this.verifications.get(id);
      if (!v || v.outcome.settled) {
        this.unsettled.delete(id);
        continue;
      }
      if (!this.targets.has(id)) {
        this.settle(id, 'job ended');
        continue;
      }
      const o = v.outcome;
      const reprobe: SweepPacket[] = [];
      const budget = Math.min(v.open.length, VERIFY_TICK_FLOWS);
      for (let n = 0; n < budget && v.open.length > 0; n++) {
        if (v.cursor >= v.open.length) v.cursor = 0;
        const f = v.open[v.cursor]!;
        for (const end of [0, 1] as const) {
          // Sticky: a later segment (the peer's RST drawing another) may overwrite the answer.
          if (!f.dead[end] && f.answerSeq[end] !== null && this.flowMemory.rstSeq(f.slot, f.key, end, v.ours ?? undefined) === f.answerSeq[end]) f.dead[end] = true;
        }
        if (f.dead[0] && f.dead[1]) {
          o.verified++;
          this.targets.get(id)!.addVerified(1);
          this.sweepVerified++;
          v.open[v.cursor] = v.open[v.open.length - 1]!;
          v.open.pop();
          continue;
        }
        if (now - f.probedAt >= REPROBE_MS && reprobe.length < VERIFY_TICK_PROBES) {
          f.probedAt = now;
          for (const p of f.probes) if (!f.dead[p.to === 'a' ? 0 : 1]) reprobe.push(p);
        }
        v.cursor++;
      }
      o.ms = Math.round(now - v.startedAt);
      if (v.sentAt !== null && v.open.length === 0 && v.unprobed.length === 0) this.settle(id, 'settled');
      else if (v.sentAt !== null && now - v.sentAt >= VERIFY_WINDOW_MS) this.settle(id, 'window over');
      else if (reprobe.length > 0) this.sendProbes(v, reprobe);
    }
    if (this.verifyTimer && this.unsettled.size === 0) {
      clearInterval(this.verifyTimer);
      this.verifyTimer = null;
    }
  }

  private sendProbes(v: Verification, packets: SweepPacket[]): void {
    const ref = this.senders.get(v.senderKey);
    if (!ref?.sockets) return;
    try {
      const sender = Sender.adopt(ref.sockets, { slots: Math.min(1024, packets.length) });
      try {
        for (const p of packets) {
          // The same check as the sweep's and the event threads' (delivery.ts): what cannot leave RESET_IF is not sent.
          if (ref.mode === 'l3') {
            const dst = p.family === 4 ? p.packet.subarray(16, 20) : p.packet.subarray(24, 40);
            if (this.delivery().verdict(ref.sockets.ifname, ref.sockets.ifindex, dst) !== null) continue;
          }
          sender.enqueue(p.frame ? { family: p.family, packet: p.packet, frame: p.frame } : { family: p.family, packet: p.packet });
          ref.sweep.probes++;
        }
        sender.flush();
        this.sweepSent += sender.stats.sent;
        this.sweepErrors += sender.stats.errors;
        ref.sweep.errors += sender.stats.errors;
      } finally {
        sender.close();
      }
    } catch (err) {
      this.sweepErrors++;
      this.log.warn({ err, targetId: v.outcome.targetId }, 'probe of swept flows not sent');
    }
  }

  /** Settle a sweep's outcome once: log it, wake the waiters; the settled outcome stays for list/status. */
  private settle(id: number, why: 'settled' | 'window over' | 'job ended' | 'superseded'): void {
    const v = this.verifications.get(id);
    this.unsettled.delete(id);
    if (!v || v.outcome.settled) return;
    v.outcome.settled = true;
    const o = v.outcome;
    o.unverified = unverifiedOf(v);
    const line = { targetId: id, label: o.label, known: o.known, reset: o.reset, verified: o.verified, ms: o.ms, why, ...(o.unverified.length ? { unverified: o.unverified.slice(0, 32) } : {}) };
    if (o.verified < o.known) this.log.warn(line, 'sweep outcome settled: not every reset flow is confirmed dead');
    else this.log.info(line, 'sweep outcome settled');
    for (const w of v.waiters.splice(0)) w();
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

function parseTargetHost(text: string): { family: Family; bytes: Uint8Array; canonical: string } {
  const parsed = parseIp(text, 'host');
  return unmapV4(parsed) ?? parsed;
}

/**
 * Address bytes as a short string, for map keys on the per-event path:
 * formatting the text form (RFC 5952 for IPv6) per event cost more than
 * the rest of the event's handling. The length tells v4 from v6.
 */
function binaryKey(bytes: Uint8Array, off: number, len: number): string {
  let s = '';
  for (let i = off; i < off + len; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

/** The connections of a verification not (yet) verified, "addr:port-addr:port". */
function unverifiedOf(v: Verification): string[] {
  return [...v.open.map((f) => f.name), ...v.unprobed];
}

function flowName(k: FlowKey): string {
  return `${fmtEnd(k.addrA, k.portA)}-${fmtEnd(k.addrB, k.portB)}`;
}

function sweepInfo(run: SweepRun): SweepInfo {
  return {
    targetId: run.target.id, label: run.target.label, flows: run.flows, rsts: run.rsts, probes: run.probes,
    ms: round2(performance.now() - run.t0), why: run.why, ...(run.turns > 1 ? { turns: run.turns } : {}),
  };
}

/**
 * The RSTs for other subflows of an MPTCP connection: no probe follows
 * them (the job does not match those subflows, so nothing would answer a
 * challenge ACK), so each end gets the RST whose seq is exact whichever end
 * spoke last: the one forged from its peer's last segment (seq = that
 * segment's seq + length = the end's RCV.NXT once it took it). planSweep's
 * pair from the latest segment alone missed, in the lab, whenever the two
 * ends' last segments fell in one coarse-clock tick (the end whose last
 * segment was the older one got seq = a stale ack: challenge ACK).
 */
/** When the other subflows of an MPTCP connection are reset again, from what their ends sent since (ms after the first). */
const MPTCP_RETRY_MS = [30, 150];

function mptcpSubflowResets(entries: readonly FlowEntry[], mac: Uint8Array | null, later: boolean): SweepPacket[] {
  const out: SweepPacket[] = [];
  for (const e of entries) {
    const [a, b] = e.dirs;
    if (later) {
      // A live end's last segment now (its challenge ACK, or new data) gives both RSTs exactly; an end whose
      // last segment is a RST (ours, or its own) gets nothing from it (forgeResets never answers a RST).
      if (a && !(a.tcpFlags & TCP_RST)) out.push(...planSweep([{ ...e, state: 0, dirs: [a, b ? { ...b, lastNs: 0n } : null] }], mac).packets.filter((p) => p.kind === 'rst'));
      if (b && !(b.tcpFlags & TCP_RST)) out.push(...planSweep([{ ...e, state: 0, dirs: [a ? { ...a, lastNs: 0n } : null, b] }], mac).packets.filter((p) => p.kind === 'rst'));
      continue;
    }
    // From A's last segment, the RST to B is exact; from B's, the one to A.
    if (a) out.push(...planSweep([{ ...e, dirs: [a, b ? { ...b, lastNs: 0n } : null] }], mac).packets.filter((p) => p.kind === 'rst' && p.to === 'b'));
    if (b) out.push(...planSweep([{ ...e, dirs: [a ? { ...a, lastNs: 0n } : null, b] }], mac).packets.filter((p) => p.kind === 'rst' && p.to === 'a'));
  }
  return out;
}

/** A test for the flow memory entry of the hit at byte `o` (either direction of its 4-tuple). */
function sameTuple(bytes: Uint8Array, o: number, alen: number): (e: FlowEntry) => boolean {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const s = bytes.slice(o + HIT.saddr, o + HIT.saddr + alen);
  const d = bytes.slice(o + HIT.daddr, o + HIT.daddr + alen);
  const sp = dv.getUint16(o + HIT.sport, true);
  const dp = dv.getUint16(o + HIT.dport, true);
  const eq = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);
  return (e) => (e.key.portA === sp && e.key.portB === dp && eq(e.key.addrA, s) && eq(e.key.addrB, d)) || (e.key.portA === dp && e.key.portB === sp && eq(e.key.addrA, d) && eq(e.key.addrB, s));
}

function sameFlowKey(a: FlowKey, b: FlowKey): boolean {
  const eq = (x: Uint8Array, y: Uint8Array): boolean => x.length === y.length && x.every((v, i) => v === y[i]);
  return a.ifindex === b.ifindex && a.portA === b.portA && a.portB === b.portB && eq(a.addrA, b.addrA) && eq(a.addrB, b.addrB);
}

function closeSender(run: SweepRun): void {
  run.sender?.close();
  run.sender = null;
  run.sockets = null;
  run.counted = { sent: 0, errors: 0 };
}

function round2(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function fmtEnd(addr: Uint8Array, port: number): string {
  return addr.length === 16 ? `[${formatIp(addr)}]:${port}` : `${formatIp(addr)}:${port}`;
}

function sum<K extends string>(rows: Record<K, number>[], k: K): number {
  let n = 0;
  for (const r of rows) n += r[k];
  return n;
}

/** Direction-free flow identity: both directions of a connection are one flow. */
function flowKeyOf(src: string, sport: number, dst: string, dport: number): string {
  const a = src + String.fromCharCode(sport);
  const b = dst + String.fromCharCode(dport);
  return a < b ? a + b : b + a;
}
