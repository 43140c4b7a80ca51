/**
 * What every benchmark section gets: the lab, the running tcpresetd, a
 * scratch directory, the run mode, and helpers shared by the sections.
 */
import type { Lab } from '../testkit/lab/lab.js';
import { SensorDaemon } from '../testkit/daemon.js';
import { sleep } from '../testkit/time.js';

export interface BenchContext {
  lab: Lab;
  /** The daemon the sections share; a section may replace it (ctx.daemon = ...). */
  daemon: SensorDaemon;
  /** Scratch files (pcaps, trafgen configs, tcpkill logs); removed at the end. */
  tmp: string;
  quick: boolean;
  log: (msg: string) => void;
}

export type Tool = 'tcpreset' | 'tcpkill';
export const TOOLS: readonly Tool[] = ['tcpreset', 'tcpkill'];

/** Tool order for repetition `i`: alternated, so drift on a shared machine hits both alike. */
export function toolOrder(i: number): Tool[] {
  return i % 2 === 0 ? ['tcpreset', 'tcpkill'] : ['tcpkill', 'tcpreset'];
}



/** The ENGID every benchmark job carries. */
export const BENCH_ENGID = 'bench';

/** Daemon configuration for the benchmark: room for 100,000 jobs, the rest default. */
export const BENCH_DAEMON_CONFIG = { maxJobs: 131072 };

/**
 * The shared daemon keeps XDP on the sniff port once a job has used it (a
 * watched interface stays attached until the daemon stops: issue 9), so a
 * section that attaches something else there (the C floor, a daemon of its
 * own) stops it first, and sharedDaemon() brings it back for the next user.
 */
export async function freeSniffPort(ctx: BenchContext): Promise<void> {
  if (ctx.daemon.exited) return;
  await ctx.daemon.stop();
  ctx.daemon.removeFiles();
}

/** The shared daemon, started afresh (and given a second to settle) if a section stopped it. */
export async function sharedDaemon(ctx: BenchContext, start: () => Promise<SensorDaemon> = () => SensorDaemon.start(ctx.lab, { config: BENCH_DAEMON_CONFIG })): Promise<SensorDaemon> {
  if (ctx.daemon.exited) {
    ctx.daemon = await start();
    await sleep(1000);
  }
  return ctx.daemon;
}
