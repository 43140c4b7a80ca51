/**
 * Watched interfaces (issue 9, step 2), through the real bin/tcpresetd in
 * the lab's sensor namespace: `--watch IF` attaches XDP at start and keeps
 * the same program attached while jobs come and go, so an AF_PACKET reader
 * of the same port (tcpdump here, an IDS in the field) sees every packet
 * and never loses its socket; without --watch and without jobs nothing is
 * attached; an interface that had a job stays attached.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ptest } from '../helpers/privileged.js';
import { startDaemon, type DaemonProc } from '../../testkit/daemon.js';
import { createLab, type Lab } from '../../testkit/lab/lab.js';
import { xdpProgId } from '../../testkit/proc.js';
import { sleep } from '../../testkit/time.js';
import { startTrafgen, tcpFrameConfig } from '../../testkit/trafgen.js';

const MARK_PORT = 7777;

interface Capture {
  child: ChildProcess;
  stderr: () => string;
  /** tcpdump's own summary after SIGINT: captured, received by filter, dropped by kernel. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; captured: number; received: number; dropped: number; stderr: string }>;
}

/** tcpdump (AF_PACKET) on `ifname` inside `ns`, counting TCP segments to MARK_PORT. */
async function startCapture(lab: Lab, ns: string, ifname: string, file: string): Promise<Capture> {
  const child = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', ifname, '-nn', '--immediate-mode', '-U', '-B', '8192', '-w', file, `tcp dst port ${MARK_PORT}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('close', (code, signal) => r({ code, signal })));
  // tcpdump says "listening on ..." once its socket is bound.
  for (let i = 0; i < 100 && !/listening on/.test(stderr); i++) await sleep(50);
  if (!/listening on/.test(stderr)) throw new Error(`tcpdump did not start: ${stderr}`);
  return {
    child,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGINT');
      const end = await closed;
      const num = (re: RegExp): number => Number(re.exec(stderr)?.[1] ?? NaN);
      return { ...end, captured: num(/(\d+) packets? captured/), received: num(/(\d+) packets? received by filter/), dropped: num(/(\d+) packets? dropped by kernel/), stderr };
    },
  };
}

async function status(d: DaemonProc): Promise<any> {
  const r = await d.request({ v: 1, op: 'status' });
  if (!r.ok) throw new Error(`status: ${JSON.stringify(r.error)}`);
  return r.result;
}

ptest.serial('--watch: XDP attached at start and kept through 20 jobs created and expired; tcpdump on the port sees every packet sent into it and its socket never errors', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const { sensor } = lab;
  t.is(await xdpProgId(sensor.ns, sensor.sniffIf), null, 'nothing attached before the daemon');
  const daemon = await startDaemon({ netns: sensor.ns, args: ['--watch', sensor.sniffIf] });
  t.teardown(async () => void (await daemon.stop()));
  const prog = await xdpProgId(sensor.ns, sensor.sniffIf);
  t.not(prog, null, 'attached at start, with no job');
  const st0 = await status(daemon);
  t.deepEqual(st0.interfaces.map((i: { ifname: string; role: string; watched: boolean; jobs: number; up: boolean }) => [i.ifname, i.role, i.watched, i.jobs, i.up]), [[sensor.sniffIf, 'sniff', true, 0, true]]);
  t.is(st0.jobs, 0);

  const cap = await startCapture(lab, sensor.ns, sensor.sniffIf, join(daemon.dir, 'watch.pcap'));
  t.teardown(() => void cap.child.kill('SIGKILL'));
  // Marked segments into the port, evenly spaced, for longer than the jobs take.
  const cfg = tcpFrameConfig({ smac: '02:00:00:00:99:01', dmac: '02:00:00:00:98:01', src: null, dst: null, dport: MARK_PORT });
  const tg = startTrafgen(lab, join(daemon.dir, 'watch.cfg'), cfg, { gapUs: 200, count: 20_000 });
  t.teardown(() => tg.stop());
  const progs = new Set<number | null>();
  const created: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await daemon.request({ v: 1, op: 'create', engid: 'WATCH', sniffIf: sensor.sniffIf, resetIf: sensor.resetIf, host: lab.hosts.client.v4, port: 1000 + i, duration: 1 });
    t.true(r.ok, JSON.stringify(r.error));
    created.push(r.result.job.id);
    progs.add(await xdpProgId(sensor.ns, sensor.sniffIf));
    await sleep(100);
  }
  // Every job ends on its own.
  for (let i = 0; i < 60 && (await status(daemon)).jobs > 0; i++) await sleep(100);
  t.is((await status(daemon)).jobs, 0, 'all 20 jobs expired');
  progs.add(await xdpProgId(sensor.ns, sensor.sniffIf));
  const sent = await tg.done;
  t.is(sent.code, 0, sent.stderr);
  t.is(sent.packets, 20_000);
  await sleep(1000);
  const end = await cap.stop();
  t.deepEqual([...progs], [prog], 'the same program stayed attached throughout: never detached or re-attached');
  t.is(end.code, 0, `tcpdump ended cleanly: ${end.stderr}`);
  t.is(end.signal, null);
  t.notRegex(end.stderr, /error|went down|No such device|can't|cannot/i, 'no socket error');
  t.is(end.dropped, 0, 'nothing dropped by the kernel');
  t.is(end.received, sent.packets!, `the socket received every packet sent into the port: ${end.stderr.trim()}`);
  t.is(end.captured, sent.packets!, `tcpdump captured every one: ${end.stderr.trim()}`);
  const st1 = await status(daemon);
  t.true(st1.counters.fmNew >= 10_000, `the flow memory learnt the segments' connections: fmNew ${st1.counters.fmNew}`);

});

ptest.serial('without --watch and without jobs nothing is attached; the first job attaches, and XDP stays after it ends until the daemon stops', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const { sensor } = lab;
  const daemon = await startDaemon({ netns: sensor.ns });
  t.teardown(async () => void (await daemon.stop()));
  await sleep(300);
  t.is(await xdpProgId(sensor.ns, sensor.sniffIf), null, 'no watch, no job: nothing attached');
  t.deepEqual((await status(daemon)).interfaces, []);
  t.is((await status(daemon)).dataPlane, 'idle');
  const r = await daemon.request({ v: 1, op: 'create', engid: 'W', sniffIf: sensor.sniffIf, resetIf: sensor.resetIf, host: lab.hosts.client.v4, duration: 1 });
  t.true(r.ok, JSON.stringify(r.error));
  const prog = await xdpProgId(sensor.ns, sensor.sniffIf);
  t.not(prog, null, 'attached by the job');
  await daemon.waitLog((l) => l.msg === 'job expired', 5000, 'expiry');
  t.is(await xdpProgId(sensor.ns, sensor.sniffIf), prog, 'still attached, same program, after the job ended');
  const sniff = (await status(daemon)).interfaces.find((i: { role: string }) => i.role === 'sniff');
  t.deepEqual([sniff.ifname, sniff.jobs, sniff.watched], [sensor.sniffIf, 0, false]);
  await daemon.stop();
  t.is(await xdpProgId(sensor.ns, sensor.sniffIf), null, 'detached when the daemon stops');
});

ptest.serial('--watch of a missing interface: the daemon starts, reports the fault in status, and attaches once the interface appears; a bad name is refused (64)', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const { sensor } = lab;
  const daemon = await startDaemon({ netns: sensor.ns, args: ['--watch', 'trwlate0'], config: { watch: [sensor.sniffIf] } });
  t.teardown(async () => void (await daemon.stop()));
  t.not(await xdpProgId(sensor.ns, sensor.sniffIf), null, 'config watch attached');
  await daemon.waitLog((l) => l.msg === 'watched interface not attached yet: retried while the daemon runs' && l.ifname === 'trwlate0', 5000, 'warning');
  const late = (await status(daemon)).interfaces.find((i: { ifname: string }) => i.ifname === 'trwlate0');
  t.is(late.up, false);
  t.true(late.watched);
  t.regex(late.fault, /trwlate0|does not exist|gone/);
  await lab.exec(sensor.ns, ['ip', 'link', 'add', 'trwlate0', 'type', 'veth', 'peer', 'name', 'trwlate1']);
  await lab.exec(sensor.ns, ['ip', 'link', 'set', 'trwlate0', 'up']);
  await lab.exec(sensor.ns, ['ip', 'link', 'set', 'trwlate1', 'up']);
  let id: number | null = null;
  for (let i = 0; i < 40 && id === null; i++) {
    await sleep(100);
    id = await xdpProgId(sensor.ns, 'trwlate0');
  }
  t.not(id, null, 'attached once it appeared');

  // SIGHUP with the file unchanged: --watch adds to the file's list on reload as at start, so nothing "changed".
  const hup = async (): Promise<Record<string, unknown>> => {
    const before = daemon.logs.length;
    daemon.child.kill('SIGHUP');
    return daemon.waitLog((l) => daemon.logs.indexOf(l) >= before && l.msg === 'configuration reloaded', 10_000, 'reload');
  };
  const same = await hup();
  t.deepEqual(same.needRestart, [], JSON.stringify(same));
  t.false(daemon.logs.some((l) => l.key === 'watch'), 'no "watch changed" warning for the --watch interface');
  // Positive control: a real change of the file's watch list needs a restart, and says so.
  writeFileSync(join(daemon.dir, 'config.json'), JSON.stringify({ watch: [sensor.sniffIf, 'trwlate1'] }));
  const changed = await hup();
  t.deepEqual(changed.needRestart, ['watch']);
  t.truthy(daemon.logs.find((l) => l.key === 'watch' && l.level === 40));
  const bad = await startDaemon({ netns: sensor.ns, args: ['--watch', 'bad name'], waitReady: false });
  const exit = await bad.wait();
  t.is(exit.code, 64, bad.stderr);
  t.regex(bad.stderr, /--watch\[\d\].*whitespace/);
});
