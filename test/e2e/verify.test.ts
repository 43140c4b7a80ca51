/**
 * Proving each kill (issue 9, verification and --wait), through the real
 * bin/tcpresetd (--watch on the sniff interface) and bin/tcpreset in the
 * lab, with real idle TCP sessions: after the create-time sweep, an end is
 * verified dead when the mirror shows it answering our out-of-window ACK
 * probe with a RST whose seq is the probe's ack (what only a socket that is
 * gone sends: RFC 793 §3.4, tcp_v4_send_reset). Positive control: a server
 * whose namespace drops every incoming RST (a tc program of the lab object on its eth0 ingress)
 * keeps its socket, answers the probe with a duplicate ACK, so the flow is
 * never verified: --wait names it on stderr as a warning and exits 0 (the job stands).
 */
import { ptest } from '../helpers/privileged.js';
import { ECHO_PORT, cli, idleSession as labIdleSession, setupWatched as setup, type Ctx, type IdleSession } from '../helpers/service-lab.js';
import { defaultVlanObjectPath } from '../../testkit/lab/lab.js';
import { nsArgv, run } from '../../testkit/lab/netns.js';
import { sleep } from '../../testkit/time.js';

const PORT = ECHO_PORT;



/** A session client -> server:PORT that sends nothing after its handshake (lport: its client port). */
function idleSession(ctx: Ctx): Promise<IdleSession> {
  return labIdleSession(ctx, ctx.lab.hosts.server.v4, PORT);
}

ptest.serial('--wait: 3 idle sessions are reset at creation and all 3 confirmed dead (each end answered its probe with a RST); exit 0', async (t) => {
  const ctx = await setup(t);
  const { lab, daemon, server } = ctx;
  const sessions = [await idleSession(ctx), await idleSession(ctx), await idleSession(ctx)];
  await sleep(1000);
  t.true(sessions.every((s) => s.client.errorOf('c') === undefined && server.errorOf(s.serverConn) === undefined), 'positive control: all alive before the job');
  const host = lab.hosts.client.v4;
  const r = await cli(ctx, ['ENG-WAIT', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-d', '30', '--wait', '2']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  t.true(r.stdout.endsWith(`\n3 sessions of ${host} reset, 3 confirmed dead\n`), r.stdout);
  // The command's own time includes loading the data plane (the daemon's first job): seconds on a loaded machine.
  t.log(`command took ${(r.endedAt - r.startedAt).toFixed(0)} ms with --wait 2`);
  for (const s of sessions) {
    const c = await s.client.waitFor((e) => e.ev === 'error' && e.conn === 'c', 3000, 'client reset');
    const sv = await server.waitFor((e) => e.ev === 'error' && e.conn === s.serverConn, 3000, 'server reset');
    t.is(c.code, 'ECONNRESET');
    t.is(sv.code, 'ECONNRESET');
  }
  const settled = await daemon.waitLog((l) => l.msg === 'sweep outcome settled', 3000, 'settled line');
  t.like(settled, { known: 3, reset: 3, verified: 3, why: 'settled' });
  t.log(`all 3 verified ${String(settled.ms)} ms after the sweep`);
  // The job's counters: in list (--json and columns) and status.
  const list = await cli(ctx, ['list', '--json']);
  const job = (JSON.parse(list.stdout) as { jobs: { counters: Record<string, unknown> }[] }).jobs[0]!;
  t.like(job.counters, { known: 3, verified: 3, flows: 3 });
  const human = (await cli(ctx, ['list'])).stdout.split('\n');
  const cols = human[0]!.split(/\s+/);
  const row = human[1]!.split(/\s+/);
  t.deepEqual([row[cols.indexOf('KNOWN')], row[cols.indexOf('VERIFIED')]], ['3', '3'], human.join('\n'));
  const status = JSON.parse((await cli(ctx, ['status', '--json'])).stdout) as { sweep: Record<string, number> };
  t.like(status.sweep, { known: 3, verified: 3 });
});

ptest.serial('--wait --json: a server that drops every RST keeps its socket, so its flow is never confirmed: exit 0 with a warning naming the flow on stderr, flows.verified 0', async (t) => {
  const ctx = await setup(t);
  const { lab, daemon, server } = ctx;
  const s = await idleSession(ctx);
  // The server's end refuses our RSTs (before its TCP sees them); the mirror copy is taken at the switch.
  await run(nsArgv(lab.ns.server, ['tc', 'qdisc', 'add', 'dev', 'eth0', 'clsact']));
  await run(nsArgv(lab.ns.server, ['tc', 'filter', 'add', 'dev', 'eth0', 'ingress', 'bpf', 'da', 'obj', defaultVlanObjectPath(), 'sec', 'tc/drop_rst']));
  await sleep(1000);
  const host = lab.hosts.client.v4;
  const r = await cli(ctx, ['ENG-WAIT', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-d', '30', '--wait', '1.5', '--json']);
  t.is(r.code, 0, r.stderr);
  const flow = `${host}:${s.lport}-${lab.hosts.server.v4}:${PORT}`;
  const out = JSON.parse(r.stdout) as { flows: unknown };
  t.deepEqual(out.flows, { known: 1, reset: 1, verified: 0, unverified: [flow] });
  t.is(r.stderr, `tcpreset: warning: 1 session reset but not confirmed dead in time: ${flow}\n`);
  t.true(r.endedAt - r.startedAt >= 1500, `waited the whole bound: ${(r.endedAt - r.startedAt).toFixed(0)} ms`);
  // Why it could not be confirmed: the server's socket is alive (the client's end died).
  await s.client.waitFor((e) => e.ev === 'error' && e.conn === 'c', 3000, 'client reset');
  await sleep(300);
  t.is(server.errorOf(s.serverConn), undefined, 'the server end, which drops RSTs, is still open');
  const settled = await daemon.waitLog((l) => l.msg === 'sweep outcome settled: not every reset flow is confirmed dead', 8000, 'settled line');
  t.like(settled, { known: 1, reset: 1, verified: 0, why: 'window over', unverified: [flow] });
  const job = (JSON.parse((await cli(ctx, ['list', '--json'])).stdout) as { jobs: { counters: Record<string, unknown> }[] }).jobs[0]!;
  t.is(job.counters.known, 1);
  t.is(job.counters.verified, undefined, 'none verified: the counter is absent');
});

ptest.serial('--wait, the mirror seeing both ends: a client that takes no TCP at all keeps its socket and never answers; what we send toward the server (and the event path\'s answers to the copies of our probes) must not pass for its answer: flows.verified 0, a warning naming the flow', async (t) => {
  const ctx = await setup(t, { mirrorServer: true });
  const { lab } = ctx;
  const s = await idleSession(ctx);
  await run(nsArgv(lab.ns.client, ['tc', 'qdisc', 'add', 'dev', 'eth0', 'clsact']));
  await run(nsArgv(lab.ns.client, ['tc', 'filter', 'add', 'dev', 'eth0', 'ingress', 'bpf', 'da', 'obj', defaultVlanObjectPath(), 'sec', 'tc/drop_tcp']));
  await sleep(1000);
  const host = lab.hosts.client.v4;
  const r = await cli(ctx, ['ENG-WAIT', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-d', '30', '--wait', '1.5', '--json']);
  const flow = `${host}:${s.lport}-${lab.hosts.server.v4}:${PORT}`;
  t.deepEqual((JSON.parse(r.stdout) as { flows: unknown }).flows, { known: 1, reset: 1, verified: 0, unverified: [flow] }, r.stderr);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, `tcpreset: warning: 1 session reset but not confirmed dead in time: ${flow}\n`);
  const sv = await ctx.server.waitFor((e) => e.ev === 'error' && e.conn === s.serverConn, 3000, 'server reset');
  t.is(sv.code, 'ECONNRESET', 'positive control: the server end, which takes RSTs, is reset');
  await sleep(300);
  t.is(s.client.errorOf('c'), undefined, 'the client end, which takes nothing, is still open');
});
