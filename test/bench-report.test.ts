/**
 * BENCHMARKS.md's goal verdicts for issue 9's two figures (bench/lib/report.ts,
 * pure): the idle-session kill with --watch against command start + 20 ms,
 * and the per-packet cost of watching against +40 ns, each shown as met or
 * missed with the amount; tcpkill's idle row says it never killed one.
 */
import test from 'ava';
import { renderBenchmarks, type BenchResults } from '../bench/lib/report.js';
import type { WatchCell, WatchResult } from '../bench/kill.js';
import type { FlowmemResult } from '../bench/flowmem.js';

const q = (p50: number | null, n = 4) => ({ n: p50 === null ? 0 : n, min: p50, p25: p50, p50, p75: p50, p90: p50, p99: p50, max: p50, mean: p50 });

function cell(c: WatchCell['case'], session: WatchCell['session'], bothP50: number | null, withinGoal: number): WatchCell {
  const killed = bothP50 !== null;
  return {
    case: c, session, trials: 4, successes: killed ? 4 : 0, bothMs: q(bothP50), afterReturnMs: q(killed && c !== 'tcpkill' ? -5 : null),
    returnedMs: q(c === 'tcpkill' ? null : 30), withinGoal, aliveAtEnd: killed ? 0 : 4,
    flows: c === 'tcpkill' ? [] : Array.from({ length: 4 }, () => (c === 'cold' ? { known: 0, reset: 0, verified: 0 } : { known: 1, reset: 1, verified: 1 })),
  };
}

function watch(idleP50: number): WatchResult {
  return {
    trialsPerCell: 4, idleBeforeMs: 2000, lineIntervalMs: 500, waitS: 2, timeoutMs: 5000, goalMs: 20,
    cells: [cell('watch', 'idle', idleP50, idleP50 <= 20 ? 4 : 0), cell('watch-request', 'idle', 12, 4), cell('cold', 'idle', null, 0), cell('tcpkill', 'idle', null, 0)],
  };
}

function flowmem(knownOn: number): FlowmemResult {
  const off = { knownNs: 30, newNs: 260, rstNs: 26 };
  const on = { knownNs: knownOn, newNs: 800, rstNs: 58 };
  return {
    object: 'x.o', rounds: 1, repeat: 1000, newFrames: 10, slots: 262144, off, on,
    delta: { knownNs: knownOn - 30, newNs: 540, rstNs: 32 }, perRound: [{ off, on }],
    memory: { entryBytes: 192, layout: { key: 44, dir: 56, mptcp: 24 }, memlockBytes: 50_331_648 + 4096, perSlotBytes: 192.02 },
  };
}

function report(w: WatchResult, f: FlowmemResult): string {
  const cells = { trials: 1, successes: 1, successRate: 1, bothMs: q(1), clientMs: q(1), serverMs: q(1), failures: [] };
  const r: BenchResults = {
    version: 1, quick: false, startedAt: '2026-12-01T10:00:00.000Z', durationS: 60,
    machine: { nproc: 2, model: 'x', kernel: 'k', memGiB: 1, node: 'v20', tcpkill: 'dsniff' },
    kill: { trialsPerCell: 1, interactiveIntervalMs: 50, timeoutMs: 5000, cells: { tcpreset: { interactive: cells, bulk: cells }, tcpkill: { interactive: cells, bulk: cells } }, watch: w },
    flowmem: f,
  };
  return renderBenchmarks(r);
}

const goalRow = (md: string, start: string): string => md.split('\n').find((l) => l.startsWith(`| ${start}`)) ?? '';

test('report: idle kill with --watch is met only within command start + 20 ms, with the amount; tcpkill never', (t) => {
  const met = goalRow(report(watch(15), flowmem(60)), 'Idle session');
  t.true(met.endsWith('| met (5.0 ms under) (p50) |'), met);
  t.regex(met, /never: 0 of 4 reset within 5 s, 4 of 4 alive at both ends/);
  const missed = report(watch(95), flowmem(60));
  t.true(goalRow(missed, 'Idle session').endsWith('| **missed** by 75.0 ms (p50) |'), goalRow(missed, 'Idle session'));
  t.regex(missed, /Idle session with `--watch`: both ends reset 95\.0 ms after the command's start at p50 \(0 of 4 within 20 ms\)/);
  t.regex(missed, /\| idle \| tcpreset, fresh daemon without `--watch` \(its first job\) \| \*\*0\/4\*\*: none within 5 s, 4\/4 alive \|/);
});

test('report: the per-packet cost of watching is met within +40 ns, with the amount, and the memory per flow is stated', (t) => {
  const md = report(watch(15), flowmem(60));
  t.true(goalRow(md, 'Per-packet cost of watching (flow memory), segment').endsWith('| met (10.0 ns under) |'));
  t.true(goalRow(md, 'Per-packet cost of watching, new connection').endsWith('| **missed** by 500.0 ns |'));
  t.regex(md, /`struct tr_fm_entry` of 192 bytes: the 44-byte key .* state and first-seen time \(12\), each end's last segment \(2 × 56: .* MPTCP \(24: .*the kernel accounts 50,335,744 bytes .* for 262,144 slots, 192\.02 bytes per slot/);
  const worse = report(watch(15), flowmem(80));
  t.true(goalRow(worse, 'Per-packet cost of watching (flow memory), segment').endsWith('| **missed** by 10.0 ns |'));
});
