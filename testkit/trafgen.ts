/**
 * Synthetic traffic into the sensor's sniff path: trafgen (netsniff-ng)
 * in the switch namespace writes TCP frames straight out of the mirror port
 * (p-mirror), so they arrive on sniff0 exactly like mirror copies and reach
 * nobody else. Random source port, sequence and acknowledgement numbers
 * make every frame a distinct, pairable trigger; checksums are computed
 * (a real mirror delivers valid ones).
 */
import { writeFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from './lab/lab.js';

function macBytes(mac: string): string {
  return mac.split(':').map((b) => `0x${b}`).join(', ');
}

function ipBytes(ip: string): string {
  return ip.split('.').map((b) => String(Number(b))).join(', ');
}

/**
 * One TCP ACK segment per packet, Ethernet + IPv4 + TCP (54 bytes, padded
 * to 60 by the kernel). `src`/`dst` are addresses, or `null` for random
 * ones inside 10.99.0.0/16 (source) and 10.98.0.0/16 (destination), which
 * no target ever covers.
 */
export function tcpFrameConfig(f: { smac: string; dmac: string; src: string | null; dst: string | null; dport: number }): string {
  const src = f.src ? ipBytes(f.src) : '10, 99, drnd(2)';
  const dst = f.dst ? ipBytes(f.dst) : '10, 98, drnd(2)';
  return `{
  ${macBytes(f.dmac)},
  ${macBytes(f.smac)},
  c16(0x0800),
  0x45, 0x00, c16(40), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),
  ${src},
  ${dst},
  drnd(2), c16(${f.dport}),
  drnd(4), drnd(4),
  0x50, 0x10, c16(512), csumtcp(14, 34), c16(0)
}
`;
}

/** A TCP frame template with the given addresses; ports and sequence numbers vary per frame. */
export function tcpFrames(o: { src: string; dst: string; dport: number; srcMac?: string; dstMac?: string; payload?: number }): string {
  const v6 = o.src.includes(':');
  return `{
  eth(da=${o.dstMac ?? '02:00:00:00:00:02'}, sa=${o.srcMac ?? '02:00:00:00:00:01'}),
  ${v6 ? 'ipv6' : 'ipv4'}(sa=${o.src}, da=${o.dst}, ttl=64),
  tcp(sp=dinc(1024, 65000), dp=${o.dport}, seq=drnd(), aseq=drnd(), ack, win=512),
  fill(0x41, ${o.payload ?? 16})
}
`;
}

export interface TrafgenEnd {
  code: number | null;
  stderr: string;
  /** The tail of stdout and stderr together (for a failure message). */
  output: string;
  /** From trafgen's summary ("N packets outgoing"); null if it printed none. */
  packets: number | null;
}

export interface TrafgenRun {
  child: ChildProcess;
  done: Promise<TrafgenEnd>;
  /** True once trafgen has exited (by itself, or after stop()). */
  readonly exited: boolean;
  /** Stops trafgen (SIGINT to its group, SIGKILL after 3 s); `exitedEarly`: it had ended before stop() was called. */
  stop(): Promise<TrafgenEnd & { exitedEarly: boolean }>;
}

/**
 * Starts trafgen on the lab's mirror port. `rate` in packets/s: an average,
 * sent in bursts of back-to-back frames; `gapUs`: one frame, then a pause
 * of that long (evenly spaced, at most some 10k packets/s); neither = as
 * fast as one CPU goes. `count` packets (undefined = until stopped).
 * One CPU (--cpus 1): more abort with "Flushing TX_RING failed" once
 * native XDP is attached on the peer. With a rate, trafgen takes its
 * per-packet path, which drops what does not fit when the sniff side's XDP
 * falls behind and goes on (its TX_RING path aborts instead), so a flood
 * that must last asks for a rate above what it can make (about 0.9 Mpps
 * here). -A/-Q: leave the machine's socket memory and IRQ affinity
 * settings alone, unless `tuneMachine`.
 */
export function startTrafgen(
  lab: Lab,
  cfgPath: string,
  cfg: string,
  opts: { rate?: number; gapUs?: number; count?: number; qdiscPath?: boolean; tuneMachine?: boolean } = {},
): TrafgenRun {
  writeFileSync(cfgPath, cfg);
  const argv = ['trafgen', '--dev', lab.sw.ports.mirror, '--conf', cfgPath, '--cpus', '1'];
  // The bench leaves socket memory and IRQ affinity alone; the stress floods let trafgen tune them
  // as they always did (their rates in RELIABILITY.md were measured that way).
  if (opts.tuneMachine !== true) argv.push('--no-sock-mem', '--notouch-irq', '--no-cpu-stats');
  // Through the device's transmit path, where packet taps (tcpdump on the port) see the frames.
  if (opts.qdiscPath) argv.push('--qdisc-path');
  if (opts.rate !== undefined) argv.push('--rate', `${opts.rate}pps`);
  if (opts.gapUs !== undefined) argv.push('--gap', `${opts.gapUs}us`);
  if (opts.count !== undefined) argv.push('--num', String(opts.count));
  // trafgen forks one worker per CPU and relies on Ctrl-C reaching the whole
  // process group: give it its own group and signal the group.
  const child = lab.spawn(lab.sw.ns, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const signalGroup = (sig: NodeJS.Signals): void => {
    try {
      if (child.pid) process.kill(-child.pid, sig);
    } catch {
      /* already gone */
    }
  };
  let stderr = '';
  let stdout = '';
  let output = '';
  const keep = (s: string): void => void (output = (output + s).slice(-4096));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => ((stderr += s), keep(s)));
  child.stdout?.setEncoding('utf8').on('data', (s: string) => ((stdout = (stdout + s).slice(-4096)), keep(s)));
  let exited = false;
  let stopping = false;
  const done = new Promise<TrafgenEnd>((resolve) =>
    child.once('close', (code) => {
      exited = true;
      // The summary is on stdout; the stress files read it from both streams, so keep doing that.
      const m = /(\d+) packets outgoing/.exec(stdout) ?? /(\d+) packets outgoing/.exec(output);
      resolve({ code, stderr, output, packets: m ? Number(m[1]) : null });
    }),
  );
  return {
    child,
    done,
    get exited() {
      return exited;
    },
    async stop() {
      const exitedEarly = exited && !stopping;
      stopping = true;
      if (!exited) {
        signalGroup('SIGINT');
        const t = setTimeout(() => signalGroup('SIGKILL'), 3000);
        await done;
        clearTimeout(t);
      }
      return { ...(await done), exitedEarly };
    },
  };
}
