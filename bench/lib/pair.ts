/**
 * Pairs each forged RST captured on the reset interface with the segment
 * captured on the sniff interface that caused it, by sequence arithmetic
 * (docs/design.md's table): from a segment A->B with seq S, ack K, payload L,
 *   - a RST to A carries seq K (tcpkill: also K+win and K+3win, its
 *     "strafing" at the default severity 3: seq += i*win for i = 0, 1, 2),
 *   - a RST to B carries seq N = S + L (+1 for SYN, +1 for FIN),
 *   - a RST+ACK refusing a SYN carries seq 0 to A.
 * Both tools are paired by the same union of rules. When several captured
 * segments share a key, the latest one at or before the RST is taken (the
 * choice that can only understate a latency, never inflate it).
 */
import type { TcpSegment } from '../../testkit/pcap.js';

const TH_FIN = 0x01;
const TH_SYN = 0x02;
const TH_RST = 0x04;

export interface PairResult {
  /** One per paired RST: capture time on the reset interface minus capture time of its trigger on the sniff interface, µs. */
  latencyUs: number[];
  /** One per answered trigger: its earliest RST, µs. */
  firstUs: number[];
  triggers: number;
  answered: number;
  rsts: number;
  unpaired: number;
}

function key(src: string, sport: number, dst: string, dport: number, seq: number): string {
  return `${src}|${sport}>${dst}|${dport}#${seq >>> 0}`;
}

export function triggerKeys(s: TcpSegment): string[] {
  const keys: string[] = [];
  // Toward the sender of s (spoofed from its receiver).
  keys.push(key(s.dst, s.dport, s.src, s.sport, s.ack));
  keys.push(key(s.dst, s.dport, s.src, s.sport, s.ack + s.win));
  keys.push(key(s.dst, s.dport, s.src, s.sport, s.ack + 3 * s.win));
  if (s.flags & TH_SYN && !(s.flags & 0x10)) keys.push(key(s.dst, s.dport, s.src, s.sport, 0));
  // Toward the receiver of s (spoofed from its sender).
  const n = s.seq + s.len + (s.flags & TH_SYN ? 1 : 0) + (s.flags & TH_FIN ? 1 : 0);
  keys.push(key(s.src, s.sport, s.dst, s.dport, n));
  return [...new Set(keys)];
}

export function pairResets(sniffed: TcpSegment[], sent: TcpSegment[]): PairResult {
  const triggers = sniffed.filter((s) => !(s.flags & TH_RST));
  const resets = sent.filter((s) => s.flags & TH_RST).sort((a, b) => (a.tNs < b.tNs ? -1 : a.tNs > b.tNs ? 1 : 0));
  const byKey = new Map<string, number[]>();
  const order = triggers.map((_, i) => i).sort((a, b) => (triggers[a].tNs < triggers[b].tNs ? -1 : 1));
  for (const i of order) {
    for (const k of triggerKeys(triggers[i])) {
      let list = byKey.get(k);
      if (!list) byKey.set(k, (list = []));
      list.push(i);
    }
  }
  const first = new Map<number, number>();
  const latencyUs: number[] = [];
  let unpaired = 0;
  for (const r of resets) {
    const list = byKey.get(key(r.src, r.sport, r.dst, r.dport, r.seq));
    let found = -1;
    if (list) {
      // Latest trigger not after the RST (binary search on capture time).
      let lo = 0;
      let hi = list.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (triggers[list[mid]].tNs <= r.tNs) {
          found = list[mid];
          lo = mid + 1;
        } else hi = mid - 1;
      }
    }
    if (found < 0) {
      unpaired++;
      continue;
    }
    const us = Number(r.tNs - triggers[found].tNs) / 1000;
    latencyUs.push(us);
    const prev = first.get(found);
    if (prev === undefined || us < prev) first.set(found, us);
  }
  return {
    latencyUs,
    firstUs: [...first.values()],
    triggers: triggers.length,
    answered: first.size,
    rsts: resets.length,
    unpaired,
  };
}
