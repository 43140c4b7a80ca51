/**
 * Small shared tools of the fuzz/access stress files: a latency format, and a prober
 * that keeps asking the daemon valid questions while something else abuses
 * it.
 */
import net from 'node:net';
import { sleep } from '../../testkit/time.js';
import { summarize, type Summary } from '../../testkit/stats.js';

export const fmtMs = (x: number): string => `${x.toFixed(2)} ms`;


/**
 * One request line on a fresh connection, one response line; latency from
 * connect() to the newline of the answer. Rejects on timeout or close.
 */
export function timedRequest(path: string, line: string, timeoutMs = 5000): Promise<{ ms: number; response: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = net.createConnection({ path });
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(`${line}\n`));
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      const ms = performance.now() - t0;
      s.destroy();
      try {
        resolve({ ms, response: JSON.parse(buf.slice(0, nl)) as Record<string, unknown> });
      } catch (err) {
        reject(err as Error);
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.on('close', () => {
      clearTimeout(timer);
      reject(new Error('closed without an answer'));
    });
  });
}

/**
 * Asks the daemon valid questions back to back (version, list, status in
 * turn, each on a fresh connection, `gapMs` apart) until stopped, and keeps
 * every latency and every failure (an error, a refusal, a wrong answer).
 */
export class LatencyProbe {
  readonly latencies: number[] = [];
  /** performance.now() at the start of each measured request, same order as latencies. */
  readonly startedAt: number[] = [];
  readonly failures: string[] = [];
  private running = true;
  private readonly done: Promise<void>;

  constructor(
    readonly socket: string,
    readonly gapMs = 10,
    /** Checked on every answer; return a failure text or null. */
    readonly check: (op: string, response: Record<string, unknown>) => string | null = () => null,
  ) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    const ops = ['version', 'list', 'status'];
    for (let i = 0; this.running; i++) {
      const op = ops[i % ops.length];
      try {
        const at = performance.now();
        const { ms, response } = await timedRequest(this.socket, JSON.stringify({ v: 1, op, id: `probe-${i}` }));
        this.latencies.push(ms);
        this.startedAt.push(at);
        if (response.ok !== true || response.id !== `probe-${i}`) this.failures.push(`${op}: ${JSON.stringify(response).slice(0, 300)}`);
        else {
          const bad = this.check(op, response);
          if (bad) this.failures.push(`${op}: ${bad}`);
        }
      } catch (err) {
        this.failures.push(`${op}: ${(err as Error).message}`);
      }
      await sleep(this.gapMs);
    }
  }

  /** The `n` slowest requests: when they started (ms after `origin`) and how long they took. */
  slowest(n: number, origin = 0): string {
    return this.latencies
      .map((ms, i) => ({ ms, at: this.startedAt[i] - origin }))
      .sort((a, b) => b.ms - a.ms)
      .slice(0, n)
      .map((x) => `${x.ms.toFixed(1)} ms at +${(x.at / 1000).toFixed(2)} s`)
      .join(', ');
  }

  async stop(): Promise<Summary> {
    this.running = false;
    await this.done;
    return summarize(this.latencies);
  }
}
