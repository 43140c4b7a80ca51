/** The pcap reader of the bench and the test kit (testkit/pcap.ts). */
import test from 'ava';
import { parsePcap } from '../testkit/pcap.js';

/** A classic pcap file: nanosecond magic, Ethernet, one frame per record. */
function pcapFile(frames: { tNs: bigint; frame: Uint8Array }[]): Uint8Array {
  const parts: Buffer[] = [];
  const hdr = Buffer.alloc(24);
  hdr.writeUInt32LE(0xa1b23c4d, 0);
  hdr.writeUInt16LE(2, 4);
  hdr.writeUInt16LE(4, 6);
  hdr.writeUInt32LE(262144, 16);
  hdr.writeUInt32LE(1, 20);
  parts.push(hdr);
  for (const f of frames) {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(Number(f.tNs / 1_000_000_000n), 0);
    rec.writeUInt32LE(Number(f.tNs % 1_000_000_000n), 4);
    rec.writeUInt32LE(f.frame.length, 8);
    rec.writeUInt32LE(f.frame.length, 12);
    parts.push(rec, Buffer.from(f.frame));
  }
  return Buffer.concat(parts);
}

function tcpFrame(o: { vlan?: number; src: number[]; dst: number[]; sport: number; dport: number; seq: number; ack: number; flags: number; win: number; payload: number }): Uint8Array {
  const eth = Buffer.alloc(o.vlan === undefined ? 14 : 18);
  let p = 12;
  if (o.vlan !== undefined) {
    eth.writeUInt16BE(0x8100, 12);
    eth.writeUInt16BE(o.vlan, 14);
    p = 16;
  }
  eth.writeUInt16BE(0x0800, p);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 20 + o.payload, 2);
  ip[8] = 64;
  ip[9] = 6;
  Buffer.from(o.src).copy(ip, 12);
  Buffer.from(o.dst).copy(ip, 16);
  const tcp = Buffer.alloc(20 + o.payload);
  tcp.writeUInt16BE(o.sport, 0);
  tcp.writeUInt16BE(o.dport, 2);
  tcp.writeUInt32BE(o.seq >>> 0, 4);
  tcp.writeUInt32BE(o.ack >>> 0, 8);
  tcp[12] = 0x50;
  tcp[13] = o.flags;
  tcp.writeUInt16BE(o.win, 14);
  return Buffer.concat([eth, ip, tcp]);
}

test('pcap reader: nanosecond timestamps, VLAN tag, TCP fields, payload length from the IP header', (t) => {
  const buf = pcapFile([
    { tNs: 1_700_000_000_123_456_789n, frame: tcpFrame({ src: [10, 0, 0, 1], dst: [10, 0, 0, 2], sport: 40000, dport: 22, seq: 0xfffffff0, ack: 7, flags: 0x18, win: 501, payload: 5 }) },
    { tNs: 1_700_000_000_123_556_789n, frame: tcpFrame({ vlan: 100, src: [10, 0, 0, 2], dst: [10, 0, 0, 1], sport: 22, dport: 40000, seq: 7, ack: 0xfffffff5, flags: 0x04, win: 0, payload: 0 }) },
  ]);
  // A capture cut short by a signal ends in a partial record: it is ignored.
  const segs = parsePcap(Buffer.concat([buf, Buffer.alloc(10)]));
  t.is(segs.length, 2);
  t.is(segs[0]!.tNs, 1_700_000_000_123_456_789n);
  t.like(segs[0], { src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 22, seq: 0xfffffff0, ack: 7, flags: 0x18, win: 501, len: 5 });
  t.like(segs[1], { src: '10.0.0.2', dst: '10.0.0.1', flags: 0x04, len: 0 });
});
