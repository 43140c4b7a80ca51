/**
 * Flow memory micro-benchmark (root; `node dist/bench/flowmem.bench.js [OBJ ...]`):
 * kernel time per packet of the XDP program (BPF_PROG_TEST_RUN's own
 * timing) on non-matching TCP, for each object given (default: this
 * tree's build/tcpreset.bpf.o), in three cases:
 *
 *   known flow   the same established connection over and over: lookup hit,
 *                one direction's record rewritten in place (a mirror port's
 *                common case: many segments per connection)
 *   new flow     every packet a connection not seen before, the table full:
 *                an open connection displaced (the worst case; make bench
 *                §3's random-address traffic is all of this kind). One
 *                BPF_PROG_TEST_RUN call per frame, so this figure carries
 *                the call's own timing overhead: compare objects, not cases
 *   RST          a flow first seen with a RST (no entry is made)
 *
 * Objects built from an older tree (no "flowmem" map) are run as they are,
 * as the reference. Medians over rounds; the machine is shared. This
 * compares objects (a change in bpf/ against the tree before it); make
 * bench's "flowmem" section (bench/flowmem.ts) compares one object with the
 * flow memory on and off for the report.
 */
import { BpfObject, defaultObjectPath } from '../src/bpf/object.js';
import { MAP_FLOWMEM } from '../src/bpf/contract.js';
import { median } from '../testkit/stats.js';
import { flowFrame } from './flowmem.js';

interface Result { object: string; knownNs: number; newNs: number; rstNs: number; hasFlowmem: boolean }

function measure(path: string, flowMemory: number, rounds: number): Result {
  const obj = BpfObject.load(path, { flowMemory: undefined });
  let hasFlowmem = true;
  try {
    obj.map(MAP_FLOWMEM);
  } catch {
    hasFlowmem = false;
  }
  obj.close();
  const o = BpfObject.load(path, hasFlowmem ? { flowMemory } : {});
  try {
    const known: number[] = [];
    const fresh: number[] = [];
    const rst: number[] = [];
    const f0 = flowFrame(1, 1000);
    let n = 0;
    // Fill the table first, so that new flows displace open ones.
    if (hasFlowmem) for (let i = 0; i < 2 * flowMemory; i++) o.testRun(flowFrame(i, 2000 + (i >> 16)));
    for (let r = 0; r < rounds; r++) {
      known.push(o.testRun(f0, { repeat: 200_000 }).durationNs);
      // One call per distinct frame: BPF_PROG_TEST_RUN repeats one frame.
      let sum = 0;
      const N = 20_000;
      for (let i = 0; i < N; i++) sum += o.testRun(flowFrame(n & 0xffff, 3000 + ((n++ >> 16) & 0x3fff))).durationNs;
      fresh.push(sum / N);
      rst.push(o.testRun(flowFrame(7, 9, 0x04), { repeat: 200_000 }).durationNs);
    }
    return { object: path, knownNs: median(known), newNs: median(fresh), rstNs: median(rst), hasFlowmem };
  } finally {
    o.close();
  }
}

const objs = process.argv.slice(2);
const flowMemory = Number(process.env.FLOWMEM ?? 262144);
for (const path of objs.length ? objs : [defaultObjectPath()]) {
  const r = measure(path, flowMemory, Number(process.env.ROUNDS ?? 7));
  console.log(
    `${r.object}${r.hasFlowmem ? ` (flowMemory ${flowMemory})` : ' (no flow memory)'}: known flow ${r.knownNs.toFixed(1)} ns/pkt, ` +
      `new flow ${r.newNs.toFixed(1)} ns/pkt, RST ${r.rstNs.toFixed(1)} ns/pkt`,
  );
}
