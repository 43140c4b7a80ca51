/**
 * BENCHMARKS.md's goal verdicts (bench/lib/report.ts, pure): issue 9's
 * idle-session kill with --watch against command start + 20 ms and
 * per-packet cost of watching against +40 ns; issue 13's per-packet cost
 * of 100,000 targets against 1.1x and its two flood goals; each shown as
 * met or missed with the amount.
 */
import test from 'ava';
import { renderBenchmarks, type BenchResults } from '../bench/lib/report.js';
import type { WatchCell, WatchResult } from '../bench/kill.js';
import type { FlowmemResult } from '../bench/flowmem.js';
import type { FloodPoint, FloodResult, ThroughputResult } from '../bench/throughput.js';
import type { TargetsObjectResult } from '../bench/targets.js';

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

function targetsObject(bits: number, newRatio: number, knownRatio: number): TargetsObjectResult {
  return {
    object: 'x.o', prefilterBits: 2 ** bits, targets: 100_000, rounds: 7,
    newFlow: { oneNs: 700, bigNs: 700 * newRatio, ratio: newRatio, deltaNs: 700 * (newRatio - 1) },
    knownFlows: { oneNs: 50, bigNs: 50 * knownRatio, ratio: knownRatio, deltaNs: 50 * (knownRatio - 1) },
    prefilterPass: { newFlow: 0.023, knownFlows: 0.016, bitsSet: 99_429 },
  };
}

function flood(threads: number, targetPps: number, rstPerSec: number, answered: number): FloodPoint {
  return {
    threads, targetPps, runs: 2, offeredPps: targetPps * 0.9, rstPerSec, answered, ringLoss: 1 - answered, cores: 0.8,
    threadCores: Array.from({ length: threads }, () => 0.8 / threads), softirqCores: 0.7, machineCores: 2, suppressed: 0,
  };
}

function withIssue13(newRatio: number, floods: FloodResult): string {
  const best = { tool: 'tcpreset' as const, targetPps: 1, runs: 1, offeredPps: 1, rstPerSec: 1, answered: 1, toolCores: 1 };
  const throughput: ThroughputResult = { windowS: 3, runs: [], points: [], best: { tcpreset: best, tcpkill: { ...best, tool: 'tcpkill' } }, floods };
  const r: BenchResults = {
    version: 1, quick: false, startedAt: '2026-12-01T10:00:00.000Z', durationS: 60,
    machine: { nproc: 2, model: 'x', kernel: 'k', memGiB: 1, node: 'v20', tcpkill: 'dsniff' },
    throughput,
    prefilter: { objects: [targetsObject(23, newRatio, 1.02), targetsObject(21, 1.14, 1.07)] },
  };
  return renderBenchmarks(r);
}

test('report: per-packet cost of 100,000 targets is judged on the XDP program against 1.1x, the worse of new and known flows, with the amount', (t) => {
  const met = withIssue13(1.05, { senderAlone: 100_000, windowS: 3, points: [] });
  t.true(goalRow(met, 'Per-packet cost, 100,000 targets vs 1').endsWith('| met (0.05× under) |'), goalRow(met, 'Per-packet cost, 100,000 targets vs 1'));
  t.regex(met, /\| 2\^23 bits \(1,024 KiB\), 1 hash, this tree \| 99,429 \| 2\.3 % \/ 1\.6 % \| 700 → 735 ns \(\+35\) \| 1\.050× \|/);
  t.regex(met, /\| 2\^21 bits \(256 KiB\), 1 hash \| 99,429 \|/);
  const missed = withIssue13(1.15, { senderAlone: 100_000, windowS: 3, points: [] });
  t.true(goalRow(missed, 'Per-packet cost, 100,000 targets vs 1').endsWith('| **missed** by 0.05× |'));
  t.regex(missed, /Per-packet cost with 100,000 targets: the XDP program takes 1\.15× \(new flows\)/);
});

test('report: floods are judged against 60 % of the sender alone and 90 % of a 200k flood answered, each with the amount in points', (t) => {
  const missed = withIssue13(1.05, { senderAlone: 200_000, senderAloneRuns: [190_000, 210_000], windowS: 3, points: [flood(1, 200_000, 90_000, 0.5), flood(2, 200_000, 100_000, 0.6), flood(2, 400_000, 110_000, 0.3)] });
  t.true(goalRow(missed, 'Flood: RSTs/s against the sender alone').endsWith('| **missed** by 5.0 points |'), goalRow(missed, 'Flood: RSTs/s against the sender alone'));
  t.regex(goalRow(missed, 'Flood: RSTs/s against the sender alone'), /55\.0 %: 110,000 of 200,000 RSTs\/s \(2 threads/);
  t.true(goalRow(missed, 'Flood: a 200k').endsWith('| **missed** by 30.0 points |'), goalRow(missed, 'Flood: a 200k'));
  t.regex(goalRow(missed, 'Flood: a 200k'), /1 thread: 50\.0 % .*; 2 threads: 60\.0 %/);
  t.regex(missed, /median of 190,000 and 210,000/);
  const met = withIssue13(1.05, { senderAlone: 100_000, windowS: 3, points: [flood(1, 200_000, 70_000, 0.95)] });
  t.true(goalRow(met, 'Flood: RSTs/s against the sender alone').endsWith('| met (10.0 points over) |'));
  t.true(goalRow(met, 'Flood: a 200k').endsWith('| met (5.0 points over) |'));
  const none = report(watch(15), flowmem(60));
  t.true(goalRow(none, 'Flood: a 200k').endsWith('| not measured |'));
});
