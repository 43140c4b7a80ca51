/**
 * The sender alone: how many RSTs/s the daemon's own Sender pushes out of
 * the reset interface when nothing else runs (no ring, no forging per
 * event): the ceiling the flood figures of §4 are compared with. Run in
 * the sensor namespace: `node sender-alone.js IFNAME DST_V4 SECONDS`.
 * Prints one JSON line {sent, errors, seconds, perSec}.
 */
import { Sender } from '../../src/net/sender.js';
import { ipv4HeaderChecksum, tcpChecksumV4 } from '../../src/packet/checksum.js';

const [ifname, dst, secsText] = process.argv.slice(2);
const secs = Number(secsText ?? '2');
const d = dst.split('.').map(Number);

function rst(seq: number): Uint8Array {
  const p = new Uint8Array(40);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, 40);
  p[8] = 64;
  p[9] = 6;
  p.set([192, 0, 2, 1], 12); // TEST-NET-1 source: nothing in the lab answers it
  p.set(d, 16);
  dv.setUint16(10, ipv4HeaderChecksum(p.subarray(0, 20)));
  dv.setUint16(20, 40000 + (seq & 0xfff));
  dv.setUint16(22, 2222);
  dv.setUint32(24, seq);
  p[32] = 0x50;
  p[33] = 0x04;
  dv.setUint16(36, tcpChecksumV4(p.subarray(12, 16), p.subarray(16, 20), p.subarray(20, 40)));
  return p;
}

const packets = Array.from({ length: 64 }, (_, i) => rst(i * 7919));
const s = Sender.open(ifname, 'l3');
const end = performance.now() + secs * 1000;
const t0 = performance.now();
while (performance.now() < end) {
  for (const p of packets) s.enqueue({ family: 4, packet: p });
  s.flush();
}
const seconds = (performance.now() - t0) / 1000;
process.stdout.write(JSON.stringify({ sent: s.stats.sent, errors: s.stats.errors, seconds, perSec: Math.round(s.stats.sent / seconds) }) + '\n');
s.close();
