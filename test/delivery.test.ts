/**
 * The deliverability checks of l3 RSTs (src/net/netlink.ts,
 * src/dataplane/delivery.ts) against a real kernel's routing and
 * neighbour tables in a namespace this test makes: a reset interface with
 * an on-link network, a peer network behind a gateway (with and without a
 * route), a default route on another interface, and a neighbour that
 * never answers.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { ptest } from './helpers/privileged.js';
import { formatList } from '../src/cli/format.js';

function ip(...a: string[]): void {
  const r = spawnSync('ip', a, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${a.join(' ')}: ${r.stderr}`);
}

/** Run `script` (ESM, dist-relative imports resolved from here) inside namespace `ns`; returns its JSON output. */
function inNs(ns: string, script: string): unknown {
  const base = new URL('../src/', import.meta.url).href;
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script.replaceAll('@src/', base)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`script failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

ptest('routeVia: a route through the reset interface, not the on-link guess a device-bound lookup makes; neighbour states; Delivery verdicts name the fix', (t) => {
  const ns = `trdl-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  ip('netns', 'add', ns);
  t.teardown(() => void spawnSync('ip', ['netns', 'del', ns]));
  ip('-n', ns, 'link', 'add', 'rst0', 'type', 'veth', 'peer', 'name', 'rstp');
  ip('-n', ns, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'upp');
  for (const d of ['lo', 'rst0', 'rstp', 'up0', 'upp']) ip('-n', ns, 'link', 'set', d, 'up');
  ip('-n', ns, 'addr', 'add', '10.79.0.254/24', 'dev', 'rst0');
  ip('-n', ns, 'addr', 'add', 'fd79::254/64', 'dev', 'rst0', 'nodad');
  ip('-n', ns, 'addr', 'add', '10.80.0.1/24', 'dev', 'up0');
  // A default route exists, but through another interface: it does not help a socket bound to rst0.
  ip('-n', ns, 'route', 'add', 'default', 'via', '10.80.0.2', 'dev', 'up0');
  const script = (label: string): string => `
    import { Netlink } from '@src/net/netlink.js';
    import { Delivery } from '@src/dataplane/delivery.js';
    import { ifNameToIndex } from '@src/native/libc.js';
    const nl = new Netlink();
    const oif = ifNameToIndex('rst0');
    const v4 = (s) => Uint8Array.from(s.split('.').map(Number));
    const v6 = (net) => Uint8Array.from([0xfd, 0x79, 0, net, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    const show = (r) => r.ok ? (r.gateway ? 'via ' + [...r.gateway].join('.') : 'on-link') : 'errno ' + r.errno;
    const changes = [];
    const d = new Delivery((ifname, dst, reason) => changes.push([ifname, dst, reason]));
    const out = {
      label: ${JSON.stringify(label)},
      far: show(nl.routeVia(v4('10.79.1.2'), oif)),
      near: show(nl.routeVia(v4('10.79.0.1'), oif)),
      far6: show(nl.routeVia(v6(1), oif)),
      near6: show(nl.routeVia(v6(0), oif)),
      verdictFar: d.verdict('rst0', oif, v4('10.79.1.2')),
      // First sight checks the route only; the neighbour is looked at after the batch (refresh).
      verdictFarAfterRefresh: (d.refresh(), d.verdict('rst0', oif, v4('10.79.1.2'))),
      verdictNear: d.verdict('rst0', oif, v4('10.79.0.7')),
      neighbourAbsent: nl.neighbour(v4('10.79.0.99'), oif),
      changes,
    };
    nl.close(); d.close();
    console.log(JSON.stringify(out));`;
  const before = inNs(ns, script('no route')) as Record<string, unknown>;
  t.is(before.far, 'errno 113', 'no route through rst0 to 10.79.1.2 (EHOSTUNREACH), although a default route exists on up0');
  t.is(before.near, 'on-link');
  t.is(before.far6, 'errno 101', 'IPv6: ENETUNREACH');
  t.is(before.near6, 'on-link');
  const fix = 'no route from rst0 to 10.79.1.2: add a route through your gateway on rst0, or use --l2';
  t.is(before.verdictFar, fix);
  t.is(before.verdictFarAfterRefresh, fix);
  t.is(before.verdictNear, null);
  t.is(before.neighbourAbsent, null);
  // Reported when found, and confirmed on the refresh (so the receiver can age out refusals nobody confirms).
  t.deepEqual(before.changes, [['rst0', '10.79.1.2', fix], ['rst0', '10.79.1.2', fix]]);

  // The fix: a route through the gateway on rst0. The gateway never answers ARP: its neighbour entry fails.
  ip('-n', ns, 'route', 'add', '10.79.1.0/24', 'via', '10.79.0.253', 'dev', 'rst0');
  spawnSync('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '1', '10.79.1.2']);
  // Probes (3 x 1 s) exhausted: FAILED. Waited for, not slept: a loaded machine takes longer.
  for (let i = 0; i < 40 && !/FAILED/.test(spawnSync('ip', ['-n', ns, 'neigh', 'show', '10.79.0.253', 'dev', 'rst0'], { encoding: 'utf8' }).stdout); i++) spawnSync('sleep', ['0.25']);
  const after = inNs(ns, script('with route')) as Record<string, unknown>;
  t.is(after.far, 'via 10.79.0.253');
  t.is(after.verdictFar, null, 'first sight: the route is there');
  t.is(after.verdictFarAfterRefresh, 'gateway 10.79.0.253 on rst0 does not answer address resolution: RSTs to 10.79.1.2 are dropped; check the route, or use --l2');
});

test('list shows an UNDELIVERABLE column only when some job has undeliverable RSTs', (t) => {
  const job = {
    id: 'a1', engid: 'E', sniffIf: 's0', resetIf: 'r0', host: '10.0.0.1', port: null, mode: 'l3' as const,
    createdAt: '2026-01-01T00:00:00Z', expiresAt: '2026-01-01T00:01:00Z', remainingMs: 60_000,
    counters: { matched: 5, rstsSent: 6, flows: 1, firstHitAt: null, lastHitAt: null },
  };
  t.false(formatList({ jobs: [job] }).includes('UNDELIVERABLE'));
  const bad = { ...job, id: 'b2', counters: { ...job.counters, undeliverable: 4 }, fault: 'no route from r0 to 10.9.9.9: add a route through your gateway on r0, or use --l2' };
  const out = formatList({ jobs: [job, bad] });
  t.regex(out, /UNDELIVERABLE\s+FAULT/);
  t.regex(out, /b2 .* 4 {2}no route from r0/);
  t.regex(out, /a1 .* 0\s*$/m);
});

ptest('Delivery.forget: a refusal found while the reset interface was down is dropped when it comes back, and the next verdict is taken afresh', (t) => {
  const ns = `trdf-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  ip('netns', 'add', ns);
  t.teardown(() => void spawnSync('ip', ['netns', 'del', ns]));
  ip('-n', ns, 'link', 'add', 'rst0', 'type', 'veth', 'peer', 'name', 'rstp');
  ip('-n', ns, 'link', 'set', 'rstp', 'up');
  ip('-n', ns, 'addr', 'add', '10.79.0.254/24', 'dev', 'rst0');
  const out = inNs(ns, `
    import { execFileSync } from 'node:child_process';
    import { Delivery } from '@src/dataplane/delivery.js';
    import { ifNameToIndex } from '@src/native/libc.js';
    const oif = ifNameToIndex('rst0');
    const dst = Uint8Array.of(10, 79, 0, 1);
    const d = new Delivery();
    const down = d.verdict('rst0', oif, dst); // rst0 down: no connected route
    execFileSync('ip', ['link', 'set', 'rst0', 'up']);
    const cached = d.verdict('rst0', oif, dst); // within the verdict's second: the old refusal
    d.forget('rst0');
    const fresh = d.verdict('rst0', oif, dst);
    d.close();
    console.log(JSON.stringify({ down, cached, fresh }));`) as Record<string, unknown>;
  const refusal = 'no route from rst0 to 10.79.0.1: add a route through your gateway on rst0, or use --l2';
  t.is(out.down, refusal, 'positive control: the down interface has no route');
  t.is(out.cached, refusal, 'without forget the refusal would stand for up to a second, and the fault longer');
  t.is(out.fresh, null);
});
