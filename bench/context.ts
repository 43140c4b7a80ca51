/**
 * What every benchmark section gets: the lab, the running tcpresetd, a
 * scratch directory, the run mode, and helpers shared by the sections.
 */
import type { Lab } from '../testkit/lab/lab.js';
import { SensorDaemon } from '../testkit/daemon.js';

export interface BenchContext {
  lab: Lab;
  /** The daemon the sections share; a section may replace it (ctx.daemon = ...). */
  daemon: SensorDaemon;
  /** Scratch files (pcaps, trafgen configs, tcpkill logs); removed at the end. */
  tmp: string;
  quick: boolean;
  log(msg: string): void;
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
