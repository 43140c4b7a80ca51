/**
 * RSTs that cannot leave their reset interface, as the main thread handles
 * them: the destinations found undeliverable (kept grouped per interface by
 * undeliverable.ts), each job's delivery fault and refused-RST count, and
 * the main thread's route check (one Delivery, made on first need) for the
 * sends it makes itself: the create-time sweep, its re-probes and the
 * MPTCP subflow resets. Owned by the Enforcer; the event threads keep route
 * checks of their own and report their verdicts here (onVerdict).
 */
import { formatIp } from '../core/addr.js';
import type { LogSink } from '../core/model.js';
import type { Sender } from '../net/sender.js';
import { Delivery } from './delivery.js';
import { HIT } from './event-wire.js';
import type { SweepPacket } from './flow-sweep.js';
import type { SenderRef } from './senders.js';
import type { Target } from './targets.js';
import type { InterfaceFault } from './types.js';
import { UndeliverableDestinations } from './undeliverable.js';

export class DeliveryFaults {
  /** The undeliverable destinations, grouped per reset interface (their log lines too). */
  private readonly dests: UndeliverableDestinations;
  /** For the route check at job creation and the main thread's own sends (the event threads have their own). */
  private routeCheck: Delivery | null = null;
  /**
   * RSTs refused (not sent) since the daemon started, per "ifname/mode":
   * the lifetime totals behind tcpreset_rsts_undeliverable_total
   * {reason="refused"}. A job's own count ends with the job; this one
   * never decreases. Bounded like the senders: one key per reset
   * interface and mode a job named.
   */
  private readonly refusedTotals = new Map<string, { ifname: string; mode: Target['mode']; refused: number }>();

  /**
   * `forgetInThreads`: drop the event threads' verdicts about an interface
   * (EventPool.forgetDelivery) when it goes down, away or comes back.
   */
  constructor(log: LogSink, private readonly forgetInThreads: (ifname: string) => void) {
    this.dests = new UndeliverableDestinations(log);
  }

  /** A destination's verdict changed (an event thread's, or the main thread's route check): warnings grouped per interface, each naming the fix (undeliverable.ts). */
  onVerdict(ifname: string, dst: string, reason: string | null): void {
    this.dests.verdict(ifname, dst, reason);
  }

  /**
   * The reset interface went down or away, or came back: what was found
   * about its destinations meanwhile is void (a down interface has no
   * routes: "no route from reset0" would outlive its recovery). The
   * interface fault itself (health.ts) says what is wrong while it lasts.
   */
  forget(ifname: string, targets: Iterable<Target>): void {
    this.dests.forget(ifname);
    for (const t of targets) if (t.resetIf === ifname) t.deliveryFault = undefined;
    this.routeCheck?.forget(ifname);
    this.forgetInThreads(ifname);
  }

  /**
   * Keep a target's delivery fault current from one hit of the event
   * path (`bytes` at `o`: a HIT record): set while its RSTs are refused,
   * cleared once they all go.
   */
  noteHit(target: Target, refused: number, bytes: Uint8Array, o: number): void {
    if (refused === 0) {
      target.deliveryFault = undefined;
      return;
    }
    const alen = bytes[o + HIT.family] === 4 ? 4 : 16;
    this.noteRefused(target, refused, [bytes.slice(o + HIT.daddr, o + HIT.daddr + alen), bytes.slice(o + HIT.saddr, o + HIT.saddr + alen)]);
  }

  /**
   * `refused` RSTs of `target` were not sent: count them and set its fault
   * to the reason found for the first of `dsts` that has one (the hit's
   * ends), or, without `dsts` (a sweep's, many destinations), the first
   * reason known for its reset interface.
   */
  noteRefused(target: Target, refused: number, dsts?: readonly Uint8Array[]): void {
    target.addUndeliverable(refused);
    const key = `${target.resetIf}/${target.mode}`;
    const total = this.refusedTotals.get(key);
    if (total) total.refused += refused;
    else this.refusedTotals.set(key, { ifname: target.resetIf, mode: target.mode, refused });
    const reason = dsts
      ? dsts.map((d) => this.dests.reasonFor(target.resetIf, formatIp(d))).find((x) => x !== undefined)
      : this.dests.firstReason(target.resetIf);
    if (reason !== undefined) target.deliveryFault = reason;
    else target.deliveryFault ??= `RSTs undeliverable from ${target.resetIf}`;
  }

  /**
   * Queue on `sender` each of `packets` that can leave `ref`'s interface:
   * in l3 mode the same route check as the event threads' (delivery.ts),
   * so what cannot leave RESET_IF is not sent; l2 frames go as they are.
   * `onQueued` is told each packet queued. Returns how many RSTs (not
   * probes) were refused. The caller flushes.
   */
  enqueue(sender: Sender, ref: SenderRef, packets: Iterable<SweepPacket>, onQueued?: (p: SweepPacket) => void): number {
    const sockets = ref.sockets!;
    let refused = 0;
    for (const p of packets) {
      if (ref.mode === 'l3') {
        const dst = p.family === 4 ? p.packet.subarray(16, 20) : p.packet.subarray(24, 40);
        if (this.delivery().verdict(sockets.ifname, sockets.ifindex, dst) !== null) {
          if (p.kind === 'rst') refused++;
          continue;
        }
      }
      sender.enqueue(p.frame ? { family: p.family, packet: p.packet, frame: p.frame } : { family: p.family, packet: p.packet });
      onQueued?.(p);
    }
    return refused;
  }

  /** Why HOST (4 or 16 bytes) has no route through `ifname`, or null (Delivery.routeProblem). */
  routeProblem(ifname: string, ifindex: number, host: Uint8Array): string | null {
    return this.delivery().routeProblem(ifname, ifindex, host);
  }

  /** Re-check at most `max` stale verdicts of the main thread's route check (between sweeps). */
  refresh(max: number): void {
    this.routeCheck?.refresh(max);
  }

  /** One fault per reset interface with undeliverable destinations: the first reason, and how many more (undeliverable.ts). */
  faults(): InterfaceFault[] {
    return this.dests.faults();
  }

  /** RSTs refused per reset interface and mode since the daemon started (noteRefused): never decreasing. */
  refusedLifetime(): { ifname: string; mode: Target['mode']; refused: number }[] {
    return [...this.refusedTotals.values()].map((x) => ({ ...x }));
  }

  /** Write the held log lines, stop their timers, close the route check. */
  close(): void {
    this.dests.close();
    this.routeCheck?.close();
  }

  private delivery(): Delivery {
    this.routeCheck ??= new Delivery((ifname, dst, reason) => this.onVerdict(ifname, dst, reason));
    return this.routeCheck;
  }
}
