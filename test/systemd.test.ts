/**
 * The systemd side: the units verify cleanly, the service's exposure score
 * stays <= 2.5, the sysusers file makes the user and group, socket
 * activation and sd_notify work with the real daemon, and the hardening
 * still lets the daemon do its job: every system call and address family
 * the daemon uses while enforcing a job is one the unit allows, and the
 * unit's four capabilities, as an unprivileged user, suffice to enforce.
 * (No systemd runs as PID 1 here, so the unit itself is not started; these
 * are the parts of it that can be exercised.)
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, chownSync, constants, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ptest } from './helpers/privileged.js';
import { DAEMON_BIN, REPO_ROOT, sendLines, sensorNetns, startDaemon, worldReadableBuild } from '../testkit/daemon.js';
import { sleep, until } from '../testkit/time.js';

const UNIT_DIR = join(REPO_ROOT, 'systemd');
const SERVICE = join(UNIT_DIR, 'tcpreset.service');
const SOCKET = join(UNIT_DIR, 'tcpreset.socket');
const MAX_EXPOSURE = 2.5;

const tmp = (tag: string): string => mkdtempSync(join(tmpdir(), `tcpresetd-${tag}-`));

/** Values of `key=` in a unit file, in order (a key may repeat). */
function unitValues(text: string, key: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1).trim());
}

/** A copy of the units whose ExecStart (and ExecReload's check) run this checkout's daemon, so verify can check the command exists. */
function unitsForVerify(): { dir: string; service: string; socket: string } {
  const dir = tmp('units');
  const text = readFileSync(SERVICE, 'utf8');
  const lines = unitValues(text, 'ExecStart');
  if (lines.length !== 1) throw new Error(`expected one ExecStart, got ${lines.length}`);
  writeFileSync(join(dir, 'tcpreset.service'), text.replaceAll('/usr/local/bin/tcpresetd', DAEMON_BIN));
  copyFileSync(SOCKET, join(dir, 'tcpreset.socket'));
  return { dir, service: join(dir, 'tcpreset.service'), socket: join(dir, 'tcpreset.socket') };
}

function verify(dir: string, files: string[]): { status: number | null; output: string } {
  const r = spawnSync('systemd-analyze', ['verify', ...files], { cwd: dir, encoding: 'utf8' });
  return { status: r.status, output: (r.stdout + r.stderr).trim() };
}

test('systemd-analyze verify: both units clean (no warnings at all)', (t) => {
  const u = unitsForVerify();
  const r = verify(u.dir, [u.service, u.socket]);
  t.is(r.status, 0, r.output);
  t.is(r.output, '', 'no warnings');
  // The check can fail: a misspelt directive is reported.
  writeFileSync(join(u.dir, 'tcpreset.service'), readFileSync(u.service, 'utf8').replace('ProtectHome=yes', 'ProtectHomes=yes'));
  t.regex(verify(u.dir, [u.service, u.socket]).output, /Unknown key .*ProtectHomes/);
  // The shipped unit differs only by the daemon's path (ExecStart, ExecReload's check), which names the installed command.
  t.deepEqual(unitValues(readFileSync(SERVICE, 'utf8'), 'ExecStart'), ['/usr/local/bin/tcpresetd']);
});

/** `systemd-analyze verify` in a private mount namespace whose /usr is DESTDIR/usr over the host's (read-only overlay), so the installed units are checked against an installed tree. */
function verifyInstalled(destdir: string, files: string[]): { status: number | null; output: string } {
  const script = 'mount -t overlay overlay -o "lowerdir=$1/usr:/usr" /usr && shift && exec systemd-analyze verify "$@"';
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', destdir, ...files], { cwd: destdir, encoding: 'utf8' });
  return { status: r.status, output: (r.stdout + r.stderr).trim() };
}

ptest('make install PREFIX=/usr: the installed units name /usr/bin/tcpresetd and verify against the installed tree', (t) => {
  const destdir = tmp('destdir');
  const make = spawnSync('make', ['-s', '-C', REPO_ROOT, 'install', 'PREFIX=/usr', `DESTDIR=${destdir}`], { encoding: 'utf8' });
  t.is(make.status, 0, make.stderr);
  const unitDir = join(destdir, 'usr/lib/systemd/system');
  const svc = readFileSync(join(unitDir, 'tcpreset.service'), 'utf8');
  t.deepEqual(unitValues(svc, 'ExecStart'), ['/usr/bin/tcpresetd']);
  // The check before the signal names the same installed daemon (the same UNIT_SED rewrite).
  t.deepEqual(unitValues(svc, 'ExecReload'), ['/usr/bin/tcpresetd --test-config', '/bin/kill -HUP $MAINPID']);
  t.notRegex(svc + readFileSync(join(unitDir, 'tcpreset.socket'), 'utf8'), /\/usr\/local\/(bin|lib)/, 'no default-PREFIX path left');
  // The command the unit names resolves inside DESTDIR to the installed launcher.
  const target = realpathSync(join(destdir, 'usr/bin/tcpresetd'));
  t.is(target, join(realpathSync(destdir), 'usr/lib/tcpreset/bin/tcpresetd'));
  accessSync(target, constants.X_OK);
  t.truthy(readFileSync(join(destdir, 'usr/lib/sysusers.d/tcpreset.conf'), 'utf8').match(/^u tcpreset /m));
  // What ships is src/ only: the daemon's code is there, the test kit (lab, demo) is not.
  const dist = join(destdir, 'usr/lib/tcpreset/dist');
  t.true(existsSync(join(dist, 'src/daemon/main.js')), 'the daemon is installed');
  t.deepEqual(['src/lab', 'src/demo', 'testkit', 'test', 'bench'].filter((d) => existsSync(join(dist, d))), [], 'no test kit, tests or bench installed');
  const files = [join(unitDir, 'tcpreset.service'), join(unitDir, 'tcpreset.socket')];
  const ok = verifyInstalled(destdir, files);
  t.is(ok.status, 0, ok.output);
  t.is(ok.output, '', 'no warnings');
  // The installed commands run: the CLI through its link prints the package's version.
  const version = spawnSync(join(destdir, 'usr/bin/tcpreset'), ['-V'], { encoding: 'utf8' });
  t.is(version.status, 0, version.stderr);
  t.is(version.stdout.trim(), `tcpreset ${(JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version}`);
  // Positive control: the unpatched ExecStart (what PREFIX=/usr used to install) fails the same check.
  writeFileSync(files[0], svc.replace(/^ExecStart=.*$/m, 'ExecStart=/usr/local/bin/tcpresetd'));
  t.regex(verifyInstalled(destdir, files).output, /Command \/usr\/local\/bin\/tcpresetd is not executable/);
  // make uninstall takes back every file make install put there but the configuration example
  // under /etc (an operator's directory); directories stay, empty.
  const un = spawnSync('make', ['-s', '-C', REPO_ROOT, 'uninstall', 'PREFIX=/usr', `DESTDIR=${destdir}`], { encoding: 'utf8' });
  t.is(un.status, 0, un.stderr);
  const left = spawnSync('find', [destdir, '-not', '-type', 'd'], { encoding: 'utf8' }).stdout.trim().split('\n').map((f) => f.slice(destdir.length));
  t.deepEqual(left, ['/etc/tcpreset/config.example.json']);
});

test(`security exposure of the service is <= ${MAX_EXPOSURE}`, (t) => {
  const r = spawnSync('systemd-analyze', ['security', '--offline=yes', SERVICE], { encoding: 'utf8' });
  const m = /Overall exposure level for tcpreset\.service: (\d+(?:\.\d+)?)/.exec(r.stdout + r.stderr);
  t.truthy(m, r.stdout + r.stderr);
  const score = Number(m![1]);
  t.log(`exposure ${score}`);
  t.true(score <= MAX_EXPOSURE, `exposure ${score}`);
});

test('unit content: notify type, unprivileged user, exactly the four capabilities, no MemoryDenyWriteExecute, socket 0660 group tcpreset', (t) => {
  const svc = readFileSync(SERVICE, 'utf8');
  const sock = readFileSync(SOCKET, 'utf8');
  t.deepEqual(unitValues(svc, 'Type'), ['notify']);
  // `systemctl reload` checks the file first (a bad one fails the reload: the lines run in order and
  // the first failure stops it), then SIGHUP re-reads it; $MAINPID is expanded by systemd. The check
  // reads the default --config, as ExecStart does; it is the command that exists:
  t.deepEqual(unitValues(svc, 'ExecReload'), ['/usr/local/bin/tcpresetd --test-config', '/bin/kill -HUP $MAINPID']);
  // The check is ExecStart's command line plus --test-config, so it reads the file the daemon reads.
  t.is(unitValues(svc, 'ExecReload')[0], `${unitValues(svc, 'ExecStart')[0]} --test-config`);
  t.deepEqual(unitValues(svc, 'User'), ['tcpreset']);
  t.deepEqual(unitValues(svc, 'Group'), ['tcpreset']);
  const caps = ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_PERFMON'];
  t.deepEqual(unitValues(svc, 'AmbientCapabilities')[0].split(/\s+/).sort(), caps);
  t.deepEqual(unitValues(svc, 'CapabilityBoundingSet')[0].split(/\s+/).sort(), caps);
  t.deepEqual(unitValues(svc, 'MemoryDenyWriteExecute'), ['no'], 'V8 needs W+X memory');
  t.regex(svc, /V8.*JIT|JIT.*V8/);
  t.true(unitValues(svc, 'WatchdogSec').length === 1);
  t.deepEqual(unitValues(svc, 'StateDirectory'), ['tcpreset']);
  t.deepEqual(unitValues(svc, 'LimitMEMLOCK'), ['infinity']);
  t.deepEqual(unitValues(sock, 'ListenStream'), ['/run/tcpreset.sock']);
  t.deepEqual(unitValues(sock, 'SocketMode'), ['0660']);
  t.deepEqual(unitValues(sock, 'SocketGroup'), ['tcpreset']);
});

test('the sysusers file creates user and group tcpreset', (t) => {
  const root = tmp('sysusers');
  mkdirSync(join(root, 'etc'));
  const r = spawnSync('systemd-sysusers', [`--root=${root}`, '-'], { input: readFileSync(join(UNIT_DIR, 'tcpreset.sysusers')), encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
  const group = readFileSync(join(root, 'etc/group'), 'utf8');
  const user = passwd.split('\n').find((l) => l.startsWith('tcpreset:'))!.split(':');
  const grp = group.split('\n').find((l) => l.startsWith('tcpreset:'))!.split(':');
  t.is(user[3], grp[2], 'primary group is tcpreset');
  t.true(Number(user[2]) < 1000, 'a system user');
  t.is(user[6], '/usr/sbin/nologin');
});

test('socket activation: the daemon serves the socket systemd passes as fd 3', async (t) => {
  const dir = tmp('activate');
  const sock = join(dir, 'ctl.sock');
  writeFileSync(join(dir, 'c.json'), '{}');
  // systemd-socket-activate binds, then execs the daemon on the first connection with LISTEN_FDS=1.
  const child = spawn('systemd-socket-activate', ['-l', sock, process.execPath, DAEMON_BIN,
    '--socket', sock, '--state-dir', join(dir, 'st'), '--config', join(dir, 'c.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => void child.kill('SIGKILL'));
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  for (let i = 0; i < 100; i++) {
    try {
      readFileSync(sock);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') break; // exists (reading a socket fails otherwise)
    }
    await sleep(50);
  }
  const [a, b] = await sendLines(sock, ['{"v":1,"op":"version","id":1}', '{"v":1,"op":"list","id":2}'], 15_000);
  t.true(a.ok && b.ok);
  t.truthy(lines.find((l) => l.includes('listening on the socket passed by systemd') && l.includes('"fd":3')));
  child.kill('SIGTERM');
  const code = await new Promise((r) => child.once('close', r));
  t.is(code, 0);
});

/** A datagram listener like systemd's on DIR/notify.sock (Node has no AF_UNIX datagram sockets): every message, in order. */
async function notifyListener(t: import('ava').ExecutionContext, dir: string): Promise<{ path: string; msgs: string[] }> {
  const path = join(dir, 'notify.sock');
  const listener = spawn('python3', ['-u', '-c', `
import socket, sys, json
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); print("bound", flush=True)
while True:
    print(json.dumps(s.recv(4096).decode()), flush=True)`, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void listener.kill());
  const msgs: string[] = [];
  const rl = createInterface({ input: listener.stdout! });
  await new Promise<void>((r) => rl.once('line', () => r()));
  rl.on('line', (l) => msgs.push(JSON.parse(l) as string));
  return { path, msgs };
}

test('sd_notify: READY=1 with STATUS once listening, WATCHDOG=1 repeatedly, STOPPING=1 on SIGTERM', async (t) => {
  const dir = tmp('notify');
  const { path, msgs } = await notifyListener(t, dir);
  const d = await startDaemon({ dir, env: { NOTIFY_SOCKET: path, WATCHDOG_USEC: '400000' } });
  // Waited for, not counted after a fixed sleep: the period itself (half of WATCHDOG_USEC) is sd-notify.test's.
  await until(() => msgs.some((m) => m.startsWith('READY=1')), 10_000, 'READY=1');
  const ready = msgs.find((m) => m.startsWith('READY=1'))!;
  t.regex(ready, /STATUS=0 jobs active/);
  t.regex(ready, new RegExp(`MAINPID=${d.pid}`));
  await until(() => msgs.filter((m) => m === 'WATCHDOG=1').length >= 3, 10_000, 'three watchdog pings');
  t.deepEqual(await d.stop(), { code: 0, signal: null });
  await until(() => msgs.some((m) => m.startsWith('STOPPING=1')), 5000, 'STOPPING=1');
  t.is(msgs.filter((m) => m.startsWith('STOPPING=1')).length, 1);
  t.is(msgs.at(-1), 'STOPPING=1\nSTATUS=stopping', 'nothing after STOPPING=1 (the watchdog stopped first)');
});

ptest('sd_notify STATUS follows the job count: created, added, cancelled, expired, each once', async (t) => {
  const ns = await sensorNetns(t);
  const dir = tmp('notify-jobs');
  const { path, msgs } = await notifyListener(t, dir);
  const d = await startDaemon({ dir, netns: ns, env: { NOTIFY_SOCKET: path } });
  t.teardown(() => d.stop());
  const statuses = (): string[] => msgs.filter((m) => m.startsWith('STATUS=')).map((m) => m.slice('STATUS='.length));
  const create = async (host: string, duration: number): Promise<string> => {
    const r = await d.request({ v: 1, op: 'create', engid: 'E-NOTIFY', sniffIf: 'sniff0', resetIf: 'reset0', host, duration }, 30_000);
    t.true(r.ok, JSON.stringify(r.error));
    return r.result.job.id as string;
  };
  await until(() => msgs.some((m) => m.startsWith('READY=1')), 10_000, 'READY=1');
  t.regex(msgs.find((m) => m.startsWith('READY=1'))!, /\nSTATUS=0 jobs active\n/);
  await create('198.51.100.91', 2);
  await until(() => statuses().length >= 1, 5000, 'STATUS after the first job');
  const long = await create('198.51.100.92', 60);
  await until(() => statuses().length >= 2, 5000, 'STATUS after the second job');
  await create('198.51.100.92', 90); // an extension: the count does not change, so nothing is sent
  t.true((await d.request({ v: 1, op: 'cancel', jobId: long })).ok);
  await until(() => statuses().length >= 3, 5000, 'STATUS after the cancel');
  await d.waitLog((l) => l.msg === 'job expired', 10_000, 'the 2 s job expiring');
  await until(() => statuses().length >= 4, 5000, 'STATUS after the expiry');
  t.deepEqual(statuses(), ['1 job active', '2 jobs active', '1 job active', '0 jobs active']);
});

// ---- the hardening against what the daemon really does (root) ---------------


const jobLines = (hostV4: string, hostV6: string) => [
  JSON.stringify({ v: 1, op: 'create', engid: 'E', sniffIf: 'sniff0', resetIf: 'reset0', host: hostV4, duration: 1 }),
  JSON.stringify({ v: 1, op: 'create', engid: 'E', sniffIf: 'sniff0', resetIf: 'reset0', host: hostV6, port: 443, duration: 60, mode: 'l2' }),
  '{"v":1,"op":"status"}',
  '{"v":1,"op":"list"}',
  JSON.stringify({ v: 1, op: 'cancel', engid: 'E', sniffIf: 'sniff0', host: hostV6, port: 443 }),
];

/** Expand a syscall group (recursively) as systemd defines it. */
const groupCache = new Map<string, Set<string>>();
function syscalls(group: string): Set<string> {
  if (!group.startsWith('@')) return new Set([group]);
  const have = groupCache.get(group);
  if (have) return have;
  const out = spawnSync('systemd-analyze', ['syscall-filter', group], { encoding: 'utf8' }).stdout;
  const set = new Set<string>();
  for (const line of out.split('\n').slice(1)) {
    const w = line.trim().split(/\s+/)[0];
    if (!w || w.startsWith('#')) continue;
    for (const s of syscalls(w)) set.add(s);
  }
  groupCache.set(group, set);
  return set;
}

/** The allow list the unit's SystemCallFilter= lines produce, applied in order like systemd. */
function allowedSyscalls(unit: string): Set<string> {
  const allowed = new Set<string>();
  for (const value of unitValues(unit, 'SystemCallFilter')) {
    const deny = value.startsWith('~');
    for (const item of (deny ? value.slice(1) : value).trim().split(/\s+/)) {
      for (const s of syscalls(item)) deny ? allowed.delete(s) : allowed.add(s);
    }
  }
  return allowed;
}

/**
 * Refused by the filter (EPERM, SystemCallErrorNumber=) and harmless:
 * V8 probes memory protection keys with pkey_alloc and does without them.
 */
const REFUSED_OK = new Set(['pkey_alloc']);

ptest('every system call and address family the daemon uses while enforcing is allowed by the unit', async (t) => {
  const unit = readFileSync(SERVICE, 'utf8');
  const allowed = allowedSyscalls(unit);
  t.true(allowed.has('bpf') && allowed.has('socket') && allowed.has('sendmmsg') && allowed.has('setsockopt'));
  const ns = await sensorNetns(t);
  const dir = tmp('strace');
  const trace = join(dir, 'trace');
  const d = await startDaemon({ dir, netns: ns, wrapper: ['strace', '-f', '-qq', '-o', trace] });
  const resps = await sendLines(d.socket, jobLines('198.51.100.40', '2001:db8::40'));
  t.true(resps.every((r) => r.ok), JSON.stringify(resps));
  await sleep(1300); // the first job expires on its timer; XDP detaches
  // strace forks the daemon: signal the daemon itself (strace exits with its status).
  process.kill(resps[2].result.pid as number, 'SIGTERM');
  t.deepEqual(await d.wait(), { code: 0, signal: null });
  const text = readFileSync(trace, 'utf8');
  const used = new Set<string>();
  const families = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)/.exec(line);
    if (m) used.add(m[1]);
    const f = /^\d+\s+socket\((AF_[A-Z0-9]+)/.exec(line);
    if (f) families.add(f[1]);
  }
  used.delete('execve'); // strace's own exec of node (allowed anyway)
  t.true(used.has('bpf') && used.has('sendto'), 'the trace covers the data plane');
  const refused = [...used].filter((s) => !allowed.has(s) && !REFUSED_OK.has(s));
  t.deepEqual(refused, [], `syscalls the unit would refuse: ${refused.join(' ')}`);
  const allowedFamilies = new Set(unitValues(unit, 'RestrictAddressFamilies')[0].split(/\s+/));
  t.true(families.has('AF_PACKET') && families.has('AF_INET'), [...families].join(' '));
  t.deepEqual([...families].filter((f) => !allowedFamilies.has(f)), []);
});

ptest("as an unprivileged user with only the unit's capabilities the daemon enforces; without them creation fails with E_DATAPLANE (the daemon's problem)", async (t) => {
  const unit = readFileSync(SERVICE, 'utf8');
  const caps = unitValues(unit, 'AmbientCapabilities')[0].split(/\s+/).map((c) => c.replace(/^CAP_/, '').toLowerCase());
  const capList = caps.map((c) => `+${c}`).join(',');
  const ns = await sensorNetns(t);
  for (const withCaps of [true, false]) {
    const dir = tmp('caps');
    chownSync(dir, 65534, 65534);
    const wrapper = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
      `--inh-caps=-all${withCaps ? `,${capList}` : ''}`, `--ambient-caps=-all${withCaps ? `,${capList}` : ''}`,
      `--bounding-set=-all${withCaps ? `,${capList}` : ''}`];
    // From a copy the unprivileged user can read, wherever the checkout lives.
    const d = await startDaemon({ dir, netns: ns, wrapper, daemonBin: (await worldReadableBuild()).daemon });
    try {
      const [created, status] = await sendLines(d.socket, [jobLines('198.51.100.41', '2001:db8::41')[0].replace('"duration":1', '"duration":30'), '{"v":1,"op":"status"}']);
      if (withCaps) {
        t.true(created.ok, JSON.stringify(created));
        t.truthy(status.result.interfaces.find((i: { role: string; mode: string }) => i.role === 'sniff' && ['native', 'generic'].includes(i.mode)), 'XDP attached');
        t.truthy(status.result.interfaces.find((i: { role: string }) => i.role === 'reset'), 'reset sender open');
      } else {
        t.false(created.ok);
        t.is(created.error?.code, 'E_DATAPLANE', JSON.stringify(created));
      }
    } finally {
      t.deepEqual(await d.stop(), { code: 0, signal: null });
    }
  }
});
