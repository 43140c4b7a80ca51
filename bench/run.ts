/**
 * `make bench`: tcpreset against tcpkill (dsniff) in the namespace lab, both
 * tools on the same traffic, runs alternated, medians and spreads reported.
 * Writes bench/results/latest.json, bench/results/reaction-latency.svg and
 * regenerates BENCHMARKS.md.
 *
 *   node dist/bench/run.js [--quick] [--only a,b,...] [--into-latest] [--no-report]
 *
 * --quick: a short smoke run (fewer repetitions, shorter windows, no
 * 100,000-target or 100-process configurations); it writes
 * bench/results/quick.json and leaves BENCHMARKS.md alone.
 * --render: only regenerate BENCHMARKS.md from bench/results/latest.json
 * (after a change to the report's text; the plot needs a run).
 * --only: sections to run (command, reaction, idle, kill, capabilities,
 * throughput, scale, flowmem, prefilter);
 * a partial run writes bench/results/partial.json only.
 * --into-latest: a partial, full-length run also replaces its sections in
 * bench/results/latest.json (noting when they were measured) and
 * regenerates BENCHMARKS.md; the other sections keep their earlier figures.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLab, type Lab } from '../testkit/lab/lab.js';
import { BENCH_DAEMON_CONFIG, type BenchContext, sharedDaemon } from './context.js';
import { runCapabilities } from './capabilities.js';
import { runCommand } from './command.js';
import { runIdle } from './idle.js';
import { runKill } from './kill.js';
import { runFlowmem } from './flowmem.js';
import { runReaction } from './reaction.js';
import { runScale } from './scale.js';
import { runThroughput } from './throughput.js';
import { runTargets } from './targets.js';
import { renderBenchmarks, type BenchResults } from './lib/report.js';
import { cdfSvg } from './lib/svg.js';
import { machineInfo, readSysctl, writeSysctl } from '../testkit/proc.js';
import { ensureSniffAddress } from './lib/tcpkill.js';
import { SensorDaemon } from '../testkit/daemon.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url)); // from dist/bench/
const SECTIONS = ['command', 'reaction', 'idle', 'kill', 'capabilities', 'throughput', 'scale', 'flowmem', 'prefilter'] as const;
type Section = (typeof SECTIONS)[number];

function parseArgs(argv: string[]): { quick: boolean; only: Set<Section>; report: boolean; render: boolean; intoLatest: boolean } {
  let quick = false;
  let intoLatest = false;
  let render = false;
  let report = true;
  let only = new Set<Section>(SECTIONS);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--render') render = true;
    else if (a === '--no-report') report = false;
    else if (a === '--into-latest') intoLatest = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      const v = a.includes('=') ? a.slice(7) : argv[++i] ?? '';
      const names = v.split(',').filter(Boolean);
      for (const n of names) if (!(SECTIONS as readonly string[]).includes(n)) throw new Error(`unknown section ${n} (known: ${SECTIONS.join(', ')})`);
      only = new Set(names as Section[]);
    } else throw new Error(`unknown argument ${a}; usage: run.js [--quick] [--only ${SECTIONS.join(',')}] [--into-latest] [--no-report] | --render`);
  }
  if (intoLatest && quick) throw new Error('--into-latest takes full-length figures only: drop --quick');
  return { quick, only, report, render, intoLatest };
}

/** Installs what the benchmark needs and `make` does not (tcpkill), as the Makefile does: only what is missing. */
function ensureTools(): void {
  const need: [string, string][] = [['tcpkill', 'dsniff'], ['trafgen', 'netsniff-ng'], ['tcpdump', 'tcpdump'], ['bpftool', 'bpftool'], ['ping', 'iputils-ping']];
  const missing = need.filter(([cmd]) => {
    try {
      execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map(([, p]) => p))];
  process.stdout.write(`installing: ${pkgs.join(' ')}\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env });
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.render) {
    const results = JSON.parse(readFileSync(join(REPO, 'bench', 'results', 'latest.json'), 'utf8')) as BenchResults;
    writeFileSync(join(REPO, 'BENCHMARKS.md'), renderBenchmarks(results));
    process.stdout.write('wrote BENCHMARKS.md from bench/results/latest.json\n');
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('make bench must run as root: it creates network namespaces, attaches XDP and captures packets.\n');
    return 77;
  }
  ensureTools();
  const t0 = Date.now();
  const log = (msg: string): void => void process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);
  const tmp = mkdtempSync(join(tmpdir(), 'tcpreset-bench-'));
  const bpfStatsBefore = readSysctl('kernel.bpf_stats_enabled');
  let lab: Lab | undefined;
  let ctx: BenchContext | undefined;
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    await ctx?.daemon.stop().catch(() => {});
    ctx?.daemon.removeFiles();
    await lab?.destroy().catch(() => {});
    rmSync(tmp, { recursive: true, force: true });
    if (readSysctl('kernel.bpf_stats_enabled') !== bpfStatsBefore) await writeSysctl('kernel.bpf_stats_enabled', bpfStatsBefore).catch(() => {});
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stdout.write(`\n${sig}: removing the lab...\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    log(`machine: ${JSON.stringify(machineInfo())}`);
    log('building the lab');
    lab = await createLab();
    await ensureSniffAddress(lab);
    const daemon = await SensorDaemon.start(lab, { config: BENCH_DAEMON_CONFIG });
    ctx = { lab, daemon, tmp, quick: args.quick, log };
    const results: BenchResults = {
      version: 1,
      quick: args.quick,
      startedAt: new Date(t0).toISOString(),
      durationS: 0,
      machine: machineInfo(),
    };
    let samples: Record<string, number[]> | undefined;
    for (const section of SECTIONS) {
      if (!args.only.has(section)) continue;
      log(`== ${section}`);
      await sharedDaemon(ctx); // a section before may have stopped it to free the sniff port
      const s0 = Date.now();
      switch (section) {
        case 'command':
          results.command = await runCommand(ctx);
          break;
        case 'reaction': {
          const r = await runReaction(ctx);
          samples = r.samples;
          const { samples: _drop, ...rest } = r;
          results.reaction = rest;
          break;
        }
        case 'idle':
          results.idle = await runIdle(ctx);
          break;
        case 'kill':
          results.kill = await runKill(ctx);
          break;
        case 'capabilities':
          results.capabilities = await runCapabilities(ctx);
          break;
        case 'throughput':
          results.throughput = await runThroughput(ctx);
          break;
        case 'scale':
          results.scale = await runScale(ctx);
          break;
        case 'flowmem':
          results.flowmem = await runFlowmem(ctx);
          break;
        case 'prefilter':
          results.prefilter = runTargets(ctx);
          break;
      }
      log(`== ${section} done in ${((Date.now() - s0) / 1000).toFixed(0)} s`);
    }
    results.durationS = Math.round((Date.now() - t0) / 1000);

    const outDir = join(REPO, 'bench', 'results');
    mkdirSync(outDir, { recursive: true });
    // Only a complete, full run is "latest" and regenerates the report.
    const complete = !args.quick && args.only.size === SECTIONS.length;
    const jsonPath = join(outDir, args.quick ? 'quick.json' : complete ? 'latest.json' : 'partial.json');
    writeFileSync(jsonPath, JSON.stringify(results, null, 2) + '\n');
    log(`wrote ${jsonPath}`);
    if (!complete && args.intoLatest) {
      const latestPath = join(outDir, 'latest.json');
      const latest = JSON.parse(readFileSync(latestPath, 'utf8')) as BenchResults;
      const merged = latest as unknown as Record<string, unknown>;
      const runs = { ...(latest.sectionRuns ?? {}) };
      const machines = { ...(latest.sectionMachines ?? {}) };
      for (const section of args.only) {
        merged[section] = (results as unknown as Record<string, unknown>)[section];
        runs[section] = results.startedAt;
        machines[section] = results.machine;
      }
      latest.sectionRuns = runs;
      latest.sectionMachines = machines;
      writeFileSync(latestPath, JSON.stringify(latest, null, 2) + '\n');
      log(`merged ${[...args.only].join(', ')} into ${latestPath}`);
      if (args.report) {
        writeFileSync(join(REPO, 'BENCHMARKS.md'), renderBenchmarks(latest));
        log('wrote BENCHMARKS.md');
      }
    }
    if (complete && args.report) {
      if (samples) {
        const svg = cdfSvg('Reaction latency: segment on the sniff interface → RST on the reset interface', [
          { label: 'tcpreset', color: '#1f77b4', valuesUs: samples.tcpreset ?? [] },
          { label: 'tcpkill (dsniff)', color: '#d62728', valuesUs: samples.tcpkill ?? [] },
        ]);
        writeFileSync(join(outDir, 'reaction-latency.svg'), svg);
      }
      writeFileSync(join(REPO, 'BENCHMARKS.md'), renderBenchmarks(results));
      log('wrote BENCHMARKS.md');
    }
    return 0;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
