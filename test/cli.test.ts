import test, { type ExecutionContext } from 'ava';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../src/cli/main.js';
import type { Job, StatusResult } from '../src/control/protocol.js';
import { sensorNetns, startDaemon, worldReadableBuild } from '../testkit/daemon.js';
import { ownedNetnsSync } from '../testkit/lab/netns.js';
import { ptest } from './helpers/privileged.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(root, 'bin/tcpreset');
const pkgVersion = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

// ---------------------------------------------------------------- helpers

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(argv: string[], env: Record<string, string | undefined> = {}): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const code = await run(argv, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: { TCPRESET_SOCKET: '/nonexistent/tcpreset-test.sock', ...env },
  });
  return { code, stdout, stderr };
}

async function child(argv: string[], env: Record<string, string> = {}, opts: { uid?: number; gid?: number } = {}): Promise<Outcome> {
  // As another user, from a copy that user can read wherever the checkout lives.
  const script = opts.uid !== undefined ? (await worldReadableBuild()).cli : bin;
  return new Promise((res) => {
    execFile(
      process.execPath,
      [script, ...argv],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TCPRESET_SOCKET: '/nonexistent/tcpreset-test.sock', ...env }, ...opts },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        res({ code, stdout, stderr });
      },
    );
  });
}

/** A failure: nothing on stdout, exactly one "tcpreset: ..." line on stderr, no stack trace. */
function oneLineError(t: ExecutionContext, o: Outcome, code: number, msg: RegExp): void {
  t.is(o.code, code, `stderr: ${o.stderr}`);
  t.is(o.stdout, '');
  t.regex(o.stderr, /^tcpreset: [^\n]+\n$/);
  t.notRegex(o.stderr, /\n\s+at /);
  t.regex(o.stderr.slice('tcpreset: '.length, -1), msg);
}

const tmp = mkdtempSync(join(tmpdir(), 'tcpreset-cli-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));
let sockN = 0;

type Reply = object | string | 'hang' | 'close';

/**
 * A protocol peer on a Unix socket: records each request line and answers
 * with `reply(request)` (an object is sent as one JSON line, a string raw).
 * Stands in for the daemon only in client-side tests.
 */
async function peer(reply: (req: Record<string, unknown>) => Reply) {
  const path = join(tmp, `p${++sockN}.sock`);
  const requests: Record<string, unknown>[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const req = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      requests.push(req);
      const r = reply(req);
      if (r === 'hang') return;
      if (r === 'close') return void s.end();
      s.write(typeof r === 'string' ? r : `${JSON.stringify(r)}\n`);
    });
  });
  await new Promise<void>((ok) => server.listen(path, ok));
  return {
    path,
    requests,
    close: () =>
      new Promise<void>((ok) => {
        for (const s of sockets) s.destroy();
        server.close(() => ok());
      }),
  };
}

const ok = (result: unknown) => ({ v: 1, ok: true, result });

/**
 * A socket file nobody listens on (its process exited). Made by a child
 * without blocking: tests in this file run concurrently, and a blocked event
 * loop turns another test's 0.5 s wait into a timeout.
 */
function staleSocket(path: string): Promise<void> {
  return new Promise((res, rej) => {
    execFile(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`], (err) => (err ? rej(err) : res()));
  });
}

const job: Job = {
  id: '3f2a9c01bd4e',
  engid: 'ids-1',
  sniffIf: 'eth1',
  resetIf: 'eth0',
  host: '10.1.2.3',
  port: null,
  mode: 'l3',
  createdAt: '2026-11-24T11:57:00.000Z',
  expiresAt: '2026-11-24T12:00:00.000Z',
  remainingMs: 180000,
  counters: { matched: 12, rstsSent: 24, flows: 3, firstHitAt: '2026-11-24T11:57:01.000Z', lastHitAt: '2026-11-24T11:58:00.000Z' },
};

const CREATE = ['ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '180'];

// ---------------------------------------------------------------- help and usage

test('--help and help print the seed syntax on stdout and exit 0; help SUBCOMMAND; -h is HOST, not help', async (t) => {
  const h = await cli(['--help']);
  t.is(h.code, 0);
  t.is(h.stderr, '');
  t.regex(h.stdout, /^Usage: tcpreset ENGID -i SNIFF_IF -o RESET_IF -h HOST \[-p DSTPORT\] -d SECONDS/);
  t.regex(h.stdout, /-h, --host HOST/);
  t.regex(h.stdout, /tcpreset create ENGID/);
  t.regex(h.stdout, /\n {2}-s, --socket PATH /);
  t.deepEqual(await cli(['help']), h);
  t.deepEqual(await cli(['-s', '/x', 'help']), h);
  const c = await cli(['create', '--help']);
  t.is(c.code, 0);
  t.regex(c.stdout, /^Usage: tcpreset \[create\] ENGID -i SNIFF_IF/);
  t.regex(c.stdout, /-h, --host HOST/);
  t.regex(c.stdout, /--help\s+show help/);
  t.deepEqual(await cli(['help', 'create']), c);
  t.deepEqual(await cli(['ids-1', '-i', 'eth1', '--help']), h); // commander: the default command's --help is the program's
  for (const sub of ['cancel', 'list', 'status', 'version', 'help']) {
    const s = await cli(['help', sub]);
    t.is(s.code, 0, sub);
    t.regex(s.stdout, new RegExp(`^Usage: tcpreset ${sub}\\b`), sub);
    if (sub !== 'help') t.deepEqual(await cli([sub, '--help']), s, sub);
  }
  // "-h" alone is HOST without a value: a usage error, not help.
  oneLineError(t, await cli(['ids-1', '-h']), 64, /option '-h, --host <HOST>' argument missing/);
  oneLineError(t, await cli(['list', '-h']), 64, /unknown option '-h'/);
  oneLineError(t, await cli(['help', 'bogus']), 64, /^no subcommand "bogus" \(subcommands: create, cancel, list, status, version, history, metrics, help\)$/);
  oneLineError(t, await cli(['help', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '5']), 64, /^"help" is a subcommand name: .*"tcpreset create help -i \.\.\."$/);
  oneLineError(t, await cli(['help', 'list', 'status']), 64, /"help" is a subcommand name/);
});

test('-V / --version print this command\'s version and exit 0 without asking the daemon', async (t) => {
  for (const argv of [['-V'], ['--version'], ['-s', '/x', '-V']]) {
    t.deepEqual(await cli(argv), { code: 0, stdout: `tcpreset ${pkgVersion}\n`, stderr: '' }, argv.join(' '));
  }
  // The bundle bin/tcpreset runs has the version built in.
  t.deepEqual(await child(['--version']), { code: 0, stdout: `tcpreset ${pkgVersion}\n`, stderr: '' });
});

test('usage errors: exit 64, one line, no request sent', async (t) => {
  const p = await peer(() => ok({}));
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: p.path };
  const cases: Array<[string[], RegExp]> = [
    [[], /missing ENGID or subcommand/],
    [['ids-1'], /missing required options -i SNIFF_IF, -o RESET_IF, -h HOST, -d SECONDS/],
    [['ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3'], /missing required option -d SECONDS$/],
    [['-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '9'], /missing ENGID/],
    [[...CREATE, '--jsn'], /unknown option '--jsn' \(Did you mean --json\?\)/],
    [[...CREATE, 'extra'], /^unexpected operand "extra": "create" takes one, the ENGID \(here "ids-1"\)$/],
    [['cancel', 'ids-1', 'ids-2'], /^unexpected operand "ids-2": "cancel" takes one, the JOBID or ENGID \(here "ids-1"\)$/],
    [[...CREATE, '-h', '10.9.9.9'], /'-h, --host <HOST>' argument '10.9.9.9' is invalid. the option is given more than once/],
    [[...CREATE, '-d', '60'], /more than once/],
    [['ids-1', '-i'], /'-i, --sniff <SNIFF_IF>' argument missing/],
    [['list', 'x'], /^unexpected operand "x": "list" takes none$/],
    [['status', 'x', 'y'], /^unexpected operands "x", "y": "status" takes none$/],
    [['list', '-i', 'eth1'], /unknown option '-i'/],
    [['status', '--l2'], /unknown option '--l2'/],
    [['cancel'], /missing JOBID or ENGID/],
    [['cancel', 'ids-1', '-i', 'eth1'], /cancel by ENGID needs -h HOST/],
    [['cancel', 'ids-1', '-h', '10.1.2.3', '-p', '80'], /cancel by ENGID needs -i SNIFF_IF/],
    [['cancel', 'ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3'], /unknown option '-o'/],
    // A subcommand name not in first position is refused rather than guessed.
    [['-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '9', 'list'], /"list" is a subcommand name: .*tcpreset create list -i/],
    [['--json', '-i', 'eth1', 'status'], /"status" is a subcommand name/],
    [['list', '-s'], /option '-s, --socket <PATH>' argument missing/],
    [['-s', 'a', 'list', '--socket', 'b'], /option '-s, --socket <PATH>' argument 'b' is invalid. the option is given more than once/],
    // getopt's reading of -i=eth1 is the value "=eth1": refused as the typo it is, not sent as an interface name.
    [['ids-1', '-i=eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '9'], /^"-i=eth1": a short option's value follows it directly or after a space, so this reads as "=eth1"; write -i eth1, -ieth1 or --sniff=eth1$/],
    [['cancel', 'ids-1', '-i', 'eth1', '-h=10.1.2.3'], /^"-h=10\.1\.2\.3": .*; write -h 10\.1\.2\.3, -h10\.1\.2\.3 or --host=10\.1\.2\.3$/],
  ];
  for (const [argv, msg] of cases) oneLineError(t, await cli(argv, env), 64, msg);
  // Found by the CLI fuzz: commander quoted a repeated option's 100,000-character value whole.
  const huge = await cli([...CREATE, '-p', '80', '-p', 'x'.repeat(100_000)], env);
  oneLineError(t, huge, 64, /^option '-p, --port <DSTPORT>' argument 'x{200}…' \(100000 characters\) is invalid\. the option is given more than once$/);
  const unknown = await cli([...CREATE, `--${'y'.repeat(5000)}`], env);
  oneLineError(t, unknown, 64, /^unknown option '--y{198}…' \(5002 characters\)$/);
  t.is(p.requests.length, 0);
});

test('invalid values: exit 65, one line naming the value and why, no request sent', async (t) => {
  const p = await peer(() => ok({}));
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: p.path };
  const set = (i: number, v: string): string[] => CREATE.map((x, j) => (j === i ? v : x));
  const cases: Array<[string[], RegExp]> = [
    [set(0, 'ids 1'), /^ENGID "ids 1": contains whitespace/],
    [set(0, 'x'.repeat(65)), /^ENGID "x{65}": is 65 characters long/],
    [set(0, 'a\u0007'), /^ENGID "a\\u0007": contains a non-printable character U\+0007/],
    [set(2, 'eth1/../x'), /^sniff interface \(-i\) "eth1\/..\/x": must not contain "\/"/],
    [set(2, 'averyveryverylongname'), /at most 15/],
    [set(4, 'eth0:1'), /^reset interface \(-o\) "eth0:1": must not contain ":"/],
    [set(6, '010.1.2.3'), /^host \(-h\) "010.1.2.3": part 1 "010" has a leading zero/],
    [set(6, 'fe80::1%eth0'), /zone ids/],
    [set(6, '10.0.0.0/8'), /prefix/],
    [set(6, '127.0.0.1'), /loopback/],
    [set(6, '224.0.0.5'), /multicast/],
    [set(6, '255.255.255.255'), /broadcast/],
    [set(6, '0.0.0.0'), /unspecified/],
    [set(6, 'evil.example'), /^host \(-h\) "evil.example": /],
    [set(8, '0'), /^duration \(-d\) "0": must be at least 1 second/],
    [set(8, '180s'), /no unit or sign/],
    [set(8, '-5'), /.+/], // commander takes "-5" as the value; validation refuses it
    [set(8, '1.5'), /digits only/],
    [set(8, '0180'), /leading zeros/],
    [[...CREATE, '-p', '0'], /^port \(-p\) "0": must be at least 1/],
    [[...CREATE, '-p', '65536'], /above 65535/],
    [[...CREATE, '-p', '+80'], /digits only/],
    [[...CREATE, '-p', '0x50'], /digits only/],
    [[...CREATE, '-p', '080'], /leading zeros/],
    [[...CREATE, '--timeout', 'soon'], /^timeout \(--timeout\) "soon": must be seconds in plain decimal \(like 10 or 2\.5\), above 0 and at most 86400$/],
    [['list', '--timeout', '1e9'], /^timeout \(--timeout\) "1e9": must be seconds in plain decimal \(like 10 or 2\.5\), above 0 and at most 86400$/],
    [[...CREATE, '--timeout', '0'], /above 0/],
    // Found by the CLI fuzz: past setTimeout's range the wait ended at once ("within Infinity s", exit 75).
    [[...CREATE, '--timeout', '4294967296'], /^timeout \(--timeout\) "4294967296": must be seconds in plain decimal \(like 10 or 2\.5\), above 0 and at most 86400$/],
    [[...CREATE, '--timeout', '9'.repeat(400)], /must be seconds in plain decimal \(like 10 or 2\.5\), above 0 and at most 86400$/],
    [['list', '--timeout', '86400.5'], /must be seconds in plain decimal \(like 10 or 2\.5\), above 0 and at most 86400$/],
    [[...CREATE, '--socket', ''], /^socket \(-s\/--socket\) "": must not be empty/],
    [['cancel', 'a b'], /^job id "a b": is not a job id/],
    [['cancel', 'ids-1', '-i', 'eth1', '-h', '::1'], /loopback/],
  ];
  for (const [argv, msg] of cases) oneLineError(t, await cli(argv, env), 65, msg);
  t.is(p.requests.length, 0);
});

test('no upper bound on -d in the CLI: the daemon owns the maximum', async (t) => {
  const p = await peer(() => ok({ action: 'created', job }));
  t.teardown(p.close);
  const r = await cli([...CREATE.slice(0, 8), '31536000'], { TCPRESET_SOCKET: p.path });
  t.is(r.code, 0);
  t.is(p.requests[0].duration, 31536000);
});

// ---------------------------------------------------------------- requests and output

test('create: the request carries exactly the validated, canonical values', async (t) => {
  const p = await peer(() => ok({ action: 'created', job }));
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: p.path };
  t.is((await cli(CREATE, env)).code, 0);
  t.is((await cli(['ids-1', '-d180', '-ieth1', '-oeth0', '-h', '2001:DB8:0::7', '-p', '443', '--l2'], env)).code, 0);
  t.is((await cli(['create', 'list', '--sniff', 'eth1', '--reset', 'eth0', '--host=::ffff:10.1.2.3', '--duration', '5'], env)).code, 0);
  t.is((await cli(['create', 'create', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '5'], env)).code, 0);
  t.is((await cli(['create', 'help', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '5'], env)).code, 0);
  t.deepEqual(p.requests, [
    { v: 1, op: 'create', engid: 'ids-1', sniffIf: 'eth1', resetIf: 'eth0', host: '10.1.2.3', duration: 180 },
    { v: 1, op: 'create', engid: 'ids-1', sniffIf: 'eth1', resetIf: 'eth0', host: '2001:db8::7', duration: 180, port: 443, mode: 'l2' },
    { v: 1, op: 'create', engid: 'list', sniffIf: 'eth1', resetIf: 'eth0', host: '10.1.2.3', duration: 5 },
    { v: 1, op: 'create', engid: 'create', sniffIf: 'eth1', resetIf: 'eth0', host: '10.1.2.3', duration: 5 },
    { v: 1, op: 'create', engid: 'help', sniffIf: 'eth1', resetIf: 'eth0', host: '10.1.2.3', duration: 5 },
  ]);
});

test('other subcommands send their ops; --socket beats $TCPRESET_SOCKET', async (t) => {
  const p = await peer((req) => ok(req.op === 'cancel' ? { job } : req.op === 'list' ? { jobs: [] } : { version: '9.9.9' }));
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: p.path };
  t.is((await cli(['cancel', '3f2a9c01bd4e'], env)).code, 0);
  t.is((await cli(['cancel', 'ids-1', '-i', 'eth1', '-h', '2001:db8::0:1', '-p', '22'], env)).code, 0);
  t.is((await cli(['list'], env)).code, 0);
  t.is((await cli(['version', '--socket', p.path], { TCPRESET_SOCKET: '/nonexistent/x.sock' })).code, 0);
  t.deepEqual(p.requests, [
    { v: 1, op: 'cancel', jobId: '3f2a9c01bd4e' },
    { v: 1, op: 'cancel', engid: 'ids-1', sniffIf: 'eth1', host: '2001:db8::1', port: 22 },
    { v: 1, op: 'list' },
    { v: 1, op: 'version' },
  ]);
});

test('global options (-s/--socket, --timeout, --json) before or after the subcommand, in every spelling', async (t) => {
  const p = await peer((req) => ok(req.op === 'list' ? { jobs: [] } : req.op === 'create' ? { action: 'created', job } : { version: '1.2.3' }));
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: '/nonexistent/x.sock' };
  const lines: string[][] = [
    ['-s', p.path, 'list'],
    ['list', '-s', p.path],
    [`-s${p.path}`, 'list'],
    ['--socket', p.path, 'list', '--timeout', '5'],
    [`--socket=${p.path}`, '--json', 'list'],
    ['--json', 'list', `--socket=${p.path}`],
    ['--timeout', '5', '-s', p.path, '--json', 'list', '--json'],
    ['-s', p.path, 'ids-1', ...CREATE.slice(1)],
    ['--json', '-s', p.path, 'create', 'ids-1', ...CREATE.slice(1)],
    [...CREATE, '-s', p.path],
  ];
  for (const argv of lines) {
    const r = await cli(argv, env);
    t.is(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
    t.is(r.stderr, '');
    if (argv.includes('--json')) t.notThrows(() => JSON.parse(r.stdout), argv.join(' '));
    else t.regex(r.stdout, /^(no jobs\n|created job )/, argv.join(' '));
  }
  t.deepEqual(
    p.requests.map((r) => r.op),
    ['list', 'list', 'list', 'list', 'list', 'list', 'list', 'create', 'create', 'create'],
  );
  t.deepEqual(p.requests[7], { v: 1, op: 'create', engid: 'ids-1', sniffIf: 'eth1', resetIf: 'eth0', host: '10.1.2.3', duration: 180 });
});

test('both transports (Node\'s pipe handle and node:net) give the same results and the same errors', async (t) => {
  const { request } = await import('../src/control/client.js');
  const good = await peer(() => ok({ jobs: [] }));
  const hang = await peer(() => 'hang');
  const closer = await peer(() => 'close');
  const garbler = await peer(() => 'not json\n');
  const split = await peer(() => `${JSON.stringify(ok({ jobs: [job] }))}`.replace(/^(.{10})/, '$1') + '\n');
  t.teardown(async () => {
    for (const p of [good, hang, closer, garbler, split]) await p.close();
  });
  const stale = join(tmp, 'stale-transport.sock');
  await staleSocket(stale);
  const outcome = async (path: string, transport: 'pipe' | 'net', timeoutMs = 3000): Promise<string> => {
    try {
      return `ok ${JSON.stringify(await request(path, { op: 'list' }, { transport, timeoutMs }))}`;
    } catch (err) {
      const e = err as { code?: string; message: string };
      return `${e.code} ${e.message}`;
    }
  };
  const cases: Array<[string, string, number?]> = [
    ['ok', good.path],
    ['ok, a job', split.path],
    ['ENOENT', '/nonexistent/tcpreset-t.sock'],
    ['ENOTDIR', join(fileURLToPath(import.meta.url), 'x.sock')],
    ['ECONNREFUSED', stale],
    ['no answer', hang.path, 300],
    ['hang-up', closer.path],
    ['garbled', garbler.path],
  ];
  const expect: RegExp[] = [
    /^ok \{"v":1,"ok":true,"result":\{"jobs":\[\]\}\}$/,
    /^ok \{"v":1,"ok":true,"result":\{"jobs":\[\{"id":"3f2a9c01bd4e"/,
    /^E_UNAVAILABLE daemon not reachable at \/nonexistent\/tcpreset-t\.sock: connect ENOENT — is tcpresetd running\?$/,
    /^E_UNAVAILABLE daemon not reachable at .*x\.sock: connect ENOTDIR/,
    /^E_UNAVAILABLE daemon not reachable at .*: connect ECONNREFUSED/,
    /^E_TIMEOUT no answer from the daemon at .* within 0\.3 s$/,
    /^E_UNAVAILABLE the daemon at .* closed the connection without answering$/,
    /^E_PROTOCOL response is not valid JSON/,
  ];
  for (const [i, [name, path, ms]] of cases.entries()) {
    const viaPipe = await outcome(path, 'pipe', ms);
    const viaNet = await outcome(path, 'net', ms);
    t.regex(viaPipe, expect[i], `pipe: ${name}`);
    t.is(viaPipe, viaNet, name);
  }
  // Where Node would warn about process.binding() (it does: the control), the command takes node:net and stays quiet.
  const warned = await new Promise<string>((res) => execFile(process.execPath, ['--pending-deprecation', '-e', "process.binding('pipe_wrap')"], (_e, _o, err) => res(err)));
  t.regex(warned, /DEP0111/);
  for (const env of [{ NODE_OPTIONS: '--pending-deprecation' }, { NODE_PENDING_DEPRECATION: '1' }] as Record<string, string>[]) {
    t.deepEqual(await child(['list'], { TCPRESET_SOCKET: good.path, ...env }), { code: 0, stdout: 'no jobs\n', stderr: '' }, JSON.stringify(env));
  }
  // Every good exchange closed its handle: nothing keeps a test process (or the CLI) alive.
  t.is(hang.requests.length, 2);
});

test('human output: one line per result, aligned list, status summary', async (t) => {
  const job2: Job = { ...job, id: 'b1', engid: 'ml-beacon-7', host: '2001:db8::1', port: 443, mode: 'l2', remainingMs: 3_725_000, counters: { ...job.counters, matched: 1234567, rstsSent: 5, flows: 1 } };
  const status: StatusResult = {
    version: '1.2.3',
    pid: 4242,
    uptimeMs: 3_723_000,
    interfaces: [
      { ifname: 'eth1', role: 'sniff', mode: 'native', up: true },
      { ifname: 'eth0', role: 'reset', mode: 'l3', up: false, fault: 'reset interface "eth0" is administratively down' },
    ],
    counters: { packets: 10, matched: 2 },
    ring: { records: 2, wakeups: 1, stale: 0 },
    senders: [],
    resetTotals: [],
    sweep: { sent: 4, errors: 0, known: 2, verified: 1 },
    flowsReset: 3,
    sniff: [{ ifname: 'eth1', ifindex: 3, packets: 10, tcp: 8, decap: 0, unparsableWindows: 0 }],
    jobs: 2,
    targets: 2,
    faultyJobs: 0,
    dataPlane: 'open',
    dataPlaneFailures: 0,
    memory: { rss: 80, heapUsed: 10, heapTotal: 20, external: 1, arrayBuffers: 1 },
    state: { path: '/var/lib/tcpreset/jobs.json', journalRecords: 2, snapshotJobs: 0, compactions: 0, appends: 2, saveFailures: 0, droppedAtLoad: 0 },
    config: { file: '/etc/tcpreset/config.json', reloads: { applied: 1, refused: 0 } },
    connections: 1,
    requests: 7,
  };
  const p = await peer((req) => {
    if (req.op === 'create') return ok({ action: req.duration === 1 ? 'extended' : 'created', job });
    if (req.op === 'cancel') return ok({ job });
    if (req.op === 'list') return ok({ jobs: req.id === undefined ? [job, job2] : [] });
    if (req.op === 'status') return ok(status);
    return ok({ version: '1.2.3' });
  });
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: p.path };
  const created = await cli(CREATE, env);
  t.deepEqual(created, {
    code: 0,
    stderr: '',
    stdout: 'created job 3f2a9c01bd4e ENGID=ids-1 host 10.1.2.3 on eth1 -> eth0 until 2026-11-24T12:00:00Z (180 s)\n',
  });
  t.regex((await cli(['ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '1'], env)).stdout, /^extended job 3f2a9c01bd4e /);
  t.is((await cli(['cancel', job.id], env)).stdout, 'cancelled job 3f2a9c01bd4e ENGID=ids-1 host 10.1.2.3 on eth1 -> eth0 (24 RSTs sent, 3 flows reset)\n');
  const list = (await cli(['list'], env)).stdout.split('\n');
  t.is(list.length, 4); // header, 2 rows, trailing ''
  t.regex(list[0], /^ID\s+ENGID\s+HOST\s+PORT\s+SNIFF\s+RESET\s+MODE\s+REMAINING\s+MATCHED\s+RSTS\s+FLOWS$/);
  t.regex(list[1], /^3f2a9c01bd4e\s+ids-1\s+10\.1\.2\.3\s+any\s+eth1\s+eth0\s+l3\s+3m00s\s+12\s+24\s+3$/);
  t.regex(list[2], /^b1\s+ml-beacon-7\s+2001:db8::1\s+443\s+eth1\s+eth0\s+l2\s+1h02m\s+1234567\s+5\s+1$/);
  // Columns line up: each header starts where its cells start (left) or ends where they end (right-aligned numbers).
  for (const col of ['ENGID', 'HOST', 'PORT', 'SNIFF']) {
    const at = list[0].indexOf(col);
    t.true(at >= 2, col);
    t.is(list[1].slice(at - 2, at), '  ', `two spaces before ${col}'s cells`);
    // A cell starts there: a character that is not a space (an undefined past the line's end failed no t.not).
    t.regex(list[1][at] ?? '', /\S/);
    t.regex(list[2][at] ?? '', /\S/);
  }
  const end = list[0].indexOf('MATCHED') + 'MATCHED'.length;
  t.is(list[1].slice(end - 2, end), '12');
  t.is(list[2].slice(end - 7, end), '1234567');
  const st = (await cli(['status'], env)).stdout;
  t.regex(st, /^tcpresetd 1\.2\.3 {2}pid 4242 {2}up 1h02m {2}jobs 2\n/);
  t.regex(st, /\n {2}eth1\s+sniff\s+native\s+up\n/);
  t.regex(st, /\n {2}eth0\s+reset\s+l3\s+DOWN\s+reset interface "eth0" is administratively down\n/);
  t.regex(st, /\ncounters: packets=10 matched=2\nring: records=2 wakeups=1 stale=0\nsweeps: sent=4 errors=0 known=2 verified=1\nsniff eth1: packets=10 tcp=8 decapsulated=0\n$/);
  t.deepEqual(await cli(['version'], env), { code: 0, stderr: '', stdout: `tcpreset ${pkgVersion}\ntcpresetd 1.2.3\n` });
});

test('--json prints the response result as one JSON line', async (t) => {
  const p = await peer((req) => ok(req.op === 'list' ? { jobs: [job] } : req.op === 'version' ? { version: '1.2.3' } : { action: 'created', job }));
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: p.path };
  const c = await cli([...CREATE, '--json'], env);
  t.is(c.code, 0);
  t.is(c.stdout, `${JSON.stringify({ action: 'created', job })}\n`);
  t.deepEqual(JSON.parse((await cli(['list', '--json'], env)).stdout), { jobs: [job] });
  t.deepEqual(JSON.parse((await cli(['version', '--json'], env)).stdout), { version: '1.2.3', client: pkgVersion });
});

// ---------------------------------------------------------------- daemon errors and transport failures

test('a structured error response becomes its exit code and one line', async (t) => {
  const table: Array<[string, number]> = [
    ['E_USAGE', 64],
    ['E_INVALID', 65],
    ['E_IFACE', 65],
    ['E_PROTECTED', 65],
    ['E_NOT_FOUND', 65],
    ['E_LIMIT', 69],
    ['E_UNAVAILABLE', 69],
    ['E_PROTOCOL', 70],
    ['E_NATIVE', 70],
    ['E_INTERNAL', 70],
    ['E_SOMETHING_NEW', 70],
    ['E_TIMEOUT', 75],
    ['E_PERM', 77],
  ];
  let i = 0;
  const p = await peer(() => ({ v: 1, ok: false, error: { code: table[i][0], message: `problem ${table[i][0]}\nsecond line`, details: { x: 1 } } }));
  t.teardown(p.close);
  for (; i < table.length; i++) {
    oneLineError(t, await cli(CREATE, { TCPRESET_SOCKET: p.path }), table[i][1], new RegExp(`^problem ${table[i][0]} second line$`));
  }
});

test('daemon not reachable: no socket (ENOENT) and nobody listening (ECONNREFUSED) -> 69', async (t) => {
  oneLineError(t, await cli(['list']), 69, /^daemon not reachable at \/nonexistent\/tcpreset-test\.sock: connect ENOENT — is tcpresetd running\?$/);
  const stale = join(tmp, 'stale.sock');
  await staleSocket(stale);
  t.true(existsSync(stale));
  oneLineError(t, await cli(['status', '--socket', stale]), 69, /connect ECONNREFUSED — is tcpresetd running\?/);
  // version still says which client it is before failing.
  const v = await cli(['version']);
  t.is(v.code, 69);
  t.is(v.stdout, `tcpreset ${pkgVersion}\n`);
  t.regex(v.stderr, /^tcpreset: daemon not reachable .*\n$/);
});

test('no answer in time -> 75, promptly', async (t) => {
  const p = await peer(() => 'hang');
  t.teardown(p.close);
  const t0 = Date.now();
  // "no answer" (not "could not connect"): the request went out and nothing came back.
  oneLineError(t, await cli(['list', '--timeout', '0.5'], { TCPRESET_SOCKET: p.path }), 75, /^no answer from the daemon at .* within 0\.5 s$/);
  const ms = Date.now() - t0;
  t.true(ms >= 490 && ms < 5000, `${ms} ms`);
});

test('daemon hangs up without answering -> 69; a garbled answer -> 70', async (t) => {
  const closer = await peer(() => 'close');
  t.teardown(closer.close);
  oneLineError(t, await cli(['list'], { TCPRESET_SOCKET: closer.path }), 69, /closed the connection without answering/);
  const garbler = await peer(() => 'this is not json\n');
  t.teardown(garbler.close);
  oneLineError(t, await cli(['list'], { TCPRESET_SOCKET: garbler.path }), 70, /^response is not valid JSON/);
  const wrongV = await peer(() => ({ v: 2, ok: true, result: {} }));
  t.teardown(wrongV.close);
  oneLineError(t, await cli(['list'], { TCPRESET_SOCKET: wrongV.path }), 70, /protocol version 2/);
});

test('an unexpected exception is one line and exit 70, never a stack trace', async (t) => {
  const p = await peer(() => ok({ jobs: [] }));
  t.teardown(p.close);
  let stderr = '';
  const code = await run(['list'], {
    stdout: {
      write: () => {
        throw new TypeError('stdout exploded');
      },
    },
    stderr: { write: (s: string) => (stderr += s) },
    env: { TCPRESET_SOCKET: p.path },
  });
  t.is(code, 70);
  t.is(stderr, 'tcpreset: internal error: stdout exploded\n');
});

// ---------------------------------------------------------------- as a real process

test('bin/tcpreset as a child process: exit codes and stderr', async (t) => {
  const usage = await child(['ids-1', '-i', 'eth1']);
  oneLineError(t, usage, 64, /^missing required options -o RESET_IF, -h HOST, -d SECONDS$/);
  oneLineError(t, await child([...CREATE.slice(0, 8), 'soon']), 65, /^duration \(-d\) "soon"/);
  oneLineError(t, await child(CREATE), 69, /daemon not reachable at \/nonexistent\/tcpreset-test\.sock: connect ENOENT/);
  const help = await child(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^Usage: tcpreset ENGID/);
  const p = await peer(() => ok({ action: 'created', job }));
  t.teardown(p.close);
  const good = await child(CREATE, { TCPRESET_SOCKET: p.path });
  t.deepEqual(good, { code: 0, stderr: '', stdout: 'created job 3f2a9c01bd4e ENGID=ids-1 host 10.1.2.3 on eth1 -> eth0 until 2026-11-24T12:00:00Z (180 s)\n' });
  const err = await peer(() => ({ v: 1, ok: false, error: { code: 'E_PROTECTED', message: 'host 10.1.2.3 is protected' } }));
  t.teardown(err.close);
  oneLineError(t, await child(CREATE, { TCPRESET_SOCKET: err.path }), 65, /^host 10\.1\.2\.3 is protected$/);
  // A subcommand after an option is the ENGID of the implicit create; commander said only
  // "too many arguments for 'create'. Expected 1 argument but got 2." The error names the
  // extra word and the misplaced subcommand, through both parsers (fast, then commander).
  oneLineError(t, await child(['-d', '5', 'create', 'ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3']), 64,
    /^unexpected operand "ids-1": the word "create" stands after an option, where it is read as the ENGID; put the subcommand first \("tcpreset create \.\.\."\): only -s, --timeout and --json may come before it$/);
  oneLineError(t, await child(['-d', '5', 'cancel', '3f2a9c01bd4e']), 64, /^unexpected operand "3f2a9c01bd4e": the word "cancel" stands after an option/);
  oneLineError(t, await child(['--timeout', '2', 'list', 'x', '--', '-y']), 64, /^unexpected operands "x", "-y": "list" takes none$/);
  oneLineError(t, await child(['ids-1', '-d', '180', '-i=eth1', '-o', 'eth0', '-h', '10.1.2.3']), 64, /^"-i=eth1": a short option's value follows it directly/);
  // Positive control: the value attached without "=" is the interface eth1, and the create reaches the daemon.
  const attached = await child(['ids-1', '-d', '180', '-ieth1', '-o', 'eth0', '-h', '10.1.2.3'], { TCPRESET_SOCKET: p.path });
  t.is(attached.code, 0, attached.stderr);
  t.is(p.requests.at(-1)?.sniffIf, 'eth1');
  // Positive control: the same words with the subcommand first are a create that reaches the daemon.
  const placed = await child(['create', 'ids-1', '-d', '180', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3'], { TCPRESET_SOCKET: p.path });
  t.is(placed.code, 0, placed.stderr);
  t.regex(placed.stdout, /^created job 3f2a9c01bd4e ENGID=ids-1 /);
});

ptest('permission denied on the socket -> 77 (run as nobody)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-perm-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 's.sock');
  const server = net.createServer((s) => s.end()).listen(path);
  t.teardown(() => server.close());
  await new Promise((ok) => server.once('listening', ok));
  chmodSync(path, 0o600);
  chmodSync(dir, 0o755);
  const r = await child(['list', '--socket', path], {}, { uid: 65534, gid: 65534 });
  oneLineError(t, r, 77, /^permission denied on .*s\.sock: connect EACCES/);
});

// ---------------------------------------------------------------- lightness

/** Static import specifiers of an ES module (import/export from, dynamic import with a literal). */
function specifiers(source: string): string[] {
  const out: string[] = [];
  const re = /\b(?:import|export)\s[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (const m of source.matchAll(re)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

test('tcpreset list | head -1: a reader that goes away is not an error (exit 0, nothing on stderr), through a real pipe', async (t) => {
  // 5,000 jobs make ~0.6 MB of table: far more than a pipe holds, so the CLI is still writing when
  // head exits after the first line, and its next write gets EPIPE.
  const jobs = Array.from({ length: 5000 }, (_, i) => ({ ...job, id: i.toString(16).padStart(12, '0'), host: `10.1.${i >> 8}.${i & 255}` }));
  const p = await peer(() => ok({ jobs }));
  t.teardown(p.close);
  const sh = `"$0" "$1" list | head -1; echo "status \${PIPESTATUS[0]}" >&2`;
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => {
    execFile('bash', ['-c', sh, process.execPath, bin], { env: { ...process.env, TCPRESET_SOCKET: p.path }, maxBuffer: 1 << 24 }, (err, stdout, stderr) =>
      res({ code: err ? (err as { code?: number }).code ?? null : 0, stdout, stderr }));
  });
  t.is(r.code, 0);
  t.regex(r.stdout, /^ID\s+ENGID\s+HOST\s+PORT\s+SNIFF\s+RESET\s+MODE\s+REMAINING\s+MATCHED\s+RSTS\s+FLOWS\n$/, 'the header line only');
  t.is(r.stderr, 'status 0\n', 'tcpreset exited 0 and wrote nothing to stderr');
  // Positive control: read whole, the same list is every row.
  const whole = await child(['list'], { TCPRESET_SOCKET: p.path });
  t.is(whole.code, 0);
  t.is(whole.stdout.split('\n').length, 5002, 'header, 5,000 rows, trailing newline');
});

test('the CLI import graph reaches neither koffi nor pino (nor native/daemon code)', (t) => {
  const start = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const seen = new Set<string>();
  const bare = new Set<string>();
  const todo = [start];
  while (todo.length) {
    const file = todo.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const src = readFileSync(file, 'utf8');
    t.notRegex(src, /\brequire\(/, `${file} uses require()`);
    for (const s of specifiers(src)) {
      if (s.startsWith('.')) todo.push(resolve(dirname(file), s));
      else bare.add(s.startsWith('node:') ? 'node:' : s.split('/')[0]);
    }
  }
  // The walker sees the modules main.js loads (proves it works), incl. lazy ones.
  const rel = [...seen].map((f) => f.slice(fileURLToPath(new URL('../', import.meta.url)).length)).sort();
  t.true(rel.includes('src/control/client.js') && rel.includes('src/cli/format.js') && rel.includes('src/core/addr.js'), rel.join(' '));
  t.deepEqual([...bare].sort(), ['commander', 'node:']);
  for (const f of rel) t.false(/^src\/(native|daemon|bpf|dataplane)\//.test(f), f);
  // The bundle bin/tcpreset runs was made from that graph: it requires only Node's own modules and commander.
  const bundle = readFileSync(join(root, 'dist/tcpreset.cjs'), 'utf8');
  const required = new Set([...bundle.matchAll(/\brequire\("([^"]+)"\)/g)].map((m) => m[1]));
  t.true(required.has('commander') && required.has('node:fs'), [...required].join(' '));
  for (const r of required) t.true(r === 'commander' || r.startsWith('node:'), `the bundle requires ${r}`);
  t.notRegex(bundle, /koffi|pino/);
  // commander itself has no dependencies.
  const cpkg = JSON.parse(readFileSync(join(root, 'node_modules/commander/package.json'), 'utf8')) as { dependencies?: object };
  t.deepEqual(Object.keys(cpkg.dependencies ?? {}), []);
});

// ---------------------------------------------------------------- against the real daemon

ptest('the real daemon: create, extend, list, status, version, cancel, and its refusals with exit codes', async (t) => {
  // Owned like a lab's namespace: a crashed run's is swept later, nobody else's ever.
  const { ns, destroy: destroyNs } = ownedNetnsSync('cli');
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-cli-d-'));
  const sh = (...a: string[]): string => execFileSync(a[0], a.slice(1), { encoding: 'utf8' });
  let daemon: ChildProcess | undefined;
  t.teardown(async () => {
    if (daemon && daemon.exitCode === null) {
      const gone = new Promise((ok) => daemon!.once('exit', ok));
      daemon.kill('SIGTERM');
      await Promise.race([gone, new Promise((ok) => setTimeout(ok, 5000))]);
      if (daemon.exitCode === null) daemon.kill('SIGKILL');
    }
    destroyNs();
    rmSync(dir, { recursive: true, force: true });
  });
  const ip = (...a: string[]): string => sh('ip', '-n', ns, ...a);
  ip('link', 'add', 'sn0', 'type', 'veth', 'peer', 'name', 'sn1');
  ip('link', 'add', 'rs0', 'type', 'veth', 'peer', 'name', 'rs1');
  ip('link', 'add', 'dn0', 'type', 'veth', 'peer', 'name', 'dn1'); // stays down
  for (const i of ['lo', 'sn0', 'sn1', 'rs0', 'rs1']) ip('link', 'set', i, 'up');
  ip('addr', 'add', '10.77.0.1/24', 'dev', 'rs0');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ maxDurationSec: 300, protected: ['10.77.0.200'] }));
  const sock = join(dir, 'tcpreset.sock');
  let log = '';
  daemon = spawn('ip', ['netns', 'exec', ns, process.execPath, join(root, 'bin/tcpresetd'), '--socket', sock, '--state-dir', join(dir, 'state'), '--config', join(dir, 'config.json')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  daemon.stdout!.on('data', (d) => (log += d));
  daemon.stderr!.on('data', (d) => (log += d));
  const env = { TCPRESET_SOCKET: sock };
  for (let i = 0; ; i++) {
    if ((await cli(['version'], env)).code === 0) break;
    if (i > 100 || daemon.exitCode !== null) return t.fail(`daemon did not come up: ${log}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }

  const c1 = await child(['ids-1', '-i', 'sn0', '-o', 'rs0', '-h', '10.77.0.9', '-d', '180'], env);
  t.is(c1.code, 0, c1.stderr);
  // The second line: what the flow memory held for the host (nothing crossed sn0 here).
  const m = /^created job (\S+) ENGID=ids-1 host 10\.77\.0\.9 on sn0 -> rs0 until \S+Z \((1[78]\d) s\)\n0 remembered sessions of 10\.77\.0\.9 reset at once\n$/.exec(c1.stdout);
  t.truthy(m, c1.stdout);
  const id = m![1];
  const c2 = await child(['ids-1', '-i', 'sn0', '-o', 'rs0', '-h', '10.77.0.9', '-d', '240'], env);
  t.regex(c2.stdout, new RegExp(`^extended job ${id} .*\\(2[34]\\d s\\)\\n0 remembered sessions of 10\\.77\\.0\\.9 reset at once\\n$`));
  // A shorter -d never shortens a job, and the output says so instead of "extended".
  const c2b = await child(['ids-1', '-i', 'sn0', '-o', 'rs0', '-h', '10.77.0.9', '-d', '10'], env);
  t.is(c2b.code, 0, c2b.stderr);
  t.regex(c2b.stdout, new RegExp(`^kept job ${id} .*\\(2[34]\\d s\\): it already ended later than asked\\n`));
  // The network and broadcast addresses of rs0's 10.77.0.0/24 are not hosts: refused through the daemon, naming why.
  for (const [h, what] of [['10.77.0.255', 'broadcast'], ['10.77.0.0', 'network']]) {
    const r = await child(['ids-1', '-i', 'sn0', '-o', 'rs0', '-h', h, '-d', '60'], env);
    t.is(r.code, 65, r.stderr);
    t.is(r.stderr, `tcpreset: reset interface "rs0" has 10.77.0.1/24, whose ${what} address is ${h}: HOST must be one host\n`);
  }
  const c3 = await cli(['create', 'list', '-i', 'sn0', '-o', 'rs0', '-h', '2001:db8::5', '-p', '443', '-d', '60', '--l2', '--json'], env);
  t.is(c3.code, 0, c3.stderr);
  const j3 = JSON.parse(c3.stdout) as { action: string; job: Job };
  t.like(j3, { action: 'created', job: { engid: 'list', host: '2001:db8::5', port: 443, mode: 'l2', sniffIf: 'sn0', resetIf: 'rs0' } });

  const list = JSON.parse((await cli(['list', '--json'], env)).stdout) as { jobs: Job[] };
  t.deepEqual(list.jobs.map((j) => j.engid).sort(), ['ids-1', 'list']);
  t.regex((await cli(['list'], env)).stdout, new RegExp(`^ID .*\\n${id}\\s+ids-1\\s+10\\.77\\.0\\.9\\s+any\\s+sn0\\s+rs0\\s+l3\\s+[34]m\\d\\ds\\s+\\d+`, 'm'));
  const st = await cli(['status'], env);
  t.regex(st.stdout, new RegExp(`^tcpresetd ${pkgVersion.replace(/\./g, '\\.')} {2}pid \\d+ {2}up \\S+ {2}jobs 2\\n`));
  t.regex(st.stdout, /\n {2}sn0\s+sniff\s+(native|generic)\s+up/);
  t.deepEqual(await cli(['version', '--json'], env), { code: 0, stderr: '', stdout: `${JSON.stringify({ version: pkgVersion, client: pkgVersion })}\n` });

  // The daemon's refusals, each with its exit status and one line.
  const base = ['x', '-o', 'rs0', '-d', '30'];
  oneLineError(t, await child([...base, '-i', 'nope0', '-h', '10.77.0.9'], env), 65, /^sniff interface "nope0" does not exist/);
  oneLineError(t, await child([...base, '-i', 'dn0', '-h', '10.77.0.9'], env), 65, /^sniff interface "dn0" is administratively down/);
  oneLineError(t, await child(['x', '-i', 'sn0', '-o', 'dn0', '-h', '10.77.0.9', '-d', '30'], env), 65, /^reset interface "dn0" is administratively down/);
  oneLineError(t, await child(['x', '-i', 'sn0', '-o', 'rs0', '-h', '2001:db8::9', '-d', '30'], env), 65, /^reset interface "rs0" needs a global IPv6 address/);
  oneLineError(t, await child([...base, '-i', 'sn0', '-h', '10.77.0.1'], env), 65, /protected/); // the sensor's own address
  oneLineError(t, await child([...base, '-i', 'sn0', '-h', '10.77.0.200'], env), 65, /protected/); // configured
  oneLineError(t, await child(['x', '-i', 'sn0', '-o', 'rs0', '-h', '10.77.0.9', '-d', '301'], env), 65, /301.*300/);
  oneLineError(t, await child(['cancel', 'nosuchjob'], env), 65, /nosuchjob/);

  const cx = await child(['cancel', 'ids-1', '-i', 'sn0', '-h', '10.77.0.9'], env);
  t.is(cx.code, 0, cx.stderr);
  t.regex(cx.stdout, new RegExp(`^cancelled job ${id} ENGID=ids-1 `));
  const cy = await cli(['cancel', j3.job.id, '--json'], env);
  t.is(cy.code, 0, cy.stderr);
  t.is((JSON.parse(cy.stdout) as { job: Job }).job.id, j3.job.id);
  t.is((await cli(['list'], env)).stdout, 'no jobs\n');
});

ptest('maxJobs through the real daemon: the job past the limit is exit 69 naming it; extending a held job still works; a cancel makes room', async (t) => {
  const ns = await sensorNetns(t);
  const d = await startDaemon({ netns: ns, config: { maxJobs: 2 } });
  t.teardown(() => d.stop());
  const env = { TCPRESET_SOCKET: d.socket };
  const create = (host: string, seconds = 60): Promise<Outcome> => child(['ENG-MAX', '-i', 'sniff0', '-o', 'reset0', '-h', host, '-d', String(seconds)], env);
  t.is((await create('198.51.100.1')).code, 0);
  t.is((await create('198.51.100.2')).code, 0);
  oneLineError(t, await create('198.51.100.3'), 69, /^too many jobs: the limit is 2 \(config maxJobs\)$/);
  const ext = await create('198.51.100.2', 120);
  t.is(ext.code, 0, ext.stderr);
  t.regex(ext.stdout, /^extended job /, 'an extension is not a new job');
  t.is((await child(['cancel', 'ENG-MAX', '-i', 'sniff0', '-h', '198.51.100.1'], env)).code, 0);
  const third = await create('198.51.100.3');
  t.is(third.code, 0, `room after the cancel: ${third.stderr}`);
  const hosts = (JSON.parse((await child(['list', '--json'], env)).stdout) as { jobs: Job[] }).jobs.map((j) => j.host).sort();
  t.deepEqual(hosts, ['198.51.100.2', '198.51.100.3']);
});

test('warnings of an accepted job go to stderr (the job stands: exit 0); a faulty job shows a FAULT column', async (t) => {
  const warning = 'state not saved: EROFS: read-only file system';
  const faulty = { ...job, fault: 'target not enforced: interface "eth1" does not exist' };
  const p = await peer((req) => ok(req.op === 'list' ? { jobs: [job, faulty] } : { action: 'created', job, warnings: [warning] }));
  t.teardown(p.close);
  const env = { TCPRESET_SOCKET: p.path };
  const created = await cli(CREATE, env);
  t.is(created.code, 0);
  t.regex(created.stdout, /^created job /);
  t.is(created.stderr, `tcpreset: warning: ${warning}\n`);
  const list = (await cli(['list'], env)).stdout.split('\n');
  t.regex(list[0], /\sFLOWS\s+FAULT$/);
  t.regex(list[2], /\starget not enforced: interface "eth1" does not exist$/);
  t.notRegex(list[1], /not enforced/);
});
