/**
 * RingReader against the real producer: the tcpreset XDP object, run with
 * BPF_PROG_TEST_RUN on frames that match a target we insert (test runs
 * arrive on ifindex 1). Every frame has its own seq so the program's
 * duplicate suppression never hides one.
 */
import { Prefilter } from '../src/dataplane/prefilter.js';
import test, { type ExecutionContext } from 'ava';
import { ptest } from './helpers/privileged.js';
import { BpfObject } from '../src/bpf/object.js';
import { RingReader, type OnRecord } from '../src/bpf/ringbuf.js';
import {
  LAYOUT, MAP_COUNTERS, MAP_EVENTS, MAP_TARGETS, MATCH_SRC, PORT_ANY, TCP_ACK, TCP_PSH, decodeEvent, encodeTargetKey,
  encodeTargetValue, sumCounters, type TcpEvent,
} from '../src/bpf/contract.js';
import { numPossibleCpus } from '../src/bpf/object.js';

const EVENT_SIZE = LAYOUT.tr_event.size;
const RECORD_BYTES = (EVENT_SIZE + 8 + 7) & ~7;
const HOST = [10, 9, 8, 7];
const PEER = [10, 9, 8, 1];
const TARGET_ID = 4242;

/** Ethernet + IPv4 + TCP (ACK|PSH, `payload` bytes) from HOST:40000 to PEER:443 with the given seq. */
function frame(seq: number, payload = 10): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + payload);
  const dv = new DataView(f.buffer);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  dv.setUint16(12, 0x0800);
  const ip = 14;
  f[ip] = 0x45;
  dv.setUint16(ip + 2, 20 + 20 + payload);
  dv.setUint16(ip + 4, 1);
  f[ip + 8] = 64;
  f[ip + 9] = 6;
  f.set(HOST, ip + 12);
  f.set(PEER, ip + 16);
  const tcp = ip + 20;
  dv.setUint16(tcp, 40000);
  dv.setUint16(tcp + 2, 443);
  dv.setUint32(tcp + 4, seq >>> 0);
  dv.setUint32(tcp + 8, 0x01020304);
  f[tcp + 12] = 5 << 4;
  f[tcp + 13] = TCP_ACK | TCP_PSH;
  dv.setUint16(tcp + 14, 1000);
  return f;
}

interface Fixture {
  obj: BpfObject;
  reader: RingReader;
  produce: (seqs: Iterable<number>) => void;
  lost: () => bigint;
}

function setup(t: ExecutionContext): Fixture {
  const obj = BpfObject.load(undefined, { maxTargets: 1024 });
  t.teardown(() => obj.close());
  new Prefilter(obj).add({ ifindex: 1, family: 4, addr: Uint8Array.from(HOST) });
  obj.map(MAP_TARGETS).update(
    encodeTargetKey({ ifindex: 1, family: 4, addr: Uint8Array.from(HOST), port: PORT_ANY }),
    encodeTargetValue({ targetId: TARGET_ID, expiresNs: 0n }),
  );
  const events = obj.map(MAP_EVENTS);
  const reader = new RingReader(events.fd, events.maxEntries);
  t.teardown(async () => {
    await reader.stop();
    reader.close();
  });
  const ncpu = numPossibleCpus();
  return {
    obj,
    reader,
    produce(seqs) {
      for (const s of seqs) obj.testRun(frame(s));
    },
    lost() {
      const v = obj.map(MAP_COUNTERS).lookup(new Uint8Array(4));
      return v ? sumCounters(v, ncpu).lost : 0n;
    },
  };
}

/**
 * Tests that watch the event loop run serially (AVA runs serial tests before
 * the concurrent ones), so no other test's synchronous work blocks the loop
 * they measure. Same root rule as ptest.
 */
const pserial = ptest.serial;

function range(from: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => from + i);
}

const collect = (into: TcpEvent[], lengths?: number[]): OnRecord => (dv, off, len) => {
  lengths?.push(len);
  into.push(decodeEvent(dv, off));
};

ptest('drain returns 0 on an empty ring and never blocks', (t) => {
  const { reader } = setup(t);
  t.is(reader.drain(() => t.fail('no record expected')), 0);
  t.is(reader.pendingBytes(), 0);
  t.is(reader.records, 0);
});

ptest('records come out in order with the right contents', (t) => {
  const { reader, produce } = setup(t);
  produce(range(1000, 10));
  t.is(reader.pendingBytes(), 10 * RECORD_BYTES);
  const got: TcpEvent[] = [];
  const lengths: number[] = [];
  t.is(reader.drain(collect(got, lengths)), 10);
  t.deepEqual(lengths, new Array(10).fill(EVENT_SIZE));
  t.deepEqual(got.map((e) => e.seq), range(1000, 10));
  const e = got[0];
  t.is(e.targetId, TARGET_ID);
  t.is(e.ifindex, 1);
  t.is(e.family, 4);
  t.is(e.match, MATCH_SRC);
  t.deepEqual([...e.saddr], HOST);
  t.deepEqual([...e.daddr], PEER);
  t.is(e.sport, 40000);
  t.is(e.dport, 443);
  t.is(e.ack, 0x01020304);
  t.is(e.payloadLen, 10);
  t.is(e.tcpFlags, TCP_ACK | TCP_PSH);
  t.is(e.ttl, 64);
  t.deepEqual([...e.smac], [2, 0, 0, 0, 0, 1]);
  t.deepEqual([...e.dmac], [2, 0, 0, 0, 0, 2]);
  // Consumed: the space is released and nothing is delivered twice.
  t.is(reader.pendingBytes(), 0);
  t.is(reader.drain(() => t.fail('delivered twice')), 0);
  t.is(reader.records, 10);
});

ptest('drain(max) stops after max records and the rest stay for the next drain', (t) => {
  const { reader, produce } = setup(t);
  produce(range(1, 7));
  const got: TcpEvent[] = [];
  t.is(reader.drain(collect(got), 3), 3);
  t.is(reader.pendingBytes(), 4 * RECORD_BYTES);
  t.is(reader.drain(collect(got)), 4);
  t.deepEqual(got.map((e) => e.seq), range(1, 7));
});

ptest('a callback that throws still consumes its record', (t) => {
  const { reader, produce } = setup(t);
  produce(range(1, 3));
  const seen: number[] = [];
  t.throws(() =>
    reader.drain((dv, off) => {
      const s = decodeEvent(dv, off).seq;
      seen.push(s);
      if (s === 2) throw new Error('boom');
    }),
  { message: 'boom' });
  reader.drain((dv, off) => seen.push(decodeEvent(dv, off).seq));
  t.deepEqual(seen, [1, 2, 3]);
});

ptest('wrap-around: three ring sizes of events through the ring, none lost or corrupted', (t) => {
  const { reader, produce, lost } = setup(t);
  const perRound = Math.floor(reader.byteSize / RECORD_BYTES / 3); // a third of the ring per round
  const total = Math.ceil((3 * reader.byteSize) / RECORD_BYTES);
  let next = 1;
  let produced = 1;
  let bad = 0;
  const onRecord: OnRecord = (dv, off, len) => {
    const e = decodeEvent(dv, off);
    if (len !== EVENT_SIZE || e.seq !== next || e.targetId !== TARGET_ID || e.sport !== 40000 || e.saddr[3] !== 7) bad++;
    next = e.seq + 1;
  };
  while (produced <= total) {
    const n = Math.min(perRound, total - produced + 1);
    produce(range(produced, n));
    produced += n;
    reader.drain(onRecord);
  }
  t.is(bad, 0);
  t.is(next, total + 1);
  t.is(reader.records, total);
  t.is(lost(), 0n);
  t.true(reader.records * RECORD_BYTES > 2 * reader.byteSize, 'positions went past the end of the data area twice');
});

for (const wait of ['poll', 'epoll'] as const) {
  pserial(`start(${wait}) delivers events produced later without blocking the event loop; stop() resolves`, async (t) => {
    const { reader, produce } = setup(t);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    t.teardown(() => clearInterval(timer));
    const got: number[] = [];
    let drained = 0;
    let resolveAll!: () => void;
    const all = new Promise<void>((r) => (resolveAll = r));
    reader.start(
      (dv, off) => {
        got.push(decodeEvent(dv, off).seq);
        if (got.length === 50) resolveAll();
      },
      { wait, onDrained: (n) => (drained += n) },
    );
    t.true(reader.isRunning);
    // Idle: the reader waits while timers keep firing.
    await new Promise((r) => setTimeout(r, 200));
    // 40 at most; a blocking wait would allow 0-2. The bound leaves room for a
    // loaded 2-core machine (18 seen while other suites ran) without losing the point.
    t.true(ticks >= 8, `event loop ticked ${ticks} times in 200 ms while the reader waited`);
    t.is(got.length, 0);
    // Produce in two bursts from the event loop, as the kernel would at any time.
    setTimeout(() => produce(range(1, 25)), 10);
    setTimeout(() => produce(range(26, 25)), 60);
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 1000).unref());
    t.not(await Promise.race([all.then(() => 'ok' as const), timeout]), 'timeout', 'all events delivered within 1 s');
    t.deepEqual(got, range(1, 50));
    t.is(drained, 50);
    t.true(reader.wakeups >= 1, 'woken at least once');
    const t0 = Date.now();
    await reader.stop();
    t.true(Date.now() - t0 < 1000, 'stop() resolves within the wait timeout');
    t.false(reader.isRunning);
    // Stopped: a new event stays in the ring until someone drains.
    produce([51]);
    await new Promise((r) => setTimeout(r, 50));
    t.is(got.length, 50);
    t.is(reader.drain(() => {}), 1);
  });

  ptest(`start(${wait}): a burst larger than the batch and records present before start all arrive`, async (t) => {
    const { reader, produce } = setup(t);
    produce(range(1, 7)); // before start: committed with no waiter
    const got: number[] = [];
    const drains: number[] = [];
    reader.start((dv, off) => got.push(decodeEvent(dv, off).seq), { wait, batch: 5, onDrained: (n) => drains.push(n) });
    await new Promise((r) => setTimeout(r, 20));
    produce(range(8, 43)); // one synchronous burst: only the first record can wake the reader
    for (let i = 0; i < 100 && got.length < 50; i++) await new Promise((r) => setTimeout(r, 10));
    await reader.stop();
    t.deepEqual(got, range(1, 50));
    t.true(drains.every((n) => n <= 5), `no drain above the batch: ${drains.join(',')}`);
  });

  ptest(`start(${wait}): onError gets a callback exception and the loop keeps going`, async (t) => {
    const { reader, produce } = setup(t);
    const errors: unknown[] = [];
    const got: number[] = [];
    reader.start(
      (dv, off) => {
        const s = decodeEvent(dv, off).seq;
        got.push(s);
        if (s === 2) throw new Error('bad record');
      },
      { wait, onError: (e) => errors.push(e) },
    );
    produce(range(1, 4));
    for (let i = 0; i < 100 && got.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
    await reader.stop();
    t.deepEqual(got, [1, 2, 3, 4]);
    t.is(errors.length, 1);
    t.is((errors[0] as Error).message, 'bad record');
  });
}

ptest('start() twice is refused; close() while running is refused', async (t) => {
  const { reader } = setup(t);
  reader.start(() => {});
  t.throws(() => reader.start(() => {}), { message: /already started/ });
  t.throws(() => reader.close(), { message: /await stop\(\) first/ });
  await reader.stop();
  reader.close();
  t.throws(() => reader.drain(() => {}), { message: /closed/ });
});

test('RingReader.synthetic: drain() delivers the records fillSynthetic() laid out in kernel format, in order, once; an empty ring delivers nothing', (t) => {
  const r = RingReader.synthetic();
  const seen: number[][] = [];
  const collect = (dv: DataView, off: number, len: number): void => void seen.push([len, dv.getUint8(off), dv.getUint8(off + len - 1)]);
  t.is(r.drain(collect), 0, 'positive control: nothing before a fill');
  const rec = Uint8Array.from({ length: 13 }, (_, i) => i + 1);
  r.fillSynthetic(rec, 3);
  t.is(r.drain(collect), 3);
  t.deepEqual(seen, [[13, 1, 13], [13, 1, 13], [13, 1, 13]]);
  t.is(r.drain(collect), 0, 'consumed once');
  t.throws(() => r.fillSynthetic(new Uint8Array(4000), 2), { instanceOf: RangeError });
  r.close();
});
