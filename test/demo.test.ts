/**
 * `make demo` and the measuring machinery of `make bench`.
 *
 * - The pure parts the benchmark's figures rest on: quantiles, the pcap
 *   reader, the pairing of RSTs with their triggers by sequence arithmetic,
 *   the SVG plot.
 * - The demo itself, end to end, as root: it must exit 0, show every step
 *   and leave no namespace behind.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ptest } from './helpers/privileged.js';
import { quantileSorted, summarize } from '../testkit/stats.js';
import { parsePcap, type TcpSegment } from '../testkit/pcap.js';
import { pairResets } from '../bench/lib/pair.js';
import { cdfSvg } from '../bench/lib/svg.js';
import { labPrefix, listNetns } from '../testkit/lab/netns.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('quantiles interpolate between closest ranks', (t) => {
  t.is(quantileSorted([1, 2, 3, 4], 0.5), 2.5);
  t.is(quantileSorted([10], 0.99), 10);
  t.true(Number.isNaN(quantileSorted([], 0.5)));
  const s = summarize([5, 1, 4, 2, 3]);
  t.deepEqual([s.min, s.p25, s.p50, s.p75, s.max, s.n], [1, 2, 3, 4, 5, 5]);
});

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

function seg(tUs: number, src: string, sport: number, dst: string, dport: number, seq: number, ack: number, flags: number, len = 0, win = 512): TcpSegment {
  return { tNs: BigInt(Math.round(tUs * 1000)), family: 4, src, dst, sport, dport, seq, ack, flags, win, len };
}

test('pairing: each RST finds its trigger by sequence arithmetic, for both tools\' rules', (t) => {
  const A = '10.0.0.1';
  const B = '10.0.0.2';
  const sniffed = [
    seg(100, A, 5000, B, 80, 1000, 9000, 0x18, 10), // data A->B: N = 1010, K = 9000
    seg(200, B, 80, A, 5000, 9000, 1010, 0x10), // ack B->A: toward B seq 1010, toward A seq 9000
    seg(300, A, 6000, B, 80, 0xfffffffe, 0, 0x02), // SYN: RST+ACK seq 0 to A; N wraps to 0xffffffff
    seg(350, B, 80, A, 5000, 1, 1, 0x04), // a RST seen on the sniff port is never a trigger
  ];
  const sent = [
    seg(150, B, 80, A, 5000, 9000, 0, 0x04), // to A, seq K of the first segment (the second is later: not before)
    seg(160, A, 5000, B, 80, 1010, 0, 0x04), // to B, seq N of the first
    seg(170, B, 80, A, 5000, 9000 + 512, 0, 0x04), // tcpkill's strafe K + win
    seg(250, A, 5000, B, 80, 1010, 0, 0x04), // to B from the second (seq = its ack): the latest trigger not after it
    seg(400, B, 80, A, 6000, 0, 0xffffffff, 0x14), // refusing the SYN
    seg(500, B, 80, A, 7000, 42, 0, 0x04), // nobody's: unpaired
  ];
  const r = pairResets(sniffed, sent);
  t.is(r.triggers, 3);
  t.is(r.rsts, 6);
  t.is(r.unpaired, 1);
  t.deepEqual(r.latencyUs, [50, 60, 70, 50, 100]);
  t.is(r.answered, 3);
  t.deepEqual([...r.firstUs].sort((a, b) => a - b), [50, 50, 100]);
});

test('the plot is a self-contained SVG with one curve per tool on a log axis', (t) => {
  const svg = cdfSvg('title <&>', [
    { label: 'tcpreset', color: '#00f', valuesUs: [20, 30, 40, 55, 400] },
    { label: 'tcpkill', color: '#f00', valuesUs: [200_000, 300_000, 500_000] },
  ]);
  t.true(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  t.true(svg.trimEnd().endsWith('</svg>'));
  t.is(svg.match(/<polyline/g)?.length, 2);
  t.true(svg.includes('title &lt;&amp;&gt;'));
  t.true(svg.includes('10 µs') && svg.includes('1 s'));
  t.true(svg.includes('tcpreset (n=5)') && svg.includes('tcpkill (n=3)'));
});

ptest('make demo: every step happens, exit status 0, nothing left behind', async (t) => {
  t.timeout(110_000);
  let pid = 0;
  const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, [`${ROOT}dist/testkit/demo/demo.js`], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    pid = child.pid ?? 0;
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.once('close', (c) => resolve({ code: c, out }));
  });
  t.is(code, 0, out);
  for (const step of [
    'job created',
    'interactive session, client end reset',
    'interactive session, server end reset',
    'download, client end reset',
    'download, server end reset',
    'new connection refused',
    'job expired',
    'new connection succeeds',
    'the bystander session was never touched',
    'everything the demo created is removed',
  ]) {
    t.regex(out, new RegExp(`✓ ${step}`), step);
  }
  t.notRegex(out, /✗/);
  t.regex(out, /\$ tcpreset ids-sig-2024 -i sniff0 -o reset0 -h \S+ -d 8/);
  // The demo's namespaces are named after its pid (testkit/lab/netns.ts).
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(`${labPrefix()}${pid}-`)), []);
});
