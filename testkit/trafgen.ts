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

export interface TrafgenEnd {
  code: number | null;
  stderr: string;
  /** From trafgen's summary ("N packets outgoing"); null if it printed none. */
  packets: number | null;
}

export interface TrafgenRun {
  child: ChildProcess;
  done: Promise<TrafgenEnd>;
  stop(): Promise<void>;
}

/**
 * Starts trafgen on the lab's mirror port. `rate` in packets/s: an average,
 * sent in bursts of back-to-back frames; `gapUs`: one frame, then a pause
 * of that long (evenly spaced, at most some 10k packets/s); neither = as
 * fast as one CPU goes. `count` packets (undefined = until stopped).
 * One CPU (--cpus 1): more abort with "Flushing TX_RING failed" once
 * native XDP is attached on the peer. -A/-Q: leave the machine's socket
 * memory and IRQ affinity settings alone.
 */
export function startTrafgen(lab: Lab, cfgPath: string, cfg: string, opts: { rate?: number; gapUs?: number; count?: number; qdiscPath?: boolean } = {}): TrafgenRun {
  writeFileSync(cfgPath, cfg);
  const argv = ['trafgen', '--dev', lab.sw.ports.mirror, '--conf', cfgPath, '--cpus', '1', '--no-sock-mem', '--notouch-irq', '--no-cpu-stats'];
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
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout = (stdout + s).slice(-4096)));
  const done = new Promise<TrafgenEnd>((resolve) =>
    child.once('close', (code) => {
      const m = /(\d+) packets outgoing/.exec(stdout);
      resolve({ code, stderr, packets: m ? Number(m[1]) : null });
    }),
  );
  return {
    child,
    done,
    async stop() {
      signalGroup('SIGINT');
      const t = setTimeout(() => signalGroup('SIGKILL'), 3000);
      await done;
      clearTimeout(t);
    },
  };
}
