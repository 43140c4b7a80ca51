/**
 * A LatencyProbe in its own process, so that what it measures is the
 * daemon, not the test process (which spawns children and parses the
 * daemon's log at the same time):
 *
 *   node latency-probe.js '{"socket":..., "gapMs":20, "jobId":"..."}'
 *
 * Asks valid questions until its stdin closes, then prints one JSON line:
 * every latency with its start time (ms since the probe started), and every
 * failure (an error, a refusal, a list without the job).
 */
import { LatencyProbe } from './helpers.js';

const opts = JSON.parse(process.argv[2]) as { socket: string; gapMs: number; jobId?: string };
const origin = performance.now();
const probe = new LatencyProbe(opts.socket, opts.gapMs, (op, resp) => {
  if (op !== 'list' || opts.jobId === undefined) return null;
  const jobs = (resp.result as { jobs: { id: string }[] }).jobs;
  return jobs.some((j) => j.id === opts.jobId) ? null : `job ${opts.jobId} missing from list`;
});
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.on('end', () => {
  void probe.stop().then(() => {
    process.stdout.write(`${JSON.stringify({
      latencies: probe.latencies,
      startedAt: probe.startedAt.map((t) => t - origin),
      failures: probe.failures,
    })}\n`);
    process.exit(0);
  });
});
