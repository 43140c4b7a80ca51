/**
 * ns per forgeResets call (two RSTs, checksums included) for a data-row
 * event, IPv4 and IPv6; and l2Frame on top. Median of several runs.
 * Run: node dist/bench/forge.bench.js
 */
import { TCP_ACK, TCP_PSH, type TcpEvent } from '../src/bpf/contract.js';
import { forgeResets, l2Frame } from '../src/packet/forge.js';

function event(family: 4 | 6, i: number): TcpEvent {
  const alen = family === 4 ? 4 : 16;
  const saddr = new Uint8Array(alen).fill(0x0a);
  const daddr = new Uint8Array(alen).fill(0x14);
  saddr[alen - 1] = i & 0xff;
  return {
    tsNs: 0n, targetId: 1, ifindex: 2, seq: (0x10000000 + i * 1460) >>> 0, ack: 0x20000000, payloadLen: 1460,
    flowLabel: family === 6 ? 0x12345 : 0, sport: 40000 + (i & 0xff), dport: 443,
    vlans: [{ tpid: 0x8100, tci: 100 }], family, tcpFlags: TCP_ACK | TCP_PSH, ttl: 60, tos: 0,
    match: 2, smac: new Uint8Array(6).fill(2), dmac: new Uint8Array(6).fill(4), saddr, daddr,
  };
}

function measure(name: string, events: TcpEvent[], fn: (ev: TcpEvent) => number, iterations: number, runs = 7): void {
  let sink = 0;
  for (let i = 0; i < iterations; i++) sink += fn(events[i % events.length]); // warm-up: let V8 optimize
  const results: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) sink += fn(events[i % events.length]);
    results.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  results.sort((a, b) => a - b);
  const med = results[results.length >> 1];
  console.log(
    `${name.padEnd(36)} median ${med.toFixed(1)} ns/event  (min ${results[0].toFixed(1)}, max ${results[results.length - 1].toFixed(1)}; ` +
      `${(1e3 / med).toFixed(2)} M events/s)  [${sink & 1}]`,
  );
}

const N = 1_000_000;
const srcMac = new Uint8Array([2, 0, 0, 0, 0, 9]);
for (const family of [4, 6] as const) {
  const evs = Array.from({ length: 256 }, (_, i) => event(family, i));
  measure(`forgeResets v${family} data row`, evs, (ev) => forgeResets(ev).length, N);
  measure(`forgeResets+l2Frame v${family} data row`, evs, (ev) => {
    let n = 0;
    for (const r of forgeResets(ev)) n += l2Frame(r, ev, srcMac).length;
    return n;
  }, N);
}
