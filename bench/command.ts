/**
 * The command: spawn-to-exit wall time of `tcpreset list` and of a job
 * submission, against `node -e 0` (the floor for any Node program), run
 * alternately. The CLI is spawned as an operator runs it (bin/tcpreset,
 * through its #!/usr/bin/env node line); the control socket is a path, so
 * no namespace switch is involved. The submission repeats one job
 * identity, so after the first it "extends"; the very first submission
 * after the daemon starts (which opens the data plane and attaches XDP) is
 * reported on its own.
 */
import { spawn } from 'node:child_process';
import { BENCH_ENGID, type BenchContext } from './context.js';
import { roundSummary, summarize, type Summary } from '../testkit/stats.js';
import { sleep } from '../testkit/time.js';
import { CLI_BIN } from '../testkit/daemon.js';

export interface CommandResult {
  runs: number;
  ms: Record<'node' | 'list' | 'submit', Record<keyof Summary, number | null>>;
  /** Median ratios to `node -e 0`. */
  ratio: { list: number; submit: number };
  firstSubmitMs: number;
}

function timeSpawn(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = process.hrtime.bigint();
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.once('error', reject);
    child.once('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t) / 1e6;
      if (code !== 0) reject(new Error(`${file} ${args.join(' ')} exited ${code}: ${err.trim()}`));
      else resolve(ms);
    });
  });
}

export async function runCommand(ctx: BenchContext): Promise<CommandResult> {
  const { lab } = ctx;
  const env = { ...process.env, TCPRESET_SOCKET: ctx.daemon.socket };
  // A host nobody uses (no traffic, so the job never fires), on the lab's LAN.
  const idle = lab.prefix.v4.replace(/\.0\/24$/, '.99');
  const submitArgs = [BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', idle, '-p', '9', '-d', '600'];
  const firstSubmitMs = await timeSpawn(CLI_BIN, submitArgs, env);
  const runs = ctx.quick ? 5 : 30;
  const ms = { node: [] as number[], list: [] as number[], submit: [] as number[] };
  // Warm the page cache for all three before measuring.
  await timeSpawn(process.execPath, ['-e', '0'], env);
  await timeSpawn(CLI_BIN, ['list'], env);
  for (let i = 0; i < runs; i++) {
    ms.node.push(await timeSpawn(process.execPath, ['-e', '0'], env));
    ms.list.push(await timeSpawn(CLI_BIN, ['list'], env));
    ms.submit.push(await timeSpawn(CLI_BIN, submitArgs, env));
    await sleep(20);
  }
  await ctx.daemon.call({ op: 'cancel', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, host: idle, port: 9 });
  const s = { node: summarize(ms.node), list: summarize(ms.list), submit: summarize(ms.submit) };
  ctx.log(`command: node -e 0 p50 ${s.node.p50.toFixed(1)} ms, list ${s.list.p50.toFixed(1)} ms, submit ${s.submit.p50.toFixed(1)} ms (first ${firstSubmitMs.toFixed(0)} ms)`);
  return {
    runs,
    ms: { node: roundSummary(s.node), list: roundSummary(s.list), submit: roundSummary(s.submit) },
    ratio: { list: Math.round((s.list.p50 / s.node.p50) * 100) / 100, submit: Math.round((s.submit.p50 / s.node.p50) * 100) / 100 },
    firstSubmitMs: Math.round(firstSubmitMs * 10) / 10,
  };
}

