/**
 * The namespace lab itself: it builds, carries real TCP over IPv4 and IPv6,
 * mirrors both directions of the monitored ports (optionally VLAN-tagged)
 * into the sensor, and leaves nothing behind: not after destroy(), not after
 * a failure half-way through building, not after SIGTERM, and a SIGKILLed
 * run's leftovers are swept.
 */
import test from 'ava';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ptest } from './helpers/privileged.js';
import { createLab, type Lab } from '../testkit/lab/lab.js';
import { LabCommandError, labPrefix, listNetns, ownNetns, sweepStale } from '../testkit/lab/netns.js';
import { labRunDir } from '../testkit/lab/record.js';
import { connectOnce, spawnPeer, startClient, startServer } from '../testkit/lab/peer-control.js';
import { ValidationError } from '../src/core/errors.js';
import { Capture } from '../testkit/capture.js';

const LAB_MODULE = new URL('../testkit/lab/lab.js', import.meta.url).href;

async function labNamespaces(lab: { name: string }): Promise<string[]> {
  return (await listNetns()).filter((n) => n.startsWith(`${lab.name}-`));
}

/** Lines of a capture that are TCP between the two addresses, by direction. */
function directions(lines: string[], a: string, b: string): { ab: number; ba: number } {
  const esc = (s: string): string => s.replace(/[.:]/g, (c) => `\\${c}`);
  const ab = new RegExp(`\\s${esc(a)}\\.\\d+ > ${esc(b)}\\.\\d+:`);
  const ba = new RegExp(`\\s${esc(b)}\\.\\d+ > ${esc(a)}\\.\\d+:`);
  return { ab: lines.filter((l) => ab.test(l)).length, ba: lines.filter((l) => ba.test(l)).length };
}

// Serial tests run first: nothing else of this process exists while they count namespaces.
ptest.serial('a failure half-way through createLab leaves no namespace behind', async (t) => {
  const before = await ownNetns();
  // The VLAN step comes after namespaces, veths, bridge and mirror exist.
  await t.throwsAsync(createLab({ vlanMirror: 100, vlanObjectPath: '/nonexistent/lab_vlan.bpf.o' }), { instanceOf: ValidationError });
  t.deepEqual(await ownNetns(), before);
  // A real command failure (tc refuses a file that is no BPF object) cleans up the same way.
  const notBpf = new URL('../../package.json', import.meta.url).pathname;
  await t.throwsAsync(createLab({ vlanMirror: 100, vlanObjectPath: notBpf }), { instanceOf: LabCommandError });
  t.deepEqual(await ownNetns(), before);
});

ptest.serial('destroy removes every namespace and ends every process the lab started', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const made = await labNamespaces(lab);
  t.deepEqual(made.sort(), Object.values(lab.ns).sort());
  const server = await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  const client = await startClient(lab, lab.ns.client, lab.hosts.server.v4, 5001, 'interactive');
  const stray = lab.spawn(lab.ns.bystander, ['sleep', '600']);
  await lab.destroy();
  t.true(lab.destroyed);
  t.deepEqual(await labNamespaces(lab), []);
  t.not(server.exit, null);
  t.not(client.exit, null);
  t.true(stray.exitCode !== null || stray.signalCode !== null);
  await lab.destroy(); // idempotent
});

/** A child process holding a lab (with a process inside it) until signalled; resolves with the lab's name. */
async function labInChild(env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; name: string; exited: Promise<NodeJS.Signals | null> }> {
  const script = `
    const { createLab } = await import(process.argv[1]);
    const lab = await createLab();
    lab.spawn(lab.ns.server, ['sleep', '600']);
    console.log(lab.name);
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, LAB_MODULE], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, sig) => resolve(sig)));
  const name = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
  return { child, name, exited };
}

function netnsAdd(t: import('ava').ExecutionContext, name: string): void {
  const r = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip netns add ${name}: ${r.stderr}`);
  t.teardown(() => void spawnSync('ip', ['netns', 'del', name]));
}

ptest.serial('SIGTERM to a process with a lab removes the lab; a SIGKILLed one is swept later', async (t) => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    const { child, name, exited } = await labInChild();
    t.is((await labNamespaces({ name })).length, 5);
    child.kill(signal);
    t.is(await exited, signal, 'the exit status still says which signal');
    if (signal === 'SIGTERM') {
      t.deepEqual(await labNamespaces({ name }), [], 'cleaned up on SIGTERM');
    } else {
      t.is((await labNamespaces({ name })).length, 5, 'SIGKILL leaves the lab');
      const swept = await sweepStale();
      t.is(swept.filter((n) => n.startsWith(`${name}-`)).length, 5);
      t.deepEqual(await labNamespaces({ name }), [], 'swept');
      t.false(existsSync(join(labRunDir(), `${name}.lab`)), 'its record is gone too');
    }
  }
});

// The prefix comes from the environment at each call; serial tests run
// before the concurrent ones, so nothing else in this process sees it.
ptest.serial('a sweep deletes what a crashed lab recorded and nothing else, even namespaces named like a stale lab', async (t) => {
  const prefix = 'trswp';
  const saved = process.env.TCPRESET_LAB_PREFIX;
  process.env.TCPRESET_LAB_PREFIX = prefix;
  t.teardown(() => {
    if (saved === undefined) delete process.env.TCPRESET_LAB_PREFIX;
    else process.env.TCPRESET_LAB_PREFIX = saved;
  });
  t.is(labPrefix(), prefix);

  // A dead pid: this is what the old pid-based sweep took as "stale".
  const deadPid = spawnSync('true').pid!;
  t.throws(() => process.kill(deadPid, 0), { code: 'ESRCH' });
  const foreign = `${prefix}${deadPid}-1-client`;
  netnsAdd(t, foreign);

  const crashed = await labInChild({ TCPRESET_LAB_PREFIX: prefix });
  const alive = await labInChild({ TCPRESET_LAB_PREFIX: prefix });
  t.teardown(() => void alive.child.kill('SIGKILL'));
  t.true(crashed.name.startsWith(`${prefix}${crashed.child.pid}-`), `named with the configured prefix: ${crashed.name}`);
  crashed.child.kill('SIGKILL');
  t.is(await crashed.exited, 'SIGKILL');
  // Named under the crashed lab's own stem, but not created by it.
  const squatter = `${crashed.name}-squatter`;
  netnsAdd(t, squatter);

  const swept = await sweepStale();
  t.deepEqual(swept.sort(), ['bystander', 'client', 'sensor', 'server', 'sw'].map((r) => `${crashed.name}-${r}`), 'exactly the crashed lab');
  const left = await listNetns();
  t.true(left.includes(foreign), 'a namespace nobody recorded survives, though named like a dead lab');
  t.true(left.includes(squatter), 'an unrecorded name under a dead stem survives');
  t.is(left.filter((n) => n.startsWith(`${alive.name}-`)).length, 5, 'a live lab survives');
  t.false(existsSync(join(labRunDir(), `${crashed.name}.lab`)));
  const record = readFileSync(join(labRunDir(), `${alive.name}.lab`), 'utf8');
  t.is(record.split('\n').filter((l) => l.startsWith('netns ')).length, 5, `the live lab's record lists its namespaces:\n${record}`);
  t.deepEqual(await sweepStale(), [], 'a second sweep finds nothing');

  alive.child.kill('SIGTERM');
  await alive.exited;
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(`${alive.name}-`)), []);
  t.false(existsSync(join(labRunDir(), `${alive.name}.lab`)), 'destroy removes the record');
});

ptest.serial('a lab prefix that cannot be a namespace-name stem is refused, naming it', async (t) => {
  const saved = process.env.TCPRESET_LAB_PREFIX;
  t.teardown(() => {
    if (saved === undefined) delete process.env.TCPRESET_LAB_PREFIX;
    else process.env.TCPRESET_LAB_PREFIX = saved;
  });
  for (const bad of ['', '../x', '1lab', 'a-b', 'x'.repeat(25)]) {
    process.env.TCPRESET_LAB_PREFIX = bad;
    const err = await t.throwsAsync(createLab(), { instanceOf: ValidationError });
    t.regex(err!.message, /TCPRESET_LAB_PREFIX/);
  }
  process.env.TCPRESET_LAB_PREFIX = 'x'.repeat(24);
  t.is(labPrefix(), 'x'.repeat(24));
});

ptest('client and server talk TCP over IPv4 and IPv6; the bystander too', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  for (const fam of ['v4', 'v6'] as const) {
    for (const from of ['client', 'bystander'] as const) {
      const r = await connectOnce(lab, lab.ns[from], lab.hosts.server[fam], 5001, { holdMs: 50 });
      t.true(r.ok, `${from} -> server ${fam}: ${JSON.stringify(r)}`);
    }
    const refused = await connectOnce(lab, lab.ns.client, lab.hosts.server[fam], 5999);
    t.is(refused.code, 'ECONNREFUSED', `closed port ${fam}`);
  }
  // An interactive session echoes continuously.
  const c = await startClient(lab, lab.ns.client, lab.hosts.server.v6, 5001, 'interactive', { reportMs: 50 });
  const p = await c.waitFor((e) => e.ev === 'progress' && (e.rx ?? 0) >= 64, 3000, 'echoes');
  t.true((p.rx ?? 0) >= 64);
  t.is(c.errorOf('c'), undefined);
});

async function assertMirrored(t: import('ava').ExecutionContext, lab: Lab, vid?: number): Promise<void> {
  await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  const cap = await Capture.start(lab, lab.sensor.ns, lab.sensor.sniffIf, ['tcp']);
  for (const fam of ['v4', 'v6'] as const) {
    t.true((await connectOnce(lab, lab.ns.client, lab.hosts.server[fam], 5001)).ok);
    t.true((await connectOnce(lab, lab.ns.bystander, lab.hosts.server[fam], 5001)).ok);
  }
  // Traffic of unmonitored ports (the sensor's own reset port to the server) is not mirrored.
  const sensorToServer = await connectOnce(lab, lab.sensor.ns, lab.hosts.server.v4, 5001);
  t.true(sensorToServer.ok, 'the reset port is on the LAN');
  const lines = await cap.stop();
  for (const fam of ['v4', 'v6'] as const) {
    for (const host of ['client', 'bystander'] as const) {
      const d = directions(lines, lab.hosts[host][fam], lab.hosts.server[fam]);
      // A handshake + ping/echo + close: several segments each way.
      t.true(d.ab >= 3 && d.ba >= 3, `${host} ${fam} both directions on sniff0: ${JSON.stringify(d)}`);
    }
  }
  t.deepEqual(directions(lines, lab.sensor.v4, lab.hosts.server.v4), { ab: 0, ba: 0 }, 'reset-port traffic not mirrored');
  const tagged = lines.filter((l) => l.includes('ethertype 802.1Q'));
  if (vid === undefined) {
    t.is(tagged.length, 0, 'untagged mirror');
  } else {
    t.is(tagged.length, lines.length, `every mirrored frame tagged: ${lines.find((l) => !l.includes('802.1Q'))}`);
    t.true(lines.every((l) => l.includes(`vlan ${vid},`)), `VID ${vid}`);
  }
}

ptest('the sensor sees both directions of the client and the bystander on sniff0', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  await assertMirrored(t, lab);
});

for (const vid of [100, 200]) {
  ptest(`with vlanMirror ${vid} the mirror copies carry an 802.1Q tag with VID ${vid}`, async (t) => {
    const lab = await createLab({ vlanMirror: vid });
    t.teardown(() => lab.destroy());
    t.is(lab.vlanMirror, vid);
    await assertMirrored(t, lab, vid);
  });
}

ptest('a VLAN access reset port drops untagged frames from reset0', async (t) => {
  const lab = await createLab({ vlanMirror: 100, resetAccessVlan: true });
  t.teardown(() => lab.destroy());
  await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  // The sensor's own (untagged) stack cannot reach the LAN through the access port...
  const r = await connectOnce(lab, lab.sensor.ns, lab.hosts.server.v4, 5001, { timeoutMs: 500 });
  t.false(r.ok);
  t.is(r.code, 'ETIMEDOUT');
  // ...while the hosts still can (the mirror and the bridge are unaffected).
  t.true((await connectOnce(lab, lab.ns.client, lab.hosts.server.v4, 5001)).ok);
});

test('bad options are refused before anything is built', async (t) => {
  await t.throwsAsync(createLab({ vlanMirror: 4095 }), { instanceOf: ValidationError });
  await t.throwsAsync(createLab({ vlanMirror: 200, resetAccessVlan: true }), { instanceOf: ValidationError });
  await t.throwsAsync(createLab({ subnet: 300 }), { instanceOf: ValidationError });
});

ptest('a peer that cannot listen reports the error and exits', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const a = await startServer(lab, lab.ns.server, [{ port: 5001, mode: 'echo' }]);
  const b = spawnPeer(lab, lab.ns.server, ['server', '--listen', '5001:echo']);
  const err = await b.waitFor((e) => e.ev === 'error', 5000, 'listen error');
  t.is(err.code, 'EADDRINUSE');
  await b.wait();
  t.is(b.exit?.code, 1);
  await a.kill();
  t.not(a.exit, null);
});
