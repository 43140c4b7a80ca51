import test from 'ava';
import { MP_CAPABLE, MP_KEY0, MP_KEY1, MP_SEEN, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type TcpEvent } from '../src/bpf/contract.js';
import { DEFAULT_TTL, MP_FASTCLOSE_LEN, forgeResets, l2Frame, type RstPacket } from '../src/packet/forge.js';
import { ipv4HeaderChecksum, tcpChecksumV4, tcpChecksumV6 } from '../src/packet/checksum.js';
import { xorshift32 } from '../testkit/rng.js';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW, hasTshark, tsharkDecode } from '../testkit/tshark.js';

const V4A = Uint8Array.from([192, 0, 2, 10]);
const V4B = Uint8Array.from([198, 51, 100, 20]);
const V6A = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]);
const V6B = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0xbe, 0xef]);
const MAC_A = Uint8Array.from([0x02, 0xaa, 0, 0, 0, 0x01]);
const MAC_B = Uint8Array.from([0x02, 0xbb, 0, 0, 0, 0x02]);
const MAC_SENSOR = Uint8Array.from([0x02, 0x5e, 0x50, 0x50, 0x00, 0x09]);

/** An observed segment A -> B (A = 192.0.2.10:40000 / 2001:db8::a, B = ...:443). */
function ev(family: 4 | 6, tcpFlags: number, seq: number, ack: number, payloadLen: number, extra: Partial<TcpEvent> = {}): TcpEvent {
  return {
    tsNs: 1n,
    targetId: 7,
    ifindex: 3,
    seq,
    ack,
    payloadLen,
    flowLabel: family === 6 ? 0xabcde : 0,
    sport: 40000,
    dport: 443,
    vlans: [],
    family,
    tcpFlags,
    ttl: 57,
    tos: 0xb9, // DSCP 46 (EF) + ECN CE-ish bits 01: ECN must be cleared
    match: 2,
    smac: MAC_A,
    dmac: MAC_B,
    saddr: family === 4 ? V4A : V6A,
    daddr: family === 4 ? V4B : V6B,
    ...extra,
  };
}

interface Expect {
  toward: 'src' | 'dst';
  seq: number;
  ack: number;
  flags: number;
}

const u32 = (x: number): number => x >>> 0;
const S = 0x1000_0000;
const K = 0x2000_0000;

/** Each row of docs/design.md's table, as (observed flags, payload) -> expected RSTs. */
const ROWS: Array<{ name: string; flags: number; seq: number; ack: number; len: number; want: Expect[] }> = [
  {
    name: 'data (PSH|ACK, 100 bytes)',
    flags: TCP_PSH | TCP_ACK,
    seq: S,
    ack: K,
    len: 100,
    want: [
      { toward: 'src', seq: K, ack: S + 100, flags: TCP_RST | TCP_ACK },
      { toward: 'dst', seq: S + 100, ack: K, flags: TCP_RST | TCP_ACK },
    ],
  },
  {
    name: 'pure ACK',
    flags: TCP_ACK,
    seq: S,
    ack: K,
    len: 0,
    want: [
      { toward: 'src', seq: K, ack: S, flags: TCP_RST | TCP_ACK },
      { toward: 'dst', seq: S, ack: K, flags: TCP_RST | TCP_ACK },
    ],
  },
  {
    name: 'SYN',
    flags: TCP_SYN,
    seq: S,
    ack: 0,
    len: 0,
    want: [{ toward: 'src', seq: 0, ack: S + 1, flags: TCP_RST | TCP_ACK }],
  },
  {
    name: 'SYN with Fast Open data: ack still S+1',
    flags: TCP_SYN,
    seq: S,
    ack: 0xdeadbeef,
    len: 50,
    want: [{ toward: 'src', seq: 0, ack: S + 1, flags: TCP_RST | TCP_ACK }],
  },
  {
    // Observed sender = server (Sb = S), receiver = client (its ISN+1 = K).
    name: 'SYN-ACK',
    flags: TCP_SYN | TCP_ACK,
    seq: S,
    ack: K,
    len: 0,
    want: [
      { toward: 'src', seq: K, ack: S + 1, flags: TCP_RST | TCP_ACK }, // server in SYN-RECV
      { toward: 'dst', seq: S + 1, ack: K, flags: TCP_RST | TCP_ACK }, // client in SYN-SENT
    ],
  },
  {
    name: 'FIN|ACK',
    flags: TCP_FIN | TCP_ACK,
    seq: S,
    ack: K,
    len: 0,
    want: [
      { toward: 'src', seq: K, ack: S + 1, flags: TCP_RST | TCP_ACK },
      { toward: 'dst', seq: S + 1, ack: K, flags: TCP_RST | TCP_ACK },
    ],
  },
  {
    name: 'FIN|PSH|ACK with 7 bytes',
    flags: TCP_FIN | TCP_PSH | TCP_ACK,
    seq: S,
    ack: K,
    len: 7,
    want: [
      { toward: 'src', seq: K, ack: S + 8, flags: TCP_RST | TCP_ACK },
      { toward: 'dst', seq: S + 8, ack: K, flags: TCP_RST | TCP_ACK },
    ],
  },
  { name: 'RST', flags: TCP_RST, seq: S, ack: 0, len: 0, want: [] },
  { name: 'RST|ACK (ours included)', flags: TCP_RST | TCP_ACK, seq: S, ack: K, len: 0, want: [] },
  { name: 'SYN|RST (garbage)', flags: TCP_SYN | TCP_RST, seq: S, ack: 0, len: 0, want: [] },
  {
    name: 'bare FIN without ACK: only B, no ACK field',
    flags: TCP_FIN,
    seq: S,
    ack: 0x12345678,
    len: 0,
    want: [{ toward: 'dst', seq: S + 1, ack: 0, flags: TCP_RST }],
  },
  {
    name: 'no flags with data: only B',
    flags: 0,
    seq: S,
    ack: 0x12345678,
    len: 10,
    want: [{ toward: 'dst', seq: S + 10, ack: 0, flags: TCP_RST }],
  },
];

/** Read back every header field of a forged packet with DataView (independent of forge.ts' byte writes). */
function fields(p: RstPacket) {
  const dv = new DataView(p.packet.buffer, p.packet.byteOffset, p.packet.byteLength);
  const t = p.family === 4 ? 20 : 40;
  const ip =
    p.family === 4
      ? {
          verIhl: dv.getUint8(0),
          tos: dv.getUint8(1),
          totalLen: dv.getUint16(2),
          id: dv.getUint16(4),
          fragField: dv.getUint16(6),
          ttl: dv.getUint8(8),
          proto: dv.getUint8(9),
          src: p.packet.slice(12, 16),
          dst: p.packet.slice(16, 20),
        }
      : {
          version: dv.getUint32(0) >>> 28,
          tclass: (dv.getUint32(0) >>> 20) & 0xff,
          flowLabel: dv.getUint32(0) & 0xfffff,
          payloadLen: dv.getUint16(4),
          nextHeader: dv.getUint8(6),
          hopLimit: dv.getUint8(7),
          src: p.packet.slice(8, 24),
          dst: p.packet.slice(24, 40),
        };
  return {
    len: p.packet.length,
    ip,
    tcp: {
      sport: dv.getUint16(t),
      dport: dv.getUint16(t + 2),
      seq: dv.getUint32(t + 4),
      ack: dv.getUint32(t + 8),
      doff: dv.getUint8(t + 12) >>> 4,
      reserved: dv.getUint8(t + 12) & 0x0f,
      flags: dv.getUint8(t + 13),
      window: dv.getUint16(t + 14),
      urgent: dv.getUint16(t + 18),
    },
  };
}

for (const family of [4, 6] as const) {
  for (const row of ROWS) {
    test(`IPv${family} ${row.name}`, (t) => {
      const e = ev(family, row.flags, row.seq, row.ack, row.len);
      const rsts = forgeResets(e, () => 0x4242, 33);
      t.deepEqual(
        rsts.map((r) => ({ toward: r.toward, seq: r.seq, ack: r.ack, flags: r.flags })),
        row.want.map((w) => ({ ...w, seq: u32(w.seq), ack: u32(w.ack) })),
      );
      for (const r of rsts) {
        const f = fields(r);
        const toDst = r.toward === 'dst';
        const [src, dst] = toDst ? [e.saddr, e.daddr] : [e.daddr, e.saddr];
        t.is(r.family, family);
        t.is(f.tcp.sport, toDst ? 40000 : 443);
        t.is(f.tcp.dport, toDst ? 443 : 40000);
        t.is(f.tcp.seq, r.seq);
        t.is(f.tcp.ack, r.ack);
        t.is(f.tcp.flags, r.flags);
        t.is(f.tcp.doff, 5);
        t.is(f.tcp.reserved, 0);
        t.is(f.tcp.window, 0);
        t.is(f.tcp.urgent, 0);
        t.deepEqual(f.ip.src, src);
        t.deepEqual(f.ip.dst, dst);
        const ttl = toDst ? 57 : 33;
        if (family === 4) {
          t.is(f.len, 40);
          t.like(f.ip, { verIhl: 0x45, tos: 0xb8, totalLen: 40, id: 0x4242, fragField: 0x4000, ttl, proto: 6 });
        } else {
          t.is(f.len, 60);
          t.like(f.ip, { version: 6, tclass: 0xb8, flowLabel: 0xabcde, payloadLen: 20, nextHeader: 6, hopLimit: ttl });
        }
      }
    });
  }
}

test('sequence arithmetic wraps at 2^32', (t) => {
  for (const family of [4, 6] as const) {
    // data: N = S + L crosses 2^32
    let r = forgeResets(ev(family, TCP_ACK | TCP_PSH, 0xffff_fff0, 0xffff_ffff, 0x20));
    t.deepEqual(
      r.map((x) => [x.toward, x.seq, x.ack]),
      [
        ['src', 0xffff_ffff, 0x10],
        ['dst', 0x10, 0xffff_ffff],
      ],
    );
    // SYN at S = 2^32-1: ack = 0
    r = forgeResets(ev(family, TCP_SYN, 0xffff_ffff, 0, 0));
    t.deepEqual(r.map((x) => [x.toward, x.seq, x.ack]), [['src', 0, 0]]);
    // SYN-ACK at Sb = 2^32-1
    r = forgeResets(ev(family, TCP_SYN | TCP_ACK, 0xffff_ffff, 5, 0));
    t.deepEqual(
      r.map((x) => [x.toward, x.seq, x.ack]),
      [
        ['src', 5, 0],
        ['dst', 0, 5],
      ],
    );
    // FIN with payload ending exactly at 2^32
    r = forgeResets(ev(family, TCP_FIN | TCP_ACK, 0xffff_fffe, 1, 1));
    t.deepEqual(
      r.map((x) => [x.toward, x.seq, x.ack]),
      [
        ['src', 1, 0],
        ['dst', 0, 1],
      ],
    );
    // A GSO super-packet's payload length is counted whole.
    r = forgeResets(ev(family, TCP_ACK, 0xffff_0000, 1, 65_000));
    t.is(r[1].seq, (0xffff_0000 + 65_000) % 2 ** 32);
  }
});

test('TTL / hop limit: copied toward dst, ttlFromDst or 64 toward src, never 0', (t) => {
  for (const family of [4, 6] as const) {
    const ttlOf = (r: RstPacket) => r.packet[family === 4 ? 8 : 7];
    const e = ev(family, TCP_ACK, 1, 2, 0, { ttl: 120 });
    let [toSrc, toDst] = forgeResets(e);
    t.is(ttlOf(toDst), 120);
    t.is(ttlOf(toSrc), DEFAULT_TTL);
    [toSrc, toDst] = forgeResets(e, undefined, 250);
    t.is(ttlOf(toSrc), 250);
    [toSrc, toDst] = forgeResets({ ...e, ttl: 0 }, undefined, 0);
    t.is(ttlOf(toDst), DEFAULT_TTL);
    t.is(ttlOf(toSrc), DEFAULT_TTL);
  }
});

test('IPv4 ID: from ipId() per packet, random 16-bit by default', (t) => {
  let next = 0xfffe;
  const ids = forgeResets(ev(4, TCP_ACK, 1, 2, 0), () => next++).map((r) => (r.packet[4] << 8) | r.packet[5]);
  t.deepEqual(ids, [0xfffe, 0xffff]);
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    for (const r of forgeResets(ev(4, TCP_ACK, 1, 2, 0))) {
      const id = (r.packet[4] << 8) | r.packet[5];
      t.true(id >= 0 && id <= 0xffff);
      seen.add(id);
    }
  }
  t.true(seen.size > 300, `only ${seen.size} distinct IDs in 400 packets`);
});

test('TOS / traffic class: DSCP copied, ECN bits cleared', (t) => {
  for (const tos of [0x00, 0x03, 0xfd, 0x28]) {
    const [r4] = forgeResets(ev(4, TCP_ACK, 1, 2, 0, { tos }));
    t.is(r4.packet[1], tos & 0xfc);
    const [r6] = forgeResets(ev(6, TCP_ACK, 1, 2, 0, { tos, flowLabel: 0xfffff }));
    const w = new DataView(r6.packet.buffer, r6.packet.byteOffset, r6.packet.byteLength).getUint32(0);
    t.is((w >>> 20) & 0xff, tos & 0xfc);
    t.is(w & 0xfffff, 0xfffff);
    t.is(w >>> 28, 6);
  }
});

test('packets never share bytes, and stay intact while later ones are forged (slab rollover)', (t) => {
  const kept: Array<{ r: RstPacket; e: TcpEvent; copy: Uint8Array }> = [];
  // 64 KiB slabs hold ~500 v6 pairs: 3000 events cross several.
  for (let i = 0; i < 3000; i++) {
    const family = i % 3 === 0 ? 4 : 6;
    const e = ev(family, TCP_ACK | TCP_PSH, (i * 7919) >>> 0, (i * 104729) >>> 0, i % 1500, { sport: 1024 + i });
    for (const r of forgeResets(e)) {
      const frame = l2Frame(r, e, MAC_SENSOR);
      kept.push({ r, e, copy: r.packet.slice() });
      frame.fill(0xee); // scribbling on a frame must not touch any packet
    }
  }
  for (const { r, copy } of kept) t.deepEqual(r.packet, copy);
  const [a, b] = forgeResets(ev(6, TCP_ACK, 1, 2, 0));
  a.packet.fill(0xff);
  t.not(b.packet[0], 0xff);
  t.is(b.packet[0] >>> 4, 6);
});

test('header and TCP checksums equal checksum.ts over the bytes, for random events', (t) => {
  const rnd = xorshift32(0x9e3779b9);
  const flagSets = [TCP_ACK, TCP_ACK | TCP_PSH, TCP_SYN, TCP_SYN | TCP_ACK, TCP_FIN | TCP_ACK, TCP_FIN, 0];
  for (let i = 0; i < 5000; i++) {
    const family = i & 1 ? 6 : 4;
    const alen = family === 4 ? 4 : 16;
    const saddr = Uint8Array.from({ length: alen }, () => rnd() & 0xff);
    const daddr = Uint8Array.from({ length: alen }, () => rnd() & 0xff);
    const e = ev(family, flagSets[rnd() % flagSets.length], rnd(), rnd(), rnd() % 70000, {
      saddr,
      daddr,
      sport: rnd() & 0xffff,
      dport: rnd() & 0xffff,
      ttl: rnd() & 0xff,
      tos: rnd() & 0xff,
      flowLabel: rnd() & 0xfffff,
    });
    for (const r of forgeResets(e, () => rnd() & 0xffff, rnd() & 0xff)) {
      const p = r.packet;
      if (family === 4) {
        t.is((p[10] << 8) | p[11], ipv4HeaderChecksum(p), 'IPv4 header checksum');
        t.is((p[36] << 8) | p[37], tcpChecksumV4(p.subarray(12, 16), p.subarray(16, 20), p, 20), 'TCP/IPv4 checksum');
      } else {
        t.is((p[56] << 8) | p[57], tcpChecksumV6(p.subarray(8, 24), p.subarray(24, 40), p, 40), 'TCP/IPv6 checksum');
      }
    }
  }
});

test('addresses of the wrong length for the family are refused', (t) => {
  t.throws(() => forgeResets(ev(4, TCP_ACK, 1, 2, 0, { saddr: V6A })), { instanceOf: RangeError });
  t.throws(() => forgeResets(ev(6, TCP_ACK, 1, 2, 0, { daddr: V4B })), { instanceOf: RangeError });
});

test('a corrupt event (family not 4/6, VLAN TPID not 802.1Q/802.1ad) yields no RST and no frame', (t) => {
  // decodeEvent of a garbage record: family 0 used to give two IPv6-shaped RSTs labelled family 0.
  for (const family of [0, 5, 7, 41, 255]) {
    const e = { ...ev(6, TCP_ACK, 1, 2, 0), family } as unknown as TcpEvent;
    t.throws(() => forgeResets(e), { instanceOf: RangeError, message: new RegExp(`family ${family} `) });
    t.throws(() => forgeResets({ ...e, tcpFlags: TCP_RST | TCP_ACK }), { instanceOf: RangeError }, 'refused even when it would be a no-op');
  }
  const good = ev(4, TCP_ACK, 1, 2, 0, { vlans: [{ tpid: 0x88a8, tci: 5 }, { tpid: 0x8100, tci: 100 }] });
  const [rst] = forgeResets(good);
  t.is(l2Frame(rst, good, MAC_SENSOR).byteLength, 14 + 8 + 40);
  for (const tpid of [0x0800, 0x9100, 0, 0xffff]) {
    const bad = { ...good, vlans: [{ tpid: 0x8100, tci: 1 }, { tpid, tci: 2 }] };
    t.throws(() => l2Frame(rst, bad, MAC_SENSOR), { instanceOf: RangeError, message: /TPID/ });
  }
});

function requireTshark(t: { fail: (m: string) => void }): boolean {
  if (hasTshark()) return true;
  t.fail('tshark is missing: `make` installs it (apt-get install tshark)');
  return false;
}

/** What tshark must decode for a forged RST (checksums good: status "1" = PROTO_CHECKSUM_E_GOOD). */
function assertDecoded(t: import('ava').ExecutionContext, d: Record<string, string | string[]>, r: RstPacket, e: TcpEvent): void {
  const toDst = r.toward === 'dst';
  const ipText = (b: Uint8Array) => (b.length === 4 ? Array.from(b).join('.') : undefined);
  const flag = (bit: number) => (r.flags & bit ? '1' : '0');
  t.like(d, {
    'tcp.srcport': String(toDst ? e.sport : e.dport),
    'tcp.dstport': String(toDst ? e.dport : e.sport),
    'tcp.seq_raw': String(r.seq),
    'tcp.ack_raw': String(r.ack),
    'tcp.flags': `0x${r.flags.toString(16).padStart(4, '0')}`,
    'tcp.flags.reset': '1',
    'tcp.flags.ack': flag(TCP_ACK),
    'tcp.flags.syn': '0',
    'tcp.flags.fin': '0',
    'tcp.hdr_len': '20',
    'tcp.len': '0',
    'tcp.window_size_value': '0',
    'tcp.urgent_pointer': '0',
    'tcp.checksum.status': '1',
  });
  const [src, dst] = toDst ? [e.saddr, e.daddr] : [e.daddr, e.saddr];
  if (r.family === 4) {
    t.like(d, {
      'ip.version': '4',
      'ip.hdr_len': '20',
      'ip.len': '40',
      'ip.flags.df': '1',
      'ip.proto': '6',
      'ip.src': ipText(src),
      'ip.dst': ipText(dst),
      'ip.ttl': String(r.packet[8]),
      'ip.dsfield.dscp': String(e.tos >>> 2),
      'ip.dsfield.ecn': '0',
      'ip.checksum.status': '1',
    });
  } else {
    t.like(d, {
      'ipv6.version': '6',
      'ipv6.plen': '20',
      'ipv6.nxt': '6',
      'ipv6.hlim': String(r.packet[7]),
      'ipv6.flow': `0x${e.flowLabel.toString(16).padStart(6, '0')}`,
      'ipv6.tclass.dscp': String(e.tos >>> 2),
      'ipv6.tclass.ecn': '0',
    });
    t.is(d['ipv6.src'], toDst ? '2001:db8::a' : '2001:db8:ffff:1::beef');
    t.is(d['ipv6.dst'], toDst ? '2001:db8:ffff:1::beef' : '2001:db8::a');
  }
}

test('tshark decodes every forged RST as we meant it, checksums good (v4 and v6, all rows, wrap-around)', (t) => {
  if (!requireTshark(t)) return;
  const cases: Array<{ r: RstPacket; e: TcpEvent }> = [];
  for (const family of [4, 6] as const) {
    for (const row of ROWS) {
      const e = ev(family, row.flags, row.seq, row.ack, row.len);
      for (const r of forgeResets(e, undefined, 99)) cases.push({ r, e });
    }
    const e = ev(family, TCP_ACK, 0xffff_fff0, 0xffff_ffff, 0x20, { sport: 65535, dport: 1, ttl: 255 });
    for (const r of forgeResets(e)) cases.push({ r, e });
  }
  t.true(cases.length > 30);
  const decoded = tsharkDecode(
    cases.map((c) => c.r.packet),
    LINKTYPE_RAW,
  );
  t.is(decoded.length, cases.length);
  cases.forEach((c, i) => assertDecoded(t, decoded[i], c.r, c.e));
});

test('tshark flags a corrupted packet: the checksum check can fail', (t) => {
  if (!requireTshark(t)) return;
  const [r4] = forgeResets(ev(4, TCP_ACK, 1, 2, 0));
  const [r6] = forgeResets(ev(6, TCP_ACK, 1, 2, 0));
  const bad4 = r4.packet.slice();
  bad4[8] ^= 1; // TTL: IP checksum breaks, TCP does not
  const bad4tcp = r4.packet.slice();
  bad4tcp[24] ^= 0x80; // seq: TCP checksum breaks
  const bad6 = r6.packet.slice();
  bad6[40 + 4] ^= 0x80;
  const [d1, d2, d3] = tsharkDecode([bad4, bad4tcp, bad6], LINKTYPE_RAW);
  t.is(d1['ip.checksum.status'], '0');
  t.is(d1['tcp.checksum.status'], '1');
  t.is(d2['ip.checksum.status'], '1');
  t.is(d2['tcp.checksum.status'], '0');
  t.is(d3['tcp.checksum.status'], '0');
});

test('l2Frame: victim MAC, our MAC, observed VLAN stack, ethertype; tshark agrees', (t) => {
  const vlans = [
    { tpid: 0x88a8, tci: 0x0064 }, // S-tag VLAN 100
    { tpid: 0x8100, tci: 0xa0c8 }, // C-tag VLAN 200, PCP 5
  ];
  const e4 = ev(4, TCP_ACK | TCP_PSH, 1000, 2000, 10, { vlans });
  const e6 = ev(6, TCP_ACK | TCP_PSH, 1000, 2000, 10, { vlans: [{ tpid: 0x8100, tci: 0x0fff }] });
  const e4plain = ev(4, TCP_ACK, 1000, 2000, 0);
  const frames: Array<{ f: Uint8Array; r: RstPacket; e: TcpEvent }> = [];
  for (const e of [e4, e6, e4plain]) for (const r of forgeResets(e)) frames.push({ f: l2Frame(r, e, MAC_SENSOR), r, e });

  // Byte layout, read directly.
  const { f, r } = frames[0];
  t.is(r.toward, 'src');
  t.deepEqual(f.slice(0, 6), MAC_A);
  t.deepEqual(f.slice(6, 12), MAC_SENSOR);
  t.deepEqual(Array.from(f.slice(12, 22)), [0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0xa0, 0xc8, 0x08, 0x00]);
  t.deepEqual(f.slice(22), r.packet);
  t.deepEqual(frames[1].f.slice(0, 6), MAC_B); // toward dst
  t.is(frames[4].f.length, 14 + 40);
  t.deepEqual(Array.from(frames[4].f.slice(12, 14)), [0x08, 0x00]);
  t.deepEqual(Array.from(frames[2].f.slice(12, 18)), [0x81, 0x00, 0x0f, 0xff, 0x86, 0xdd]);

  if (!requireTshark(t)) return;
  const decoded = tsharkDecode(
    frames.map((x) => x.f),
    LINKTYPE_ETHERNET,
  );
  const mac = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
  frames.forEach(({ r, e }, i) => {
    const d = decoded[i];
    t.is(d['eth.dst'], mac(r.toward === 'src' ? MAC_A : MAC_B));
    t.is(d['eth.src'], mac(MAC_SENSOR));
    assertDecoded(t, d, r, e);
  });
  t.like(decoded[0], { 'eth.type': '0x88a8', 'ieee8021ad.id': '100', 'vlan.id': '200', 'vlan.priority': '5', 'vlan.etype': '0x0800' });
  t.like(decoded[2], { 'eth.type': '0x8100', 'vlan.id': '4095', 'vlan.etype': '0x86dd' });
  t.is(decoded[4]['eth.type'], '0x0800');
  t.false('vlan.id' in decoded[4]);
});

test('MPTCP: each RST carries MP_FASTCLOSE with its receiver\'s key where known (doff 8, checksums good); none without keys; tshark reads the option', (t) => {
  const KS = 0x0102030405060708n;
  const KD = 0xf1e2d3c4b5a69788n;
  const cases: RstPacket[] = [];
  for (const family of [4, 6] as const) {
    const tcp = family === 4 ? 20 : 40;
    // Both keys: the RST to 'src' carries the source's key, the one to 'dst' the destination's.
    const both = forgeResets(ev(family, TCP_ACK, 1000, 2000, 10, { mpFlags: MP_SEEN | MP_CAPABLE | MP_KEY0 | MP_KEY1, mpKeySrc: KS, mpKeyDst: KD }));
    t.is(both.length, 2);
    for (const r of both) {
      const p = r.packet;
      const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
      t.is(p.length, tcp + 20 + MP_FASTCLOSE_LEN);
      t.is(p[tcp + 12] >> 4, 8, 'data offset 8');
      t.deepEqual([...p.subarray(tcp + 20, tcp + 24)], [30, 12, 0x70, 0], 'kind 30, length 12, subtype 7, reserved 0');
      t.is(dv.getBigUint64(tcp + 24), r.toward === 'src' ? KS : KD, `receiver's key toward ${r.toward}`);
      if (family === 4) {
        t.is(dv.getUint16(2), 52, 'IPv4 total length');
        t.is((p[10] << 8) | p[11], ipv4HeaderChecksum(p));
        t.is((p[36] << 8) | p[37], tcpChecksumV4(p.subarray(12, 16), p.subarray(16, 20), p, 20));
      } else {
        t.is(dv.getUint16(4), 32, 'IPv6 payload length');
        t.is((p[56] << 8) | p[57], tcpChecksumV6(p.subarray(8, 24), p.subarray(24, 40), p, 40));
      }
      cases.push(r);
    }
    // One key (the SYN-ACK's): only the RST to that end carries the option.
    const one = forgeResets(ev(family, TCP_ACK, 1000, 2000, 0, { mpFlags: MP_SEEN | MP_CAPABLE | MP_KEY1, mpKeyDst: KD }));
    t.deepEqual(one.map((r) => [r.toward, r.packet.length]), [['src', tcp + 20], ['dst', tcp + 20 + MP_FASTCLOSE_LEN]]);
    // An MPTCP subflow without keys, and plain TCP: plain RSTs.
    for (const mpFlags of [MP_SEEN, 0]) for (const r of forgeResets(ev(family, TCP_ACK, 1, 2, 0, { mpFlags }))) t.is(r.packet.length, tcp + 20);
  }
  // As the other tshark checks of this file: a missing tshark fails (make installs it), it does not skip the decode.
  if (!requireTshark(t)) return;
  const decoded = tsharkDecode(cases.map((r) => r.packet), LINKTYPE_RAW);
  t.is(decoded.length, cases.length);
  decoded.forEach((d, i) => {
    t.is(d['tcp.checksum.status'], '1', 'tshark: TCP checksum good');
    t.is(d['tcp.options.mptcp.subtype'], '7', 'tshark: MP_FASTCLOSE');
    t.is(d['tcp.options.mptcp.recvkey'], String(cases[i]!.toward === 'src' ? KS : KD), 'tshark: the receiver\'s key');
  });
});
