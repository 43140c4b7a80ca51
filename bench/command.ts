/**
 * The command: spawn-to-exit wall time of `tcpreset list` and of a job
 * submission, against `node -e 0` (the floor for any Node program), run
 * alternately, in an operator's environment and, when the benchmark's own
 * environment sets NODE_EXTRA_CA_CERTS, in that one too. The CLI is spawned as an operator runs it (bin/tcpreset,
 * through its #!/usr/bin/env node line); the control socket is a path, so
 * no namespace switch is involved. The submission repeats one job
 * identity, so after the first it "extends"; the very first submission
 * after the daemon starts (which opens the data plane and attaches XDP) is
 * reported on its own.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_ENGID, type BenchContext } from './context.js';
import { roundSummary, summarize, type Summary } from '../testkit/stats.js';
import { sleep } from '../testkit/time.js';
import { CLI_BIN } from '../testkit/daemon.js';

/** Medians and spread of one environment's runs. */
export interface CommandTimes {
  ms: Record<'node' | 'list' | 'submit' | 'floor', Record<keyof Summary, number | null>>;
  /** Median ratios to `node -e 0` of the same environment and run. */
  ratio: { list: number; submit: number; floor: number };
  /** The same at the 25th percentile: the quieter moments of a shared machine. */
  ratioP25: { list: number; submit: number; floor: number };
}

/**
 * The least a Node client using public APIs does: node:net, connect, send
 * the list request, read one line, write it, exit. What is left between it
 * and `node -e 0` is Node's socket machinery and the daemon's answer.
 */
const FLOOR_SCRIPT = `const s = require('net').createConnection(process.env.TCPRESET_SOCKET);
s.on('connect', () => s.write('{"v":1,"op":"list"}\\n'));
s.on('data', (d) => { if (d.includes(10)) { require('fs').writeSync(1, d); process.exit(0); } });
s.on('error', (e) => { process.stderr.write(e.message + '\\n'); process.exit(69); });
`;

export interface CommandResult extends CommandTimes {
  runs: number;
  firstSubmitMs: number;
  /**
   * The same runs (interleaved with those above) in the benchmark's own
   * environment when it sets NODE_EXTRA_CA_CERTS: Node then reads a CA
   * bundle at every start (~70 ms here), both for `node -e 0` and the CLI,
   * which flatters the ratio. The figures above are without it, as an
   * operator's shell on a sensor runs the command.
   */
  withExtraCaCerts?: CommandTimes & { value: string };
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

function times(ms: Record<'node' | 'list' | 'submit' | 'floor', number[]>): CommandTimes {
  const s = { node: summarize(ms.node), list: summarize(ms.list), submit: summarize(ms.submit), floor: summarize(ms.floor) };
  const r = (a: number, b: number): number => Math.round((a / b) * 100) / 100;
  return {
    ms: { node: roundSummary(s.node), list: roundSummary(s.list), submit: roundSummary(s.submit), floor: roundSummary(s.floor) },
    ratio: { list: r(s.list.p50, s.node.p50), submit: r(s.submit.p50, s.node.p50), floor: r(s.floor.p50, s.node.p50) },
    ratioP25: { list: r(s.list.p25, s.node.p25), submit: r(s.submit.p25, s.node.p25), floor: r(s.floor.p25, s.node.p25) },
  };
}

export async function runCommand(ctx: BenchContext): Promise<CommandResult> {
  const { lab } = ctx;
  const withCa: NodeJS.ProcessEnv = { ...process.env, TCPRESET_SOCKET: ctx.daemon.socket };
  const plain = { ...withCa };
  delete plain.NODE_EXTRA_CA_CERTS;
  const envs = withCa.NODE_EXTRA_CA_CERTS ? [plain, withCa] : [plain];
  // A host nobody uses (no traffic, so the job never fires), on the lab's LAN.
  const idle = lab.prefix.v4.replace(/\.0\/24$/, '.99');
  const submitArgs = [BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', idle, '-p', '9', '-d', '600'];
  const firstSubmitMs = await timeSpawn(CLI_BIN, submitArgs, plain);
  const runs = ctx.quick ? 5 : 40;
  const ms = envs.map(() => ({ node: [] as number[], list: [] as number[], submit: [] as number[], floor: [] as number[] }));
  const floor = join(ctx.tmp, 'command-floor.cjs');
  writeFileSync(floor, FLOOR_SCRIPT);
  // Warm the page cache for all three before measuring.
  await timeSpawn(process.execPath, ['-e', '0'], plain);
  await timeSpawn(CLI_BIN, ['list'], plain);
  for (let i = 0; i < runs; i++) {
    // Interleaved, so a burst of load elsewhere on the machine hits every column alike.
    for (const [j, env] of envs.entries()) {
      ms[j].node.push(await timeSpawn(process.execPath, ['-e', '0'], env));
      ms[j].list.push(await timeSpawn(CLI_BIN, ['list'], env));
      ms[j].submit.push(await timeSpawn(CLI_BIN, submitArgs, env));
      ms[j].floor.push(await timeSpawn(process.execPath, [floor], env));
    }
    await sleep(20);
  }
  await ctx.daemon.call({ op: 'cancel', engid: BENCH_ENGID, sniffIf: lab.sensor.sniffIf, host: idle, port: 9 });
  const main = times(ms[0]);
  const ca = envs.length > 1 ? { ...times(ms[1]), value: withCa.NODE_EXTRA_CA_CERTS! } : undefined;
  ctx.log(
    `command: node -e 0 p50 ${main.ms.node.p50} ms, list ${main.ms.list.p50} ms (${main.ratio.list}x), submit ${main.ms.submit.p50} ms (${main.ratio.submit}x), net floor ${main.ratio.floor}x; at p25 ${main.ratioP25.list}x / ${main.ratioP25.submit}x / ${main.ratioP25.floor}x; first ${firstSubmitMs.toFixed(0)} ms` +
      (ca ? `; with NODE_EXTRA_CA_CERTS: node ${ca.ms.node.p50} ms, list ${ca.ratio.list}x, submit ${ca.ratio.submit}x` : ''),
  );
  return { runs, ...main, firstSubmitMs: Math.round(firstSubmitMs * 10) / 10, ...(ca ? { withExtraCaCerts: ca } : {}) };
}
