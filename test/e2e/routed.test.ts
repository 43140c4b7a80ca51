/**
 * RSTs the kernel cannot deliver (issue 10 §1): the server sits behind a
 * router, the sensor's reset interface has no route to the server's
 * network. In l3 mode the raw socket is bound to reset0, so without the
 * check the kernel would take the server for on-link, ARP for it and drop
 * the RST silently while the job counted it as sent. The real daemon and
 * CLI run in the sensor namespace; the endpoints' kernels give the verdict.
 */
import { ptest } from '../helpers/privileged.js';
import { sleep } from '../../testkit/time.js';
import { Capture } from '../../testkit/capture.js';
import { cli, createArgs, expectKilled, jsonCli, session, setup } from '../helpers/service-lab.js';

ptest.serial('routed peer: l3 without a route resets the client only and says why (warning, undeliverable counter, faults); --l2 and l3 with a route kill both ends', async (t) => {
  const ctx = await setup(t, { routedServer: true });
  const { lab, daemon } = ctx;
  const server = lab.hosts.server.v4;
  const client = lab.hosts.client.v4;
  const fix = `no route from ${lab.sensor.resetIf} to ${server}: add a route through your gateway on ${lab.sensor.resetIf}, or use --l2`;

  // Creating a job on a host the reset interface cannot route to: created, with a warning.
  const far = await cli(ctx, createArgs(ctx, 'ENG-FAR', server, 30, ['-p', '9']));
  t.is(far.code, 0, far.stderr);
  t.true(far.stderr.includes(`tcpreset: warning: ${fix}`), far.stderr);
  t.is((await cli(ctx, ['cancel', 'ENG-FAR', '-i', lab.sensor.sniffIf, '-h', server, '-p', '9'])).code, 0);

  // 1. l3, no route: the client dies; the server's RSTs are undeliverable, so none leaves reset0
  // (nor the ARP request the kernel's on-link guess would make). The server itself may still see a
  // reset: from the client's kernel, answering an echo that was in flight when the client died.
  const s1 = await session(ctx, server);
  const cap1 = await Capture.start(lab, lab.ns.sensor, lab.sensor.resetIf, ['dst', 'host', server, 'or', 'arp', 'host', server]);
  const r1 = await cli(ctx, createArgs(ctx, 'ENG-L3', client, 30));
  t.is(r1.code, 0, r1.stderr);
  t.false(r1.stderr.includes('warning'), `the client itself is on link: no warning at create (${r1.stderr})`);
  const c1 = await s1.client.waitFor((e) => e.ev === 'error' && e.conn === 'c', 3000, 'client reset');
  t.is(c1.code, 'ECONNRESET');
  const warn = await daemon.waitLog((l) => l.level === 40 && l.msg === fix, 3000, 'undeliverable warning');
  t.is(warn.dst, server);
  await sleep(1500);
  t.deepEqual(await cap1.stop(), [], 'nothing for the server left reset0: no RST, no ARP request');
  t.is(daemon.logs.filter((l) => l.msg === fix).length, 1, 'one warning per destination');
  const job1 = (await jsonCli(ctx, ['list'])).jobs.find((j: { engid: string }) => j.engid === 'ENG-L3');
  t.true(job1.counters.undeliverable > 0, JSON.stringify(job1.counters));
  t.true(job1.counters.rstsSent > 0, 'the client RSTs were sent');
  t.is(job1.fault, fix);
  const human = await cli(ctx, ['list']);
  t.regex(human.stdout, /UNDELIVERABLE/);
  // An l2 job on the same reset interface (on the server's port 9: it matches nothing): l2 needs no route, so
  // its row shows no fault (it showed the l3 row's "... or use --l2").
  t.is((await cli(ctx, createArgs(ctx, 'ENG-L2-IDLE', server, 30, ['-p', '9', '--l2']))).code, 0);
  const st = await jsonCli(ctx, ['status']);
  const row = (mode: string) => st.interfaces.find((i: { ifname: string; role: string; mode: string }) => i.ifname === lab.sensor.resetIf && i.role === 'reset' && i.mode === mode);
  const reset = row('l3');
  t.is(reset.fault, fix);
  t.true(reset.up, 'the interface itself is fine');
  t.like(row('l2'), { up: true, fault: undefined }, JSON.stringify(st.interfaces));
  t.is(st.faultyJobs, 1, 'the l3 job only');
  t.is((await cli(ctx, ['cancel', 'ENG-L2-IDLE', '-i', lab.sensor.sniffIf, '-h', server, '-p', '9'])).code, 0);
  // The same in the metrics a SOC alerts on: the refused RSTs (as many as the job's UNDELIVERABLE: it is the
  // only job) and the fault of the reset interface.
  const refusedSeries = `tcpreset_rsts_undeliverable_total{ifname="${lab.sensor.resetIf}",mode="l3",reason="refused"}`;
  const faultSeries = `tcpreset_interface_fault{ifname="${lab.sensor.resetIf}",role="reset"}`;
  const m1 = await metrics(ctx);
  t.true(m1.get(refusedSeries)! >= job1.counters.undeliverable, `refused RSTs counted (${m1.get(refusedSeries)}), at least the job's UNDELIVERABLE (${job1.counters.undeliverable}) read before`);
  t.is(m1.get(`tcpreset_rsts_undeliverable_total{ifname="${lab.sensor.resetIf}",mode="l3",reason="send_error"}`), 0, 'refused, not failed sends');
  t.is(m1.get(faultSeries), 1, 'the status row\'s fault');
  const undeliverable1 = (await jsonCli(ctx, ['cancel', 'ENG-L3', '-i', lab.sensor.sniffIf, '-h', client])).job.counters.undeliverable as number;
  t.is((await metrics(ctx)).get(refusedSeries), undeliverable1, 'refused RSTs = the job\'s final UNDELIVERABLE (the only job)');

  // 2. --l2, still no route: frames to the router's MAC reach the server; both ends die.
  const s2 = await session(ctx, server);
  const r2 = await cli(ctx, createArgs(ctx, 'ENG-L2', client, 30, ['--l2']));
  t.is(r2.code, 0, r2.stderr);
  await expectKilled(ctx, s2, r2.startedAt, 'l2 through the router');
  t.is((await cli(ctx, ['cancel', 'ENG-L2', '-i', lab.sensor.sniffIf, '-h', client])).code, 0);

  // 3. l3 with a route through the gateway on reset0: both ends die, nothing undeliverable.
  await lab.exec(lab.ns.sensor, ['ip', 'route', 'add', lab.router!.serverPrefix.v4, 'via', lab.router!.v4, 'dev', lab.sensor.resetIf]);
  await sleep(1100); // the previous verdict is cached for a second
  const s3 = await session(ctx, server);
  const cap3 = await Capture.start(lab, lab.ns.sensor, lab.sensor.resetIf, ['dst', 'host', server]);
  const r3 = await cli(ctx, createArgs(ctx, 'ENG-ROUTED', client, 30));
  t.is(r3.code, 0, r3.stderr);
  await expectKilled(ctx, s3, r3.startedAt, 'l3 with a route');
  const out3 = await cap3.stop();
  t.true(out3.some((l) => l.includes(`> ${server}.`) && /Flags \[R/.test(l)), `positive control: RSTs to the server leave reset0 now (${out3.length} lines)`);
  const job3 = (await jsonCli(ctx, ['list'])).jobs.find((j: { engid: string }) => j.engid === 'ENG-ROUTED');
  t.is(job3.counters.undeliverable, undefined, JSON.stringify(job3.counters));
  t.is(job3.fault, undefined);
  await daemon.waitLog((l) => l.msg === `RSTs from ${lab.sensor.resetIf} to ${server} can be delivered again`, 3000, 'recovery line');
  // Positive control of the metrics: the fault is gone with the route; the refused count stays (a lifetime counter).
  const m3 = await metrics(ctx);
  t.is(m3.get(faultSeries), 0, 'no fault once RSTs leave');
  t.is(m3.get(refusedSeries), undeliverable1, 'the ended job\'s refusals stay counted');
});


/** `tcpreset metrics`, as samples: "name{labels}" -> value. */
async function metrics(ctx: Parameters<typeof cli>[0]): Promise<Map<string, number>> {
  const r = await cli(ctx, ['metrics']);
  const m = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}
