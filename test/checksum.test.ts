import test from 'ava';
import { Rng } from '../testkit/rng.js';
import { fold, internetChecksum, ipv4HeaderChecksum, onesSum, tcpChecksumV4, tcpChecksumV6 } from '../src/packet/checksum.js';
import { LINKTYPE_RAW, hasTshark, tsharkDecode } from '../testkit/tshark.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/** Reference: RFC 1071 straight, end-around carry after every addition, bytes paired as (hi, lo). */
function refChecksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) {
    sum += (b[i] << 8) + (i + 1 < b.length ? b[i + 1] : 0);
    if (sum > 0xffff) sum = (sum & 0xffff) + 1;
  }
  return ~sum & 0xffff;
}


test('RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2', (t) => {
  const b = hex('0001f203f4f5f6f7');
  t.is(onesSum(b), 0x2ddf0);
  t.is(fold(onesSum(b)), 0xddf2);
  t.is(internetChecksum(b), 0x220d);
  // Summing the data plus its checksum gives all ones (the receiver's check).
  const withSum = Uint8Array.from([...b, 0x22, 0x0d]);
  t.is(fold(onesSum(withSum)), 0xffff);
  t.is(internetChecksum(withSum), 0);
});

test('IPv4 header vector (192.168.0.1 -> 192.168.0.199, checksum b861)', (t) => {
  const h = hex('4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7');
  t.is(ipv4HeaderChecksum(h), 0xb861);
  h[10] = 0;
  h[11] = 0;
  t.is(ipv4HeaderChecksum(h), 0xb861, 'the checksum field is skipped, whatever it holds');
  t.is(internetChecksum(h), 0xb861);
  // At an offset, behind other bytes; IHL > 5 (one option word, NOP NOP NOP EOL).
  const opt = hex('ffffff 4600 0077 0000 4000 4011 0000 c0a8 0001 c0a8 00c7 01010100');
  const want = refChecksum(opt.slice(3));
  t.is(ipv4HeaderChecksum(opt, 3), want);
});

test('odd lengths: the last byte is the high half of a zero-padded word', (t) => {
  t.is(onesSum(Uint8Array.of(0x01)), 0x0100);
  t.is(onesSum(Uint8Array.of(0x12, 0x34, 0x56)), 0x1234 + 0x5600);
  t.is(internetChecksum(Uint8Array.of(0xff)), 0x00ff);
  t.is(internetChecksum(new Uint8Array(0)), 0xffff);
  // Sub-ranges: offset and length honoured, odd start included.
  const b = Uint8Array.of(0xaa, 0x12, 0x34, 0x56, 0xbb);
  t.is(onesSum(b, 1, 3), 0x1234 + 0x5600);
  t.is(onesSum(b, 1, 3, 7), 7 + 0x1234 + 0x5600);
});

test('matches the RFC 1071 reference on random buffers of every length 0..300 and a 200 KiB one', (t) => {
  const gen = new Rng(0xc0ffee);
  const r = (): number => gen.u32();
  for (let len = 0; len <= 300; len++) {
    const b = new Uint8Array(len);
    for (let i = 0; i < len; i++) b[i] = r() & 0xff;
    t.is(internetChecksum(b), refChecksum(b), `length ${len}`);
    if (len > 3) t.is(internetChecksum(b, 3, len - 4), refChecksum(b.subarray(3, len - 1)), `length ${len} at offset 3`);
  }
  // Big enough that the unfolded sum passes 2^32: the slow fold path.
  const big = new Uint8Array(200 * 1024 + 1).fill(0xff);
  t.true(onesSum(big) > 0xffffffff);
  t.is(internetChecksum(big), refChecksum(big));
  const mixed = new Uint8Array(200 * 1024 + 1);
  for (let i = 0; i < mixed.length; i++) mixed[i] = r() & 0xff;
  t.is(internetChecksum(mixed), refChecksum(mixed));
});

test('fold keeps end-around carries', (t) => {
  t.is(fold(0), 0);
  t.is(fold(0xffff), 0xffff);
  t.is(fold(0x1_0000), 1);
  t.is(fold(0x1_fffe), 0xffff);
  t.is(fold(0xffff_ffff), 0xffff);
  t.is(fold(2 ** 40 + 5), fold(fold(2 ** 40) + 5));
});

/** A real-shaped TCP/IPv4 segment: SYN with MSS/SACK/timestamp/wscale options, then PSH|ACK with an odd payload. */
function tcpV4(payload: Uint8Array, withOptions: boolean): Uint8Array {
  const opts = withOptions ? hex('020405b4 0402080a 0001e240 00000000 01030307') : new Uint8Array(0);
  const tcpLen = 20 + opts.length + payload.length;
  const p = new Uint8Array(20 + tcpLen);
  p.set(hex('4500 0000 1c46 4000 4006 0000 ac10 0a63 ac10 0a0c'));
  p[2] = p.length >>> 8;
  p[3] = p.length & 0xff;
  const t = 20;
  p.set(hex('e1d2 0050 a1b2c3d4 00000000'), t);
  p[t + 12] = ((20 + opts.length) / 4) << 4;
  p[t + 13] = withOptions ? 0x02 : 0x18;
  p.set(hex('faf0 0000 0000'), t + 14);
  p.set(opts, t + 20);
  p.set(payload, t + 20 + opts.length);
  const ipSum = ipv4HeaderChecksum(p);
  p[10] = ipSum >>> 8;
  p[11] = ipSum & 0xff;
  const sum = tcpChecksumV4(p.subarray(12, 16), p.subarray(16, 20), p, t, tcpLen);
  p[t + 16] = sum >>> 8;
  p[t + 17] = sum & 0xff;
  return p;
}

function tcpV6(payload: Uint8Array): Uint8Array {
  const tcpLen = 20 + payload.length;
  const p = new Uint8Array(40 + tcpLen);
  p.set(hex('6a1abcde 0000 06 3f'));
  p[4] = tcpLen >>> 8;
  p[5] = tcpLen & 0xff;
  p.set(hex('fe800000000000000211 22ff fe33 4455'), 8);
  p.set(hex('2001 0db8 85a3 0000 0000 8a2e 0370 7334'), 24);
  p.set(hex('c350 01bb 0000ffff 80000001 5018 ffff 0000 0000'), 40);
  p.set(payload, 60);
  const sum = tcpChecksumV6(p.subarray(8, 24), p.subarray(24, 40), p, 40, tcpLen);
  p[56] = sum >>> 8;
  p[57] = sum & 0xff;
  return p;
}

test('TCP pseudo-header checksums equal the reference over pseudo-header + segment', (t) => {
  const payload = new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n'); // odd length
  t.is(payload.length % 2, 1);
  const p4 = tcpV4(payload, false);
  const seg4 = p4.subarray(20);
  const pseudo4 = Uint8Array.from([...p4.subarray(12, 20), 0, 6, seg4.length >>> 8, seg4.length & 0xff]);
  const zeroed4 = seg4.slice();
  zeroed4[16] = zeroed4[17] = 0;
  t.is(tcpChecksumV4(p4.subarray(12, 16), p4.subarray(16, 20), p4, 20), refChecksum(Uint8Array.from([...pseudo4, ...zeroed4])));

  const p6 = tcpV6(payload);
  const seg6 = p6.subarray(40);
  const len = seg6.length;
  const pseudo6 = Uint8Array.from([...p6.subarray(8, 40), 0, 0, len >>> 8, len & 0xff, 0, 0, 0, 6]);
  const zeroed6 = seg6.slice();
  zeroed6[16] = zeroed6[17] = 0;
  t.is(tcpChecksumV6(p6.subarray(8, 24), p6.subarray(24, 40), p6, 40), refChecksum(Uint8Array.from([...pseudo6, ...zeroed6])));
  // A valid segment sums to all ones with its pseudo-header (receiver's view).
  t.is(internetChecksum(Uint8Array.from([...pseudo6, ...seg6, 0])), 0);
});

test('checksums refuse headers shorter than their minimum', (t) => {
  t.throws(() => ipv4HeaderChecksum(hex('4400 0028 0000 4000 4006 0000 0a000001 0a000002')), { instanceOf: RangeError });
  const a = new Uint8Array(4);
  t.throws(() => tcpChecksumV4(a, a, new Uint8Array(19)), { instanceOf: RangeError });
  t.throws(() => tcpChecksumV6(new Uint8Array(16), new Uint8Array(16), new Uint8Array(10)), { instanceOf: RangeError });
});

test('tshark validates our IPv4 and TCP checksums on SYN-with-options and odd-payload segments, v4 and v6', (t) => {
  if (!hasTshark()) {
    t.fail('tshark is missing: `make` installs it');
    return;
  }
  const odd = new TextEncoder().encode('hello');
  const even = new TextEncoder().encode('hello!');
  const pkts = [tcpV4(new Uint8Array(0), true), tcpV4(odd, false), tcpV4(even, false), tcpV6(odd), tcpV6(even), tcpV6(new Uint8Array(1001))];
  const d = tsharkDecode(pkts, LINKTYPE_RAW);
  t.is(d.length, pkts.length);
  for (let i = 0; i < 3; i++) t.like(d[i], { 'ip.checksum.status': '1', 'tcp.checksum.status': '1', 'ip.src': '172.16.10.99' });
  t.like(d[0], { 'tcp.flags.syn': '1', 'tcp.options.mss_val': '1460', 'tcp.len': '0' });
  t.like(d[1], { 'tcp.len': '5', 'tcp.seq_raw': String(0xa1b2c3d4) });
  for (let i = 3; i < 6; i++) t.like(d[i], { 'tcp.checksum.status': '1', 'ipv6.src': 'fe80::211:22ff:fe33:4455', 'ipv6.flow': '0x0abcde' });
  t.is(d[5]['tcp.len'], '1001');
});
