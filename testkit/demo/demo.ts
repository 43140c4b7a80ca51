/**
 * `make demo`: the product end to end, on a throwaway lab, narrated for
 * someone who has never seen it.
 *
 * A client talks to a server through a switch whose client port is
 * mirrored to a sensor. tcpresetd runs on the sensor. While an interactive
 * session and a download are in progress, an "alert" runs the seed's
 * command line through the real CLI; the demo then shows what the
 * endpoints' own kernels report: both ends of each session reset (with the
 * time from the command), a new connection reset before any data while the job lasts,
 * the job expiring, and a new connection working again. A bystander on the
 * same mirrored segment keeps its session throughout.
 *
 * Every step is verified; the exit status is 0 only if all of them
 * happened. Everything created is removed at the end, on failure and on
 * Ctrl-C (SIGINT/SIGTERM).
 */
import { createLab, type Lab, type LabHost } from '../lab/lab.js';
import { labPrefix, ownNetns } from '../lab/netns.js';
import { connectOnce, connectOutcome, spawnPeer, startClient, startServer, type Peer, type PeerEvent } from '../lab/peer-control.js';
import type { ListResult } from '../../src/control/protocol.js';
import { Narrator, fmtBytes, fmtMs } from './narrator.js';
import { sleep, wallMs } from '../time.js';
import { SensorDaemon } from '../daemon.js';

const ENGID = 'ids-sig-2024';
const DURATION_S = 8;
const INTERACTIVE_PORT = 2222;
const DOWNLOAD_PORT = 8080;
/** How long the endpoints may take to report their reset. */
const RESET_WAIT_MS = 5000;

interface Endpoint {
  label: string;
  peer: Peer;
  conn: string;
}

const n = new Narrator();
let lab: Lab | undefined;
let daemon: SensorDaemon | undefined;
let cleaning: Promise<boolean> | undefined;
let interrupted = false;
const peers: Peer[] = [];

async function cleanup(): Promise<boolean> {
  cleaning ??= (async () => {
    n.endLive();
    await Promise.all(peers.map((p) => p.kill().catch(() => {})));
    const stopped = daemon ? await daemon.stop().catch(() => ({ code: null, signal: null })) : null;
    await lab?.destroy().catch(() => {});
    daemon?.removeFiles();
    const left = await ownNetns().catch(() => ['?']);
    return left.length === 0 && (stopped === null || stopped.code === 0 || stopped.signal !== null);
  })();
  return cleaning;
}

function onSignal(sig: NodeJS.Signals): void {
  if (interrupted) return;
  interrupted = true;
  process.stdout.write(`\n${sig === 'SIGINT' ? 'Interrupted (Ctrl-C)' : `Got ${sig}`}: removing everything the demo created...\n`);
  void cleanup().then((ok) => {
    process.stdout.write(ok ? 'Removed. Nothing is left behind.\n' : `Cleanup incomplete: check \`ip netns list\` for ${labPrefix()}* namespaces.\n`);
    process.exit(130);
  });
}

function bytesOf(p: Peer): number {
  return p.lastProgress('c')?.rx ?? 0;
}

function echoesOf(p: Peer): number {
  return Math.floor(bytesOf(p) / 16);
}

/** The server side of a client connection: the server's accept event whose remote end is the client's local end. */
async function serverConn(server: Peer, client: Peer): Promise<string> {
  const c = await client.waitFor((e) => e.ev === 'connected', 5000, 'connected');
  const a = await server.waitFor((e) => e.ev === 'accept' && e.rport === c.lport && e.remote === c.local, 5000, 'accept');
  return a.conn!;
}

function firstError(ep: Endpoint, timeoutMs: number): Promise<PeerEvent | null> {
  return ep.peer
    .waitFor((e) => (e.ev === 'error' && e.conn === ep.conn) || (e.ev === 'close' && e.conn === ep.conn && e.hadError === true), timeoutMs, 'reset')
    .catch(() => ep.peer.errorOf(ep.conn) ?? null);
}

function topology(l: Lab): void {
  const h = l.hosts;
  const row = (x: LabHost, note: string): string => `${x.role.padEnd(10)} ${x.v4.padEnd(14)} ${note}`;
  n.info(row(h.client, 'the host an alert will name (its switch port is mirrored)'));
  n.info(row(h.server, 'serves an interactive session (port 2222) and a download (port 8080)'));
  n.info(row(h.bystander, 'another host on the mirrored segment, not targeted'));
  n.info(`${'sensor'.padEnd(10)} ${l.sensor.v4.padEnd(14)} sniff0 receives the mirror copies, reset0 (on the LAN) sends the RSTs`);
}

async function main(): Promise<number> {
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (process.getuid?.() !== 0) {
    process.stderr.write('make demo must run as root: it creates network namespaces, attaches an XDP program and sends raw packets.\n');
    return 77;
  }
  const started = Date.now();
  n.title('tcpreset demo: cut every TCP session of one host, seen from a mirror port, for a limited time');

  n.phase('Building a throwaway lab of network namespaces (removed at the end)');
  lab = await createLab();
  topology(lab);
  const { client, server: srv, bystander } = lab.hosts;

  n.phase('Starting tcpresetd, the reset service, on the sensor');
  daemon = await SensorDaemon.start(lab);
  n.check(true, 'tcpresetd is up and answers on its control socket', `pid ${daemon.pid}`);

  n.phase('Starting real TCP traffic');
  const server = await startServer(lab, srv.ns, [
    { port: INTERACTIVE_PORT, mode: 'echo' },
    { port: DOWNLOAD_PORT, mode: 'bulk' },
  ]);
  peers.push(server);
  const inter = await startClient(lab, client.ns, srv.v4, INTERACTIVE_PORT, 'interactive', { intervalMs: 50, reportMs: 200 });
  peers.push(inter);
  const dl = await startClient(lab, client.ns, srv.v4, DOWNLOAD_PORT, 'bulk', { reportMs: 200 });
  peers.push(dl);
  const bys = await startClient(lab, bystander.ns, srv.v4, INTERACTIVE_PORT, 'interactive', { intervalMs: 50, reportMs: 200 });
  peers.push(bys);
  const [interSrv, dlSrv, bysSrv] = await Promise.all([serverConn(server, inter), serverConn(server, dl), serverConn(server, bys)]);
  const ic = inter.events.find((e) => e.ev === 'connected')!;
  const dc = dl.events.find((e) => e.ev === 'connected')!;
  n.info(`interactive session  client ${ic.local}:${ic.lport} <-> server :${INTERACTIVE_PORT}  (a line every 50 ms, echoed back)`);
  n.info(`download             server :${DOWNLOAD_PORT} -> client ${dc.local}:${dc.lport}  (as fast as it goes)`);
  n.info(`bystander session    bystander ${bystander.v4} <-> server :${INTERACTIVE_PORT}`);
  const progressLine = (): string => {
    const p = dl.lastProgress('c');
    const rate = p?.mbps !== undefined ? ` at ${Math.round(p.mbps)} Mbit/s` : '';
    return `download ${fmtBytes(bytesOf(dl))}${rate} | interactive: ${echoesOf(inter)} lines echoed | bystander: ${echoesOf(bys)}`;
  };
  await dl.waitFor((e) => e.ev === 'progress' && e.mbps !== undefined, 5000, 'download progress');
  const before = { dl: bytesOf(dl), inter: echoesOf(inter) };
  const showUntil = Date.now() + 2500;
  while (Date.now() < showUntil) {
    n.live(progressLine(), 800);
    await sleep(200);
  }
  n.live(progressLine(), 0);
  n.endLive();
  n.check(bytesOf(dl) > before.dl && echoesOf(inter) > before.inter, 'traffic is flowing', `${fmtBytes(bytesOf(dl))} downloaded so far`);

  const endpoints: Endpoint[] = [
    { label: 'interactive session, client end', peer: inter, conn: 'c' },
    { label: 'interactive session, server end', peer: server, conn: interSrv },
    { label: 'download, client end', peer: dl, conn: 'c' },
    { label: 'download, server end', peer: server, conn: dlSrv },
  ];
  const waits = endpoints.map((ep) => firstError(ep, RESET_WAIT_MS + 2000));

  n.phase(`An alert names the client ${client.v4}; the playbook runs on the sensor:`);
  const args = [ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', client.v4, '-d', String(DURATION_S)];
  const cli = await daemon.cli(args);
  const t0 = cli.startedAt;
  n.command(`tcpreset ${args.join(' ')}`, cli.stdout + cli.stderr);
  n.info(`(for ${DURATION_S} s, every TCP packet of ${client.v4} seen on ${lab.sensor.sniffIf} is answered with resets to both ends, sent from ${lab.sensor.resetIf})`);
  const jobId = /job (\S+)/.exec(cli.stdout)?.[1];
  const job = (await daemon.call<ListResult>({ op: 'list' })).jobs.find((j) => j.id === jobId);
  const createdAt = job ? Date.parse(job.createdAt) : NaN;
  const expiresAt = job ? Date.parse(job.expiresAt) : NaN;
  n.check(cli.code === 0 && job !== undefined, 'job created', `${fmtMs(createdAt - t0)} after the command (the command returned after ${fmtMs(cli.exitedAt - t0)})`);

  const errs = await Promise.all(waits);
  const order = endpoints.map((ep, i) => ({ ep, ev: errs[i] })).sort((a, b) => (a.ev?.t ?? Infinity) - (b.ev?.t ?? Infinity));
  for (const { ep, ev } of order) {
    // Only ECONNRESET is a reset: a timeout or an unreachable host is some other failure.
    n.check(
      ev?.code === 'ECONNRESET',
      `${ep.label} reset`,
      ev ? `${fmtMs(ev.t - t0)} after the command, ${fmtMs(ev.t - createdAt)} after the job started (${ev.code ?? 'closed with an error but no code'})` : `no reset within ${RESET_WAIT_MS / 1000} s`,
    );
  }
  await sleep(300);
  n.info(`the download stopped at ${fmtBytes(bytesOf(dl))}; the bystander keeps going: ${echoesOf(bys)} lines echoed`);

  n.phase('While the job lasts, the client tries to open a new connection to the server');
  const attempt = await connectAttempt(lab, client.ns, srv.v4, INTERACTIVE_PORT, server);
  n.check(attempt.reset, 'new connection reset before any data', attempt.detail);
  const listed = await daemon.cli(['list']);
  n.command('tcpreset list', listed.stdout + listed.stderr);

  n.phase(`Waiting for the job to expire (-d ${DURATION_S}: ${DURATION_S} s after it started)`);
  let expiredAt: number | null = null;
  const deadline = (Number.isFinite(expiresAt) ? expiresAt : t0 + DURATION_S * 1000) + 5000;
  while (wallMs() < deadline) {
    const res = await daemon.request<ListResult>({ op: 'list' }, 2000).catch(() => null);
    const job = res?.ok ? res.result.jobs.find((j) => j.id === jobId) : undefined;
    if (res?.ok && !job) {
      expiredAt = wallMs();
      break;
    }
    if (job) n.live(`job ${job.id}: ${(job.remainingMs / 1000).toFixed(1)} s left, ${job.counters.rstsSent} RSTs sent so far`, 2000);
    await sleep(100);
  }
  n.endLive();
  n.check(
    expiredAt !== null,
    'job expired',
    expiredAt ? `${fmtMs(expiredAt - createdAt)} after it started (seen by polling every 100 ms)` : 'still listed 5 s past its end',
  );
  const listedAfter = await daemon.cli(['list']);
  n.command('tcpreset list', listedAfter.stdout + listedAfter.stderr);

  n.phase('After the job, the client tries again');
  const again = await connectOnce(lab, client.ns, srv.v4, INTERACTIVE_PORT, { timeoutMs: 3000, holdMs: 500 });
  n.check(again.ok === true, 'new connection succeeds', again.ok ? 'connected, echoed, held 0.5 s' : `failed: ${again.code}`);
  const bysErr = bys.errorOf('c') ?? server.errorOf(bysSrv);
  n.check(!bysErr && !bys.exit, 'the bystander session was never touched', bysErr ? `${bysErr.code} on ${bysErr.conn}` : `${echoesOf(bys)} lines echoed, no reset`);

  n.phase('Cleaning up: stopping the traffic and tcpresetd, deleting the namespaces');
  const failedLog = n.allOk ? '' : daemon.logTail(30);
  n.check(await cleanup(), 'everything the demo created is removed');

  const secs = ((Date.now() - started) / 1000).toFixed(1);
  n.line('');
  if (n.allOk) {
    n.line(`All ${n.steps.length} steps happened as shown, in ${secs} s.`);
    return 0;
  }
  n.line(`FAILED: ${n.failed.map((s) => s.text).join('; ')}`);
  if (failedLog) n.line(`tcpresetd log (last lines):\n${failedLog}`);
  return 1;
}

/**
 * One connection attempt from `ns`, judged by what both kernels and the
 * server's application say: reset = the handshake completed and the
 * connection was reset before its echo (ECONNRESET: a SYN draws one RST,
 * toward the server, so the client has the real SYN-ACK first), and the
 * server's application read no byte of it. A refusal, a timeout or an echo
 * is not what tcpreset does, and fails the step.
 */
async function connectAttempt(l: Lab, ns: string, host: string, port: number, server: Peer): Promise<{ reset: boolean; detail: string }> {
  const p = spawnPeer(l, ns, ['connect', '--host', host, '--port', String(port), '--timeout', '3000', '--hold', '0']);
  peers.push(p);
  try {
    const r = await p.waitFor((e) => e.ev === 'result', 10_000, 'result');
    const outcome = connectOutcome(r);
    // What the server's application read of it (0 when it never accepted it).
    const acc = r.lport === undefined ? undefined : server.events.find((e) => e.ev === 'accept' && e.lport === port && e.rport === r.lport);
    const close = acc ? await server.waitFor((e) => e.ev === 'close' && e.conn === acc.conn, 5000, 'server close').catch(() => null) : null;
    const read = acc ? (close?.rx ?? -1) : 0;
    if (outcome !== 'reset') return { reset: false, detail: `${outcome}: NOT what tcpreset does` };
    if (read !== 0) return { reset: false, detail: `reset, but the server read ${read < 0 ? 'an unknown number of' : read} bytes first` };
    const connected = p.events.find((e) => e.ev === 'connected');
    const err = p.events.find((e) => e.ev === 'error');
    const after = err && connected ? ` ${fmtMs(err.t - connected.t)} after the handshake,` : ' as the handshake completed,';
    return { reset: true, detail: `reset${after} the server read 0 bytes (ECONNRESET)` };
  } finally {
    await p.kill();
  }
}


main().then(
  (code) => {
    if (!interrupted) process.exit(code);
  },
  async (err: unknown) => {
    if (interrupted) return; // onSignal cleans up and exits 130
    n.endLive();
    process.stderr.write(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    if (daemon && !daemon.exited) process.stderr.write(`tcpresetd log (last lines):\n${daemon.logTail(30)}\n`);
    await cleanup();
    process.exit(1);
  },
);
