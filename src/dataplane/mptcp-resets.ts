/**
 * The main thread's part of MPTCP (docs/design.md, "MPTCP"; RFC 8684
 * §3.5): when a job resets one subflow of an MPTCP connection (an event
 * thread's RSTs, or the create-time sweep's), the other open subflows of
 * that connection the flow memory holds are reset too, each RST with
 * MP_FASTCLOSE and the receiver's key, and reset again from what their
 * ends sent since. Also the MPTCP_NO_KEYS bookkeeping: per job (Target)
 * and one status fault per sniff interface. Owns the MptcpDirectory (token
 * to connection) and the per-interface "reset without keys" record.
 */
import { TCP_RST, flowClosed, type FlowEntry, type FlowKey } from '../bpf/contract.js';
import type { LogSink } from '../core/model.js';
import { Sender } from '../net/sender.js';
import { HIT } from './event-wire.js';
import type { FlowMatch, FlowMemoryView } from './flow-memory.js';
import { planSweep, type SweepPacket } from './flow-sweep.js';
import { HIT_MP_FASTCLOSE, HIT_MP_NO_KEYS, MPTCP_NO_KEYS, MptcpDirectory, mptcpNote } from './mptcp.js';
import type { ResetSenders } from './senders.js';
import type { Target } from './targets.js';
import type { InterfaceFault } from './types.js';
import type { DeliveryFaults } from './delivery-faults.js';

/** When the other subflows of an MPTCP connection are reset again, from what their ends sent since (ms after the first). */
const MPTCP_RETRY_MS = [30, 150];

export interface MptcpResetsDeps {
  flowMemory: FlowMemoryView;
  senders: ResetSenders;
  /** The route check every main-thread send passes (l3). */
  undeliverable: DeliveryFaults;
  log: LogSink;
}

export class MptcpResets {
  /** Ties MPTCP subflows to their connections (token = SHA-256 of a key, computed here). */
  private readonly directory = new MptcpDirectory();
  /** Sniff interfaces where MPTCP subflows were reset without keys (mptcp.ts): since when, how many. */
  private readonly noKeys = new Map<string, { since: number; count: number }>();

  constructor(private readonly d: MptcpResetsDeps) {}

  /**
   * A newly reset flow of `target` is an MPTCP subflow (`code`: HIT_MP_*,
   * what its own RSTs did): reset the other open subflows of its connection
   * that the flow memory holds, on addresses the job does not name too,
   * each RST with MP_FASTCLOSE and the receiver's key (docs/design.md,
   * "MPTCP"). The keys come from the MP_CAPABLE subflow; an MP_JOIN subflow
   * is tied to it by token, so a job on a joined address only still closes
   * the connection. `sub`: the subflow's entry (the sweep's), or a test for
   * it (a hit's 4-tuple, hitSubflow). Returns the flow reset line's note;
   * without keys the counter, fault and warning of note(). Never throws.
   */
  connection(target: Target, code: number, sub: FlowMatch | ((e: FlowEntry) => boolean)): { mptcp?: string; mptcpSubflows?: number } {
    const { flowMemory, senders, log } = this.d;
    let sent = 0;
    try {
      const all = flowMemory.mptcpSubflows();
      const entry = typeof sub === 'function' ? all.find(sub) : sub;
      const conn = entry ? this.directory.connection(entry, all) : null;
      const ref = senders.get(target.senderKey);
      if (conn && ref?.sockets) {
        code = HIT_MP_FASTCLOSE;
        // Its own RSTs went already (event thread or sweep); the others' come from their remembered segments.
        const others = conn.subflows.filter((e) => !sameFlowKey(e.key, entry!.key) && !flowClosed(e.state));
        this.send(target, subflowResets(others, ref.mode === 'l2' ? ref.sockets.mac : null, false));
        // Again from what the ends sent since (a challenge ACK says exactly what an end expects): no probe or
        // job covers these subflows, so nothing else answers an RST that came too early or too late.
        for (const ms of MPTCP_RETRY_MS) {
          setTimeout(() => {
            try {
              const now = flowMemory.mptcpSubflows();
              const again = others.flatMap((o) => now.filter((e) => sameFlowKey(e.key, o.key)).map((e) => ({ ...e, mp: o.mp })));
              const r = senders.get(target.senderKey);
              if (again.length > 0 && r?.sockets) this.send(target, subflowResets(again, r.mode === 'l2' ? r.sockets.mac : null, true));
            } catch (err) {
              log.warn({ err, targetId: target.id }, 'MPTCP: a later reset of the other subflows failed');
            }
          }, ms).unref();
        }
        sent = others.length;
      }
    } catch (err) {
      log.warn({ err, targetId: target.id, label: target.label }, 'MPTCP: the other subflows of a reset connection could not be reset');
    }
    return { ...this.note(target, code), ...(sent > 0 ? { mptcpSubflows: sent } : {}) };
  }

  /** One status fault per sniff interface where MPTCP subflows were reset without keys, while a job there has that fault. */
  faults(targets: Iterable<Target>): InterfaceFault[] {
    const out: InterfaceFault[] = [];
    if (this.noKeys.size === 0) return out;
    const live = [...targets];
    for (const [ifname, m] of this.noKeys) {
      if (!live.some((t) => t.sniffIf === ifname && t.mptcpFault !== undefined)) {
        this.noKeys.delete(ifname);
        continue;
      }
      out.push({ ifname, role: 'sniff', kind: 'mptcp', since: m.since, fault: `${MPTCP_NO_KEYS}: ${m.count} MPTCP subflow${m.count === 1 ? '' : 's'} reset without the connection's keys` });
    }
    return out;
  }

  /** Send RSTs for other subflows of an MPTCP connection on the target's reset sockets (they count in its rstsSent). */
  private send(target: Target, rsts: SweepPacket[]): void {
    const ref = this.d.senders.get(target.senderKey);
    if (rsts.length === 0 || !ref?.sockets) return;
    const sender = Sender.adopt(ref.sockets, { slots: Math.min(256, rsts.length) });
    try {
      this.d.undeliverable.enqueue(sender, ref, rsts);
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
  private note(target: Target, code: number): { mptcp?: string } {
    const note = mptcpNote(code);
    if (note === undefined) return {};
    if (code === HIT_MP_NO_KEYS) {
      target.noteMptcpNoKeys(MPTCP_NO_KEYS);
      const have = this.noKeys.get(target.sniffIf);
      this.noKeys.set(target.sniffIf, { since: have?.since ?? Date.now(), count: (have?.count ?? 0) + 1 });
    }
    return { mptcp: note };
  }
}

/** A test for the flow memory entry of the hit at byte `o` of `bytes` (a HIT record; either direction of its 4-tuple). */
export function hitSubflow(bytes: Uint8Array, o: number, alen: number): (e: FlowEntry) => boolean {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const s = bytes.slice(o + HIT.saddr, o + HIT.saddr + alen);
  const d = bytes.slice(o + HIT.daddr, o + HIT.daddr + alen);
  const sp = dv.getUint16(o + HIT.sport, true);
  const dp = dv.getUint16(o + HIT.dport, true);
  const eq = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);
  return (e) => (e.key.portA === sp && e.key.portB === dp && eq(e.key.addrA, s) && eq(e.key.addrB, d)) || (e.key.portA === dp && e.key.portB === sp && eq(e.key.addrA, d) && eq(e.key.addrB, s));
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
 * `later`: the retries, from what each live end sent since.
 */
export function subflowResets(entries: readonly FlowEntry[], mac: Uint8Array | null, later: boolean): SweepPacket[] {
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

function sameFlowKey(a: FlowKey, b: FlowKey): boolean {
  const eq = (x: Uint8Array, y: Uint8Array): boolean => x.length === y.length && x.every((v, i) => v === y[i]);
  return a.ifindex === b.ifindex && a.portA === b.portA && a.portB === b.portB && eq(a.addrA, b.addrA) && eq(a.addrB, b.addrB);
}
