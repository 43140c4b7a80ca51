/**
 * The Enforcer: the data plane's one owner. It keeps the BPF targets map in
 * step with a set of timed targets, attaches the XDP program to each sniff
 * interface while some target needs it, and owns the reset sockets. The
 * ring buffer is read, and the RSTs forged and sent, by the event thread
 * (event-worker.ts, driven through event-path.ts); what it did comes back
 * here afterwards for counters, flow sets and logs.
 *
 * Several targets may share one map key (same sniff interface, host and
 * port: e.g. two detection engines raising the same alert). The map holds
 * one entry per key, a "slot", whose deadline is the latest of its targets;
 * an event is charged to every live target of its slot, and each distinct
 * reset sender fires once.
 */
import { EventEmitter } from 'node:events';
import {
  MAP_COUNTERS, MAP_EVENTS, MAP_EVENT_RINGS, MAP_TARGETS, RINGBUF_BYTES, RING_SLOTS, LAYOUT,
  decodeTargetKey, encodeTargetKey, encodeTargetValue, sumCounters,
  type Counters, type Family,
} from '../contract.js';
import { TcpresetError, ValidationError } from '../errors.js';
import { BpfObject, numPossibleCpus, type BpfMap, type XdpLink } from '../bpf/object.js';
import { closeSenderSockets, openSenderSockets, type InjectMode, type SenderSockets } from '../net/sender.js';
import { formatIp, parseIp, unmapV4 } from '../packet/addr.js';
import { readInterface } from '../net/ifaces.js';
import { Prefilter } from './prefilter.js';
import { EventPool } from './event-pool.js';
import { HIT, HIT_BYTES, type EventReport } from './event-wire.js';

export interface LoggerLike {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface TargetSpec {
  sniffIf: string;
  resetIf: string;
  /** IPv4 or IPv6 text, parsed strictly; an IPv4-mapped IPv6 address becomes its IPv4 form. */
  host: string;
  /** Remote TCP port; absent or 0 = the whole host. */
  port?: number;
  mode?: InjectMode;
  /** Wall-clock end, epoch ms. */
  expiresAt: number;
  /** Free text for logs, e.g. "ENGID/jobid". */
  label?: string;
}

export interface TargetCounters {
  matched: number;
  rstsSent: number;
  flows: number;
  firstHitAt: number | null;
  lastHitAt: number | null;
}

export interface TargetInfo {
  id: number;
  sniffIf: string;
  resetIf: string;
  host: string;
  port: number;
  mode: InjectMode;
  expiresAt: number;
  label: string;
  family: Family;
  counters: TargetCounters;
}

export interface FlowResetInfo {
  targetId: number;
  label: string;
  family: Family;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** From the segment's arrival in XDP to sendmmsg's return for its RSTs (µs). */
  firstLatencyUs: number;
}

export type IfaceRole = 'sniff' | 'reset';

/** An interface the data plane needs that is missing or down. */
export interface InterfaceFault {
  ifname: string;
  role: IfaceRole;
  fault: string;
  /** Epoch ms when the fault was first seen. */
  since: number;
}

export interface EnforcerStatus {
  attached: { ifname: string; ifindex: number; mode: 'native' | 'generic' }[];
  senders: { ifname: string; mode: InjectMode; sent: number; errors: number; lastError?: string }[];
  counters: Counters;
  /** perThread: records each event thread handled. */
  ring: { records: number; wakeups: number; stale: number; errors: number; threads: number; perThread: number[] };
  targets: number;
  faults: InterfaceFault[];
}

export interface EnforcerOptions {
  objectPath?: string;
  logger?: LoggerLike;
  maxTargets?: number;
  /** Capacity of the flow memory, connections (default FLOWMEM_DEFAULT). */
  flowMemory?: number;
  /** How often interfaces are checked for going down, away and back (ms). */
  healthIntervalMs?: number;
  /** The event thread busy-polls the ring this long after the last record before sleeping (µs). */
  eventSpinUs?: number;
  /** Nice value of the event thread (null: inherited). Default -10. */
  eventNice?: number | null;
  /** Event threads, each with a ring buffer of its own (1..RING_SLOTS). Default 1. */
  eventThreads?: number;
}

/** Distinct flows remembered per target; past this the count saturates rather than grow without bound. */
const MAX_FLOWS_PER_TARGET = 65536;
/** setTimeout's limit; longer deadlines re-arm. */
const MAX_TIMER_MS = 0x7fffffff;

/** link is null while the interface is away: the kernel detached it with the device. */
interface Attachment { ifname: string; link: XdpLink | null; ifindex: number; mode: 'native' | 'generic'; refs: number }
interface SenderRef {
  key: string;
  ifname: string;
  mode: InjectMode;
  /** Null while the interface is away. The event thread sends on them. */
  sockets: SenderSockets | null;
  refs: number;
  /** Totals of the live sockets per event thread, as each last reported them. */
  live: { sent: number; errors: number; lastError?: string }[];
  /** Totals of sockets retired when their interface went away. */
  sent: number;
  errors: number;
  lastError?: string;
}

interface Target {
  info: TargetInfo;
  slot: Slot;
  senderKey: string;
  /** Created on the first reset flow: most targets of a large set never see one. */
  flows: Set<string> | null;
  timer: NodeJS.Timeout | undefined;
}

interface Slot {
  id: number;
  sniffIf: string;
  key: Uint8Array;
  keyText: string;
  /** Usually one; an array costs far less than a Set at 100,000 slots. */
  targets: Target[];
  expiresAt: number;
}

const noopLogger: LoggerLike = { info() {}, warn() {}, error() {}, debug() {} };

export class Enforcer extends EventEmitter {
  private readonly obj: BpfObject;
  private readonly targetsMap: BpfMap;
  private readonly countersMap: BpfMap;
  private readonly prefilter: Prefilter;
  private readonly events: EventPool;
  /** Per event thread, as each last reported. */
  private readonly threadStats: { records: number; wakeups: number; stale: number; errors: number }[];
  private readonly log: LoggerLike;
  private readonly ncpu: number;
  private readonly attachments = new Map<string, Attachment>();
  private readonly senders = new Map<string, SenderRef>();
  private readonly targets = new Map<number, Target>();
  private readonly slots = new Map<number, Slot>();
  private readonly slotByKey = new Map<string, Slot>();
  private readonly faults = new Map<string, InterfaceFault>();
  private readonly healthTimer: NodeJS.Timeout;
  private nextTargetId = 1;
  private nextSlotId = 1;
  private staleEvents = 0;
  private closed = false;

  private constructor(obj: BpfObject, log: LoggerLike, healthIntervalMs: number, spinUs: number | undefined, nice: number | null | undefined, threads: number) {
    super();
    this.obj = obj;
    this.log = log;
    this.targetsMap = obj.map(MAP_TARGETS);
    this.countersMap = obj.map(MAP_COUNTERS);
    this.prefilter = new Prefilter(obj);
    this.ncpu = numPossibleCpus();
    if (!Number.isInteger(threads) || threads < 1 || threads > RING_SLOTS) throw new ValidationError('eventThreads', threads, `must be an integer 1..${RING_SLOTS}`);
    const ringFds = [obj.map(MAP_EVENTS).fd];
    for (let i = 1; i < threads; i++) ringFds.push(obj.createRingBuffer(`events${i}`, RINGBUF_BYTES));
    if (threads > 1) {
      // Empty slots mean the "events" ring; with one thread they stay empty.
      const slots = obj.map(MAP_EVENT_RINGS);
      for (let i = 0; i < RING_SLOTS; i++) slots.update(u32(i), u32(ringFds[i % threads]));
    }
    this.threadStats = ringFds.map(() => ({ records: 0, wakeups: 0, stale: 0, errors: 0 }));
    this.events = new EventPool({
      ringFds, ringBytes: RINGBUF_BYTES, spinUs, nice,
      onNiceError: (message) => log.warn({ nice, error: message }, 'event thread priority not raised (needs CAP_SYS_NICE or systemd LimitNICE=): first responses may wait behind other work on a loaded sensor'),
      onReport: (r, thread) => this.onReport(r, thread),
      onCrash: (err, restarts, thread) => this.log.error({ err, restarts, thread }, 'event thread died: restarted, enforcement resumed'),
    });
    this.healthTimer = setInterval(() => this.checkInterfaces(), healthIntervalMs);
    this.healthTimer.unref();
  }

  static open(opts: EnforcerOptions = {}): Enforcer {
    const obj = BpfObject.load(opts.objectPath, { maxTargets: opts.maxTargets, flowMemory: opts.flowMemory });
    try {
      return new Enforcer(obj, opts.logger ?? noopLogger, opts.healthIntervalMs ?? 500, opts.eventSpinUs, opts.eventNice, opts.eventThreads ?? 1);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** Resolves once the event thread waits on the ring: a target added before then is answered from that moment. */
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
    const att = this.acquireAttachment(spec.sniffIf);
    let senderKey: string;
    try {
      senderKey = this.acquireSender(spec.resetIf, mode);
    } catch (err) {
      this.releaseAttachment(spec.sniffIf);
      throw err;
    }

    const id = this.nextTargetId++;
    const info: TargetInfo = {
      id, sniffIf: spec.sniffIf, resetIf: spec.resetIf, host: host.canonical, port, mode,
      expiresAt: spec.expiresAt, label: spec.label ?? `target-${id}`, family: host.family,
      counters: { matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null },
    };
    const keyBytes = encodeTargetKey({ ifindex: att.ifindex, family: host.family, addr: host.bytes, port });
    let slot: Slot | undefined;
    try {
      slot = this.joinSlot(keyBytes, spec.sniffIf);
      const target: Target = { info, slot, senderKey, flows: null, timer: undefined };
      slot.targets.push(target);
      this.syncSlot(slot);
      this.targets.set(id, target);
      this.armTimer(target);
    } catch (err) {
      if (slot) this.leaveSlotById(slot, id);
      this.releaseSender(senderKey);
      this.releaseAttachment(spec.sniffIf);
      throw err;
    }
    this.log.info({ target: publicInfo(info), xdpMode: att.mode }, 'target added');
    return publicInfo(info);
  }

  extend(id: number, expiresAt: number): TargetInfo {
    this.assertOpen();
    const target = this.targets.get(id);
    if (!target) throw new TcpresetError('E_NOT_FOUND', `no target with id ${id}`, { details: { id } });
    if (!Number.isFinite(expiresAt)) throw new ValidationError('expiresAt', expiresAt, 'must be epoch milliseconds');
    target.info.expiresAt = expiresAt;
    this.syncSlot(target.slot);
    this.armTimer(target);
    return publicInfo(target.info);
  }

  remove(id: number): boolean {
    const target = this.targets.get(id);
    if (!target) return false;
    this.targets.delete(id);
    if (target.timer) clearTimeout(target.timer);
    // The map first: enforcement stops the moment the caller is told it did.
    this.leaveSlot(target);
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
      attached: [...this.attachments.values()].filter((a) => a.link).map((a) => ({ ifname: a.ifname, ifindex: a.ifindex, mode: a.mode })),
      senders: [...this.senders.values()].map((ref) => {
        let sent = ref.sent;
        let errors = ref.errors;
        let lastError = ref.lastError;
        for (const l of ref.live) {
          sent += l.sent;
          errors += l.errors;
          lastError = l.lastError ?? lastError;
        }
        return { ifname: ref.ifname, mode: ref.mode, sent, errors, ...(lastError ? { lastError } : {}) };
      }),
      counters: this.counters(),
      ring: {
        records: sum(this.threadStats, 'records'), wakeups: sum(this.threadStats, 'wakeups'),
        stale: this.staleEvents + sum(this.threadStats, 'stale'), errors: sum(this.threadStats, 'errors'), threads: this.threadStats.length,
        perThread: this.threadStats.map((s) => s.records),
      },
      targets: this.targets.size,
      faults: [...this.faults.values()].map((f) => ({ ...f })),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.healthTimer);
    for (const id of [...this.targets.keys()]) this.remove(id);
    await this.events.stop();
    for (const ref of this.senders.values()) if (ref.sockets) closeSenderSockets(ref.sockets);
    this.senders.clear();
    for (const { link } of this.attachments.values()) link?.close();
    this.attachments.clear();
    this.obj.close();
  }

  // ---- events -------------------------------------------------------------

  /** What the event thread did, after it did it: counters, flow sets and logs. */
  private onReport(r: EventReport, thread: number): void {
    if (r.type === 'stats') {
      const st = this.threadStats[thread];
      const before = st.errors;
      this.threadStats[thread] = { records: r.records, wakeups: r.wakeups, stale: r.stale, errors: r.errors };
      // Bounded: a flood of bad records must not become a flood of log lines.
      if (r.errors > before && (before < 10 || Math.floor(before / 10000) !== Math.floor(r.errors / 10000))) {
        this.log.error({ err: r.lastError, recordErrors: r.errors, thread }, 'event handling failed');
      }
      return;
    }
    if (r.type !== 'hits') return;
    for (const s of r.senders) {
      const ref = this.senders.get(s.key);
      if (ref) ref.live[thread] = { sent: s.sent, errors: s.errors, lastError: s.lastError };
    }
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
      c.rstsSent += rsts;
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
        };
        this.emit('flow-reset', info);
      }
    }
  }

  // ---- slots (one BPF map entry per key) ----------------------------------

  private joinSlot(key: Uint8Array, sniffIf: string): Slot {
    const keyText = Buffer.from(key).toString('hex');
    let slot = this.slotByKey.get(keyText);
    if (!slot) {
      slot = { id: this.nextSlotId++, sniffIf, key, keyText, targets: [], expiresAt: 0 };
      // The bit before the entry: the program must never see an entry its prefilter hides.
      this.prefilter.add(decodeTargetKey(key));
      this.slotByKey.set(keyText, slot);
      this.slots.set(slot.id, slot);
    }
    return slot;
  }

  private leaveSlot(target: Target): void {
    this.leaveSlotById(target.slot, target.info.id);
  }

  private leaveSlotById(slot: Slot, id: number): void {
    slot.targets = slot.targets.filter((t) => t.info.id !== id);
    if (slot.targets.length === 0) {
      this.targetsMap.delete(slot.key);
      this.events.deleteSlot(slot.id);
      this.prefilter.remove(decodeTargetKey(slot.key));
      this.slotByKey.delete(slot.keyText);
      this.slots.delete(slot.id);
    } else {
      this.syncSlot(slot);
    }
  }

  /** Write the slot's entry with the latest deadline of its targets. */
  private syncSlot(slot: Slot): void {
    let expiresAt = 0;
    for (const t of slot.targets) expiresAt = Math.max(expiresAt, t.info.expiresAt);
    slot.expiresAt = expiresAt;
    // Before the map entry: the event thread must know a slot before its first segment.
    this.events.setSlot(slot.id, [...new Set(slot.targets.map((t) => t.senderKey))]);
    this.targetsMap.update(slot.key, encodeTargetValue({ targetId: slot.id, expiresNs: wallToMonotonicNs(expiresAt) }));
  }

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

  private acquireAttachment(ifname: string): Attachment {
    const have = this.attachments.get(ifname);
    if (have) {
      have.refs++;
      return have;
    }
    const link = this.obj.attachXdp(ifname, 'auto');
    const att: Attachment = { ifname, link, ifindex: link.ifindex, mode: link.mode, refs: 1 };
    this.attachments.set(ifname, att);
    this.log.info({ ifname, ifindex: link.ifindex, mode: link.mode }, 'XDP attached');
    return att;
  }

  private releaseAttachment(ifname: string): void {
    const have = this.attachments.get(ifname);
    if (!have || --have.refs > 0) return;
    this.attachments.delete(ifname);
    this.faults.delete(`sniff/${ifname}`);
    have.link?.close();
    this.log.info({ ifname }, 'XDP detached');
  }

  private acquireSender(ifname: string, mode: InjectMode): string {
    const key = `${ifname}/${mode}`;
    const have = this.senders.get(key);
    if (have) {
      have.refs++;
      return key;
    }
    const sockets = openSenderSockets(ifname, mode);
    this.senders.set(key, { key, ifname, mode, sockets, refs: 1, live: this.noLive(), sent: 0, errors: 0 });
    this.events.addSender(key, sockets);
    return key;
  }

  private releaseSender(key: string): void {
    const have = this.senders.get(key);
    if (!have || --have.refs > 0) return;
    this.senders.delete(key);
    if (!this.hasSenderOn(have.ifname)) this.faults.delete(`reset/${have.ifname}`);
    const sockets = have.sockets;
    if (sockets) this.events.removeSender(key, () => closeSenderSockets(sockets));
  }

  private hasSenderOn(ifname: string): boolean {
    for (const ref of this.senders.values()) if (ref.ifname === ifname) return true;
    return false;
  }

  // ---- interfaces going down, away and back ---------------------------------

  /**
   * A deleted device takes its XDP link with it, and a raw or packet socket
   * stays bound to the old ifindex; a re-created device has a new ifindex,
   * which is part of every target key. So: on each tick, compare what we hold
   * with what the kernel has, report the difference as a fault, and rebuild
   * (re-attach, re-key, reopen) as soon as the interface is back.
   */
  private checkInterfaces(): void {
    for (const att of this.attachments.values()) {
      try {
        this.checkAttachment(att);
      } catch (err) {
        this.setFault(att.ifname, 'sniff', `recovery failed: ${(err as Error).message}`);
      }
    }
    for (const ref of this.senders.values()) {
      try {
        this.checkSender(ref);
      } catch (err) {
        this.setFault(ref.ifname, 'reset', `recovery failed: ${(err as Error).message}`);
      }
    }
  }

  private checkAttachment(att: Attachment): void {
    const state = readInterface(att.ifname);
    if (!state) {
      if (att.link) {
        att.link.close();
        att.link = null;
      }
      return this.setFault(att.ifname, 'sniff', 'interface is gone');
    }
    if (!att.link || state.ifindex !== att.ifindex) {
      att.link?.close();
      att.link = null;
      const link = this.obj.attachXdp(att.ifname, 'auto');
      const old = att.ifindex;
      att.link = link;
      att.ifindex = link.ifindex;
      att.mode = link.mode;
      this.rekeySlots(att.ifname, link.ifindex);
      this.log.warn({ ifname: att.ifname, oldIfindex: old, ifindex: link.ifindex, mode: link.mode }, 'XDP re-attached to re-created interface');
    }
    if (!state.active) return this.setFault(att.ifname, 'sniff', inactiveReason(state));
    this.clearFault(att.ifname, 'sniff');
  }

  private checkSender(ref: SenderRef): void {
    const state = readInterface(ref.ifname);
    if (!state) {
      if (ref.sockets) this.retireSender(ref);
      return this.setFault(ref.ifname, 'reset', 'interface is gone');
    }
    if (!ref.sockets || ref.sockets.ifindex !== state.ifindex) {
      if (ref.sockets) this.retireSender(ref);
      ref.sockets = openSenderSockets(ref.ifname, ref.mode);
      ref.live = this.noLive();
      this.events.addSender(ref.key, ref.sockets);
      this.log.warn({ ifname: ref.ifname, mode: ref.mode, ifindex: state.ifindex }, 'reset sender reopened on re-created interface');
    }
    if (!state.active) return this.setFault(ref.ifname, 'reset', inactiveReason(state));
    this.clearFault(ref.ifname, 'reset');
  }

  private noLive(): SenderRef['live'] {
    return this.threadStats.map(() => ({ sent: 0, errors: 0 }));
  }

  private retireSender(ref: SenderRef): void {
    const sockets = ref.sockets;
    if (!sockets) return;
    for (const l of ref.live) {
      ref.sent += l.sent;
      ref.errors += l.errors;
      ref.lastError = l.lastError ?? ref.lastError;
    }
    ref.live = this.noLive();
    ref.sockets = null;
    this.events.removeSender(ref.key, () => closeSenderSockets(sockets));
  }

  /** Move every slot of `ifname` to its new ifindex (the key's first field). */
  private rekeySlots(ifname: string, ifindex: number): void {
    for (const slot of this.slots.values()) {
      if (slot.sniffIf !== ifname) continue;
      this.targetsMap.delete(slot.key);
      this.prefilter.remove(decodeTargetKey(slot.key));
      this.slotByKey.delete(slot.keyText);
      const key = new Uint8Array(slot.key);
      new DataView(key.buffer).setUint32(LAYOUT.tr_target_key.fields.ifindex, ifindex, true);
      this.prefilter.add(decodeTargetKey(key));
      slot.key = key;
      slot.keyText = Buffer.from(key).toString('hex');
      this.slotByKey.set(slot.keyText, slot);
      this.syncSlot(slot);
    }
  }

  private setFault(ifname: string, role: IfaceRole, fault: string): void {
    const id = `${role}/${ifname}`;
    const have = this.faults.get(id);
    if (have?.fault === fault) return;
    const f: InterfaceFault = { ifname, role, fault, since: have?.since ?? Date.now() };
    this.faults.set(id, f);
    this.log.warn({ ifname, role, fault }, 'interface fault: enforcement on it is suspended');
    this.emit('fault', { ...f });
  }

  private clearFault(ifname: string, role: IfaceRole): void {
    const id = `${role}/${ifname}`;
    const have = this.faults.get(id);
    if (!have) return;
    this.faults.delete(id);
    this.log.info({ ifname, role, downMs: Date.now() - have.since }, 'interface recovered: enforcement resumed');
    this.emit('recovered', { ifname, role, since: have.since });
  }

  private assertOpen(): void {
    if (this.closed) throw new TcpresetError('E_INTERNAL', 'enforcer is closed');
  }
}

/** Admin-down, or up without carrier (e.g. a veth whose peer is down): either way nothing flows. */
function inactiveReason(state: { up: boolean; operstate: string }): string {
  return state.up ? `interface has no carrier (operstate ${state.operstate})` : 'interface is down';
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

/** bpf_ktime_get_ns() and process.hrtime() both read CLOCK_MONOTONIC. */
function wallToMonotonicNs(epochMs: number): bigint {
  const remainingMs = Math.max(0, epochMs - Date.now());
  return process.hrtime.bigint() + BigInt(Math.round(remainingMs)) * 1_000_000n;
}
