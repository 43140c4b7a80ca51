/**
 * The event thread: the ring buffer's one consumer. It blocks in
 * epoll_wait(2) on the ring fd and a doorbell eventfd, drains matching
 * segments, forges their RSTs and sends them with sendmmsg, and only then
 * reports to the main thread what it did (counters, flow logs, status are
 * the main thread's business, after the send).
 *
 * Why a thread of its own, blocking in a native call (issue 8,
 * bench/results/idle-split-*.md): on the main thread a quiet daemon's first
 * segment waited behind libuv's poll hop, timers and whatever else the
 * loop was doing, and the synchronous `flow reset` log line ran before the
 * batch was flushed. Here the path from epoll_wait's return to sendmmsg is
 * straight-line code that nothing else shares.
 *
 * After a drain that found records the thread keeps polling the ring for
 * `spinUs` before it sleeps: the segments that follow a SYN (the ACK, the
 * request) come within a round trip, and a thread that went back to sleep
 * pays the wake-up again (~20-100 µs on 2 vCPUs) for each. Only at
 * SCHED_OTHER: at SCHED_FIFO the wake-up is ~11 µs, and spinning would hold
 * the CPU from whatever produces the segments.
 */
import { MessageChannel, parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { ENCAP_F_NO_L2, ENCAP_NONE, ENCAP_VXLAN, LAYOUT, decodeEvent, encapName, type TcpEvent } from '../bpf/contract.js';
import { RingReader } from '../bpf/ringbuf.js';
import { EPOLL_CTL_ADD, EPOLLIN, EpollEvents, EventFd, close as closeFd, epollCreate, epollCtl, epollWait, setThreadFifo, setThreadName, setThreadNice, setThreadOther } from '../native/libc.js';
import { Sender } from '../net/sender.js';
import { forgeResets, l2Frame, type RstPacket } from '../packet/forge.js';
import { formatIp } from '../core/addr.js';
import { Delivery, noL2Reason } from './delivery.js';
import { hitMptcp } from './mptcp.js';
import { HIT, HIT_BYTES, LATENCY_BOUNDS_US, LATENCY_SLOTS, LATENCY_SUM, type EventCommand, type EventReport, type EventThreadData, type SenderReport } from './event-wire.js';

/** TTLs remembered per address, so RSTs spoofed from B carry B's TTL. */
const MAX_TTL_ENTRIES = 65536;
const DOORBELL = 1;
/**
 * A SCHED_FIFO thread busy this long without sleeping (a flood) goes back to
 * SCHED_OTHER: FIFO is for answering the first segment at once, and a FIFO
 * thread that never sleeps runs ahead of ksoftirqd on its CPU, which then
 * delivers fewer packets (in the lab a local flood fell to ~5k packets/s).
 * 2 ms is many bursts of a real alert's flow.
 */
const FIFO_BUSY_NS = 2_000_000n;
/**
 * The same flood seen by a thread that does sleep: woken for every segment
 * because the producer (XDP in softirq, on the same CPU) is starved by the
 * thread itself, it is never busy 2 ms at a stretch yet holds the CPU most of
 * the time (CI: 21,540 segments in 1.5 s, one wake-up each, ~80 % of a CPU).
 * Busy more than half of a window this long: demoted as well.
 */
const FIFO_WINDOW_NS = 10_000_000n;
/** A demoted thread is FIFO again after this long without a segment (the flood is over), ms. */
const FIFO_QUIET_MS = 10;
const FIFO_QUIET_NS = BigInt(FIFO_QUIET_MS) * 1_000_000n;
const TARGET_ID = LAYOUT.tr_event.fields.target_id;
/**
 * The slot id warmUp() drives onRecord with: never a real one (the Enforcer numbers slots from 0 up),
 * and a Smi like the real ones (2^32-1 trained the slot lookups on a heap number).
 */
const WARM_SLOT = 0x3fffffff;
/**
 * How old warmUp() makes its synthetic segments, ns: latencies over every
 * bucket of the histogram and past its last (+Inf), so its loop meets no
 * exit it was not trained on when a real segment is slow.
 */
const WARM_AGES_NS = [0n, 0n, 0n, 60_000n, 400_000n, 3_000_000n, 150_000_000n, 2_000_000_000n];

/** A class, not literals: the warm-up's slot and the real ones must share one map (a literal with its keys in another order deoptimized onRecord on the first real segment). */
class Slot {
  constructor(
    readonly keys: string[],
    public senders: Sender[],
  ) {}
}

class EventThread {
  private readonly ring: RingReader;
  private readonly doorbell: EventFd;
  private readonly epfd: number;
  private readonly events = new EpollEvents(2);
  private readonly senders = new Map<string, Sender>();
  private readonly slots = new Map<number, Slot>();
  /**
   * One Slot per distinct list of sender keys, shared by every slot id that fires those senders
   * (usually all of them: one reset interface). A Slot, its cloned key array and strings and its
   * resolved senders per slot id cost ~200 B each, 20 MB at 100,000 jobs.
   */
  private readonly shared = new Map<string, Slot>();
  private readonly ttlSeen = new Map<string, number>();
  /** Senders with packets queued since the last flush. */
  private readonly dirty = new Set<Sender>();
  private hits = new DataView(new ArrayBuffer(HIT_BYTES * 64));
  private hitCount = 0;
  private stale = 0;
  /**
   * l2 RSTs not built because the MAC they would go to is the reset
   * interface's own: the segment was a frame of the sensor's (a probe,
   * spoofed from one end, source MAC ours) seen again through the mirror,
   * so its "source" end is not at that address. The end gets its RSTs from
   * its own segments; this one would only come back to the sensor.
   */
  private selfAddressed = 0;
  private errors = 0;
  private lastError: string | undefined;
  private wakeups = 0;
  private running = true;
  /** Senders on fd -1 that warmUp() runs the send path on. */
  private warmSinks: Sender[] | undefined;
  /** SCHED_FIFO now (set at start when asked; dropped during floods, see FIFO_BUSY_NS). */
  fifo = false;
  private demotions = 0;
  private readonly handle = (dv: DataView, off: number): void => this.onRecord(dv, off);
  private delivery = new Delivery((ifname, dst, reason) => this.post({ type: 'delivery', ifname, dst, reason }));
  /** The ring in ordinary memory warmUp() drains synthetic records from. */
  private warmRing: RingReader | undefined;
  /** Set during warmUp(): post() drops what it is given. */
  private warming = false;
  /** Takes the warm-up's verdicts (warmUp), so they reach no fault or report. */
  private warmDelivery: Delivery | undefined;
  /** The reaction latency histogram flush() adds to: the shared one (event-wire.ts LATENCY_*), or during warmUp() a throwaway of the same kind. */
  private latency: Float64Array;
  private readonly realLatency: Float64Array;
  private readonly warmLatency = new Float64Array(new SharedArrayBuffer(LATENCY_SLOTS * 8));

  constructor(
    private readonly data: EventThreadData,
    private readonly port: MessagePort,
  ) {
    this.ring = new RingReader(data.ringFd, data.ringBytes);
    this.realLatency = this.latency = new Float64Array(data.latency, 0, LATENCY_SLOTS);
    this.doorbell = new EventFd(data.doorbellFd);
    this.epfd = epollCreate('event thread');
    epollCtl(this.epfd, EPOLL_CTL_ADD, data.ringFd, EPOLLIN, 0, 'ring buffer');
    epollCtl(this.epfd, EPOLL_CTL_ADD, data.doorbellFd, EPOLLIN, DOORBELL, 'doorbell');
  }

  /**
   * Run the real per-event path (drain, onRecord: slot, decode, TTL table, forge,
   * deliverability, enqueue, hit record; then flush with sendmmsg) on
   * synthetic records until V8 has compiled it, so the first real segment
   * after a start or restart is not answered by the interpreter or paid for
   * with lazy compilation. Measured with bpftrace on the first segment after
   * a restart: the thread on its CPU the whole time, no page faults to speak
   * of, yet 200-350 µs between the drain loop's call and onRecord's first
   * line, and ~1.5 ms to sendmmsg's return, while warm-up only exercised the
   * helpers (decode, forge), never onRecord, deliverable, recordHit or flush.
   * Nothing leaves: the synthetic slot fires senders whose fd is -1 (EBADF),
   * verdicts go to a throwaway Delivery (no fault, no report), and no hit is
   * posted. `rounds` is small for keep-warm, which calls it every few ms.
   *
   * Compiled is not enough: the code must be compiled for what real events
   * bring, or the first one deoptimizes it back to the interpreter. Traced
   * with --trace-deopt on the first segment after a restart (1-2 ms to its
   * RSTs), the warm-up had trained it on seq/ack below 2^30 (Smis), on
   * sources always already in the TTL table, on slot objects and sender
   * modes of other maps and string kinds than the real ones, on l3 RSTs
   * that were all refused (no route through the pretend interface: the l3
   * send path never ran) and on sends that all failed. Hence the value
   * ranges and variety below, the Slot class, the on-link networks of the
   * warm Delivery and sender.ts's branch-free accounting;
   * test/e2e/event-worker.test.ts holds the first segments after a restart
   * to no deoptimization on this path.
   */
  warmUp(rounds = 3000): void {
    const sinks = (this.warmSinks ??= [
      Sender.adopt({ ifname: 'warm', ifindex: 0, mode: 'l3', mac: new Uint8Array(6), fds: [-1, -1] }, { slots: 4 }),
      Sender.adopt({ ifname: 'warm', ifindex: 0, mode: 'l2', mac: new Uint8Array(6), fds: [-1] }, { slots: 4 }),
    ]);
    const real = this.delivery;
    if (!this.warmDelivery) {
      this.warmDelivery = new Delivery();
      // The synthetic sources and destinations (10/8, 192/8 and their v6 look-alikes) as
      // connected /8 networks: the prefix walk runs as it does for a real /24.
      const net = (first: number, len: 4 | 16) => ({ addr: Object.assign(new Uint8Array(len), { 0: first }), bits: 8 });
      this.warmDelivery.assumeOnLink('warm', [net(10, 4), net(192, 4), net(10, 16), net(192, 16)]);
    }
    this.delivery = this.warmDelivery;
    this.latency = this.warmLatency;
    this.slots.set(WARM_SLOT, new Slot([], sinks));
    const rec = new DataView(new ArrayBuffer(LAYOUT.tr_event.size));
    const recBytes = new Uint8Array(rec.buffer);
    const syn = (this.warmRing ??= RingReader.synthetic());
    this.warming = true;
    this.hitCount = 0;
    // The keep-warm tick runs this too: the real count must survive it.
    const selfAddressed = this.selfAddressed;
    const F = LAYOUT.tr_event.fields;
    const sources = new Set<string>();
    try {
      for (let i = 0; i < rounds; i++) {
        const v6 = (i & 1) === 1;
        rec.setUint32(F.target_id, WARM_SLOT, true);
        rec.setUint8(F.family, v6 ? 6 : 4);
        rec.setUint8(F.tcp_flags, [0x02, 0x12, 0x10, 0x18][i & 3]);
        // Over the whole 32-bit range, as real ones are: a value past 2^30 is no Smi, and the first
        // real one otherwise changed the event object's field representation, deprecating its map and
        // deoptimizing decodeEvent, onRecord, forge's build and deliverable on that first segment
        // (--trace-deopt, after a restart: 'lost precision', then 'wrong map' x3; 1-2 ms to the RST).
        rec.setUint32(F.seq, Math.imul(i + 1, 0x9e3779b1) >>> 0, true);
        rec.setUint32(F.ack, Math.imul(i + 7, 0x85ebca6b) >>> 0, true);
        rec.setUint32(F.payload_len, (i & 4) === 0 ? 0 : 1 + (i % 1400), true);
        rec.setUint32(F.flow_label, v6 ? (i * 2654435761) & 0xfffff : 0, true);
        rec.setUint16(F.sport, 1024 + ((i * 7919) & 0xfbff), true);
        rec.setUint16(F.dport, (i & 8) === 0 ? 443 : 49152 + (i & 0x3fff), true);
        rec.setBigUint64(F.ts_ns, process.hrtime.bigint() - WARM_AGES_NS[i & 7], true);
        rec.setUint8(F.ttl, 64);
        rec.setUint8(F.vlan_count, i % 3);
        rec.setUint16(F.vlan_tpid, 0x88a8, true);
        rec.setUint16(F.vlan_tpid + 2, 0x8100, true);
        // Sources seen for the first time and again (the TTL table's two branches), as on a real link.
        rec.setUint8(F.saddr, 10);
        rec.setUint8(F.saddr + 2, (i >> 3) & 0xff);
        rec.setUint8(F.saddr + 3, i & 0xff);
        rec.setUint8(F.daddr, 192);
        rec.setUint8(F.daddr + 3, i & 0x1f);
        // Locally administered MACs, and now and then the warm l2 sender's own (all zero) as the
        // source: the mirror copy of one of our own probes, whose RST toward its source is not built.
        rec.setUint8(F.smac, (i & 31) === 21 ? 0 : 0x02);
        rec.setUint8(F.smac + 5, (i & 31) === 21 ? 0 : i & 0xff);
        rec.setUint8(F.dmac, 0x02);
        rec.setUint8(F.dmac + 5, (i + 1) & 0xff);
        if ((i & 63) === 63) this.delivery.age(); // verdicts gone stale: the branch a job's primed HOST takes
        if ((i & 511) === 511) this.refreshDelivery(); // the idle re-check (rtnetlink): a few, at start only
        // Through drain() of a ring in ordinary memory: the same drain code the real ring runs.
        syn.fillSynthetic(recBytes, 1);
        syn.drain(this.handle, this.data.batch);
        // And once more, empty, as the loop finds the real ring most of the time: that early return
        // untrained deoptimized drain right after the start (the loop's first look).
        syn.drain(this.handle, this.data.batch);
        sources.add(binaryKey(decodeEvent(rec, 0).saddr));
        // Now and then a tunnelled mirror's event, and one that carried bare IP (no MACs for l2).
        rec.setUint8(F.encap, (i & 15) === 15 ? ENCAP_VXLAN : ENCAP_NONE);
        rec.setUint8(F.encap_flags, (i & 127) === 127 ? ENCAP_F_NO_L2 : 0);
        if ((i & 1) === 1 || i === rounds - 1) this.flush();
      }
    } finally {
      this.hitCount = 0;
      this.selfAddressed = selfAddressed;
      this.warming = false;
      for (const s of sinks) {
        s.flush();
        this.dirty.delete(s);
      }
      this.slots.delete(WARM_SLOT);
      this.drainWarmSink();
      this.delivery = real;
      this.latency = this.realLatency;
      for (const k of sources) this.ttlSeen.delete(k);
    }
  }

  /**
   * The rtnetlink path too (socket, koffi calls, parsing): a job's first peer
   * is checked on the segment path. Once, at start: 50 route lookups are far
   * too dear to repeat on every keep-warm tick (at 2 ms that was 25,000
   * lookups/s, a quarter of a core under load).
   */
  warmUpDelivery(): void {
    for (let i = 0; i < 50; i++) this.delivery.routeProblem('lo', 1, Uint8Array.of(127, 0, 0, 1));
  }

  run(): void {
    this.commands();
    let idleTicks = 0;
    const spinNs = BigInt(Math.round(this.data.spinUs * 1000));
    let lastActive = 0n;
    /**
     * When this wake first found segments (-1n: none yet): how long it has been busy with them.
     * Segments only: a keep-warm tick or a command is no flood, and on a loaded VM either can be
     * stretched to milliseconds by steal (a fresh user saw "flood" warnings with no traffic).
     */
    let drainingSince = -1n;
    const wantFifo = this.fifo;
    /** Time spent on segments since windowStart, while at FIFO: the duty cycle (FIFO_WINDOW_NS). */
    let windowStart = process.hrtime.bigint();
    let windowBusy = 0n;
    while (this.running) {
      let n = 0;
      try {
        n = this.ring.drain(this.handle, this.data.batch);
      } catch (err) {
        // A bad record is consumed and counted; it must never stop the thread.
        this.errors++;
        this.lastError = (err as Error)?.message ?? String(err);
      }
      if (n > 0 || this.dirty.size > 0) {
        if (drainingSince < 0n) drainingSince = process.hrtime.bigint();
        this.flush();
        lastActive = process.hrtime.bigint();
        if (this.fifo && lastActive - drainingSince > FIFO_BUSY_NS) this.setFifo(false);
        continue;
      }
      // Consumed discarded records only: a commit meanwhile sent no wake-up, look again.
      if (this.ring.lastDrainAdvanced) continue;
      // No spin at SCHED_FIFO: its wake-up is ~11 µs, and a FIFO thread spinning after every record
      // holds its CPU from the tasks that produce them (a local flood fell to ~8k packets/s in CI).
      if (spinNs > 0n && !this.fifo && process.hrtime.bigint() - lastActive < spinNs) continue;
      this.report();
      const now = process.hrtime.bigint();
      if (this.fifo) {
        if (drainingSince >= 0n) windowBusy += now - drainingSince;
        if (now - windowStart >= FIFO_WINDOW_NS) {
          if (windowBusy * 2n > now - windowStart) this.setFifo(false);
          windowStart = now;
          windowBusy = 0n;
        }
      } else if (wantFifo && now - lastActive >= FIFO_QUIET_NS) {
        // The flood is over: the next segment is answered at FIFO again.
        this.setFifo(true);
        windowStart = now;
        windowBusy = 0n;
      }
      // Stale deliverability verdicts are re-checked (rtnetlink) only after 5 ms without a
      // segment: neither an RST nor the rest of a burst (a request right after the handshake)
      // ever waits for them. A demoted thread wakes after FIFO_QUIET_MS to go back to FIFO.
      const keepWarm = this.data.keepWarmMs > 0 ? this.data.keepWarmMs : -1;
      let timeout = this.delivery.pending ? (keepWarm > 0 ? Math.min(5, keepWarm) : 5) : keepWarm;
      if (wantFifo && !this.fifo && (timeout < 0 || timeout > FIFO_QUIET_MS)) timeout = FIFO_QUIET_MS;
      const ready = epollWait(this.epfd, this.events, timeout, 'event thread');
      drainingSince = -1n;
      if (ready === 0) {
        this.refreshDelivery();
        if (this.data.keepWarmMs > 0) {
          this.warmUp(1);
          // Now and then a doorbell of our own: the loop's command branch keeps type feedback, or
          // the first real command (a job created on a quiet daemon) deoptimized the compiled loop
          // (--trace-deopt). Rung at start it ran before the loop had a feedback vector to record in.
          if ((++idleTicks & 255) === 1) this.doorbell.ring();
        }
        continue;
      }
      if (ready > 0) this.wakeups++;
      for (let i = 0; i < ready; i++) {
        if (this.events.data(i) === DOORBELL) {
          this.doorbell.clear();
          this.commands();
        }
      }
    }
    this.report();
    for (const s of this.senders.values()) s.close(); // slots only: the main thread owns the sockets
    this.delivery.close();
    this.warmDelivery?.close();
    closeFd(this.epfd);
    this.events.free();
    this.ring.close();
  }

  /** Re-check up to 4 stale deliverability verdicts (idle only: never ahead of an RST). */
  private refreshDelivery(): void {
    if (this.delivery.pending) this.delivery.refresh(4);
  }

  /** Switch between SCHED_FIFO and SCHED_OTHER (at the configured nice); a refusal keeps what is. */
  private setFifo(on: boolean): void {
    try {
      if (on) setThreadFifo(this.data.rtPriority);
      else {
        setThreadOther(this.data.nice);
        this.demotions++;
      }
      this.fifo = on;
    } catch (err) {
      this.errors++;
      this.lastError = `scheduling policy: ${(err as Error).message}`;
    }
  }

  private onRecord(dv: DataView, off: number): void {
    const slotId = dv.getUint32(off + TARGET_ID, true);
    let slot = this.slots.get(slotId);
    if (!slot) {
      // The main thread posts a slot before it writes the map entry: look at commands once more.
      this.commands();
      slot = this.slots.get(slotId);
      if (!slot) {
        this.stale++;
        return;
      }
    }
    const ev = decodeEvent(dv, off);
    const src = binaryKey(ev.saddr);
    const dst = binaryKey(ev.daddr);
    if (this.ttlSeen.get(src) !== ev.ttl) {
      if (this.ttlSeen.size >= MAX_TTL_ENTRIES) this.ttlSeen.clear();
      this.ttlSeen.set(src, ev.ttl);
    }
    const rsts: RstPacket[] = forgeResets(ev, undefined, this.ttlSeen.get(dst));
    let refused = 0; // bit i: rsts[i] could not leave some reset interface
    if (rsts.length > 0) {
      for (const sender of slot.senders) {
        for (let i = 0; i < rsts.length; i++) {
          const rst = rsts[i];
          if (!this.deliverable(sender, rst, ev)) {
            refused |= 1 << i;
            continue;
          }
          if (sender.mode === 'l2') {
            if (sameMac(rst.toward === 'src' ? ev.smac : ev.dmac, sender.mac)) {
              this.selfAddressed++;
              continue;
            }
            sender.enqueue({ family: rst.family, packet: rst.packet, frame: l2Frame(rst, ev, sender.mac) });
          } else sender.enqueue({ family: rst.family, packet: rst.packet });
        }
        this.dirty.add(sender);
      }
    }
    let undeliverable = 0;
    for (; refused; refused &= refused - 1) undeliverable++;
    this.recordHit(slotId, ev.family, rsts.length, ev.sport, ev.dport, ev.saddr, ev.daddr, ev.tsNs, ev.encap ?? 0, undeliverable, hitMptcp(ev.mpFlags ?? 0));
  }

  /**
   * Can this RST leave the sender's interface? l3: a route through it and a
   * next hop that resolves (cached, delivery.ts); l2: the event has MACs.
   */
  private deliverable(sender: Sender, rst: RstPacket, ev: TcpEvent): boolean {
    const dst = rst.toward === 'src' ? ev.saddr : ev.daddr;
    if (sender.mode === 'l2') {
      if (!((ev.encapFlags ?? 0) & ENCAP_F_NO_L2)) return true;
      const text = formatIp(dst);
      this.delivery.note(sender.ifname, text, noL2Reason(encapName(ev.encap ?? 0), text));
      return false;
    }
    return this.delivery.verdict(sender.ifname, sender.ifindex, dst) === null;
  }

  private recordHit(
    slotId: number, family: number, rsts: number, sport: number, dport: number, saddr: Uint8Array, daddr: Uint8Array, tsNs: bigint,
    encap: number, undeliverable: number, mptcp: number,
  ): void {
    if ((this.hitCount + 1) * HIT_BYTES > this.hits.byteLength) {
      const grown = new Uint8Array(this.hits.byteLength * 2);
      grown.set(new Uint8Array(this.hits.buffer));
      this.hits = new DataView(grown.buffer);
    }
    const h = this.hits;
    const o = this.hitCount++ * HIT_BYTES;
    h.setUint32(o + HIT.slotId, slotId, true);
    h.setUint8(o + HIT.family, family);
    h.setUint8(o + HIT.rsts, rsts);
    h.setUint16(o + HIT.sport, sport, true);
    h.setUint16(o + HIT.dport, dport, true);
    h.setUint8(o + HIT.encap, encap);
    h.setUint8(o + HIT.undeliverable, undeliverable);
    h.setUint8(o + HIT.mptcp, mptcp);
    const bytes = new Uint8Array(h.buffer);
    bytes.set(saddr, o + HIT.saddr);
    bytes.set(daddr, o + HIT.daddr);
    h.setBigUint64(o + HIT.tsNs, tsNs, true);
  }

  /** Send what is queued, then (and only then) tell the main thread. */
  private flush(): void {
    const sent: SenderReport[] = [];
    for (const s of this.dirty) {
      s.flush();
      sent.push({ key: keyOf(s), sent: s.stats.sent, errors: s.stats.errors, lastError: s.stats.lastError });
    }
    this.dirty.clear();
    if (this.hitCount === 0) return;
    const now = process.hrtime.bigint();
    const h = this.hits;
    const lat = this.latency;
    for (let i = 0; i < this.hitCount; i++) {
      const o = i * HIT_BYTES;
      const us = Number(now - h.getBigUint64(o + HIT.tsNs, true)) / 1000;
      h.setFloat32(o + HIT.latencyUs, us, true);
      // Plain stores into shared memory, no message: the main thread reads the histogram when scraped.
      if (h.getUint8(o + HIT.rsts) > h.getUint8(o + HIT.undeliverable)) observeLatency(lat, us);
    }
    const buf = h.buffer.slice(0, this.hitCount * HIT_BYTES);
    this.post({ type: 'hits', hits: buf, count: this.hitCount, at: Date.now(), senders: sent }, [buf]);
    this.hitCount = 0;
  }

  private reported = { records: -1, stale: -1, errors: -1, wakeups: -1, demotions: -1, selfAddressed: -1 };
  /** Ring statistics, when they changed, before the thread sleeps. */
  private report(): void {
    const r = this.reported;
    if (
      r.records === this.ring.records && r.stale === this.stale && r.errors === this.errors && r.wakeups === this.wakeups &&
      r.demotions === this.demotions && r.selfAddressed === this.selfAddressed
    ) return;
    this.reported = { records: this.ring.records, stale: this.stale, errors: this.errors, wakeups: this.wakeups, demotions: this.demotions, selfAddressed: this.selfAddressed };
    this.post({
      type: 'stats', records: this.ring.records, wakeups: this.wakeups, stale: this.stale, errors: this.errors,
      fifoDemotions: this.demotions, selfAddressed: this.selfAddressed, lastError: this.lastError,
    });
    this.lastError = undefined;
  }

  private commands(): void {
    for (;;) {
      const m = receiveMessageOnPort(this.port);
      if (!m) return;
      this.apply(m.message as EventCommand);
    }
  }

  private apply(cmd: EventCommand): void {
    switch (cmd.type) {
      case 'sender': {
        this.senders.get(cmd.key)?.close();
        // The mode as a literal: a string from a message is not internalized, and the first `mode === 'l2'`
        // on it deoptimized deliverable ('wrong instance type'), which warm-up had trained on literals.
        const mode = cmd.mode === 'l2' ? 'l2' : 'l3';
        const s = Sender.adopt({ ifname: cmd.ifname, ifindex: cmd.ifindex, mode, mac: cmd.mac, fds: cmd.fds });
        senderKeys.set(s, cmd.key);
        this.senders.set(cmd.key, s);
        this.rebindSlots();
        return;
      }
      case 'sender-del': {
        const s = this.senders.get(cmd.key);
        if (s) {
          if (this.dirty.has(s)) this.flush();
          this.senders.delete(cmd.key);
          s.close();
          this.rebindSlots();
        }
        this.post({ type: 'released', key: cmd.key });
        return;
      }
      case 'slot': {
        const key = cmd.senders.join('\n');
        let slot = this.shared.get(key);
        if (!slot) {
          slot = new Slot(cmd.senders, this.resolve(cmd.senders));
          this.shared.set(key, slot);
        }
        this.slots.set(cmd.id, slot);
        if (cmd.host) for (const s of slot.senders) if (s.mode === 'l3') this.delivery.prime(s.ifname, s.ifindex, cmd.host);
        return;
      }
      case 'slot-del':
        this.slots.delete(cmd.id);
        return;
      case 'delivery-forget':
        this.delivery.forget(cmd.ifname);
        return;
      case 'stop':
        this.running = false;
        return;
    }
  }

  private resolve(keys: string[]): Sender[] {
    const out: Sender[] = [];
    for (const k of keys) {
      const s = this.senders.get(k);
      if (s) out.push(s);
    }
    return out;
  }

  private rebindSlots(): void {
    for (const slot of this.shared.values()) slot.senders = this.resolve(slot.keys);
  }

  /** To the main thread; during warmUp() to a port of our own that drainWarmSink() empties, through the same call. */
  post(r: EventReport, transfer?: ArrayBuffer[]): void {
    (this.warming ? this.warmSink() : parentPort!).postMessage(r, transfer);
  }

  /**
   * The warm-up's messages go to sink and are read back from sinkPeer and dropped. Not a port
   * whose peer is closed: Node 20 keeps each message posted to one (~400 bytes of native memory
   * apiece, never freed), and the 2 ms keep-warm tick posts one, so a daemon with its data plane
   * open grew by ~0.55 MB/s while idle (RssAnon 44 -> 80 MB in 80 s; flat with eventKeepWarmMs 0).
   */
  private sink: MessagePort | undefined;
  private sinkPeer: MessagePort | undefined;
  private warmSink(): MessagePort {
    if (!this.sink) {
      const { port1, port2 } = new MessageChannel();
      port1.unref();
      port2.unref();
      this.sink = port1;
      this.sinkPeer = port2;
    }
    return this.sink;
  }

  /** Read back and drop what warmUp() posted (see sink). */
  private drainWarmSink(): void {
    if (this.sinkPeer) while (receiveMessageOnPort(this.sinkPeer) !== undefined);
  }
}

/** One event's reaction latency (µs) into the histogram `lat` (event-wire.ts LATENCY_*: bucket counts, +Inf, sum). */
function observeLatency(lat: Float64Array, us: number): void {
  let b = 0;
  while (b < LATENCY_BOUNDS_US.length && us > LATENCY_BOUNDS_US[b]) b++;
  lat[b]++;
  lat[LATENCY_SUM] += us;
}

/** Two MAC addresses (6 bytes each) equal? */
function sameMac(a: Uint8Array, b: Uint8Array): boolean {
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3] && a[4] === b[4] && a[5] === b[5];
}

const senderKeys = new WeakMap<Sender, string>();
function keyOf(s: Sender): string {
  return senderKeys.get(s) ?? `${s.ifname}/${s.mode}`;
}

/** Address bytes as a short string key (the length tells v4 from v6). */
function binaryKey(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

const { data, port } = workerData as { data: EventThreadData; port: MessagePort };
setThreadName('tcpreset-event');
let niceError: string | undefined;
if (data.nice !== null) {
  try {
    setThreadNice(data.nice);
  } catch (err) {
    niceError = (err as Error).message;
  }
}
let fifoSet = false;
let fifoError: string | undefined;
if (data.rtPriority > 0) {
  try {
    setThreadFifo(data.rtPriority);
    fifoSet = true;
  } catch (err) {
    fifoError = (err as Error).message;
  }
}
const thread = new EventThread(data, port);
thread.fifo = fifoSet;
try {
  thread.warmUpDelivery();
  thread.warmUp();
} catch (err) {
  // A warm-up that fails costs speed, not correctness: the real path handles its own errors.
  niceError = `${niceError ? niceError + '; ' : ''}warm-up failed: ${(err as Error).message}`;
}
// Through post(), which the warm-up trained on its sink port: its call now sees the real port too.
thread.post({ type: 'ready', ...(niceError ? { niceError } : {}), ...(fifoError ? { fifoError } : {}) });
thread.run();
port.close();
