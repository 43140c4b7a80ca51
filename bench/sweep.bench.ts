/**
 * Create-time sweep benchmark (issue 9; root; `node dist/bench/sweep.bench.js`):
 * how long a job's creation holds the main thread when its host has N open
 * connections remembered in the flow memory, N = 1, 1,000 and 16,000.
 *
 * In a namespace of its own (made here, removed at the end): sniff0/sniffp
 * and reset0/resetp veth pairs; the Enforcer (the daemon's data plane, in
 * this process) watches sniff0; N ACK segments of one host (distinct source
 * ports, random seq/ack) are written into sniffp with a packet socket, so
 * XDP on sniff0 remembers them as N open connections. Then Enforcer.add()
 * on that host, l3 out of reset0 (its neighbours permanent, so nothing is
 * held back as undeliverable). Each round uses a fresh host.
 *
 * Per N, medians over ROUNDS (default 3):
 *   add        Enforcer.add() itself (what the create request waits for)
 *   swept      from add() to the 'sweep' event: every RST pair and probe sent
 *   worst turn the longest the event loop was held in one go, from add()
 *              to the end of the verification window (nobody answers the
 *              probes here, so the watcher runs its whole 5 s and re-probes)
 *
 * The machine is shared: compare runs of the same moment (before/after).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Enforcer } from '../src/dataplane/enforcer.js';
import { Sender } from '../src/net/sender.js';
import { ownedNetnsSync } from '../testkit/lab/netns.js';
import { median } from '../testkit/stats.js';
import { tcpFrame } from '../testkit/frames.js';

const SIZES = (process.env.SIZES ?? '1,1000,16000').split(',').map(Number);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const PEER = '192.0.2.20';
const hostOf = (i: number): string => `192.0.2.${100 + i}`;
const PEER_MAC = '02:00:00:00:00:20';
const HOST_MAC = '02:00:00:00:00:10';

function ip(...a: string[]): void {
  const r = spawnSync('ip', a, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${a.join(' ')}: ${r.stderr}`);
}

if (!process.env.SWEEP_BENCH_INSIDE) {
  const { ns, destroy } = ownedNetnsSync('sweepbench');
  try {
    ip('-n', ns, 'link', 'add', 'sniff0', 'type', 'veth', 'peer', 'name', 'sniffp');
    ip('-n', ns, 'link', 'add', 'reset0', 'type', 'veth', 'peer', 'name', 'resetp');
    for (const dev of ['lo', 'sniff0', 'sniffp', 'reset0', 'resetp']) ip('-n', ns, 'link', 'set', dev, 'up');
    ip('-n', ns, 'addr', 'add', '192.0.2.1/24', 'dev', 'reset0');
    const hosts = SIZES.length * ROUNDS;
    for (const a of [PEER, ...Array.from({ length: hosts }, (_, i) => hostOf(i))]) {
      ip('-n', ns, 'neigh', 'replace', a, 'lladdr', PEER_MAC, 'dev', 'reset0', 'nud', 'permanent');
    }
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url)], { stdio: 'inherit', env: { ...process.env, SWEEP_BENCH_INSIDE: '1' } });
    process.exitCode = r.status ?? 1;
  } finally {
    destroy();
  }
} else {
  await inside();
}

/**
 * An ACK segment host:sport -> PEER:443 in a frame to PEER_MAC, random
 * seq/ack, window 502, no TCP checksum (as this bench's frames always were:
 * XDP does not check it).
 */
function frame(host: string, sport: number): Uint8Array {
  const seq = (Math.random() * 2 ** 32) >>> 0;
  const ack = (Math.random() * 2 ** 32) >>> 0;
  return tcpFrame({ src: host, dst: PEER, sport, dport: 443, seq, ack, window: 502, noChecksum: true, smac: HOST_MAC, dmac: PEER_MAC }).bytes;
}

async function inside(): Promise<void> {
  const e = Enforcer.open({ eventThreads: 1 });
  try {
    await e.ready();
    const w = e.watch('sniff0');
    if (!w.attached) throw new Error(`sniff0 not attached: ${w.error}`);
    const inject = Sender.open('sniffp', 'l2', { slots: 1024 });
    const results: string[] = [];
    let hostNo = 0;
    for (const n of SIZES) {
      const add: number[] = [];
      const swept: number[] = [];
      const worst: number[] = [];
      const found: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const host = hostOf(hostNo++);
        const before = e.counters().fmNew;
        for (let i = 0; i < n; i++) {
          const f = frame(host, 1024 + i);
          inject.enqueue({ family: 4, packet: f.subarray(14), frame: f });
        }
        inject.flush();
        for (let i = 0; i < 200 && e.counters().fmNew - before < BigInt(n); i++) await new Promise((res) => setTimeout(res, 10));
        // The longest gap between turns of the event loop, from add() on.
        let maxGap = 0;
        let last = performance.now();
        let ticking = true;
        const tick = (): void => {
          const now = performance.now();
          maxGap = Math.max(maxGap, now - last);
          last = now;
          if (ticking) setTimeout(tick, 0);
        };
        const t0 = performance.now();
        let sweptAt = 0;
        e.once('sweep', (s: { flows: number }) => {
          sweptAt = performance.now();
          found.push(s.flows);
        });
        last = t0;
        setTimeout(tick, 0);
        const info = e.add({ sniffIf: 'sniff0', resetIf: 'reset0', host, expiresAt: Date.now() + 60_000, label: `bench-${n}-${r}` });
        add.push(performance.now() - t0);
        await e.verification(info.id, 10_000);
        while (sweptAt === 0) await new Promise((res) => setTimeout(res, 5));
        ticking = false;
        swept.push(sweptAt - t0);
        worst.push(maxGap);
        e.remove(info.id);
      }
      results.push(
        `N=${n} (found ${found.join('/')}): add ${median(add).toFixed(1)} ms, swept ${median(swept).toFixed(1)} ms, ` +
          `worst turn ${median(worst).toFixed(1)} ms (medians of ${ROUNDS})`,
      );
      console.log(results.at(-1));
    }
    inject.close();
  } finally {
    await e.close();
  }
}
