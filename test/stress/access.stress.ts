/**
 * Access to the daemon and what it may never do.
 *
 * 1. The control socket admits only root and the `tcpreset` group (mode
 *    0660, group tcpreset): `nobody` gets EACCES (CLI exit 77); a user in the
 *    group (supplementary, as a real member, or primary) is served; every
 *    request, refused or not, is logged with the peer's uid and pid
 *    (SO_PEERCRED). The group and a member user are created when absent and
 *    removed afterwards.
 * 2. Protected networks are never reset, whatever the request says: the REAL
 *    daemon in the lab's sensor namespace (with real interfaces, so a request
 *    that slipped through would create a real job) refuses every spelling of
 *    protected and own addresses (IPv4-mapped IPv6 in dotted and hex form,
 *    expanded, uppercase, leading zeros) with E_PROTECTED, with any engid,
 *    port, mode or interface; neighbours just outside each network are
 *    accepted (the control); a saved job that a new configuration protects is
 *    dropped at restart.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLab } from '../../testkit/lab/lab.js';
import { CLI_BIN, startDaemon, worldReadableBuild, type DaemonProc, type LogLine, type Resp } from '../../testkit/daemon.js';
import { ptest } from '../helpers/privileged.js';

const GROUP = 'tcpreset';
const REQUEST_MSGS = new Set(['request', 'request rejected', 'request refused', 'request failed with an internal error', 'request line too long: closing the connection']);

function sh(...argv: string[]): string {
  return execFileSync(argv[0], argv.slice(1), { encoding: 'utf8' });
}

function getent(db: 'group' | 'passwd', name: string): string[] | null {
  try {
    return sh('getent', db, name).trim().split(':');
  } catch {
    return null;
  }
}

interface Ran {
  pid: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run argv (a node script and args) as another identity; resolves with its pid and outcome. */
function runAs(wrapper: string[], argv: string[], opts: { uid?: number; gid?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(wrapper.length ? wrapper[0] : process.execPath, wrapper.length ? [...wrapper.slice(1), process.execPath, ...argv] : argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      ...opts,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('close', (code) => resolve({ pid: child.pid!, code, stdout, stderr }));
  });
}

/** A raw protocol client as a script: sends `line` verbatim, prints what comes back. */
const RAW_CLIENT = `
const net = require('node:net');
const [path, line] = process.argv.slice(1);
const s = net.createConnection({ path });
let out = '';
s.on('connect', () => s.end(line));
s.on('data', (d) => (out += d));
s.on('close', () => { process.stdout.write(out); process.exit(0); });
s.on('error', (e) => { process.stderr.write(e.code + '\\n'); process.exit(3); });
`;

function requestLogsOf(d: DaemonProc, pid: number): LogLine[] {
  return d.logs.filter((l) => REQUEST_MSGS.has(l.msg ?? '') && (l.peer as { pid?: number } | undefined)?.pid === pid);
}

async function waitFor(pred: () => boolean, ms = 3000): Promise<boolean> {
  for (let i = 0; i < ms / 20 && !pred(); i++) await new Promise((r) => setTimeout(r, 20));
  return pred();
}

ptest.serial('the control socket admits root and the tcpreset group only (0660); nobody gets EACCES (exit 77); every request is logged with the peer uid and pid', async (t) => {
  // The group, and a member user, exactly as systemd-sysusers would make them (created only if absent).
  let createdGroup = false;
  if (!getent('group', GROUP)) {
    sh('groupadd', '--system', GROUP);
    createdGroup = true;
  }
  const user = `tcprfz${process.pid}`.slice(0, 31);
  sh('useradd', '--system', '--no-create-home', '--no-user-group', '--gid', 'nogroup', '--groups', GROUP, '--shell', '/usr/sbin/nologin', user);
  t.teardown(() => {
    try {
      sh('userdel', user);
    } catch { /* gone */ }
    if (createdGroup) {
      try {
        sh('groupdel', GROUP);
      } catch { /* gone */ }
    }
  });
  const gid = Number(getent('group', GROUP)![2]);
  const uid = Number(getent('passwd', user)![2]);
  t.log(`group ${GROUP} gid ${gid}${createdGroup ? ' (created for the test)' : ''}; member ${user} uid ${uid}`);

  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-access-'));
  chmodSync(dir, 0o755); // others may reach the socket file; its own mode decides
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // debug: read-only requests are logged at debug only, and every request line is counted here.
  const daemon = await startDaemon({ dir, config: { logLevel: 'debug' } });
  t.teardown(async () => {
    await daemon.stop();
  });
  const st = statSync(daemon.socket);
  t.true(st.isSocket());
  t.is(st.mode & 0o777, 0o660, 'mode 0660');
  t.is(st.uid, 0, 'owned by root');
  t.is(st.gid, gid, `group ${GROUP}`);
  const listening = daemon.logs.find((l) => l.msg === 'listening');
  t.is(listening?.gid, gid);

  // Run as other users, so from a copy they can read wherever the checkout lives.
  const { cli: cliBin } = await worldReadableBuild();
  const cli = (...a: string[]): string[] => [cliBin, ...a, '--socket', daemon.socket];
  // Not root, not in the group: the kernel refuses the connect; the CLI says so with 77, one line.
  const nobody = await runAs([], cli('list'), { uid: 65534, gid: 65534 });
  t.is(nobody.code, 77, nobody.stderr);
  t.regex(nobody.stderr, /^tcpreset: permission denied on .*ctl\.sock: connect EACCES — run as root or as a member of the socket's group\n$/);
  const nobodyRaw = await runAs([], ['-e', RAW_CLIENT, daemon.socket, '{"v":1,"op":"version"}\n'], { uid: 65534, gid: 65534 });
  t.is(nobodyRaw.code, 3);
  t.is(nobodyRaw.stderr.trim(), 'EACCES', 'a raw connect is refused too');
  // With every group but tcpreset (setpriv --clear-groups): still refused.
  const cleared = await runAs(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'], cli('version'));
  t.is(cleared.code, 77, cleared.stderr);

  // A real member (supplementary group from /etc/group), a primary-group process, and root: served.
  const member = await runAs(['setpriv', `--reuid=${uid}`, '--regid=65534', '--init-groups'], cli('list', '--json'));
  t.is(member.code, 0, member.stderr);
  t.deepEqual(JSON.parse(member.stdout), { jobs: [] });
  const primary = await runAs([], cli('status', '--json'), { uid: 65534, gid });
  t.is(primary.code, 0, primary.stderr);
  const root = await runAs([], cli('version', '--json'));
  t.is(root.code, 0, root.stderr);
  // A member's refused and malformed requests are logged the same way.
  const memberBad = await runAs(['setpriv', `--reuid=${uid}`, '--regid=65534', '--init-groups'], ['-e', RAW_CLIENT, daemon.socket, '{"v":1,"op":"create","engid":"E","sniffIf":"nosuch0","resetIf":"nosuch1","host":"192.0.2.1","duration":5}\nnot json\n']);
  t.is(memberBad.code, 0, memberBad.stderr);
  t.deepEqual(memberBad.stdout.trim().split('\n').map((l) => (JSON.parse(l) as Resp).error?.code), ['E_IFACE', 'E_PROTOCOL']);
  const memberHuge = await runAs(['setpriv', `--reuid=${uid}`, '--regid=65534', '--init-groups'], ['-e', RAW_CLIENT, daemon.socket, `${'x'.repeat(70_000)}\n`]);
  t.regex(memberHuge.stdout, /E_PROTOCOL/);

  const expectLogged = async (who: string, r: Ran, wantUid: number, n: number): Promise<void> => {
    await waitFor(() => requestLogsOf(daemon, r.pid).length >= n);
    const lines = requestLogsOf(daemon, r.pid);
    t.is(lines.length, n, `${who}: ${n} request line(s) logged for pid ${r.pid}`);
    for (const l of lines) t.like(l.peer as object, { uid: wantUid, pid: r.pid }, `${who}: ${l.msg}`);
  };
  await expectLogged('member (supplementary group)', member, uid, 1);
  await expectLogged('primary group', primary, 65534, 1);
  await expectLogged('root', root, 0, 1);
  await expectLogged('member, refused and malformed', memberBad, uid, 2);
  await expectLogged('member, oversize line', memberHuge, uid, 1);
  t.is(requestLogsOf(daemon, nobody.pid).length + requestLogsOf(daemon, cleared.pid).length, 0, 'the refused connects never reached the daemon');
  const all = daemon.logs.filter((l) => REQUEST_MSGS.has(l.msg ?? ''));
  t.true(all.every((l) => typeof (l.peer as { uid?: unknown })?.uid === 'number' && typeof (l.peer as { pid?: unknown })?.pid === 'number'), 'every request line carries uid and pid');
  t.log(`socket ${st.mode.toString(8)} root:${GROUP}; refused: nobody (77, EACCES), cleared groups (77); served: member ${user} (supplementary), uid 65534 with primary group ${GROUP}, root; ${all.length} request lines, all with uid and pid`);
});

// ---------------------------------------------------------------- protected addresses

const PROTECTED = ['172.16.0.0/12', 'fd00:1234::/32', '192.0.2.0/25', '::ffff:198.51.100.0/120', '2001:db8:aa::5'];

/** Spellings of one address: every one must be refused when the address is protected. */
function v4Spellings(a: string): string[] {
  const b = a.split('.').map(Number);
  const hex = (x: number): string => x.toString(16);
  const hi = hex((b[0] << 8) | b[1]);
  const lo = hex((b[2] << 8) | b[3]);
  return [
    a, `::ffff:${a}`, `::FFFF:${a}`, `::ffff:${hi}:${lo}`, `::FFFF:${hi.toUpperCase()}:${lo.toUpperCase().padStart(4, '0')}`,
    `0:0:0:0:0:ffff:${a}`, `0000:0000:0000:0000:0000:ffff:${hi.padStart(4, '0')}:${lo.padStart(4, '0')}`, `::0:ffff:${a}`, `0::ffff:${hi}:${lo}`,
  ];
}

function v6Spellings(a: string): string[] {
  const words = expandV6(a);
  const full = words.map((w) => w.toString(16).padStart(4, '0'));
  return [
    a, a.toUpperCase(), words.map((w) => w.toString(16)).join(':'), full.join(':'), full.join(':').toUpperCase(),
    `${full.slice(0, 2).join(':')}::${full.slice(-1)[0]}`.replace(/::0000$/, '::0'),
  ].filter((x, i, all) => all.indexOf(x) === i && expandV6(x).join() === words.join());
}

function expandV6(a: string): number[] {
  const [h, tl] = a.split('::');
  const head = h ? h.split(':').map((x) => parseInt(x, 16)) : [];
  const tail = tl !== undefined && tl !== '' ? tl.split(':').map((x) => parseInt(x, 16)) : [];
  return tl === undefined ? head : [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

ptest.serial('protected networks and the sensor\'s own addresses are refused in every spelling, whatever the request says; neighbours are accepted; a saved job newly protected is dropped at restart', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const config = { protected: PROTECTED, maxDurationSec: 3600 };
  let daemon = await startDaemon({ netns: lab.ns.sensor, config });
  t.teardown(async () => {
    await daemon.stop();
  });
  const { sniffIf, resetIf } = lab.sensor;
  // The sensor's own addresses, link-local ones included, as the kernel lists them.
  const own = JSON.parse(sh('ip', '-n', lab.ns.sensor, '-j', 'addr', 'show')) as { ifname: string; addr_info: { local: string; family: string }[] }[];
  const ownAddrs = own.flatMap((i) => i.addr_info.map((a) => ({ ifname: i.ifname, local: a.local, family: a.family })))
    .filter((a) => a.local !== '127.0.0.1' && a.local !== '::1');
  t.true(ownAddrs.some((a) => a.local === lab.sensor.v4) && ownAddrs.some((a) => a.local === lab.sensor.v6));

  const targets: { host: string; why: string }[] = [];
  for (const a of ['172.16.5.4', '172.31.255.254', '192.0.2.127', '198.51.100.7']) for (const s of v4Spellings(a)) targets.push({ host: s, why: `config (${a})` });
  for (const a of ['fd00:1234::1', 'fd00:1234:ffff:ffff:ffff:ffff:ffff:fffe', '2001:db8:aa::5']) for (const s of v6Spellings(a)) targets.push({ host: s, why: `config (${a})` });
  for (const o of ownAddrs) {
    for (const s of o.family === 'inet' ? v4Spellings(o.local) : v6Spellings(o.local)) targets.push({ host: s, why: `own ${o.local} on ${o.ifname}` });
  }
  // "Whatever the request says": vary everything else, real interfaces first (a slip would make a real job).
  const variants: object[] = [
    { engid: 'ENG', sniffIf, resetIf },
    { engid: 'other-engine', sniffIf, resetIf, port: 443, mode: 'l2' },
    { engid: 'x', sniffIf, resetIf, port: 1, duration: 3600, id: 'r1' },
    { engid: 'E', sniffIf: 'nosuch0', resetIf: 'nosuch1', port: 65535 },
  ];
  let refused = 0;
  const wrong: string[] = [];
  for (const [i, tg] of targets.entries()) {
    const v = variants[i % variants.length];
    const r = await daemon.request({ v: 1, op: 'create', duration: 60, ...v, host: tg.host });
    if (r.error?.code === 'E_PROTECTED') {
      refused++;
      const d = r.error.details as { source?: string; entry?: string };
      if ((tg.why.startsWith('own') ? 'local' : 'config') !== d.source) wrong.push(`${tg.host}: source ${d.source}`);
    } else wrong.push(`${tg.host} (${tg.why}): ${JSON.stringify(r.error ?? r.result).slice(0, 200)}`);
  }
  t.deepEqual(wrong, [], 'every spelling refused with E_PROTECTED and the right source');
  // The same through the CLI, as an operator would type it: exit 65, one line naming the protection.
  for (const host of ['::ffff:172.16.5.4', '::FFFF:AC10:504', `::ffff:${lab.sensor.v4}`, lab.sensor.v6.toUpperCase()]) {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI_BIN, 'ENG', '-i', sniffIf, '-o', resetIf, '-h', host, '-d', '60', '--socket', daemon.socket], (err, _o, stderr) =>
        resolve({ code: err ? (err.code as number) : 0, stderr }));
    });
    t.is(r.code, 65, `${host}: ${r.stderr}`);
    t.regex(r.stderr, /^tcpreset: host \S+ is protected: .+\n$/, host);
  }

  // The control: just outside each network, the same requests create real jobs.
  const neighbours = ['172.32.0.1', '172.15.255.254', '192.0.2.128', '198.51.101.7', '::ffff:172.32.0.2', 'fd00:1235::1', '2001:db8:aa::6', lab.hosts.client.v4];
  for (const host of neighbours) {
    const r = await daemon.request({ v: 1, op: 'create', engid: 'ENG', sniffIf, resetIf, host, duration: 600 });
    t.is(r.result?.action, 'created', `${host}: ${JSON.stringify(r.error)}`);
  }
  const jobs = (await daemon.request({ v: 1, op: 'list' })).result.jobs as { host: string }[];
  t.deepEqual(jobs.map((j) => j.host).sort(), ['172.32.0.1', '172.15.255.254', '192.0.2.128', '198.51.101.7', '172.32.0.2', 'fd00:1235::1', '2001:db8:aa::6', lab.hosts.client.v4].sort(),
    'only the neighbours became jobs (mapped spellings stored as IPv4)');
  t.log(`${targets.length} spellings of ${4 + 3} configured-protected and ${ownAddrs.length} own addresses (${ownAddrs.map((a) => a.local).join(', ')}) refused: ${refused}; ${neighbours.length} neighbours accepted`);

  // A new configuration protects a saved job's host: the restarted daemon drops it instead of enforcing it.
  await daemon.stop();
  daemon = await startDaemon({
    netns: lab.ns.sensor, dir: daemon.dir, socket: daemon.socket, stateDir: daemon.stateDir,
    config: { ...config, protected: [...PROTECTED, '172.32.0.0/16', '::ffff:10.0.0.0/104'] },
  });
  const after = (await daemon.request({ v: 1, op: 'list' })).result.jobs as { host: string }[];
  t.deepEqual(after.map((j) => j.host).sort(), ['172.15.255.254', '192.0.2.128', '198.51.101.7', 'fd00:1235::1', '2001:db8:aa::6'].sort(),
    'the newly protected 172.32.0.0/16 jobs and 10.0.0.0/8 (written as a mapped network) are gone');
  const dropped = daemon.logs.filter((l) => l.msg === 'saved job targets a protected address: dropped');
  t.is(dropped.length, 3);
  t.log(`restart with 172.32.0.0/16 and ::ffff:10.0.0.0/104 protected: ${dropped.length} saved jobs dropped, ${after.length} kept`);
});
