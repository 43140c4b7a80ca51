/**
 * Ring buffer reader micro-benchmark (root; `node dist/bench/ringbuf.bench.js`).
 *
 * 1. Drain cost per event over a pre-filled ring (the real XDP object, filled
 *    with BPF_PROG_TEST_RUN, each frame with its own seq so duplicate
 *    suppression keeps them all): RingReader.drain with a callback that does
 *    nothing, one that reads two fields, one that decodes the whole event;
 *    against libbpf's ring_buffer__consume with a koffi callback.
 * 2. Wake-up latency: a worker thread produces events at a fixed rate, in
 *    1 ms bursts (test runs on the same program fd); the reader runs its start() loop and
 *    compares each event's bpf_ktime_get_ns() with process.hrtime (both
 *    CLOCK_MONOTONIC), for both waiters: 'epoll' (epoll_wait on a worker
 *    thread, koffi async) and 'poll' (libuv polls the ring fd on the loop).
 *
 * ring_buffer__* are declared here, bench-local: the product never calls
 * them (src/native/libbpf.ts owns the declarations the product uses).
 */
import { Prefilter } from '../src/dataplane/prefilter.js';
import koffi from 'koffi';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { BpfObject } from '../src/bpf/object.js';
import { RingReader, type OnRecord } from '../src/bpf/ringbuf.js';
import { MAP_EVENTS, MAP_TARGETS, PORT_ANY, decodeEvent, encodeTargetKey, encodeTargetValue } from '../src/bpf/contract.js';
import * as L from '../src/native/libbpf.js';
import { median, roundSummary, summarize } from '../testkit/stats.js';
import { ACK, PSH, tcpFrame } from '../testkit/frames.js';

const HOST = [10, 9, 8, 7];

/** PSH|ACK HOST:40000 -> 10.9.8.1:443 with 10 zero bytes of payload, window 0 and no TCP checksum (XDP checks neither). */
function frame(seq: number): Uint8Array {
  return tcpFrame({ src: Uint8Array.from(HOST), dst: '10.9.8.1', sport: 40000, dport: 443, seq, flags: PSH | ACK, window: 0, payload: new Uint8Array(10), noChecksum: true }).bytes;
}

function runFrame(progFd: number, f: Uint8Array): void {
  const ret = L.bpf_prog_test_run_opts(progFd, { sz: L.TEST_RUN_OPTS_SIZE, data_in: f, data_size_in: f.length, repeat: 1 });
  if (ret < 0) throw L.failure('test run', ret);
}

function setup(): { obj: BpfObject; fd: number; size: number } {
  const obj = BpfObject.load(undefined, { maxTargets: 1024 });
  new Prefilter(obj).add({ ifindex: 1, family: 4, addr: Uint8Array.from(HOST) });
  obj.map(MAP_TARGETS).update(
    encodeTargetKey({ ifindex: 1, family: 4, addr: Uint8Array.from(HOST), port: PORT_ANY }),
    encodeTargetValue({ targetId: 1, expiresNs: 0n }),
  );
  const m = obj.map(MAP_EVENTS);
  return { obj, fd: m.fd, size: m.maxEntries };
}

let seqCounter = 1;
function fill(obj: BpfObject, n: number): void {
  const f = frame(0);
  const dv = new DataView(f.buffer);
  for (let i = 0; i < n; i++) {
    dv.setUint32(38, seqCounter++);
    runFrame(obj.progFd, f);
  }
}

async function main(): Promise<void> {
  const N = 50_000; // ~5 MiB of records, within the 8 MiB ring
  const ROUNDS = 11;
  const results: Record<string, unknown> = {};

  // BENCH_ONLY=latency skips part 1.
  const only = process.env.BENCH_ONLY;
  // ---- 1. drain cost ----
  const { obj, fd, size } = setup();
  const reader = new RingReader(fd, size);
  let sink = 0;
  if (only !== 'latency') {
  const variants: [string, OnRecord][] = [
    ['noop', () => {}],
    ['two fields', (dv, off) => (sink += dv.getUint32(off + 16, true) + dv.getUint32(off + 8, true))],
    ['decodeEvent', (dv, off) => (sink += decodeEvent(dv, off).seq)],
  ];
  const drainNs: Record<string, number> = {};
  for (const [name, cb] of variants) {
    const per: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      fill(obj, N);
      const t0 = process.hrtime.bigint();
      const n = reader.drain(cb);
      const dt = Number(process.hrtime.bigint() - t0);
      if (n !== N) throw new Error(`drained ${n}, expected ${N}`);
      per.push(dt / n);
    }
    drainNs[name] = median(per);
    console.log(`RingReader.drain, ${name}: median ${drainNs[name].toFixed(1)} ns/event (${ROUNDS} rounds of ${N})`);
  }
  results.drainNsPerEvent = drainNs;

  // libbpf ring_buffer__consume + koffi callback, on its own object (its own ring and consumer position).
  {
    const lb = koffi.load('libbpf.so.1');
    const SampleFn = koffi.proto('int tr_bench_sample_fn(void *ctx, void *data, size_t size)');
    const rbNew = lb.func('void *ring_buffer__new(int map_fd, tr_bench_sample_fn *cb, void *ctx, void *opts)');
    const rbConsume = lb.func('int ring_buffer__consume(void *rb)');
    const rbFree = lb.func('void ring_buffer__free(void *rb)');
    const other = setup();
    let count = 0;
    const cb = koffi.register(() => {
      count++;
      return 0;
    }, koffi.pointer(SampleFn));
    const rb = rbNew(other.fd, cb, null, null);
    if (!rb) throw new Error('ring_buffer__new failed');
    const per: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      fill(other.obj, N);
      count = 0;
      const t0 = process.hrtime.bigint();
      const n = rbConsume(rb) as number;
      const dt = Number(process.hrtime.bigint() - t0);
      if (n !== N || count !== N) throw new Error(`consumed ${n}/${count}, expected ${N}`);
      per.push(dt / n);
    }
    rbFree(rb);
    koffi.unregister(cb);
    other.obj.close();
    results.libbpfConsumeNsPerEvent = median(per);
    console.log(`libbpf ring_buffer__consume + koffi callback (noop): median ${median(per).toFixed(1)} ns/event`);
  }

  }

  // ---- 2. wake-up latency ----
  const latency: Record<string, unknown> = {};
  for (const wait of ['epoll', 'poll'] as const) {
    for (const rate of [1000, 10000]) {
      const seconds = 3;
      const lat: number[] = [];
      const onRecord: OnRecord = (dv, off) => {
        const now = process.hrtime.bigint();
        lat.push(Number(now - dv.getBigUint64(off, true)) / 1000);
      };
      reader.drain(() => {});
      const wakeups0 = reader.wakeups;
      reader.start(onRecord, { wait });
      const w = new Worker(new URL(import.meta.url), { workerData: { progFd: obj.progFd, rate, seconds, seqBase: seqCounter } });
      seqCounter += rate * seconds + 1;
      await new Promise<void>((resolve, reject) => {
        w.on('message', () => resolve());
        w.on('error', reject);
      });
      await new Promise((r) => setTimeout(r, 50));
      await reader.stop();
      await w.terminate();
      reader.drain(onRecord);
      const s = roundSummary(summarize(lat), 3);
      const wakeups = reader.wakeups - wakeups0;
      latency[`${wait} @ ${rate}/s`] = { ...s, wakeups };
      console.log(`wake-up latency, wait '${wait}', ${rate} events/s: p50 ${s.p50} us, p99 ${s.p99} us, max ${s.max} us (n=${s.n}, wakeups ${wakeups})`);
    }
  }
  results.wakeupLatencyUs = latency;
  reader.close();
  obj.close();
  if (sink === 0.5) console.log(sink);
  console.log(JSON.stringify(results));
}

// ---- producer worker ----------------------------------------------------------
/**
 * Producer: every millisecond, rate/1000 events (a burst), sleeping in
 * between, so the producer does not hold a CPU of this 2-CPU machine the
 * way a busy-wait pacing loop would. Latency is measured from each event's
 * own timestamp, so sleep jitter does not enter it.
 */
function produceInWorker(): void {
  const { progFd, rate, seconds, seqBase } = workerData as { progFd: number; rate: number; seconds: number; seqBase: number };
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const f = frame(0);
  const dv = new DataView(f.buffer);
  const perTick = Math.max(1, Math.round(rate / 1000));
  const ticks = Math.round((rate * seconds) / perTick);
  const t0 = process.hrtime.bigint();
  let seq = seqBase;
  for (let k = 0; k < ticks; k++) {
    const waitMs = Number(t0 + BigInt(k) * 1_000_000n - process.hrtime.bigint()) / 1e6;
    if (waitMs > 0) Atomics.wait(sleeper, 0, 0, waitMs);
    for (let i = 0; i < perTick; i++) {
      dv.setUint32(38, seq++);
      runFrame(progFd, f);
    }
  }
  parentPort!.postMessage(seq - seqBase);
}

if (isMainThread) await main();
else produceInWorker();
