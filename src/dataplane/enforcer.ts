/**
 * The Enforcer: the data plane's facade, and its one owner. It keeps a set
 * of timed targets and coordinates the units that each own one part:
 *
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
  MAP_COUNTERS, MAP_EVENTS, MAP_EVENT_RINGS, MAP_FLOWMEM, MAP_TARGETS, RINGBUF_BYTES, RING_SLOTS,
  encapName, encodeTargetKey, sumCounters, type Counters, type Family,
} from '../contract.js';
import { TcpresetError, ValidationError } from '../errors.js';
import { BpfObject, numPossibleCpus, type BpfMap } from '../bpf/object.js';
import { Sender, type InjectMode } from '../net/sender.js';
import { FlowMemoryView } from './flow-memory.js';
import { planSweep, type SweepPacket } from './flow-sweep.js';
import { TCP_RST, flowClosed, type FlowKey } from '../contract.js';
import { formatIp, parseIp, unmapV4 } from '../packet/addr.js';
import { Prefilter } from './prefilter.js';
import { EventPool } from './event-pool.js';
import { HIT, HIT_BYTES, type EventReport } from './event-wire.js';
import { Attachments } from './attachments.js';
import { ResetSenders } from './senders.js';
import { InterfaceHealth } from './health.js';
import { SlotTable, type Slot } from './slots.js';
import { ParseWatch, setTunnelPorts } from './tunnels.js';
import { Delivery } from './delivery.js';
import { readInterface } from '../net/ifaces.js';
import type { EnforcerOptions, EnforcerStatus, FlowResetInfo, InterfaceFault, LoggerLike, SweepInfo, SweepOutcome, TargetInfo, TargetSpec } from './types.js';

/** Distinct flows remembered per target; past this the count saturates rather than grow without bound. */
const MAX_FLOWS_PER_TARGET = 65536;
/** setTimeout's limit; longer deadlines re-arm. */
const MAX_TIMER_MS = 0x7fffffff;

/** How long a sweep's connections are watched for their ends' answers (ms). */
const VERIFY_WINDOW_MS = 5000;
/** Flow memory read this often while a sweep is unsettled (ms). */
const VERIFY_POLL_MS = 20;
/** An unanswered end is probed again this often: Linux rate-limits its answers (tcp_invalid_ratelimit, 500 ms). */
const REPROBE_MS = 500;

/** One swept connection being verified. */
interface Watched {
  slot: number;
  key: FlowKey;
  name: string;
  /** Per key end: the seq its answer must carry (null: not probed). */
  answerSeq: [number | null, number | null];
  dead: [boolean, boolean];
  probes: SweepPacket[];
  /** Counted in the target's verified counter. */
  counted: boolean;
}

interface Verification {
  outcome: SweepOutcome;
  flows: Watched[];
  /** Connections found but not probed (a lone SYN): never verified. */
  unprobed: string[];
  startedAt: number;
  lastProbeAt: number;
  senderKey: string;
  waiters: Array<() => void>;
}

interface Target {
  info: TargetInfo;
  slot: Slot<Target>;
  senderKey: string;
  /** Created on the first reset flow: most targets of a large set never see one. */
  flows: Set<string> | null;
  timer: NodeJS.Timeout | undefined;
}

const noopLogger: LoggerLike = { info() {}, warn() {}, error() {}, debug() {} };

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
  /** The last sweep, for the request that caused it (takeSweep). */
  private lastSweep: SweepInfo | null = null;
  /** Sweep outcomes by target id, unsettled and settled (kept for the target's life). */
  private readonly verifications = new Map<number, Verification>();
  private verifyTimer: NodeJS.Timeout | null = null;
  private readonly parseWatch: ParseWatch;
  /** Destinations the event threads reported undeliverable, by "ifname|address". */
  private readonly undeliverable = new Map<string, { ifname: string; dst: string; reason: string; since: number; seen: number }>();
  /** For the route check at job creation and the create-time sweep (the event threads have their own). */
  private routeCheck: Delivery | null = null;
  /** Per event thread, as each last reported. */
  private readonly threadStats: { records: number; wakeups: number; stale: number; errors: number; fifoDemotions: number }[];
  private readonly log: LoggerLike;
  private readonly ncpu: number;
  private readonly targets = new Map<number, Target>();
  private readonly healthTimer: NodeJS.Timeout;
  private nextTargetId = 1;
  private staleEvents = 0;
  private closed = false;

  private constructor(obj: BpfObject, log: LoggerLike, opts: EnforcerOptions) {
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
      onNiceError: (message) => log.warn({ nice, error: message }, 'event thread priority not raised (needs CAP_SYS_NICE, or systemd LimitRTPRIO=/LimitNICE=): first responses may wait behind other work on a loaded sensor'),
      onReport: (r, thread) => this.onReport(r, thread),
      onCrash: (err, restarts, thread) => this.log.error({ err, restarts, thread }, 'event thread died: restarted, enforcement resumed'),
    });
    this.slots = new SlotTable<Target>(obj.map(MAP_TARGETS), new Prefilter(obj), this.events);
    this.attachments = new Attachments(obj, log);
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
    const info: TargetInfo = {
      id, sniffIf: spec.sniffIf, resetIf: spec.resetIf, host: host.canonical, port, mode,
      expiresAt: spec.expiresAt, label: spec.label ?? `target-${id}`, family: host.family,
      counters: { matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null },
    };
    const keyBytes = encodeTargetKey({ ifindex: att.ifindex, family: host.family, addr: host.bytes, port });
    let slot: Slot<Target> | undefined;
    try {
      slot = this.slots.join(keyBytes, spec.sniffIf);
      const target: Target = { info, slot, senderKey, flows: null, timer: undefined };
      slot.targets.push(target);
      this.slots.sync(slot);
      this.targets.set(id, target);
      this.armTimer(target);
    } catch (err) {
      if (slot) this.slots.leave(slot, id);
      this.releaseSender(senderKey);
      this.releaseAttachment(spec.sniffIf);
      throw err;
    }
    this.attachments.keep(att);
    this.log.info({ target: publicInfo(info), xdpMode: att.mode }, 'target added');
    if (spec.sweep !== false) this.sweep(this.targets.get(id)!, 'create');
    return publicInfo(info);
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
    target.info.expiresAt = expiresAt;
    this.slots.sync(target.slot);
    this.armTimer(target);
    this.sweep(target, 'extend');
    return publicInfo(target.info);
  }

  remove(id: number): boolean {
    const target = this.targets.get(id);
    if (!target) return false;
    this.targets.delete(id);
    this.settle(id, 'job ended');
    this.verifications.delete(id);
    if (target.timer) clearTimeout(target.timer);
    // The map first: enforcement stops the moment the caller is told it did.
    this.slots.leave(target.slot, id);
    this.releaseSender(target.senderKey);
    this.releaseAttachment(target.info.sniffIf);
    this.log.info({ targetId: id, label: target.info.label }, 'target removed');
    return true;
  }

  get(id: number): TargetInfo | undefined {
    const t = this.targets.get(id);
    return t ? publicInfo(t.info) : undefined;
  }

  list(): TargetInfo[] {
    return [...this.targets.values()].map((t) => publicInfo(t.info));
  }

  counters(): Counters {
    const value = this.countersMap.lookup(new Uint8Array(4));
    if (!value) throw new TcpresetError('E_INTERNAL', 'counters map has no slot 0');
    return sumCounters(value, this.ncpu);
  }

  status(): EnforcerStatus {
    return {
      attached: this.attachments.live(),
      sweep: { sent: this.sweepSent, errors: this.sweepErrors, known: this.sweepKnown, verified: this.sweepVerified },
      senders: this.senders.status(),
      counters: this.counters(),
      ring: {
        records: sum(this.threadStats, 'records'), wakeups: sum(this.threadStats, 'wakeups'),
        stale: this.staleEvents + sum(this.threadStats, 'stale'), errors: sum(this.threadStats, 'errors'), threads: this.threadStats.length,
        fifoDemotions: sum(this.threadStats, 'fifoDemotions'),
        perThread: this.threadStats.map((s) => s.records),
      },
      targets: this.targets.size,
      // Parse faults first: where an interface has both, its own fault is the one shown.
      faults: [...this.deliveryFaults(), ...this.parseWatch.faults(), ...this.health.list()],
      sniff: this.parseWatch.traffic(this.attachments.live()),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.healthTimer);
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
      if (target.info.expiresAt <= now) continue; // its timer is about to remove it
      const c = target.info.counters;
      c.matched++;
      c.firstHitAt ??= now;
      c.lastHitAt = now;
      if (rsts === 0) continue;
      const refused = dv.getUint8(o + HIT.undeliverable);
      c.rstsSent += rsts - refused;
      if (refused || target.info.deliveryFault) this.noteDelivery(target, refused, bytes, o);
      const family = dv.getUint8(o + HIT.family) as Family;
      const alen = family === 4 ? 4 : 16;
      const sport = dv.getUint16(o + HIT.sport, true);
      const dport = dv.getUint16(o + HIT.dport, true);
      flowKey ??= flowKeyOf(binaryKey(bytes, o + HIT.saddr, alen), sport, binaryKey(bytes, o + HIT.daddr, alen), dport);
      target.flows ??= new Set();
      if (!target.flows.has(flowKey) && target.flows.size < MAX_FLOWS_PER_TARGET) {
        target.flows.add(flowKey);
        c.flows++;
        const info: FlowResetInfo = {
          targetId: target.info.id, label: target.info.label, family,
          src: formatIp(bytes.slice(o + HIT.saddr, o + HIT.saddr + alen)), sport,
          dst: formatIp(bytes.slice(o + HIT.daddr, o + HIT.daddr + alen)), dport,
          firstLatencyUs: Math.round(dv.getFloat32(o + HIT.latencyUs, true)),
          ...(bytes[o + HIT.encap] ? { encap: encapName(bytes[o + HIT.encap]) } : {}),
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
   */
  private sweep(target: Target, why: 'create' | 'extend'): SweepInfo | null {
    const t0 = performance.now();
    try {
      const att = this.attachments.get(target.info.sniffIf);
      const ref = this.senders.get(target.senderKey);
      if (!att?.link || !ref?.sockets) return null; // an interface fault, reported as such
      const host = parseTargetHost(target.info.host);
      // Nothing ever remembered (no watched interface, first job): no scan of the whole table.
      const found = this.counters().fmNew === 0n ? [] : this.flowMemory.find({ ifindex: att.ifindex, family: host.family, addr: host.bytes, port: target.info.port });
      const plan = planSweep(found, ref.mode === 'l2' ? ref.sockets.mac : null);
      let rsts = 0;
      let probes = 0;
      let refused = 0;
      if (plan.packets.length > 0) {
        const sender = Sender.adopt(ref.sockets, { slots: Math.min(1024, plan.packets.length) });
        try {
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
            if (p.kind === 'rst') rsts++;
            else probes++;
          }
          sender.flush();
          this.sweepSent += sender.stats.sent;
          this.sweepErrors += sender.stats.errors;
        } finally {
          sender.close();
        }
      }
      const c = target.info.counters;
      c.rstsSent += rsts;
      if (refused) {
        c.undeliverable = (c.undeliverable ?? 0) + refused;
        const u = [...this.undeliverable.values()].find((x) => x.ifname === target.info.resetIf);
        target.info.deliveryFault = u?.reason ?? `RSTs undeliverable from ${target.info.resetIf}`;
      }
      // Emitted once the caller (the job manager) knows the target: add() has not returned yet.
      const resets: FlowResetInfo[] = [];
      for (const e of found) {
        const k = e.key;
        const key = flowKeyOf(binaryKey(k.addrA, 0, k.addrA.length), k.portA, binaryKey(k.addrB, 0, k.addrB.length), k.portB);
        target.flows ??= new Set();
        if (target.flows.has(key) || target.flows.size >= MAX_FLOWS_PER_TARGET) continue;
        target.flows.add(key);
        c.flows++;
        const encap = e.dirs[0]?.encap || e.dirs[1]?.encap;
        resets.push({
          targetId: target.info.id, label: target.info.label, family: k.family,
          src: formatIp(k.addrA), sport: k.portA, dst: formatIp(k.addrB), dport: k.portB, firstLatencyUs: 0, atCreate: true,
          ...(encap ? { encap: encapName(encap) } : {}),
        });
      }
      this.watchSweep(target, found, plan);
      const info: SweepInfo = { targetId: target.info.id, label: target.info.label, flows: plan.flows, rsts, probes, ms: Math.round((performance.now() - t0) * 100) / 100, why };
      this.log.info(info, 'flows reset from flow memory');
      this.lastSweep = info;
      queueMicrotask(() => {
        for (const r of resets) this.emit('flow-reset', r);
        this.emit('sweep', info);
      });
      return info;
    } catch (err) {
      this.sweepErrors++;
      this.log.warn({ err, targetId: target.info.id, label: target.info.label }, 'sweep of remembered flows failed: the job waits for their next segment');
      return null;
    }
  }

  // ---- RSTs that cannot leave the reset interface (delivery.ts) -------------

  /** A destination's verdict in an event thread: one warning per destination (and reason), naming the fix. */
  private onDelivery(ifname: string, dst: string, reason: string | null): void {
    const key = `${ifname}|${dst}`;
    const have = this.undeliverable.get(key);
    const now = Date.now();
    if (reason !== null) {
      this.undeliverable.set(key, { ifname, dst, reason, since: have?.since ?? now, seen: now });
      if (have?.reason !== reason) this.log.warn({ ifname, dst, reason }, reason);
    } else if (this.undeliverable.delete(key)) {
      this.log.info({ ifname, dst }, `RSTs from ${ifname} to ${dst} can be delivered again`);
    }
  }

  /**
   * The reset interface went down or away, or came back: what was found
   * about its destinations meanwhile is void (a down interface has no
   * routes: "no route from reset0" would outlive its recovery). The
   * interface fault itself (health.ts) says what is wrong while it lasts.
   */
  private forgetDelivery(ifname: string): void {
    for (const [key, u] of this.undeliverable) if (u.ifname === ifname) this.undeliverable.delete(key);
    for (const t of this.targets.values()) if (t.info.resetIf === ifname) delete t.info.deliveryFault;
    this.routeCheck?.forget(ifname);
    this.events.forgetDelivery(ifname);
  }

  /** Keep a target's delivery fault current from one hit: set while its RSTs are refused, cleared once they all go. */
  private noteDelivery(target: Target, refused: number, bytes: Uint8Array, o: number): void {
    const info = target.info;
    if (refused === 0) {
      delete info.deliveryFault;
      return;
    }
    info.counters.undeliverable = (info.counters.undeliverable ?? 0) + refused;
    const alen = bytes[o + HIT.family] === 4 ? 4 : 16;
    for (const at of [HIT.daddr, HIT.saddr]) {
      const u = this.undeliverable.get(`${info.resetIf}|${formatIp(bytes.slice(o + at, o + at + alen))}`);
      if (u) {
        info.deliveryFault = u.reason;
        return;
      }
    }
    info.deliveryFault ??= `RSTs undeliverable from ${info.resetIf}`;
  }

  private delivery(): Delivery {
    this.routeCheck ??= new Delivery((ifname, dst, reason) => this.onDelivery(ifname, dst, reason));
    return this.routeCheck;
  }

  /** One fault per reset interface with undeliverable destinations: the first reason, and how many more. */
  private deliveryFaults(): InterfaceFault[] {
    const by = new Map<string, { reasons: string[]; since: number }>();
    const now = Date.now();
    for (const [key, u] of this.undeliverable) {
      // Not confirmed for a minute: no RST went that way since (the flows are gone), so it is no longer news.
      if (now - u.seen > 60_000) {
        this.undeliverable.delete(key);
        continue;
      }
      const e = by.get(u.ifname) ?? { reasons: [], since: u.since };
      e.reasons.push(u.reason);
      e.since = Math.min(e.since, u.since);
      by.set(u.ifname, e);
    }
    return [...by].map(([ifname, e]) => ({
      ifname, role: 'reset' as const, kind: 'undeliverable' as const, since: e.since,
      fault: e.reasons.length === 1 ? e.reasons[0] : `${e.reasons[0]} (and ${e.reasons.length - 1} more undeliverable destinations)`,
    }));
  }

  /**
   * For `tcpreset create` in l3 mode: a warning when HOST itself has no
   * route through RESET_IF. The job is still created: its peers are only
   * known later, and a route may be added meanwhile. undefined when fine.
   */
  hostRouteWarning(resetIf: string, host: string): string | undefined {
    const state = readInterface(resetIf);
    if (!state) return undefined; // the interface checks at receipt report this
    return this.delivery().routeProblem(resetIf, state.ifindex, parseTargetHost(host).bytes) ?? undefined;
  }

  // ---- verification ---------------------------------------------------------

  /**
   * The outcome of the target's last sweep: at once when `waitMs` is 0 or
   * it is settled, else once it settles or `waitMs` passes, whichever is
   * first. null: the target had no sweep (interface away, flow memory off).
   */
  async verification(targetId: number, waitMs = 0): Promise<SweepOutcome | null> {
    const v = this.verifications.get(targetId);
    if (!v) return null;
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
    return { ...v.outcome, unverified: [...v.outcome.unverified] };
  }

  /** Start watching what the sweep's probes draw (flow-sweep.ts, 3.). */
  private watchSweep(target: Target, found: readonly { slot: number; key: FlowKey; state: number }[], plan: ReturnType<typeof planSweep>): void {
    const id = target.info.id;
    this.settle(id, 'superseded'); // an extend's sweep replaces the create's
    const name = (k: FlowKey): string => `${fmtEnd(k.addrA, k.portA)}-${fmtEnd(k.addrB, k.portB)}`;
    const flows: Watched[] = plan.probes.map((p) => {
      const f = found[p.entry]!;
      return { slot: f.slot, key: f.key, name: name(f.key), answerSeq: p.answerSeq, dead: [false, false], probes: [], counted: false };
    });
    // planSweep emits two probes per probed connection, in the order of plan.probes.
    let i = 0;
    for (const p of plan.packets) if (p.kind === 'probe') flows[i++ >> 1]?.probes.push(p);
    const probed = new Set(plan.probes.map((p) => p.entry));
    const unprobed = found.filter((f, n) => !probed.has(n) && !flowClosedKey(f)).map((f) => name(f.key)).slice(0, Math.max(0, plan.flows - flows.length));
    const now = performance.now();
    const v: Verification = {
      outcome: { targetId: id, label: target.info.label, known: plan.flows, reset: plan.flows, verified: 0, unverified: [...flows.map((f) => f.name), ...unprobed], settled: false, ms: 0 },
      flows, unprobed, startedAt: now, lastProbeAt: now, senderKey: target.senderKey, waiters: [],
    };
    this.verifications.set(id, v);
    if (plan.flows > 0) {
      target.info.counters.known = (target.info.counters.known ?? 0) + plan.flows;
      this.sweepKnown += plan.flows;
    }
    if (flows.length === 0) {
      this.settle(id, 'settled');
      return;
    }
    if (!this.verifyTimer) {
      this.verifyTimer = setInterval(() => this.pollVerifications(), VERIFY_POLL_MS);
      this.verifyTimer.unref();
    }
  }

  private pollVerifications(): void {
    const now = performance.now();
    for (const [id, v] of this.verifications) {
      if (v.outcome.settled) continue;
      if (!this.targets.has(id)) {
        this.settle(id, 'job ended');
        continue;
      }
      let verified = 0;
      const unverified: string[] = [];
      const reprobe: SweepPacket[] = [];
      const due = now - v.lastProbeAt >= REPROBE_MS;
      for (const f of v.flows) {
        const e = this.flowMemory.at(f.slot);
        if (e && sameKey(e.key, f.key)) {
          for (const end of [0, 1] as const) {
            const d = e.dirs[end];
            // Sticky: a later segment (the peer's RST drawing another) may overwrite the answer.
            if (!f.dead[end] && d && d.tcpFlags & TCP_RST && f.answerSeq[end] !== null && d.seq === f.answerSeq[end]) f.dead[end] = true;
          }
        }
        if (f.dead[0] && f.dead[1]) {
          verified++;
          if (!f.counted) {
            f.counted = true;
            const c = this.targets.get(id)!.info.counters;
            c.verified = (c.verified ?? 0) + 1;
            this.sweepVerified++;
          }
        } else {
          unverified.push(f.name);
          if (due) for (const p of f.probes) if (!f.dead[p.to === 'a' ? 0 : 1]) reprobe.push(p);
        }
      }
      const o = v.outcome;
      o.verified = verified;
      o.unverified = [...unverified, ...v.unprobed];
      o.ms = Math.round(now - v.startedAt);
      if (o.unverified.length === 0) this.settle(id, 'settled');
      else if (now - v.startedAt >= VERIFY_WINDOW_MS) this.settle(id, 'window over');
      else if (reprobe.length > 0) {
        v.lastProbeAt = now;
        this.sendProbes(v, reprobe);
      }
    }
    if (this.verifyTimer && ![...this.verifications.values()].some((v) => !v.outcome.settled)) {
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
        }
        sender.flush();
        this.sweepSent += sender.stats.sent;
        this.sweepErrors += sender.stats.errors;
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
    if (!v || v.outcome.settled) return;
    v.outcome.settled = true;
    const o = v.outcome;
    const line = { targetId: id, label: o.label, known: o.known, reset: o.reset, verified: o.verified, ms: o.ms, why, ...(o.unverified.length ? { unverified: o.unverified.slice(0, 32) } : {}) };
    if (o.verified < o.known) this.log.warn(line, 'sweep outcome settled: not every reset flow is confirmed dead');
    else this.log.info(line, 'sweep outcome settled');
    for (const w of v.waiters.splice(0)) w();
  }

  // ---- expiry -------------------------------------------------------------

  private armTimer(target: Target): void {
    if (target.timer) clearTimeout(target.timer);
    const delay = Math.max(0, target.info.expiresAt - Date.now());
    target.timer = setTimeout(() => {
      target.timer = undefined;
      if (!this.targets.has(target.info.id)) return;
      if (target.info.expiresAt > Date.now()) return this.armTimer(target); // long deadline, re-armed
      const info = publicInfo(target.info);
      this.remove(target.info.id);
      this.emit('expired', info);
    }, Math.min(delay, MAX_TIMER_MS));
    target.timer.unref?.();
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

function publicInfo(info: TargetInfo): TargetInfo {
  return { ...info, counters: { ...info.counters } };
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

function sameKey(a: FlowKey, b: FlowKey): boolean {
  return a.family === b.family && a.ifindex === b.ifindex && a.portA === b.portA && a.portB === b.portB
    && Buffer.compare(a.addrA, b.addrA) === 0 && Buffer.compare(a.addrB, b.addrB) === 0;
}

function flowClosedKey(f: { state: number }): boolean {
  return flowClosed(f.state);
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
