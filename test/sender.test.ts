/**
 * Sender on a real interface: a veth pair whose end A (the reset interface)
 * sits in the root namespace with private addresses and whose end B sits in
 * a namespace made by the test, where tcpdump records what arrives. Every
 * test makes its own pair and namespace and removes them.
 */
import type { ExecutionContext } from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ptest } from './helpers/privileged.js';
import { Sender } from '../src/net/sender.js';
import { NativeError, ValidationError } from '../src/core/errors.js';

let seqNo = 0;

interface Link {
  ifA: string;
  ifB: string;
  ns: string;
  macA: Uint8Array;
  macB: Uint8Array;
  v4A: number[];
  v4B: number[];
  v6A: number[];
  v6B: number[];
}

function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function parseMac(text: string): Uint8Array {
  return Uint8Array.from(text.trim().split(':').map((h) => parseInt(h, 16)));
}

function v6Bytes(net: number, host: number): number[] {
  // fd00:200:<net>::<host>
  const b = new Array(16).fill(0);
  b[0] = 0xfd;
  b[2] = 0x02;
  b[3] = 0x00;
  b[4] = net >> 8;
  b[5] = net & 0xff;
  b[15] = host;
  return b;
}

/** veth A (root namespace, 10.200.N.1/24, fd00:200:N::1/64) <-> veth B (namespace, .2). */
function makeLink(t: ExecutionContext): Link {
  const k = seqNo++;
  const tag = `${process.pid % 100000}${k}`;
  const ifA = `trsA${tag}`;
  const ifB = `trsB${tag}`;
  const ns = `trs-${process.pid}-${k}`;
  const net = (process.pid * 8 + k) % 250 + 1;
  t.teardown(() => {
    try { sh('ip', 'link', 'del', ifA); } catch { /* gone with the namespace */ }
    try { sh('ip', 'netns', 'del', ns); } catch { /* never made */ }
  });
  sh('ip', 'netns', 'add', ns);
  sh('ip', 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', ns);
  sh('ip', 'addr', 'add', `10.200.${net}.1/24`, 'dev', ifA);
  sh('ip', '-6', 'addr', 'add', `fd00:200:${net.toString(16)}::1/64`, 'dev', ifA, 'nodad');
  sh('ip', 'link', 'set', ifA, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `10.200.${net}.2/24`, 'dev', ifB);
  sh('ip', 'netns', 'exec', ns, 'ip', '-6', 'addr', 'add', `fd00:200:${net.toString(16)}::2/64`, 'dev', ifB, 'nodad');
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', ifB, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  return {
    ifA, ifB, ns,
    macA: parseMac(readFileSync(`/sys/class/net/${ifA}/address`, 'utf8')),
    macB: parseMac(sh('ip', 'netns', 'exec', ns, 'cat', `/sys/class/net/${ifB}/address`)),
    v4A: [10, 200, net, 1],
    v4B: [10, 200, net, 2],
    v6A: v6Bytes(net, 1),
    v6B: v6Bytes(net, 2),
  };
}

/**
 * Let the neighbour entries exist before a burst (the queue of packets waiting
 * for resolution is small by design): send one packet of each family, wait
 * until both neighbours are reachable.
 */
async function resolveNeighbours(l: Link): Promise<void> {
  const s = Sender.open(l.ifA, 'l3');
  try {
    s.enqueue({ family: 4, packet: rst4(l.v4A, l.v4B, 0x7fffffff) });
    s.enqueue({ family: 6, packet: rst6(l.v6A, l.v6B, 0x7fffffff) });
    s.flush();
  } finally {
    s.close();
  }
  const want = [l.v4B.join('.'), fmt6(l.v6B)];
  for (let i = 0; i < 100; i++) {
    if (want.every((a) => /REACHABLE/.test(sh('ip', 'neigh', 'show', 'to', a, 'dev', l.ifA)))) return;
    await new Promise((r) => setTimeout(r, 30));
  }
  throw new Error(`neighbours of ${l.ifA} not resolved: ${sh('ip', 'neigh', 'show', 'dev', l.ifA)}`);
}

function macText(m: Uint8Array): string {
  return [...m].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function fmt6(b: number[]): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i] << 8) | b[i + 1]).toString(16));
  return words.join(':');
}

interface Capture {
  /** Resolves with the captured frames once `count` arrived (or after timeoutMs with what did). */
  frames(timeoutMs?: number): Promise<Uint8Array[]>;
}

/** tcpdump in B's namespace, started and listening before this resolves. */
async function capture(t: ExecutionContext, l: Link, count: number, filter: string): Promise<Capture> {
  const dir = mkdtempSync(join(tmpdir(), 'trs-cap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cap.pcap');
  const proc = spawn('ip', ['netns', 'exec', l.ns, 'tcpdump', '-i', l.ifB, '-nn', '-U', '-w', file, '-c', String(count), filter], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGTERM');
  });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
    proc.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
  });
  return {
    async frames(timeoutMs = 5000) {
      const timer = setTimeout(() => proc.kill('SIGTERM'), timeoutMs);
      await exited;
      clearTimeout(timer);
      return readPcap(readFileSync(file));
    },
  };
}

function readPcap(buf: Buffer): Uint8Array[] {
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const out: Uint8Array[] = [];
  for (let o = 24; o + 16 <= buf.length;) {
    const incl = u32(o + 8);
    out.push(new Uint8Array(buf.subarray(o + 16, o + 16 + incl)));
    o += 16 + incl;
  }
  return out;
}

// ---- packets ----------------------------------------------------------------

function sum16(b: Uint8Array, off: number, len: number, acc = 0): number {
  for (let i = 0; i < len; i += 2) acc += (b[off + i] << 8) | (i + 1 < len ? b[off + i + 1] : 0);
  return acc;
}
function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

function tcpRst(b: Uint8Array, off: number, sport: number, dport: number, seq: number): void {
  const dv = new DataView(b.buffer, b.byteOffset);
  dv.setUint16(off, sport);
  dv.setUint16(off + 2, dport);
  dv.setUint32(off + 4, seq >>> 0);
  dv.setUint32(off + 8, 0);
  b[off + 12] = 5 << 4;
  b[off + 13] = 0x04; // RST
}

/** A complete IPv4 TCP RST with valid checksums. */
function rst4(src: number[], dst: number[], seq: number): Uint8Array {
  const p = new Uint8Array(40);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, 40);
  dv.setUint16(4, 0x1234 + (seq & 0xff)); // nonzero: the kernel would fill a zero ID
  p[8] = 64;
  p[9] = 6;
  p.set(src, 12);
  p.set(dst, 16);
  dv.setUint16(10, fold(sum16(p, 0, 20)));
  tcpRst(p, 20, 443, 40000, seq);
  const pseudo = sum16(p, 12, 8) + 6 + 20;
  dv.setUint16(36, fold(sum16(p, 20, 20, pseudo)));
  return p;
}

/** A complete IPv6 TCP RST with a valid checksum. */
function rst6(src: number[], dst: number[], seq: number): Uint8Array {
  const p = new Uint8Array(60);
  const dv = new DataView(p.buffer);
  dv.setUint32(0, (6 << 28) | (0x12 << 20) | 0xabcde); // traffic class and flow label kept as given
  dv.setUint16(4, 20);
  p[6] = 6;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  tcpRst(p, 40, 443, 40000, seq);
  const pseudo = sum16(p, 8, 32) + 20 + 6;
  dv.setUint16(56, fold(sum16(p, 40, 20, pseudo)));
  return p;
}

/** Ethernet frame: dst, src, VLAN tags (tpid, tci), then the packet. */
function ethFrame(dst: Uint8Array, src: Uint8Array, vlans: [number, number][], packet: Uint8Array, family: 4 | 6): Uint8Array {
  const f = new Uint8Array(14 + 4 * vlans.length + packet.length);
  const dv = new DataView(f.buffer);
  f.set(dst, 0);
  f.set(src, 6);
  let o = 12;
  for (const [tpid, tci] of vlans) {
    dv.setUint16(o, tpid);
    dv.setUint16(o + 2, tci);
    o += 4;
  }
  dv.setUint16(o, family === 4 ? 0x0800 : 0x86dd);
  f.set(packet, o + 2);
  return f;
}

function seqOf(frame: Uint8Array): number {
  // Find the TCP header after Ethernet, optional VLAN tags and the IP header.
  const dv = new DataView(frame.buffer, frame.byteOffset);
  let o = 12;
  while (dv.getUint16(o) === 0x8100 || dv.getUint16(o) === 0x88a8) o += 4;
  const type = dv.getUint16(o);
  const ip = o + 2;
  const tcp = type === 0x0800 ? ip + (frame[ip] & 0x0f) * 4 : ip + 40;
  return dv.getUint32(tcp + 4);
}

// ---- tests ------------------------------------------------------------------

ptest('l3: an IPv4 and an IPv6 RST arrive at the peer byte for byte (the kernel resolves the neighbour)', async (t) => {
  const l = makeLink(t);
  const cap = await capture(t, l, 2, 'tcp');
  const s = Sender.open(l.ifA, 'l3');
  t.teardown(() => s.close());
  t.is(s.mode, 'l3');
  t.deepEqual([...s.mac], [...l.macA]);
  const p4 = rst4([10, 200, 77, 9], l.v4B, 1111); // source spoofed: any address
  const p6 = rst6(l.v6A, l.v6B, 2222);
  s.enqueue({ family: 4, packet: p4 });
  s.enqueue({ family: 6, packet: p6 });
  t.is(s.queued, 2);
  t.is(s.flush(), 2);
  t.is(s.queued, 0);
  t.deepEqual(s.stats, { sent: 2, errors: 0, lastError: undefined });
  const frames = await cap.frames();
  t.is(frames.length, 2);
  const f4 = frames.find((f) => f[12] === 0x08 && f[13] === 0x00);
  const f6 = frames.find((f) => f[12] === 0x86 && f[13] === 0xdd);
  t.truthy(f4);
  t.truthy(f6);
  t.deepEqual([...f4!.subarray(14)], [...p4]);
  t.deepEqual([...f6!.subarray(14)], [...p6]);
  // Routed to the neighbour: B's MAC from A's.
  t.deepEqual([...f4!.subarray(0, 6)], [...l.macB]);
  t.deepEqual([...f4!.subarray(6, 12)], [...l.macA]);
});

ptest('l3: 300 packets in one flush all arrive; a queue smaller than the burst flushes by itself', async (t) => {
  const l = makeLink(t);
  await resolveNeighbours(l);
  const cap = await capture(t, l, 500, 'tcp');
  const s = Sender.open(l.ifA, 'l3');
  t.teardown(() => s.close());
  for (let i = 0; i < 200; i++) s.enqueue({ family: 4, packet: rst4(l.v4A, l.v4B, i) });
  for (let i = 200; i < 300; i++) s.enqueue({ family: 6, packet: rst6(l.v6A, l.v6B, i) });
  t.is(s.queued, 300);
  t.is(s.flush(), 300);
  // 16 slots per socket: enqueue sends each full queue before taking more.
  const small = Sender.open(l.ifA, 'l3', { slots: 16, batch: 8 });
  t.teardown(() => small.close());
  for (let i = 300; i < 500; i++) small.enqueue({ family: 4, packet: rst4(l.v4A, l.v4B, i) });
  t.true(small.queued <= 16);
  small.flush();
  t.deepEqual(small.stats, { sent: 200, errors: 0, lastError: undefined });
  const frames = await cap.frames();
  t.is(frames.length, 500);
  t.deepEqual(frames.map(seqOf).sort((a, b) => a - b), Array.from({ length: 500 }, (_, i) => i));
});

ptest('l2: whole frames arrive unchanged, with an 802.1Q tag and with an 802.1ad+802.1Q stack', async (t) => {
  const l = makeLink(t);
  const cap = await capture(t, l, 3, 'ether src ' + macText(l.macA) + ' and (tcp or vlan)');
  const s = Sender.open(l.ifA, 'l2');
  t.teardown(() => s.close());
  t.is(s.mode, 'l2');
  const sent = [
    ethFrame(l.macB, s.mac, [], rst4(l.v4A, l.v4B, 1), 4),
    ethFrame(l.macB, s.mac, [[0x8100, 0x2064]], rst4(l.v4A, l.v4B, 2), 4), // PCP 1, VID 100
    ethFrame(l.macB, s.mac, [[0x88a8, 0x0123], [0x8100, 0x0456]], rst6(l.v6A, l.v6B, 3), 6),
  ];
  for (const [i, frame] of sent.entries()) s.enqueue({ family: i === 2 ? 6 : 4, packet: new Uint8Array(0), frame });
  t.is(s.flush(), 3);
  const frames = await cap.frames();
  t.is(frames.length, 3);
  const bySeq = new Map(frames.map((f) => [seqOf(f), f]));
  for (const [i, frame] of sent.entries()) t.deepEqual([...(bySeq.get(i + 1) ?? [])], [...frame], `frame ${i + 1}`);
});

ptest('l2: 200 frames in one flush all arrive', async (t) => {
  const l = makeLink(t);
  const cap = await capture(t, l, 200, 'ether src ' + macText(l.macA) + ' and (tcp or vlan)');
  const s = Sender.open(l.ifA, 'l2');
  t.teardown(() => s.close());
  for (let i = 0; i < 200; i++) {
    s.enqueue({ family: 4, packet: new Uint8Array(0), frame: ethFrame(l.macB, s.mac, [[0x8100, 7]], rst4(l.v4A, l.v4B, i), 4) });
  }
  t.is(s.flush(), 200);
  t.deepEqual(s.stats, { sent: 200, errors: 0, lastError: undefined });
  const frames = await cap.frames();
  t.deepEqual(frames.map(seqOf).sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i));
});

ptest('a missing interface fails to open with a NativeError naming it', (t) => {
  for (const mode of ['l3', 'l2'] as const) {
    const err = t.throws(() => Sender.open('trsNoSuch0', mode), { instanceOf: NativeError });
    t.is(err!.target, 'trsNoSuch0');
    t.is(err!.code, 'E_NATIVE');
    t.regex(err!.message, /trsNoSuch0/);
    t.regex(err!.message, /No such device/);
  }
});

ptest('a link that refuses packets is counted, never thrown, and the sender recovers', async (t) => {
  const l = makeLink(t);
  const s3 = Sender.open(l.ifA, 'l3');
  const s2 = Sender.open(l.ifA, 'l2');
  t.teardown(() => {
    s3.close();
    s2.close();
  });
  sh('ip', 'link', 'set', l.ifA, 'down');
  for (let i = 0; i < 3; i++) s3.enqueue({ family: 4, packet: rst4(l.v4A, l.v4B, i) });
  s3.enqueue({ family: 6, packet: rst6(l.v6A, l.v6B, 3) });
  for (let i = 0; i < 3; i++) s2.enqueue({ family: 4, packet: new Uint8Array(0), frame: ethFrame(l.macB, s2.mac, [], rst4(l.v4A, l.v4B, i), 4) });
  t.is(s3.flush(), 0);
  t.is(s2.flush(), 0);
  t.is(s3.stats.sent, 0);
  t.is(s3.stats.errors, 4);
  t.regex(s3.stats.lastError ?? '', /errno \d+/);
  t.is(s2.stats.errors, 3);
  t.regex(s2.stats.lastError ?? '', /Network is down/);
  // Oversized: counted at enqueue, nothing queued.
  s2.enqueue({ family: 4, packet: new Uint8Array(0), frame: new Uint8Array(2000) });
  t.is(s2.queued, 0);
  t.is(s2.stats.errors, 4);
  t.regex(s2.stats.lastError ?? '', /2000 bytes/);

  sh('ip', 'link', 'set', l.ifA, 'up');
  const cap = await capture(t, l, 1, 'ether src ' + macText(l.macA) + ' and tcp');
  s2.enqueue({ family: 4, packet: new Uint8Array(0), frame: ethFrame(l.macB, s2.mac, [], rst4(l.v4A, l.v4B, 99), 4) });
  t.is(s2.flush(), 1);
  t.is((await cap.frames()).map(seqOf)[0], 99);
});

ptest('an unknown mode is a ValidationError', (t) => {
  const err = t.throws(() => Sender.open('lo', 'l4' as 'l3'), { instanceOf: ValidationError });
  t.is(err!.field, 'mode');
});

ptest('enqueue refuses what the mode cannot send (a bug, not a network condition)', (t) => {
  const l = makeLink(t);
  const s3 = Sender.open(l.ifA, 'l3');
  const s2 = Sender.open(l.ifA, 'l2');
  t.teardown(() => {
    s3.close();
    s2.close();
  });
  t.throws(() => s2.enqueue({ family: 4, packet: rst4(l.v4A, l.v4B, 1) }), { message: /needs an Ethernet frame/ });
  t.throws(() => s3.enqueue({ family: 6, packet: rst4(l.v4A, l.v4B, 1) }), { message: /not an IPv6 packet/ });
  s3.close();
  t.throws(() => s3.enqueue({ family: 4, packet: rst4(l.v4A, l.v4B, 1) }), { message: /after close/ });
  t.is(s3.flush(), 0);
});
