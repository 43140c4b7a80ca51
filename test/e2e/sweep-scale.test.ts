/**
 * The create-time sweep at scale (issue 9, "kill at creation"): a host with
 * some 16,000 connections remembered open in the flow memory (a SYN scan,
 * many connections) must not stall the daemon. Through the real
 * bin/tcpresetd (--watch on the sniff interface) and bin/tcpreset in the
 * lab: trafgen writes 16,000 ACK segments of the client host (one distinct
 * source port each) into the mirror port; then a job on that host is
 * created through the CLI while `status` is asked at the same time.
 *
 * Asserted: the create answers within the CLI's own timeout (no tight
 * bound: timing is the bench's), `status` answers meanwhile and right
 * after, every remembered flow is swept (the sweep's count equals the
 * kernel's fm_new - fm_evicted: nothing else is in the table) and, on the
 * reset port (tcpdump there, no drops), each of them gets exactly one RST
 * to each end before its probes, and no other flow gets anything.
 * Positive control: a real idle session of the same host, alive before the
 * job, is reset at both ends by the same sweep.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ptest } from '../helpers/privileged.js';
import { CLI_BIN, startDaemon } from '../../testkit/daemon.js';
import { createLab } from '../../testkit/lab/lab.js';
import { startClient, startServer } from '../../testkit/lab/peer-control.js';
import { startCapture } from '../../testkit/capture.js';
import { startTrafgen, tcpFrames } from '../../testkit/trafgen.js';
import { sleep, wallMs as wall } from '../../testkit/time.js';

const PORT = 5001;
const FLOWS = 16_000;
const TCP_RST = 0x04;

ptest.serial(`${FLOWS} remembered open flows of one host: create answers within the CLI's timeout, status answers meanwhile, every remembered flow gets its RST pair`, async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const daemon = await startDaemon({
    netns: lab.ns.sensor, args: ['--watch', lab.sensor.sniffIf],
    // SWEEP_DAEMON_LOG=FILE: the daemon's log lines there too (the sweep's figures).
    ...(process.env.SWEEP_DAEMON_LOG ? { logFile: process.env.SWEEP_DAEMON_LOG } : {}),
  });
  t.teardown(async () => void (await daemon.stop()));
  const cli = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number; endedAt: number }> => {
    const startedAt = wall();
    const child = spawn('ip', ['netns', 'exec', lab.ns.sensor, process.execPath, CLI_BIN, ...args, '--socket', daemon.socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr, ms: wall() - startedAt, endedAt: wall() })));
  };
  const status = async (): Promise<{ counters: Record<string, number>; sweep: Record<string, number> }> => {
    const r = await cli(['status', '--json']);
    t.is(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { counters: Record<string, number>; sweep: Record<string, number> };
  };

  // The positive control: a real idle session of the host.
  const server = await startServer(lab, lab.ns.server, [{ port: PORT, mode: 'echo' }]);
  const client = await startClient(lab, lab.ns.client, lab.hosts.server.v4, PORT, 'interactive', { intervalMs: 600_000 });
  const c = await client.waitFor((e) => e.ev === 'connected', 5000, 'connected');
  const acc = await server.waitFor((e) => e.ev === 'accept' && e.rport === c.lport, 5000, 'accept');

  // 16,000 more open flows of the client host: ACK segments client -> server:PORT, source ports 1024.. (below the real session's).
  const host = lab.hosts.client.v4;
  const gen = startTrafgen(lab, join(daemon.dir, 'flows.cfg'), tcpFrames({ src: host, dst: lab.hosts.server.v4, dport: PORT, srcMac: lab.hosts.client.mac, dstMac: lab.hosts.server.mac }), { count: FLOWS, rate: 50_000 });
  const end = await gen.done;
  t.is(end.code, 0, end.output);
  t.log(`trafgen: ${end.packets} packets; ${end.output.slice(-300)}`);
  let before = await status();
  for (let i = 0; i < 50 && before.counters.fmNew < FLOWS + 1; i++) before = (await sleep(100), await status());
  t.true(before.counters.fmNew >= FLOWS + 1, `flow memory saw the ${FLOWS} flows and the session: ${JSON.stringify(before.counters)}`);
  const remembered = before.counters.fmNew - before.counters.fmEvicted;
  t.log(`${remembered} flows remembered (${before.counters.fmEvicted} displaced by hash collisions)`);
  t.true(client.errorOf('c') === undefined && server.errorOf(acc.conn!) === undefined, 'positive control: the session is alive before the job');

  const cap = await startCapture(lab, lab.sw.ns, lab.sw.ports.reset, join(daemon.dir, 'reset.pcap'), 'tcp');
  const creating = cli(['ENG-MANY', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-d', '30', '--json']);
  await sleep(20);
  const meanwhile = cli(['status', '--json']);
  const [r, s] = await Promise.all([creating, meanwhile]);
  t.log(`create answered in ${r.ms.toFixed(0)} ms, status asked meanwhile in ${s.ms.toFixed(0)} ms`);
  t.is(r.code, 0, `create answered within the CLI's timeout: ${r.stderr}`);
  t.is(s.code, 0, `status answered meanwhile: ${s.stderr}`);
  const after = await cli(['status', '--json']);
  t.is(after.code, 0, after.stderr);
  t.log(`status right after the create answered in ${after.ms.toFixed(0)} ms`);
  const created = JSON.parse(r.stdout) as { flows: { known: number; reset: number } };
  t.is(created.flows.known, remembered, 'the reply counts every remembered open flow of the host');

  const swept = await daemon.waitLog((l) => l.msg === 'flows reset from flow memory', 20_000, 'sweep line');
  t.log(`sweep: ${JSON.stringify(swept)}`);
  t.is(swept.flows, remembered);
  t.is(swept.rsts, 2 * remembered);
  t.is(swept.probes, 2 * remembered);

  const cc = await client.waitFor((e) => e.ev === 'error' && e.conn === 'c', 5000, 'client reset');
  const sv = await server.waitFor((e) => e.ev === 'error' && e.conn === acc.conn, 5000, 'server reset');
  t.is(cc.code, 'ECONNRESET', 'positive control: client end reset');
  t.is(sv.code, 'ECONNRESET', 'positive control: server end reset');

  const { segments, dropped } = await cap.stop();
  t.is(dropped, 0, 'tcpdump dropped nothing on the reset port');
  // On the reset port: the sweep's RST pair of each flow, then its two probes (pure ACKs); then the event
  // path's RSTs, answering what crossed the mirror since (the probes' copies among it). Per flow, the RSTs
  // before its first probe are the sweep's: exactly one to each end.
  const byFlow = new Map<number, { rstsBefore: number[]; probed: boolean; probes: number }>();
  for (const g of segments) {
    const fromHost = g.src === host;
    const hp = fromHost ? g.sport : g.dport;
    const f = byFlow.get(hp) ?? { rstsBefore: [0, 0], probed: false, probes: 0 };
    byFlow.set(hp, f);
    if (!(g.flags & TCP_RST)) {
      f.probed = true;
      f.probes++;
    } else if (!f.probed) f.rstsBefore[fromHost ? 1 : 0]!++; // [to the host, to its peer]
  }
  t.is(byFlow.size, remembered, 'every remembered flow, and no other, got packets');
  const wrong = [...byFlow].filter(([, f]) => f.rstsBefore[0] !== 1 || f.rstsBefore[1] !== 1 || f.probes < 2);
  t.deepEqual(wrong.slice(0, 5), [], `${wrong.length} flows without exactly one RST to each end before their probes`);
  t.is(segments.filter((g) => g.flags & TCP_RST).length >= 2 * remembered, true);
  const settled = await daemon.waitLog((l) => typeof l.msg === 'string' && l.msg.startsWith('sweep outcome settled'), 10_000, 'settled line');
  t.log(`settled: ${JSON.stringify({ ...settled, unverified: (settled.unverified as unknown[] | undefined)?.length })}`);
  t.is(settled.known, remembered);
});
