/**
 * MPTCP sessions (issue 10 §3): real MPTCP sockets at both ends
 * (testkit/lab/mptcp_peer.py: socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)),
 * the real daemon and CLI in the sensor namespace, the endpoints' kernels
 * giving the verdict.
 *
 * Resetting an MPTCP subflow does not end the MPTCP connection: the
 * application's socket stays ESTABLISHED with no subflow (or goes on over
 * another one). Only an MP_FASTCLOSE carrying the receiver's key (RFC 8684
 * §3.5) closes the connection with an error at each end, so the daemon must
 * have seen the keys (MP_CAPABLE, §3.1) and tie the subflows together by
 * token (MP_JOIN, §3.2). Without keys it can only reset the subflows it
 * sees, and says so.
 */
import { ptest } from '../helpers/privileged.js';
import { sleep, wallMs } from '../../testkit/time.js';
import { startDaemon } from '../../testkit/daemon.js';
import { createLab, type Lab } from '../../testkit/lab/lab.js';
import { startMptcpClient, startMptcpServer, type Peer } from '../../testkit/lab/peer-control.js';
import { cli, createArgs, jsonCli, type Ctx } from '../helpers/service-lab.js';
import type { ExecutionContext } from 'ava';

const PORT = 5002;
const NO_KEYS = 'MPTCP: connection-level close not possible (keys not seen)';

async function mptcpLab(t: ExecutionContext, watch: boolean): Promise<Ctx> {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  // Two subflows per connection at most; the server accepts joins. The client's second address
  // (.11) is an endpoint its path manager opens a subflow from (ip-mptcp(8)).
  for (const ns of [lab.ns.client, lab.ns.server, lab.ns.bystander]) {
    await lab.exec(ns, ['ip', 'mptcp', 'limits', 'set', 'subflows', '2', 'add_addr_accepted', '2']);
  }
  const daemon = await startDaemon({ netns: lab.ns.sensor, args: watch ? ['--watch', lab.sensor.sniffIf] : [], config: { summaryIntervalMs: 1000 } });
  t.teardown(async () => {
    await daemon.stop();
  });
  const server = await startMptcpServer(lab, lab.ns.server, PORT);
  return { t, lab, daemon, server };
}

function secondAddress(lab: Lab): string {
  return lab.hosts.client.v4.replace(/\.\d+$/, '.11');
}

async function addSecondSubflow(lab: Lab): Promise<string> {
  const a2 = secondAddress(lab);
  await lab.exec(lab.ns.client, ['ip', 'addr', 'add', `${a2}/24`, 'dev', 'eth0']);
  await lab.exec(lab.ns.client, ['ip', 'mptcp', 'endpoint', 'add', a2, 'dev', 'eth0', 'subflow']);
  return a2;
}

/** TCP subflows (ESTABLISHED) of the client's namespace toward the server's MPTCP port. */
async function subflows(lab: Lab): Promise<string[]> {
  const r = await lab.exec(lab.ns.client, ['ss', '-Htn', 'state', 'established', `dport = :${PORT}`]);
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

interface MpSession {
  client: Peer;
  serverConn: string;
}

async function mpSession(ctx: Ctx, bind?: string, ns = ctx.lab.ns.client): Promise<MpSession> {
  const client = await startMptcpClient(ctx.lab, ns, ctx.lab.hosts.server.v4, PORT, bind);
  const c = await client.waitFor((e) => e.ev === 'connected', 5000, 'connected');
  ctx.t.true(c.mptcp, 'the client socket is MPTCP');
  const acc = await ctx.server.waitFor((e) => e.ev === 'accept' && e.rport === c.lport, 5000, 'accept');
  ctx.t.true(acc.mptcp, 'the server socket is MPTCP');
  await client.waitFor((e) => e.ev === 'progress' && (e.rx ?? 0) >= 64, 5000, 'echoes');
  return { client, serverConn: acc.conn! };
}

/**
 * A lab with a second client address, a bystander MPTCP session (the control) and a client
 * session bound to the first address, waited for until its second subflow (from `a2`) is up.
 */
async function twoSubflows(t: ExecutionContext): Promise<{ ctx: Ctx; lab: Lab; a2: string; control: MpSession; s: MpSession }> {
  const ctx = await mptcpLab(t, true);
  const { lab } = ctx;
  const a2 = await addSecondSubflow(lab);
  const control = await mpSession(ctx, undefined, lab.ns.bystander);
  const s = await mpSession(ctx, lab.hosts.client.v4);
  const deadline = wallMs() + 5000;
  while ((await subflows(lab)).length < 2 && wallMs() < deadline) await sleep(50);
  return { ctx, lab, a2, control, s };
}


/** On a failure: the daemon's flow lines and the endpoints' RST/MPTCP counters (nstat), for the log. */
async function diagnose(ctx: Ctx): Promise<void> {
  const { t, lab } = ctx;
  t.log(ctx.daemon.logs.filter((l) => /flow|MPTCP|sweep/.test(String(l.msg))).map((l) => JSON.stringify(l)).join('\n'));
  t.log('subflows:', (await subflows(lab)).join('\n'));
  for (const ns of [lab.ns.client, lab.ns.server]) {
    const r = await lab.exec(ns, ['nstat', '-az']);
    t.log(ns, r.stdout.split('\n').filter((l) => /Fastclose|Challenge|Rst|PAWS|MPTcpExt/i.test(l) && !/\s0\s+0\.0$/.test(l)).join('\n'));
  }
}

/** Both applications got an error (not EOF) within boundMs of `after`. */
async function expectBothError(ctx: Ctx, s: MpSession, after: number, what: string, boundMs = 1000): Promise<void> {
  try {
    await bothError(ctx, s, after, what, boundMs);
  } catch (err) {
    await diagnose(ctx);
    throw err;
  }
}

async function bothError(ctx: Ctx, s: MpSession, after: number, what: string, boundMs: number): Promise<void> {
  const { t, server } = ctx;
  const c = await s.client.waitFor((e) => (e.ev === 'error' || e.ev === 'eof') && e.conn === 'c', 5000, `client error (${what})`);
  const sv = await server.waitFor((e) => (e.ev === 'error' || e.ev === 'eof') && e.conn === s.serverConn, 5000, `server error (${what})`);
  t.is(c.ev, 'error', `${what}: client end`);
  t.is(sv.ev, 'error', `${what}: server end`);
  t.is(c.code, 'ECONNRESET', `${what}: client end`);
  t.is(sv.code, 'ECONNRESET', `${what}: server end`);
  const worst = Math.max(c.t, sv.t) - after;
  t.true(worst < boundMs, `${what}: both applications failed ${worst.toFixed(1)} ms after the CLI started`);
  t.log(`${what}: client error +${(c.t - after).toFixed(1)} ms, server +${(sv.t - after).toFixed(1)} ms after the CLI started`);
}

/** The control session still carries data. */
async function expectAlive(ctx: Ctx, s: MpSession, what: string): Promise<void> {
  const before = s.client.events.filter((e) => e.ev === 'progress').at(-1)?.rx ?? 0;
  await s.client.waitFor((e) => e.ev === 'progress' && (e.rx ?? 0) >= before + 64, 3000, `${what} still flowing`);
  ctx.t.is(s.client.events.find((e) => e.ev === 'error' || e.ev === 'eof'), undefined, `${what}: no error`);
}

ptest.serial('MPTCP, one subflow, keys seen (--watch): RST + MP_FASTCLOSE end both applications with ECONNRESET; the bystander session survives', async (t) => {
  const ctx = await mptcpLab(t, true);
  const { lab } = ctx;
  const control = await mpSession(ctx, undefined, lab.ns.bystander);
  const s = await mpSession(ctx);
  t.is((await subflows(lab)).length, 1);
  const r = await cli(ctx, createArgs(ctx, 'ENG-MP1', lab.hosts.client.v4, 30));
  t.is(r.code, 0, r.stderr);
  await expectBothError(ctx, s, r.startedAt, 'one subflow');
  await expectAlive(ctx, control, 'bystander MPTCP session');
  t.deepEqual(await subflows(lab), [], 'no subflow left');
  const line = await ctx.daemon.waitLog((l) => l.msg === 'flow reset', 2000, 'flow reset line');
  t.is((line as { mptcp?: string }).mptcp, 'MP_FASTCLOSE sent', JSON.stringify(line));
});

ptest.serial('MPTCP, two subflows, job on the client\'s first address only: the connection dies (both applications ECONNRESET) and the subflow on the untargeted address is reset too', async (t) => {
  const { ctx, lab, a2, control, s } = await twoSubflows(t);
  const two = await subflows(lab);
  t.is(two.length, 2, two.join('\n'));
  t.true(two.some((l) => l.includes(a2)), `a subflow from ${a2}: ${two.join("\n")}`);
  const r = await cli(ctx, createArgs(ctx, 'ENG-MP2', lab.hosts.client.v4, 30));
  t.is(r.code, 0, r.stderr);
  await expectBothError(ctx, s, r.startedAt, 'two subflows');
  await expectAlive(ctx, control, 'bystander MPTCP session');
  t.deepEqual(await subflows(lab), [], 'no subflow left, the untargeted one included');
  const line = await ctx.daemon.waitLog((l) => l.msg === 'flow reset', 2000, 'flow reset line');
  // The peers' own MP_FASTCLOSE may close the second subflow before the daemon gets to it: then it is not counted.
  t.log(`flow reset: mptcp=${String(line.mptcp)} mptcpSubflows=${String(line.mptcpSubflows ?? 0)}`);
  t.is(line.mptcp, 'MP_FASTCLOSE sent');
});

ptest.serial('MPTCP, two subflows, job on the client\'s second (joined) address only: the MP_JOIN subflow is tied to its connection by token, and the first subflow (not on the job\'s address) gets RSTs with MP_FASTCLOSE from the flow memory', async (t) => {
  const { ctx, lab, a2, control, s } = await twoSubflows(t);
  t.is((await subflows(lab)).length, 2);
  const r = await cli(ctx, createArgs(ctx, 'ENG-MPJ', a2, 30));
  t.is(r.code, 0, r.stderr);
  const line = await ctx.daemon.waitLog((l) => l.msg === 'flow reset' && l.engid === 'ENG-MPJ', 3000, 'flow reset line');
  const f = line as { mptcp?: string; mptcpSubflows?: number };
  t.is(f.mptcp, 'MP_FASTCLOSE sent', JSON.stringify(line));
  t.is(f.mptcpSubflows, 1, 'the first subflow was tied to the joined one by token and reset with MP_FASTCLOSE');
  t.is(ctx.daemon.logs.filter((l) => l.msg === NO_KEYS).length, 0, 'no keys-not-seen warning: the keys were seen on the first subflow');
  // Not asserted (docs/design.md "MPTCP", left open): these RSTs have no probe or job behind them, and in the
  // lab the connection died within a second in 5 of 8 runs; the others left the first subflow established.
  const c = await s.client.waitFor((e) => (e.ev === 'error' || e.ev === 'eof') && e.conn === 'c', 2000, 'client error').catch(() => null);
  t.log(`joined address: client ${c ? `${c.ev} ${c.code ?? ''} +${(c.t - r.startedAt).toFixed(1)} ms` : 'alive after 2 s'}`);
  await expectAlive(ctx, control, 'bystander MPTCP session');
});

ptest.serial('MPTCP, keys not seen (job after the handshake, no --watch): every subflow seen is reset, and the flow reset line, list and status say the connection cannot be closed', async (t) => {
  const ctx = await mptcpLab(t, false);
  const { lab, daemon } = ctx;
  // The XDP program attaches with the first job: a job elsewhere lets the control session's keys
  // go unseen too, and the data plane is already attached when the target job comes.
  const control = await mpSession(ctx, undefined, lab.ns.bystander);
  const s = await mpSession(ctx);
  const r = await cli(ctx, createArgs(ctx, 'ENG-MP3', lab.hosts.client.v4, 30));
  t.is(r.code, 0, r.stderr);
  const line = await daemon.waitLog((l) => l.msg === 'flow reset', 3000, 'flow reset line');
  t.is((line as { mptcp?: string }).mptcp, NO_KEYS, JSON.stringify(line));
  const warn = await daemon.waitLog((l) => l.level === 40 && l.msg === NO_KEYS, 3000, 'warning');
  t.is(warn.engid, 'ENG-MP3');
  const deadline = wallMs() + 2000;
  while ((await subflows(lab)).length > 0 && wallMs() < deadline) await sleep(50);
  t.deepEqual(await subflows(lab), [], 'the subflow was reset');
  const job = (await jsonCli(ctx, ['list'])).jobs.find((j: { engid: string }) => j.engid === 'ENG-MP3');
  t.true(job.counters.mptcpNoKeys >= 1, JSON.stringify(job.counters));
  t.is(job.fault, NO_KEYS);
  const st = await jsonCli(ctx, ['status']);
  t.true(JSON.stringify(st).includes(NO_KEYS), 'status shows it');
  // What the applications see (the documented limit): no error within a second, data stopped.
  await sleep(1000);
  const rx = s.client.events.filter((e) => e.ev === 'progress').at(-1)?.rx ?? 0;
  await sleep(500);
  const rx2 = s.client.events.filter((e) => e.ev === 'progress').at(-1)?.rx ?? 0;
  t.is(rx2, rx, 'no data flows once the subflow is gone');
  t.log(`keys not seen: client ${JSON.stringify(s.client.events.find((e) => e.ev === 'error' || e.ev === 'eof') ?? 'no error, hung')}`);
  await expectAlive(ctx, control, 'bystander MPTCP session');
});
