/**
 * Sender throughput (root; `node dist/bench/sender.bench.js`): RSTs per
 * second through Sender.flush on one core, l3 (raw IPv4 socket) and l2
 * (packet socket), for several sendmmsg batch sizes. The reset interface is
 * one end of a veth pair in the root namespace; the peer sits in a namespace
 * made here, whose kernel receives and drops the RSTs (that receive work
 * runs in softirq on the sending CPU, so it is part of the cost, as on the
 * feasibility spike). Also reported: what the peer actually received.
 * Pin it to one CPU to make "one core" exact (the peer's receive softirq
 * then runs there too): `taskset -c 0 node dist/bench/sender.bench.js`.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Sender } from '../src/net/sender.js';
import { median } from '../testkit/stats.js';
import { ipv4HeaderChecksum, tcpChecksumV4 } from '../src/packet/checksum.js';
import type { InjectMode } from '../src/core/model.js';

function sh(...args: string[]): string {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const tag = String(process.pid % 100000);
const ifA = `trbA${tag}`;
const ifB = `trbB${tag}`;
const ns = `trb-${process.pid}`;
const net = (process.pid % 250) + 1;

let cleaned = false;
function cleanup(): void {
  if (cleaned) return;
  cleaned = true;
  try { sh('ip', 'link', 'del', ifA); } catch { /* already gone */ }
  try { sh('ip', 'netns', 'del', ns); } catch { /* never made */ }
}

function rst4(seq: number): Uint8Array {
  const p = new Uint8Array(40);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, 40);
  dv.setUint16(4, 0x4321);
  p[8] = 64;
  p[9] = 6;
  p.set([10, 200, net, 1], 12);
  p.set([10, 200, net, 2], 16);
  dv.setUint16(20, 443);
  dv.setUint16(22, 40000);
  dv.setUint32(24, seq);
  p[32] = 0x50;
  p[33] = 0x04;
  // Valid checksums: the peer's TCP looks the segment up like a real RST (and drops it: no such socket).
  dv.setUint16(10, ipv4HeaderChecksum(p));
  dv.setUint16(36, tcpChecksumV4(p.subarray(12, 16), p.subarray(16, 20), p, 20));
  return p;
}

function rxPackets(): number {
  return Number(sh('ip', 'netns', 'exec', ns, 'cat', `/sys/class/net/${ifB}/statistics/rx_packets`).trim());
}

function run(mode: InjectMode, batch: number, seconds: number, macA: Uint8Array, macB: Uint8Array): { ppsWall: number; ppsCpu: number; errors: number; received: number; sent: number } {
  const s = Sender.open(ifA, mode, { batch, slots: Math.max(batch, 64) });
  const packet = rst4(1);
  const frame = new Uint8Array(14 + packet.length);
  frame.set(macB, 0);
  frame.set(macA, 6);
  frame[12] = 0x08;
  frame.set(packet, 14);
  const pkt = { family: 4 as const, packet, frame };
  const rx0 = rxPackets();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(seconds * 1e9);
  while (process.hrtime.bigint() < end) {
    for (let r = 0; r < 16; r++) {
      for (let i = 0; i < batch; i++) s.enqueue(pkt);
      s.flush();
    }
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const cpuSec = (cpu.user + cpu.system) / 1e6;
  const received = rxPackets() - rx0;
  s.close();
  return { ppsWall: s.stats.sent / wall, ppsCpu: s.stats.sent / cpuSec, errors: s.stats.errors, received, sent: s.stats.sent };
}

process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
try {
  sh('ip', 'netns', 'add', ns);
  sh('ip', 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', ns);
  sh('ip', 'addr', 'add', `10.200.${net}.1/24`, 'dev', ifA);
  sh('ip', 'link', 'set', ifA, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `10.200.${net}.2/24`, 'dev', ifB);
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', ifB, 'up');
  const macA = Uint8Array.from(readFileSync(`/sys/class/net/${ifA}/address`, 'utf8').trim().split(':').map((h) => parseInt(h, 16)));
  const macBText = sh('ip', 'netns', 'exec', ns, 'cat', `/sys/class/net/${ifB}/address`).trim();
  const macB = Uint8Array.from(macBText.split(':').map((h) => parseInt(h, 16)));
  // A permanent neighbour: measure sending, not address resolution.
  sh('ip', 'neigh', 'replace', `10.200.${net}.2`, 'lladdr', macBText, 'dev', ifA, 'nud', 'permanent');

  const REPS = 3;
  const out: Record<string, unknown> = {};
  for (const mode of ['l3', 'l2'] as const) {
    for (const batch of [1, 8, 16, 32, 64]) {
      const reps = Array.from({ length: REPS }, () => run(mode, batch, 1, macA, macB));
      const wall = median(reps.map((r) => r.ppsWall));
      const cpu = median(reps.map((r) => r.ppsCpu));
      const errors = reps.reduce((a, r) => a + r.errors, 0);
      const lossPct = (100 * reps.reduce((a, r) => a + (r.sent - r.received), 0)) / reps.reduce((a, r) => a + r.sent, 0);
      out[`${mode} batch ${batch}`] = { ppsWall: Math.round(wall), ppsPerCpuSecond: Math.round(cpu), errors, peerLossPct: Number(lossPct.toFixed(2)) };
      console.log(
        `${mode} batch ${String(batch).padStart(2)}: ${Math.round(wall / 1000)}k RST/s wall, ${Math.round(cpu / 1000)}k per CPU-second` +
          ` (median of ${REPS} x 1 s; send errors ${errors}; not received by the peer ${lossPct.toFixed(2)}%)`,
      );
    }
  }
  console.log(JSON.stringify(out));
} finally {
  cleanup();
}
