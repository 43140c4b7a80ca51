/** The bench's pairing of each RST with its trigger by sequence arithmetic (bench/lib/pair.ts). */
import test from 'ava';
import { type TcpSegment } from '../testkit/pcap.js';
import { pairResets } from '../bench/lib/pair.js';

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
