import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { TcpresetError, ValidationError } from '../src/core/errors.js';
import {
  allLocalAddresses,
  checkResetInterface,
  checkSniffInterface,
  interfaceAddresses,
  interfaceFault,
  listInterfaces,
  readInterface,
  subnetEdgeProblem,
} from '../src/net/ifaces.js';
import { ptest } from './helpers/privileged.js';
import { ownedNetnsSync } from '../testkit/lab/netns.js';

const ifacesModule = new URL('../src/net/ifaces.js', import.meta.url).href;
const hasIpv6 = existsSync('/proc/net/if_inet6');

function ifaceErr(t: ExecutionContext, fn: () => unknown, msg: RegExp): TcpresetError {
  const err = t.throws(fn, { instanceOf: TcpresetError })!;
  t.is(err.code, 'E_IFACE');
  t.is(err.exitCode, 65);
  t.regex(err.message, msg);
  return err;
}

// ---------------------------------------------------------------- this namespace, no root needed

test('readInterface(lo) reports what sysfs says', (t) => {
  const lo = readInterface('lo')!;
  t.is(lo.ifindex, Number(readFileSync('/sys/class/net/lo/ifindex', 'utf8')));
  t.is(lo.flags, Number.parseInt(readFileSync('/sys/class/net/lo/flags', 'utf8'), 16));
  t.is(lo.operstate, readFileSync('/sys/class/net/lo/operstate', 'utf8').trim());
  t.true(lo.loopback);
  t.is(lo.type, 772); // ARPHRD_LOOPBACK
  t.is(lo.mac, ''); // all-zero MAC means none
  t.true(listInterfaces().includes('lo'));
});

test('readInterface: absent -> null; a bad name is a ValidationError, never a path', (t) => {
  t.is(readInterface(`nx${process.pid % 100000}`), null);
  t.throws(() => readInterface('../../etc'), { instanceOf: ValidationError });
  t.throws(() => readInterface('.'), { instanceOf: ValidationError });
});

test('checkSniffInterface: lo (up, operstate unknown) is active; a missing one names the interfaces that exist', (t) => {
  // The premise, asserted: a host whose lo is down fails here instead of passing with nothing checked.
  t.true(readInterface('lo')!.up, 'lo is up');
  const s = checkSniffInterface('lo');
  t.true(s.active);
  const err = ifaceErr(t, () => checkSniffInterface('nosuch0'), /^sniff interface "nosuch0" does not exist \(interfaces here: .*\blo\b/);
  t.deepEqual(err.details, { ifname: 'nosuch0', role: 'sniff', exists: false });
});

test('checkResetInterface(lo): loopback addresses do not count', (t) => {
  // The premise, asserted: a host whose lo is down fails here instead of passing with nothing checked.
  t.true(readInterface('lo')!.up, 'lo is up');
  const err = ifaceErr(t, () => checkResetInterface('lo', 4), /^reset interface "lo" needs a usable IPv4 address .*only 127\.0\.0\.1\/8 \(loopback\)/);
  t.is(err.details.family, 4);
  t.deepEqual(err.details.addresses, ['127.0.0.1']);
  if (hasIpv6) ifaceErr(t, () => checkResetInterface('lo', 6), /needs a global IPv6 address .*::1\/128 \(loopback\)/);
  ifaceErr(t, () => checkResetInterface('lo', 4, { mode: 'l2' }), /not an Ethernet interface/);
  t.regex(interfaceFault('lo', 'reset', 4)!, /needs a usable IPv4/);
  t.is(interfaceFault('lo', 'sniff'), null);
});

test('interfaceAddresses(lo) and allLocalAddresses() agree with the kernel', (t) => {
  const lo = interfaceAddresses('lo');
  t.true(lo.some((a) => a.family === 4 && a.address === '127.0.0.1' && a.prefixLen === 8 && a.scope === 'host'));
  const all = allLocalAddresses();
  t.true(all.some((a) => a.address === '127.0.0.1' && a.ifname === 'lo'));
  if (hasIpv6) t.true(all.some((a) => a.family === 6 && a.address === '::1'));
  // Every IPv6 address of /proc/net/if_inet6 is there, in canonical form.
  const v6 = readFileSync('/proc/net/if_inet6', 'utf8').trim().split('\n').filter(Boolean);
  for (const l of v6) {
    const hex = l.split(/\s+/)[0];
    const groups = hex.match(/.{4}/g)!.map((g) => Number.parseInt(g, 16).toString(16));
    const addr = all.find((a) => a.family === 6 && a.address.split(':').length >= 2 && expand(a.address) === groups.join(':'));
    t.truthy(addr, `missing ${hex}`);
  }
  // Deduplicated.
  const keys = all.map((a) => `${a.family}/${a.address}`);
  t.is(new Set(keys).size, keys.length);
});

function expand(a: string): string {
  const [h, tl] = a.split('::');
  const hp = h ? h.split(':') : [];
  const tp = tl === undefined ? [] : tl ? tl.split(':') : [];
  const mid = a.includes('::') ? new Array(8 - hp.length - tp.length).fill('0') : [];
  return [...hp, ...mid, ...tp].map((g) => Number.parseInt(g, 16).toString(16)).join(':');
}

// ---------------------------------------------------------------- a namespace of our own (root)

function sh(...args: string[]): string {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Run checks inside netns `ns` (ip netns exec remounts /sys for it); returns each outcome. */
function inNs(ns: string, calls: string[]): Array<{ ok: true; value: any } | { ok: false; code: string; message: string }> {
  const script = `
    const f = await import(${JSON.stringify(ifacesModule)});
    const out = [];
    for (const c of ${JSON.stringify(calls)}) {
      try { out.push({ ok: true, value: await eval(c) }); }
      catch (e) { out.push({ ok: false, code: e.code, message: e.message }); }
    }
    process.stdout.write(JSON.stringify(out));`;
  return JSON.parse(sh('ip', 'netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script));
}

ptest('interface states in a namespace: down, lowerlayerdown veth, active, addresses by family and scope, tentative, l2', (t) => {
  // Owned like a lab's namespace: a crashed run's is swept later, nobody else's ever.
  const { ns, destroy } = ownedNetnsSync('if', { loUp: false });
  t.teardown(destroy);
  const ip = (...a: string[]): string => sh('ip', '-n', ns, ...a);
  ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb');
  ip('link', 'add', 'dm0', 'type', 'ifb'); // no dummy module on this kernel; ifb also reports operstate unknown
  ip('link', 'set', 'va', 'up'); // peer vb still down -> va is IFF_UP but lowerlayerdown
  ip('addr', 'add', '10.9.1.1/24', 'dev', 'va');
  ip('addr', 'add', '2001:db8:9::1/64', 'dev', 'va', 'nodad');

  let r = inNs(ns, [
    `f.checkSniffInterface('lo')`, // lo of a new namespace is down
    `f.checkSniffInterface('dm0')`,
    `f.checkSniffInterface('va')`,
    `f.checkResetInterface('va', 4)`,
    `f.readInterface('va')`,
    `f.allLocalAddresses()`,
    `f.interfaceFault('va', 'sniff')`,
  ]);
  t.like(r[0], { ok: false, code: 'E_IFACE', message: 'sniff interface "lo" is administratively down (operstate down)' });
  t.like(r[1], { ok: false, code: 'E_IFACE', message: 'sniff interface "dm0" is administratively down (operstate down)' });
  t.like(r[2], { ok: false, code: 'E_IFACE', message: 'sniff interface "va" is up but not active (operstate lowerlayerdown, no carrier)' });
  t.like(r[3], { ok: false, code: 'E_IFACE', message: 'reset interface "va" is up but not active (operstate lowerlayerdown, no carrier)' });
  t.like(r[4], { ok: true, value: { name: 'va', up: true, active: false, operstate: 'lowerlayerdown', type: 1 } });
  // The protected set includes addresses of an interface without carrier
  // (os.networkInterfaces() alone would miss the IPv4 one).
  const local = (r[5] as { value: Array<{ address: string }> }).value.map((a) => a.address);
  t.true(local.includes('10.9.1.1'), local.join(' '));
  t.true(local.includes('2001:db8:9::1'), local.join(' '));
  t.regex((r[6] as { value: string }).value, /not active/);

  ip('link', 'set', 'vb', 'up');
  ip('link', 'set', 'dm0', 'up');
  ip('link', 'set', 'lo', 'up');
  r = inNs(ns, [
    `f.checkSniffInterface('va')`,
    `f.checkSniffInterface('dm0')`, // ifb: operstate unknown counts as active
    `f.checkResetInterface('va', 4)`,
    `f.checkResetInterface('va', 6)`,
    `f.checkResetInterface('vb', 4)`,
    `f.checkResetInterface('vb', 6)`, // only its link-local address (once DAD is done), no global one
    `f.checkResetInterface('vb', 4, { mode: 'l2' })`,
    `f.checkResetInterface('dm0', 4)`,
    `f.interfaceFault('va', 'reset', 4)`,
    `f.checkResetInterface('va', 4, { host: '10.9.1.255' })`, // va has 10.9.1.1/24
    `f.checkResetInterface('va', 4, { host: '10.9.1.254' })`,
    `f.checkResetInterface('va', 4, { host: '10.9.1.0' })`,
  ]);
  t.like(r[0], { ok: true, value: { name: 'va', active: true, operstate: 'up' } });
  t.like(r[1], { ok: true, value: { name: 'dm0', active: true } });
  t.true(['unknown', 'up'].includes((r[1] as { value: { operstate: string } }).value.operstate));
  t.like(r[2], { ok: true, value: { usable: [{ family: 4, address: '10.9.1.1', prefixLen: 24, scope: 'global', tentative: false }] } });
  t.like(r[3], { ok: true, value: { usable: [{ family: 6, address: '2001:db8:9::1', prefixLen: 64, scope: 'global' }] } });
  t.like(r[4], { ok: false, code: 'E_IFACE', message: 'reset interface "vb" needs a usable IPv4 address to route resets to the host; it has no IPv4 address' });
  t.like(r[5], { ok: false, code: 'E_IFACE' });
  t.regex((r[5] as { message: string }).message, /^reset interface "vb" needs a global IPv6 address/);
  t.like(r[6], { ok: true, value: { usable: [], state: { name: 'vb', type: 1 } } });
  t.like(r[7], { ok: false, code: 'E_IFACE', message: 'reset interface "dm0" needs a usable IPv4 address to route resets to the host; it has no IPv4 address' });
  t.like(r[8], { ok: true, value: null });
  t.like(r[9], { ok: false, code: 'E_IFACE', message: 'reset interface "va" has 10.9.1.1/24, whose broadcast address is 10.9.1.255: HOST must be one host' });
  t.like(r[10], { ok: true, value: { usable: [{ address: '10.9.1.1' }] } }, 'positive control: a host of that network');
  t.like(r[11], { ok: false, code: 'E_IFACE', message: 'reset interface "va" has 10.9.1.1/24, whose network address is 10.9.1.0: HOST must be one host' });

  // Link-local HOST: a link-local address on the reset interface is enough.
  ip('addr', 'add', 'fe80::99/64', 'dev', 'vb', 'nodad');
  // A tentative (DAD in progress) global address does not count: make DAD slow.
  sh('ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.vb.dad_transmits=100');
  ip('addr', 'add', '2001:db8:9::2/64', 'dev', 'vb');
  r = inNs(ns, [
    `f.checkResetInterface('vb', 6, { host: 'fe80::1' })`,
    `f.checkResetInterface('vb', 6, { host: '2001:db8:9::7' })`,
    `f.interfaceAddresses('vb')`,
  ]);
  t.like(r[0], { ok: true });
  t.true((r[0] as { value: { usable: Array<{ address: string }> } }).value.usable.some((a) => a.address === 'fe80::99'));
  t.like(r[1], { ok: false, code: 'E_IFACE' });
  t.regex((r[1] as { message: string }).message, /needs a global IPv6 address .*2001:db8:9::2\/64 \(tentative\)/);
  const vbAddrs = (r[2] as { value: Array<{ address: string; tentative: boolean; scope: string }> }).value;
  t.like(vbAddrs.find((a) => a.address === '2001:db8:9::2'), { tentative: true, scope: 'global' });
  t.like(vbAddrs.find((a) => a.address === 'fe80::99'), { tentative: false, scope: 'link' });
});

test('subnetEdgeProblem: the network and broadcast addresses of the interface networks up to /30 are refused; hosts, /31 and /32 ends, and other networks pass', (t) => {
  const a = (address: string, prefixLen: number) => ({ family: 4 as const, address, prefixLen, scope: 'global' as const, tentative: false });
  const addrs = [a('10.9.1.1', 24), a('192.0.2.9', 30), a('198.51.100.4', 31), a('203.0.113.7', 32)];
  t.is(subnetEdgeProblem('10.9.1.255', addrs), 'has 10.9.1.1/24, whose broadcast address is 10.9.1.255: HOST must be one host');
  t.is(subnetEdgeProblem('10.9.1.0', addrs), 'has 10.9.1.1/24, whose network address is 10.9.1.0: HOST must be one host');
  t.is(subnetEdgeProblem('192.0.2.11', addrs), 'has 192.0.2.9/30, whose broadcast address is 192.0.2.11: HOST must be one host');
  t.is(subnetEdgeProblem('192.0.2.8', addrs), 'has 192.0.2.9/30, whose network address is 192.0.2.8: HOST must be one host');
  for (const ok of ['10.9.1.7', '10.9.2.255', '192.0.2.10', '198.51.100.4', '198.51.100.5', '203.0.113.7', '2001:db8::ff']) t.is(subnetEdgeProblem(ok, addrs), null, ok);
});
