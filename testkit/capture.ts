/**
 * tcpdump inside a lab namespace, two ways. Capture: its text output, line
 * by line, for tests that look at what crossed an interface. startCapture:
 * kernel-timestamped captures for the bench: nanosecond
 * timestamps (--time-stamp-precision=nano), a large buffer so a burst is not
 * dropped, written to a pcap file and read back with ./pcap.ts. Both tools
 * are measured by the same two captures (sniff interface, reset interface),
 * so whatever the capture itself costs is the same for both.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Lab } from './lab/lab.js';
import { readPcap, type TcpSegment } from './pcap.js';

export interface PcapCapture {
  path: string;
  /** Stops tcpdump (SIGINT: it flushes the file) and returns what it saw and what the kernel dropped. */
  stop(): Promise<{ segments: TcpSegment[]; dropped: number }>;
}

export async function startCapture(lab: Lab, ns: string, ifname: string, path: string, filter: string): Promise<PcapCapture> {
  const child: ChildProcess = lab.spawn(ns, [
    'tcpdump', '-i', ifname, '-n', '-s', '96', '-B', '16384', '--time-stamp-precision=nano', '-w', path, filter,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  // tcpdump says "listening on" once the socket is bound and the filter set.
  const deadline = Date.now() + 10_000;
  while (!/listening on/.test(stderr)) {
    if (child.exitCode !== null) throw new Error(`tcpdump on ${ifname} exited: ${stderr.trim()}`);
    if (Date.now() > deadline) throw new Error(`tcpdump on ${ifname} not listening after 10 s: ${stderr.trim()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    path,
    async stop() {
      // tcpdump reads the kernel's ring in blocks that are handed over when
      // full or after its 1 s timeout; on SIGINT a block still being filled is
      // lost, so give the last one time to be handed over.
      await new Promise((r) => setTimeout(r, 1100));
      child.kill('SIGINT');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await closed;
      clearTimeout(t);
      const m = /(\d+) packets? dropped by kernel/.exec(stderr);
      return { segments: readPcap(path), dropped: m ? Number(m[1]) : 0 };
    },
  };
}

/** A tcpdump running inside a lab namespace, collecting its text output. */
export class Capture {
  readonly lines: string[] = [];
  private readonly child: ChildProcess;
  private readonly done: Promise<void>;
  private stderr = '';

  private constructor(lab: Lab, ns: string, args: string[]) {
    this.child = lab.spawn(ns, ['tcpdump', '-l', '-U', '-nn', '-e', '-tt', ...args]);
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      if (l.trim() !== '') this.lines.push(l);
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.stderr += d;
    });
    this.done = new Promise((resolve) => this.child.once('close', () => resolve()));
  }

  /** Starts `tcpdump -i IFNAME [-v] FILTER...` and waits until it listens. */
  static async start(lab: Lab, ns: string, ifname: string, filter: string[] = [], opts: { verbose?: boolean } = {}): Promise<Capture> {
    const cap = new Capture(lab, ns, ['-i', ifname, ...(opts.verbose ? ['-v'] : []), ...filter]);
    const deadline = Date.now() + 5000;
    while (!/listening on/.test(cap.stderr)) {
      if (Date.now() > deadline) throw new Error(`tcpdump did not start: ${cap.stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return cap;
  }

  /** Stops tcpdump (after a short grace so buffered packets are printed) and returns its lines. */
  async stop(graceMs = 100): Promise<string[]> {
    await new Promise((r) => setTimeout(r, graceMs));
    this.child.kill('SIGINT');
    await this.done;
    return this.lines;
  }
}
