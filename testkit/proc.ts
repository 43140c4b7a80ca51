/**
 * What the benchmarks read from the system: CPU time of processes (ns, from
 * the scheduler's per-thread accounting), of the whole machine (/proc/stat),
 * of BPF programs (kernel BPF stats), RSS, interface counters, and the
 * machine's identity for the report.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { execFileSync } from 'node:child_process';
import { run } from './lab/netns.js';

/** CPU time of every live thread of `pid`, ns (sum_exec_runtime from /proc/<pid>/task/<tid>/schedstat). */
export function processCpuNs(pid: number): number {
  let total = 0;
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  for (const tid of tids) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      /* thread exited between readdir and read */
    }
  }
  return total;
}

/**
 * CPU time of each live thread of `pid` whose name (/proc/<pid>/task/<tid>/comm)
 * starts with `prefix`, ns (schedstat), keyed by thread id: the event
 * threads of tcpresetd ("tcpreset-event") one by one.
 */
export function threadCpuNs(pid: number, prefix: string): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      if (!readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith(prefix)) continue;
      out.set(Number(tid), Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]));
    } catch {
      /* thread exited between readdir and read */
    }
  }
  return out;
}

export function processesCpuNs(pids: Iterable<number>): number {
  let t = 0;
  for (const p of pids) t += processCpuNs(p);
  return t;
}

/** Busy time of all CPUs (everything but idle and iowait), ns. */
export function machineBusyNs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
  return (busy * 1e9) / clockTicks();
}

/**
 * Interrupt and softirq time of all CPUs, ns (/proc/stat, jiffy resolution).
 * With IRQ time accounting (this kernel has it) the receive path of a veth
 * (XDP programs, packet-socket filters, the stack) runs in softirq and is
 * counted here, not in any process.
 */
export function machineIrqNs(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return ((f[5] + f[6]) * 1e9) / clockTicks();
}

let ticks = 0;
function clockTicks(): number {
  if (!ticks) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** CPU time of `pid` in ms (processCpuNs in ms). */
export function cpuMs(pid: number): number {
  return processCpuNs(pid) / 1e6;
}

/** Resident set size of `pid` in MiB (rssBytes in MiB; NaN when the process is gone). */
export function rssMb(pid: number): number {
  return rssBytes(pid) / 2 ** 20;
}

/** VmRSS of `pid` in bytes (/proc/<pid>/status); NaN when the process is gone. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

export async function xdpProgId(ns: string, ifname: string): Promise<number | null> {
  const { stdout } = await run(['ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname]);
  const link = (JSON.parse(stdout) as { xdp?: { prog?: { id: number }; attached?: { prog?: { id: number } }[] } }[])[0];
  return link?.xdp?.prog?.id ?? link?.xdp?.attached?.[0]?.prog?.id ?? null;
}

export interface ProgStats {
  runTimeNs: number;
  runCnt: number;
}

export async function bpfProgStats(id: number): Promise<ProgStats> {
  const { stdout } = await run(['bpftool', '-j', 'prog', 'show', 'id', String(id)]);
  const p = JSON.parse(stdout) as { run_time_ns?: number; run_cnt?: number };
  return { runTimeNs: p.run_time_ns ?? 0, runCnt: p.run_cnt ?? 0 };
}

export function readSysctl(name: string): string {
  return readFileSync(`/proc/sys/${name.replace(/\./g, '/')}`, 'utf8').trim();
}

export async function writeSysctl(name: string, value: string): Promise<void> {
  await run(['sysctl', '-q', '-w', `${name}=${value}`]);
}

export interface IfCounters {
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
}

export async function ifCounters(ns: string, ifname: string): Promise<IfCounters> {
  const { stdout } = await run(['ip', '-n', ns, '-j', '-s', 'link', 'show', 'dev', ifname]);
  const s = (JSON.parse(stdout) as { stats64: { rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } } }[])[0].stats64;
  return { rxPackets: s.rx.packets, txPackets: s.tx.packets, rxDropped: s.rx.dropped, txDropped: s.tx.dropped };
}

export interface MachineInfo {
  nproc: number;
  model: string;
  kernel: string;
  memGiB: number;
  node: string;
  tcpkill: string;
}

export function machineInfo(): MachineInfo {
  let kernel = '';
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    /* not Linux */
  }
  let tcpkill = 'absent';
  try {
    tcpkill = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'dsniff'], { encoding: 'utf8' }).trim();
  } catch {
    /* not installed */
  }
  return {
    nproc: cpus().length,
    model: cpus()[0]?.model ?? 'unknown',
    kernel,
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    tcpkill: `dsniff ${tcpkill}`,
  };
}

/** Ids of the BPF maps the process holds open, with their type and size (from fdinfo). */
export function processMaps(pid: number): { id: number; type: number; maxEntries: number }[] {
  const out: { id: number; type: number; maxEntries: number }[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let link: string;
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (link !== 'anon_inode:bpf-map') continue;
    const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    const field = (k: string): number => Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(info)?.[1] ?? NaN);
    out.push({ id: field('map_id'), type: field('map_type'), maxEntries: field('max_entries') });
  }
  return out;
}
