/**
 * The create-time sweep (issue 9, step 3): when a job is created, extended
 * or restored, the connections of its HOST (and remote port) that the flow
 * memory remembers open are reset at once, without waiting for their next
 * segment, so a session that sends nothing dies too.
 *
 * Pure planning here (flow memory entries in, packets out); the Enforcer
 * reads the memory (FlowMemoryView.find) and hands the packets to the job's
 * reset sockets. It sits beside the event path, not in it: what the probes
 * draw comes back through the mirror and is answered by the normal path.
 *
 * Per connection, from the most recent segment either end sent:
 *
 * 1. The exact RST pair, forged by forgeResets() as if that segment had
 *    just been seen (seq = each end's RCV.NXT as the segment left it; TTL /
 *    hop limit as last seen from each end, both remembered; tags, MACs and
 *    flow label as seen). A connection idle since that segment has not moved
 *    its RCV.NXT, so both RSTs are in window and exact: RFC 793 §3.4 /
 *    RFC 5961 §3.2 make the receiver drop its state.
 *
 * 2. A probe to each end, spoofed from the other: a pure ACK whose seq is a
 *    quarter of the sequence space behind the end's RCV.NXT (never inside
 *    any window) and whose ack is the end's SND.NXT.
 *    - A live socket (the RST was lost, or the connection moved since the
 *      remembered segment) must answer an unacceptable segment with an ACK
 *      carrying its SND.NXT and RCV.NXT (RFC 793 §3.9 "If an incoming
 *      segment is not acceptable, an acknowledgment should be sent";
 *      RFC 5961 §5; Linux tcp_validate_incoming -> tcp_send_dupack, rate
 *      limited by net.ipv4.tcp_invalid_ratelimit). That ACK crosses the
 *      mirror, matches the job, and the normal path answers it with an
 *      exact RST pair from current values.
 *    - A socket that is gone answers with a RST whose seq is the probe's
 *      ack (RFC 793 §3.4 reset generation, case 1; tcp_v4_send_reset).
 *    The ack is SND.NXT + 1, not SND.NXT: a dead end's answer then carries
 *      seq SND.NXT + 1 and is told apart on the mirror from our own RST
 *      spoofed from that end (seq SND.NXT). A live end never checks that
 *      ack: the out-of-window seq fails tcp_sequence() first and draws the
 *      duplicate ACK (tcp_validate_incoming runs before tcp_ack).
 *
 * 3. Verification (Enforcer): an end is verified dead when the flow memory
 *    shows, as that end's last segment, a RST with seq = its probe's ack:
 *    only a socket that no longer exists answers the probe so (RFC 793 §3.4,
 *    RFC 5961 §5: a live one answers with an ACK, never a RST). A flow is
 *    verified when both ends are.
 *    Order: the RSTs go first, then the probes, in one batch.
 */
import { FAMILY_V4, MP_KEY0, MP_KEY1, MP_TOKEN0, MP_TOKEN1, TCP_ACK, flowClosed, type FlowDir, type FlowEntry, type TcpEvent } from '../bpf/contract.js';
import { forgeResets, l2Frame, type RstPacket } from '../packet/forge.js';
import { ipv4HeaderChecksum, tcpChecksumV4, tcpChecksumV6 } from '../packet/checksum.js';
import type { Family } from '../core/model.js';

/** A packet for a Sender: the IP packet, and the Ethernet frame in l2 mode. */
export interface SweepPacket {
  family: Family;
  packet: Uint8Array;
  frame?: Uint8Array;
  kind: 'rst' | 'probe';
  /** Which endpoint of the connection receives it (key order). */
  to: 'a' | 'b';
}

/** What a swept connection's ends must answer to be verified dead. */
export interface SweepProbe {
  /** Index into the entries given to planSweep. */
  entry: number;
  /** Per key end (0 = A, 1 = B): the seq of a dead end's answer (its probe's ack), or null (no probe). */
  answerSeq: [number | null, number | null];
}

export interface SweepPlan {
  /** Open connections found. */
  flows: number;
  packets: SweepPacket[];
  /** One per probed connection. */
  probes: SweepProbe[];
}

/** Behind RCV.NXT by a quarter of the sequence space: outside any window (at most 2^30, RFC 7323 §2.3). */
const PROBE_BEHIND = 0x40000000;

/** The segment `dir` (sent by end `from` of the key) as the event the normal path would have decoded. */
export function eventOf(e: FlowEntry, from: 0 | 1): TcpEvent {
  const d = e.dirs[from]!;
  const k = e.key;
  const [saddr, sport, daddr, dport] = from === 0 ? [k.addrA, k.portA, k.addrB, k.portB] : [k.addrB, k.portB, k.addrA, k.portA];
  return {
    tsNs: d.lastNs, targetId: 0, ifindex: k.ifindex, seq: d.seq, ack: d.ack, payloadLen: d.payloadLen, flowLabel: d.flowLabel,
    sport, dport, vlans: d.vlans, family: k.family, tcpFlags: d.tcpFlags, ttl: d.ttl, tos: d.tos, match: 0,
    smac: d.smac, dmac: d.dmac, saddr, daddr, encap: d.encap, encapFlags: d.encapFlags,
    ...(e.mp && e.mp.flags ? mptcpOf(e, from) : {}),
  };
}

/** The entry's MPTCP state turned to the event's orientation (endpoint 0 = the sender `from`), as the program's tr_fm_mptcp_out does. */
function mptcpOf(e: FlowEntry, from: 0 | 1): Pick<TcpEvent, 'mpFlags' | 'mpKeySrc' | 'mpKeyDst' | 'mpToken'> {
  const m = e.mp!;
  const [k0, k1, t0, t1] = from === 0 ? [MP_KEY0, MP_KEY1, MP_TOKEN0, MP_TOKEN1] : [MP_KEY1, MP_KEY0, MP_TOKEN1, MP_TOKEN0];
  let flags = m.flags & ~(MP_KEY0 | MP_KEY1 | MP_TOKEN0 | MP_TOKEN1);
  if (m.flags & k0) flags |= MP_KEY0;
  if (m.flags & k1) flags |= MP_KEY1;
  if (m.flags & t0) flags |= MP_TOKEN0;
  if (m.flags & t1) flags |= MP_TOKEN1;
  return { mpFlags: flags, mpKeySrc: m.keys[from], mpKeyDst: m.keys[from === 0 ? 1 : 0], mpToken: m.token };
}

/** The end whose segment is the most recent (the one both RCV.NXTs follow from). */
function latest(e: FlowEntry): 0 | 1 | null {
  const [a, b] = e.dirs;
  if (!a && !b) return null;
  if (!b) return 0;
  if (!a) return 1;
  return a.lastNs >= b.lastNs ? 0 : 1;
}

/**
 * Plan the packets for the open connections in `entries`. `srcMac` is the
 * reset interface's MAC in l2 mode (null in l3). Connections whose last
 * segment carries no ACK (a SYN not yet answered) get what forgeResets
 * gives for it and no probe (no SND.NXT of the other end is known).
 */
export function planSweep(entries: readonly FlowEntry[], srcMac: Uint8Array | null): SweepPlan {
  const packets: SweepPacket[] = [];
  const probes: SweepProbe[] = [];
  let flows = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (flowClosed(e.state)) continue;
    const from = latest(e);
    if (from === null) continue;
    flows++;
    const ev = eventOf(e, from);
    const other = e.dirs[from === 0 ? 1 : 0];
    const rsts = forgeResets(ev, undefined, other?.ttl);
    const toEnd = (r: RstPacket): 'a' | 'b' => ((r.toward === 'src') === (from === 0) ? 'a' : 'b');
    // No inner Ethernet (a tunnel without one): no frame can be addressed, as on the normal path.
    const l2 = srcMac !== null && !(ev.encapFlags && ev.encapFlags & 1);
    for (const r of rsts) packets.push({ family: r.family, packet: r.packet, ...(l2 ? { frame: l2Frame(r, ev, srcMac!) } : {}), kind: 'rst', to: toEnd(r) });
    if (!(ev.tcpFlags & TCP_ACK)) continue;
    // From the latest segment S (A->B): A's SND.NXT = S+L, A's RCV.NXT = K; B's SND.NXT = K, B's RCV.NXT = S+L.
    const n = (ev.seq + ev.payloadLen) >>> 0;
    const k = ev.ack >>> 0;
    const sp: SweepProbe = { entry: i, answerSeq: [null, null] };
    for (const r of rsts) {
      // The probe to each RST's receiver: same addressing, ACK only, seq far behind its RCV.NXT, ack = its SND.NXT + 1.
      const rcvNxt = r.seq; // the RST carried the receiver's RCV.NXT
      const sndNxt = r.toward === 'dst' ? k : n;
      const answer = (sndNxt + 1) >>> 0;
      sp.answerSeq[toEnd(r) === 'a' ? 0 : 1] = answer;
      const probe = ackFrom(r, (rcvNxt - PROBE_BEHIND) >>> 0, answer);
      packets.push({ family: r.family, packet: probe, ...(l2 ? { frame: l2Frame({ ...r, packet: probe }, ev, srcMac!) } : {}), kind: 'probe', to: toEnd(r) });
    }
    probes.push(sp);
  }
  return { flows, packets, probes };
}

/**
 * The RST `r` turned into a pure ACK with new seq/ack: a copy, checksums
 * recomputed. Without the RST's options: an MP_FASTCLOSE belongs on the RST
 * only (a probe must draw an answer, not end anything).
 */
function ackFrom(r: RstPacket, seq: number, ack: number): Uint8Array {
  const v4 = r.family === FAMILY_V4;
  const t = v4 ? 20 : 40;
  const p = r.packet.slice(0, t + 20);
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  if (v4) dv.setUint16(2, t + 20);
  else dv.setUint16(4, 20);
  p[t + 12] = 0x50;
  dv.setUint32(t + 4, seq);
  dv.setUint32(t + 8, ack);
  p[t + 13] = TCP_ACK;
  // A window, as any ACK carries; zero would look like a zero-window probe.
  dv.setUint16(t + 14, 502);
  const alen = v4 ? 4 : 16;
  const src = p.subarray(v4 ? 12 : 8, (v4 ? 12 : 8) + alen);
  const dst = p.subarray(v4 ? 16 : 24, (v4 ? 16 : 24) + alen);
  dv.setUint16(t + 16, (v4 ? tcpChecksumV4 : tcpChecksumV6)(src, dst, p, t, 20));
  if (v4) {
    // A fresh IP ID, so the probe is not taken for a duplicate of the RST.
    dv.setUint16(4, (dv.getUint16(4) + 1) & 0xffff);
    dv.setUint16(10, ipv4HeaderChecksum(p));
  }
  return p;
}

export type { FlowDir };
