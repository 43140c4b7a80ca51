/**
 * The create-time sweep and its verification (issue 9; docs/design.md):
 * when a job is created or extended, the target's connections the flow
 * memory holds open are reset at once, each with the exact RST pair from
 * its last segment and a probe to each end (flow-sweep.ts), and then
 * watched for their ends' answers: an end that answers its probe with a RST
 * carrying the expected seq is dead. Owns the sweeps in progress, their
 * outcomes (kept for the target's life), the verify timer and the sweep
 * totals of status. The Enforcer calls sweep() and forget(); the targets,
 * sockets, flow memory and route check it uses belong to other units.
 */
import { encapName, encodeFlowKey, flowClosed, fmHash, type FlowKey } from '../bpf/contract.js';
import { formatIp } from '../core/addr.js';
import type { LogSink } from '../core/model.js';
import { Sender } from '../net/sender.js';
import type { Attachments } from './attachments.js';
import type { FlowMatch, FlowMemoryView, FlowQuery } from './flow-memory.js';
import { planSweep, type SweepPacket } from './flow-sweep.js';
import { hitMptcp } from './mptcp.js';
import type { MptcpResets } from './mptcp-resets.js';
import type { ResetSenders } from './senders.js';
import { binaryKey, flowKeyOf, type Target } from './targets.js';
import type { FlowResetInfo, SweepInfo, SweepOutcome } from './types.js';
import type { DeliveryFaults } from './delivery-faults.js';

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

/** A sweep in progress: its connections are planned and sent a turn at a time (turn()). */
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
  /** The sender's stats as already added to sent / errors. */
  counted: { sent: number; errors: number };
}

/** The sweep totals of EnforcerStatus: packets sent and failures (sweeps and packets); connections found open, and of those verified dead (daemon lifetime). */
export interface SweepTotals {
  sent: number;
  errors: number;
  known: number;
  verified: number;
}

export interface SweeperDeps {
  flowMemory: FlowMemoryView;
  attachments: Attachments;
  senders: ResetSenders;
  undeliverable: DeliveryFaults;
  mptcp: MptcpResets;
  /** The Enforcer's live targets, by id (read only here). */
  targets: ReadonlyMap<number, Target>;
  /** False while the flow memory never learnt a connection (no watched interface, first job): no scan of the whole table. */
  remembered(): boolean;
  /** Count a flow the sweep reset (the Enforcer's bookkeeping, shared with the event path): true when it is new to the target. */
  noteFlow(target: Target, key: string): boolean;
  /** The Enforcer's 'sweep' and 'flow-reset' events. */
  emit(event: 'sweep', info: SweepInfo): void;
  emit(event: 'flow-reset', info: FlowResetInfo): void;
  log: LogSink;
}

export class Sweeper {
  private readonly totals: SweepTotals = { sent: 0, errors: 0, known: 0, verified: 0 };
  /** The last sweep, for the request that caused it (take()). */
  private last: SweepInfo | null = null;
  /** Sweep outcomes by target id, unsettled and settled (kept for the target's life). */
  private readonly verifications = new Map<number, Verification>();
  /** The ids of verifications not settled yet (the map keeps settled ones for the target's life). */
  private readonly unsettled = new Set<number>();
  /** Sweeps still sending, by target id. */
  private readonly sweeps = new Map<number, SweepRun>();
  private verifyTimer: NodeJS.Timeout | null = null;

  constructor(private readonly d: SweeperDeps) {}

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
   * and sending go a turn at a time (turn()), the first one here: a
   * host with a few connections is swept before add() returns, one with
   * thousands in the turns that follow, with the daemon answering between
   * them. The returned info (and take()'s) counts every connection
   * found; the log line "flows reset from flow memory" and the 'sweep'
   * event come once the last packet is sent. null: no sweep ran (an
   * interface fault, reported as such, or a failure).
   */
  sweep(target: Target, why: 'create' | 'extend'): SweepInfo | null {
    const t0 = performance.now();
    const id = target.id;
    let run: SweepRun | undefined;
    try {
      const att = this.d.attachments.get(target.sniffIf);
      const ref = this.d.senders.get(target.senderKey);
      if (!att?.link || !ref?.sockets) return null; // an interface fault, reported as such
      this.stop(id); // an extend's sweep replaces the create's, sent or not
      const query: FlowQuery = { ifindex: att.ifindex, family: target.family, addr: target.addr, port: target.port };
      const slots = this.d.remembered() ? this.d.flowMemory.findSlots(query) : [];
      if (slots.length === 0) return this.empty(target, why, t0, target.port ? this.ownPort(query) : undefined);
      target.swept = false;
      const v = this.startVerification(target, slots.length, t0, ref.sockets.mac);
      run = { target, why, t0, query, slots, next: 0, flows: 0, rsts: 0, probes: 0, turns: 0, immediate: null, v, sender: null, sockets: null, counted: { sent: 0, errors: 0 } };
      this.sweeps.set(id, run);
      this.turn(run);
      // Done in this turn: the final figures; else what is known now (every connection found counts: they are being reset).
      const info: SweepInfo = this.sweeps.has(id)
        ? { targetId: id, label: target.label, flows: v.outcome.known, rsts: run.rsts, probes: run.probes, ms: round2(performance.now() - t0), why, pending: true }
        : sweepInfo(run);
      this.last = info;
      return info;
    } catch (err) {
      this.totals.errors++;
      this.d.log.warn({ err, targetId: id, label: target.label }, 'sweep of remembered flows failed: the job waits for their next segment');
      if (run && this.sweeps.get(id) === run) this.finish(run, 'failed'); // its verification settles on what went
      return null;
    }
  }

  /**
   * The sweep the last sweep() ran (null: none ran, e.g. the interface is
   * away), once: the create request reports what it found.
   */
  take(): SweepInfo | null {
    const s = this.last;
    this.last = null;
    return s;
  }

  /** The target `id` is gone: its sweep stops where it is, its outcome settles ('job ended') and is dropped. */
  forget(id: number): void {
    this.stop(id);
    this.settle(id, 'job ended');
    this.verifications.delete(id);
  }

  /** The daemon-lifetime totals (a copy). */
  status(): SweepTotals {
    return { ...this.totals };
  }

  /** Stop the verify timer (the Enforcer is closing; its targets are removed next). */
  close(): void {
    if (this.verifyTimer) clearInterval(this.verifyTimer);
    this.verifyTimer = null;
  }

  /**
   * The outcome of the target's last sweep: at once when `waitMs` is 0 or
   * it is settled, else once it settles or `waitMs` passes, whichever is
   * first. null: the target had no sweep (interface away, flow memory off).
   */
  async verification(targetId: number, waitMs = 0): Promise<SweepOutcome | null> {
    const v = this.verifications.get(targetId);
    if (!v) {
      const t = this.d.targets.get(targetId);
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

  /**
   * A sweep that found nothing (the common case: most jobs name a host with
   * no open connection remembered): no run and no verification to watch, and
   * its line at debug. Its outcome (verification()) is the settled zero one.
   */
  private empty(target: Target, why: 'create' | 'extend', t0: number, own?: SweepInfo['ownPort']): SweepInfo {
    const id = target.id;
    this.settle(id, 'superseded');
    this.verifications.delete(id);
    target.swept = true;
    const warning = own ? ownPortWarning(formatIp(target.addr), target.port, own) : undefined;
    const info: SweepInfo = { targetId: id, label: target.label, flows: 0, rsts: 0, probes: 0, ms: round2(performance.now() - t0), why, ...(own ? { ownPort: own, warning } : {}) };
    this.last = info;
    if (warning) this.d.log.warn({ targetId: id, label: target.label, port: target.port, ownPort: own }, warning);
    this.d.log.debug(info, 'flows reset from flow memory');
    queueMicrotask(() => this.d.emit('sweep', info));
    return info;
  }

  /**
   * A job with -p found nothing: the host's open connections whose port
   * on the HOST's side is that port (the user likely named a service port of
   * the host, while -p is the peer's port; fresh-user-4 F8). undefined:
   * none. At most 3 peers are named. One scan of the host's slots, only
   * when the sweep found nothing, so the common create costs no more.
   */
  private ownPort(query: FlowQuery): SweepInfo['ownPort'] {
    if (!this.d.remembered()) return undefined;
    const any: FlowQuery = { ...query, port: 0 };
    let sessions = 0;
    const peers: string[] = [];
    for (const slot of this.d.flowMemory.findSlots(any)) {
      const m = this.d.flowMemory.match(slot, any);
      if (!m) continue;
      const k = m.key;
      const [own, peer] = m.hostEnd === 0 ? [k.portA, k.addrB] : [k.portB, k.addrA];
      if (own !== query.port) continue;
      sessions++;
      const name = formatIp(peer);
      if (peers.length < 3 && !peers.includes(name)) peers.push(name);
    }
    return sessions ? { sessions, peers } : undefined;
  }

  /**
   * One turn of a sweep: read, plan and send its next connections, at most
   * SWEEP_TURN_FLOWS or SWEEP_TURN_MS' worth, then yield (setImmediate)
   * until all are sent. Never throws (it runs from the event loop).
   */
  private turn(run: SweepRun): void {
    run.immediate = null;
    run.turns++;
    const target = run.target;
    const id = target.id;
    const start = performance.now();
    let refused = 0;
    const resets: FlowResetInfo[] = [];
    try {
      if (this.sweeps.get(id) !== run) return; // stopped (stop())
      const ref = this.d.senders.get(target.senderKey);
      if (!ref?.sockets) {
        // Its reset interface went away meanwhile (a fault of its own): what is left is not sent.
        this.finish(run, 'reset interface gone');
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
          const m = this.d.flowMemory.match(run.slots[run.next]!, run.query);
          if (m) found.push(m);
        }
        const plan = planSweep(found, mac);
        run.flows += plan.flows;
        if (plan.packets.length > 0) {
          if (!run.sender) {
            run.sender = Sender.adopt(ref.sockets, { slots: Math.min(256, 4 * run.slots.length) });
            run.sockets = ref.sockets;
          }
          refused += this.d.undeliverable.enqueue(run.sender, ref, plan.packets, (p) => {
            // Per interface too (ref.sweep): the event threads' totals do not see these (metrics kind="sweep").
            if (p.kind === 'rst') {
              run.rsts++;
              ref.sweep.rsts++;
              target.rstsSent++;
            } else {
              run.probes++;
              ref.sweep.probes++;
            }
          });
        }
        this.watch(run.v, found, plan, start);
        for (const e of found) {
          if (flowClosed(e.state)) continue;
          const k = e.key;
          const key = flowKeyOf(binaryKey(k.addrA, 0, k.addrA.length), k.portA, binaryKey(k.addrB, 0, k.addrB.length), k.portB);
          if (!this.d.noteFlow(target, key)) continue;
          const encap = e.dirs[0]?.encap || e.dirs[1]?.encap;
          resets.push({
            targetId: id, label: target.label, family: k.family,
            src: formatIp(k.addrA), sport: k.portA, dst: formatIp(k.addrB), dport: k.portB, firstLatencyUs: 0, atCreate: true,
            ...(encap ? { encap: encapName(encap) } : {}),
            ...(e.mp?.flags ? this.d.mptcp.connection(target, hitMptcp(e.mp.flags), e) : {}),
          });
        }
      }
      if (run.sender) {
        // Counted as they go (a full set of slots is sent from enqueue()); the stats are the sender's since adopt().
        run.sender.flush();
        const { sent, errors } = run.sender.stats;
        this.totals.sent += sent - run.counted.sent;
        this.totals.errors += errors - run.counted.errors;
        ref.sweep.errors += errors - run.counted.errors;
        run.counted = { sent, errors };
      }
    } catch (err) {
      this.totals.errors++;
      this.d.log.warn({ err, targetId: id, label: target.label }, 'sweep of remembered flows failed: the rest of them wait for their next segment');
      run.next = run.slots.length;
    }
    if (refused) this.d.undeliverable.noteRefused(target, refused);
    // Emitted once the caller (the job manager) knows the target: on the first turn, add() has not returned yet.
    if (resets.length) queueMicrotask(() => { for (const r of resets) this.d.emit('flow-reset', r); });
    if (run.next < run.slots.length) run.immediate = setImmediate(() => this.turn(run));
    else this.finish(run, null);
  }

  /** A sweep has sent all it will: its log line and event; its connections are watched from now for the window. */
  private finish(run: SweepRun, stopped: string | null): void {
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
    if (stopped) this.d.log.warn({ ...info, left: run.slots.length - run.next, stopped }, 'sweep of remembered flows stopped before its end');
    else this.d.log.info(info, 'flows reset from flow memory');
    queueMicrotask(() => this.d.emit('sweep', info));
    if (v.open.length === 0 && v.unprobed.length === 0) this.settle(id, 'settled');
    else this.pollSoon();
  }

  /** A running sweep of the target is stopped where it is (the job ended, or a new sweep replaces it). */
  private stop(id: number): void {
    const run = this.sweeps.get(id);
    if (!run) return;
    this.sweeps.delete(id);
    if (run.immediate) clearImmediate(run.immediate);
    run.immediate = null;
    closeSender(run);
    // Its outcome (settled next, by the caller) says how many went: known counts what was found.
    if (!run.v.outcome.settled) run.v.outcome.reset = run.flows;
    if (run.next < run.slots.length) this.d.log.info({ targetId: id, label: run.target.label, flows: run.flows, left: run.slots.length - run.next }, 'sweep of remembered flows stopped: the job ended or was extended');
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
  private watch(v: Verification, found: readonly FlowMatch[], plan: ReturnType<typeof planSweep>, now: number): void {
    const target = this.d.targets.get(v.outcome.targetId);
    if (plan.flows > 0 && target) {
      target.addKnown(plan.flows);
      this.totals.known += plan.flows;
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
    this.verifyTimer = setInterval(() => this.poll(), VERIFY_POLL_MS);
    this.verifyTimer.unref();
  }

  /**
   * One tick of the watch: at most VERIFY_TICK_FLOWS watched connections
   * read (a few raw bytes each, FlowMemoryView.rstSeq), round robin, and
   * at most VERIFY_TICK_PROBES re-probes sent, whatever the sweep's size.
   */
  private poll(): void {
    const now = performance.now();
    for (const id of [...this.unsettled]) {
      const v = this.verifications.get(id);
      if (!v || v.outcome.settled) {
        this.unsettled.delete(id);
        continue;
      }
      const target = this.d.targets.get(id);
      if (!target) {
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
          if (!f.dead[end] && f.answerSeq[end] !== null && this.d.flowMemory.rstSeq(f.slot, f.key, end, v.ours ?? undefined) === f.answerSeq[end]) f.dead[end] = true;
        }
        if (f.dead[0] && f.dead[1]) {
          o.verified++;
          target.addVerified(1);
          this.totals.verified++;
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
    const ref = this.d.senders.get(v.senderKey);
    if (!ref?.sockets) return;
    try {
      const sender = Sender.adopt(ref.sockets, { slots: Math.min(1024, packets.length) });
      try {
        this.d.undeliverable.enqueue(sender, ref, packets, () => { ref.sweep.probes++; });
        sender.flush();
        this.totals.sent += sender.stats.sent;
        this.totals.errors += sender.stats.errors;
        ref.sweep.errors += sender.stats.errors;
      } finally {
        sender.close();
      }
    } catch (err) {
      this.totals.errors++;
      this.d.log.warn({ err, targetId: v.outcome.targetId }, 'probe of swept flows not sent');
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
    if (o.verified < o.known) this.d.log.warn(line, 'sweep outcome settled: not every reset flow is confirmed dead');
    else this.d.log.info(line, 'sweep outcome settled');
    for (const w of v.waiters.splice(0)) w();
  }
}

/** The connections of a verification not (yet) verified, "addr:port-addr:port". */
function unverifiedOf(v: Verification): string[] {
  return [...v.open.map((f) => f.name), ...v.unprobed];
}

/** "addr:port-addr:port" (IPv6 in brackets), the key's order. */
export function flowName(k: FlowKey): string {
  return `${fmtEnd(k.addrA, k.portA)}-${fmtEnd(k.addrB, k.portB)}`;
}

function sweepInfo(run: SweepRun): SweepInfo {
  return {
    targetId: run.target.id, label: run.target.label, flows: run.flows, rsts: run.rsts, probes: run.probes,
    ms: round2(performance.now() - run.t0), why: run.why, ...(run.turns > 1 ? { turns: run.turns } : {}),
  };
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

/**
 * The warning of a -p job that matched nothing while HOST has sessions on
 * its own port -p (Sweeper.ownPort): -p is the remote port of HOST (the
 * job's contract), so those sessions are not the job's.
 */
export function ownPortWarning(host: string, port: number | undefined, own: NonNullable<SweepInfo['ownPort']>): string {
  const n = own.sessions;
  const peer = own.peers.length === 1 ? own.peers[0] : '<the peer>';
  return `-p ${port} is the remote port of HOST; ${host} has ${n} known session${n === 1 ? '' : 's'} on its own port ${port}` +
    (own.peers.length ? ` (with ${own.peers.join(', ')}${n > own.peers.length ? ', ...' : ''})` : '') +
    `: to cut ${n === 1 ? 'it' : 'them'} use -h ${peer} -p ${port}, or -h ${host} without -p`;
}
