/**
 * Killing idle sessions at job creation (issue 9, step 3), through the real
 * bin/tcpresetd (--watch on the sniff interface) and bin/tcpreset in the
 * lab: a session that has sent nothing for 2 s and sends nothing after the
 * command is reset at both ends within 200 ms of the command returning,
 * from the flow memory alone (no segment of it crosses the mirror during
 * the job before the RSTs). Positive control: the same idle sessions are
 * alive before the job, and with -p a session of the same host on another
 * port survives until a job names it.
 */
import type { ExecutionContext } from 'ava';
import { ptest } from '../helpers/privileged.js';
import { cli, idleSession as labIdleSession, setupWatched, type Ctx, type IdleSession } from '../helpers/service-lab.js';
import { startDaemon } from '../../testkit/daemon.js';
import { createLab } from '../../testkit/lab/lab.js';
import { startClient, startServer, type Peer } from '../../testkit/lab/peer-control.js';
import { sleep } from '../../testkit/time.js';

const PORT_A = 5001;
const PORT_B = 5003;
/** Both ends reset within this long after the command returned. */
const BOUND_MS = 200;



/** A session client -> server:port that sends nothing after its handshake (a line every 10 minutes). */
function idleSession(ctx: Ctx, fam: 'v4' | 'v6', port: number): Promise<IdleSession> {
  return labIdleSession(ctx, ctx.lab.hosts.server[fam], port);
}

function alive(ctx: Ctx, s: { client: Peer; serverConn: string }): boolean {
  return s.client.errorOf('c') === undefined && ctx.server.errorOf(s.serverConn) === undefined;
}

async function expectReset(ctx: Ctx, s: { client: Peer; serverConn: string }, returnedAt: number, what: string): Promise<void> {
  const { t, server } = ctx;
  const c = await s.client.waitFor((e) => e.ev === 'error' && e.conn === 'c', 3000, `client reset (${what})`);
  const sv = await server.waitFor((e) => e.ev === 'error' && e.conn === s.serverConn, 3000, `server reset (${what})`);
  t.is(c.code, 'ECONNRESET', `${what}: client end`);
  t.is(sv.code, 'ECONNRESET', `${what}: server end`);
  const worst = Math.max(c.t, sv.t) - returnedAt;
  t.log(`${what}: client reset ${(c.t - returnedAt).toFixed(1)} ms, server ${(sv.t - returnedAt).toFixed(1)} ms after the command returned`);
  t.true(worst <= BOUND_MS, `${what}: both ends reset ${worst.toFixed(1)} ms after the command returned (bound ${BOUND_MS} ms)`);
}

for (const fam of ['v4', 'v6'] as const) {
  ptest.serial(`${fam}: idle sessions are reset at job creation from the flow memory; -p spares the host's idle session on another port until a job names it`, async (t) => {
    const lab = await createLab();
    t.teardown(() => lab.destroy());
    const daemon = await startDaemon({ netns: lab.ns.sensor, args: ['--watch', lab.sensor.sniffIf], config: { summaryIntervalMs: 1000 } });
    t.teardown(async () => void (await daemon.stop()));
    const server = await startServer(lab, lab.ns.server, [{ port: PORT_A, mode: 'echo' }, { port: PORT_B, mode: 'echo' }]);
    const ctx: Ctx = { t, lab, daemon, server };
    const a = await idleSession(ctx, fam, PORT_A);
    const b = await idleSession(ctx, fam, PORT_B);
    await sleep(2000);
    t.true(alive(ctx, a) && alive(ctx, b), 'positive control: idle for 2 s without a job, both sessions alive');

    const host = lab.hosts.client[fam];
    const r1 = await cli(ctx, ['ENG-IDLE', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-p', String(PORT_A), '-d', '30']);
    t.is(r1.code, 0, r1.stderr);
    await expectReset(ctx, a, r1.endedAt, `${fam} idle session on port ${PORT_A}`);
    t.true(r1.stdout.includes(`\n1 remembered session of ${host} port ${PORT_A} reset at once\n`), r1.stdout);
    const swept = await daemon.waitLog((l) => l.msg === 'flows reset from flow memory', 2000, 'sweep line');
    t.is(swept.flows, 1, 'one open connection of the host on that port remembered');
    t.true((swept.rsts as number) === 2 && (swept.probes as number) === 2, JSON.stringify(swept));
    const line = await daemon.waitLog((l) => l.msg === 'flow reset' && l.atCreate === true, 2000, 'flow reset line');
    t.true([line.flow as { sport: number; dport: number }].some((f) => f.sport === PORT_A || f.dport === PORT_A));
    await sleep(1000);
    t.true(alive(ctx, b), `-p ${PORT_A}: the host's idle session on port ${PORT_B} survives`);

    const r2 = await cli(ctx, ['ENG-IDLE', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-d', '30', '--json']);
    t.is(r2.code, 0, r2.stderr);
    await expectReset(ctx, b, r2.endedAt, `${fam} idle session on port ${PORT_B}`);
    // The port-5001 session is closed (its RSTs crossed the mirror): only the other one was open.
    t.deepEqual(JSON.parse(r2.stdout).flows, { known: 1, reset: 1 });
  });
}

ptest.serial('without --watch the flow memory starts with the first job: an idle session from before it is not reset at creation, nor by a later job while it stays silent (it waits for its next segment)', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  // Debug: a sweep that finds nothing says so at debug level only.
  const daemon = await startDaemon({ netns: lab.ns.sensor, config: { summaryIntervalMs: 1000 }, args: ['--log-level', 'debug'] });
  t.teardown(async () => void (await daemon.stop()));
  const server = await startServer(lab, lab.ns.server, [{ port: PORT_A, mode: 'echo' }, { port: PORT_B, mode: 'echo' }]);
  const ctx: Ctx = { t, lab, daemon, server };
  const a = await idleSession(ctx, 'v4', PORT_A);
  const host = lab.hosts.client.v4;
  const r1 = await cli(ctx, ['ENG', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-p', String(PORT_B), '-d', '30']);
  t.is(r1.code, 0, r1.stderr);
  await sleep(1000);
  t.true(alive(ctx, a), 'nothing remembered it: alive');
  // Attached now (the first job), but the idle session sent nothing since: still unknown.
  const r2 = await cli(ctx, ['ENG', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-p', String(PORT_A), '-d', '30']);
  t.is(r2.code, 0, r2.stderr);
  await sleep(1000);
  t.true(alive(ctx, a), 'still unknown to the flow memory: alive');
  const sweeps = daemon.logs.filter((l) => l.msg === 'flows reset from flow memory');
  t.deepEqual(sweeps.map((l) => l.flows), [0, 0]);
  t.true(r2.stdout.includes(`\n0 remembered sessions of ${host} port ${PORT_A} reset at once\n`), r2.stdout);
});

/** One idle session, a job on its host: both ends reset from the flow memory within the bound. */
async function idleKilledAtCreate(t: ExecutionContext, fam: 'v4' | 'v6', mode: 'l3' | 'l2', labOpts: Parameters<typeof createLab>[0] = {}): Promise<void> {
  const ctx = await setupWatched(t, labOpts, [PORT_A]);
  const { lab } = ctx;
  const s = await idleSession(ctx, fam, PORT_A);
  await sleep(2000);
  t.true(alive(ctx, s), 'positive control: alive after 2 s idle without a job');
  const r = await cli(ctx, ['ENG', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', lab.hosts.client[fam], '-d', '30', ...(mode === 'l2' ? ['--l2'] : [])]);
  t.is(r.code, 0, r.stderr);
  await expectReset(ctx, s, r.endedAt, `${fam} ${mode}${labOpts.vlanMirror ? ` VLAN ${labOpts.vlanMirror}` : ''} idle session`);
}

ptest.serial('layer-2 injection: an idle session is reset at creation (MACs from the flow memory)', (t) => idleKilledAtCreate(t, 'v4', 'l2'));
ptest.serial('802.1Q-tagged mirror, layer-3 injection: an idle session is reset at creation', (t) => idleKilledAtCreate(t, 'v4', 'l3', { vlanMirror: 100 }));
ptest.serial('802.1Q-tagged mirror, layer-2 injection through a VLAN access port: an idle session is reset at creation (tag from the flow memory)', (t) =>
  idleKilledAtCreate(t, 'v4', 'l2', { vlanMirror: 100, resetAccessVlan: true }),
);
ptest.serial('IPv6, layer-2 injection: an idle session is reset at creation', (t) => idleKilledAtCreate(t, 'v6', 'l2'));

ptest.serial('an interactive session (a line every 500 ms) is reset at both ends at creation, before its next line is due', async (t) => {
  const ctx = await setupWatched(t, {}, [PORT_A]);
  const { lab, daemon, server } = ctx;
  const client = await startClient(lab, lab.ns.client, lab.hosts.server.v4, PORT_A, 'interactive', { intervalMs: 500, reportMs: 50 });
  const c = await client.waitFor((e) => e.ev === 'connected', 5000, 'connected');
  const acc = await server.waitFor((e) => e.ev === 'accept' && e.rport === c.lport, 5000, 'accept');
  // Just after a line was echoed: the next one is due ~500 ms later.
  await client.waitFor((e) => e.ev === 'progress' && (e.rx ?? 0) >= 32, 5000, 'two echoes');
  const r = await cli(ctx, ['ENG', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', lab.hosts.client.v4, '-d', '30']);
  t.is(r.code, 0, r.stderr);
  const s = { client, serverConn: acc.conn! };
  await expectReset(ctx, s, r.endedAt, 'interactive session (500 ms)');
  const swept = await daemon.waitLog((l) => l.msg === 'flows reset from flow memory', 2000, 'sweep line');
  t.is(swept.flows, 1, 'reset by the sweep, not by its next line');
});

ptest.serial("-h SERVER -p its own service port matches nothing (-p is HOST's remote port): the create warns on stderr, naming the peer, and the session survives; with the peer's port no warning and the session is reset", async (t) => {
  const ctx = await setupWatched(t, {}, [PORT_B]);
  const { lab, daemon } = ctx;
  const s = await idleSession(ctx, 'v4', PORT_B);
  await sleep(500);
  const host = lab.hosts.server.v4;
  const peer = lab.hosts.client.v4;

  const r1 = await cli(ctx, ['ENG-OWN', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-p', String(PORT_B), '-d', '30', '--wait', '2']);
  t.is(r1.code, 0, r1.stderr);
  t.is(r1.stderr, `tcpreset: warning: -p ${PORT_B} is the remote port of HOST; ${host} has 1 known session on its own port ${PORT_B} (with ${peer}): ` +
    `to cut it use -h ${peer} -p ${PORT_B}, or -h ${host} without -p\n`);
  const logged = await daemon.waitLog((l) => typeof l.msg === 'string' && l.msg.startsWith(`-p ${PORT_B} is the remote port of HOST`), 2000, 'warning log line');
  t.deepEqual(logged.ownPort, { sessions: 1, peers: [peer] });
  await sleep(1000);
  t.true(alive(ctx, s), 'the job matches only the server\'s peer port 5003: the session on the server\'s own port 5003 survives');

  // Positive control: the same session named by the peer's port (the client's ephemeral port): no warning, reset.
  const r2 = await cli(ctx, ['ENG-PEER', '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-p', String(s.lport), '-d', '30']);
  t.is(r2.code, 0, r2.stderr);
  t.is(r2.stderr, '', 'no warning when -p matched');
  await expectReset(ctx, s, r2.endedAt, 'session named by the peer port');
});
