/**
 * The event thread (src/dataplane/event-worker.ts) answers the first real
 * segment after a start with code compiled for it. Its warm-up runs the
 * whole path on synthetic records; if those differ from real ones in a way
 * V8 specialised on (a Smi where a real seq is a heap number, a literal of
 * another map, a branch never taken), the first real segment deoptimizes
 * the path back to the interpreter: 1-2 ms to its RSTs after a restart
 * (issue 8), enough for a new connection to carry its request.
 *
 * Observed, not timed: the REAL daemon (bin/tcpresetd's entry, started with
 * V8's --trace-deopt/--trace-opt/--trace-file-names, which only print) in a
 * lab's sensor namespace, a job created with the REAL CLI, real TCP
 * connections from the lab's client, then kill -9 and a restart on the
 * same state twice. After each start, no function of the event path may
 * bail out; the positive control is the same trace showing the path
 * compiled by TurboFan, and every connection answered.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ptest } from '../helpers/privileged.js';
import { DAEMON_BIN, startDaemon, type DaemonProc } from '../../testkit/daemon.js';
import { createLab } from '../../testkit/lab/lab.js';
import { connectOnce, connectOutcome, startServer } from '../../testkit/lab/peer-control.js';
import { cli, createArgs, ECHO_PORT, type Ctx } from '../helpers/service-lab.js';

/**
 * Bail-outs that count: functions of the event path, by file (the trace
 * names the file of the deoptimized function). The warm-up function itself
 * runs only while idle. Files the main thread also runs are limited to the
 * functions the event thread calls per segment.
 */
const HOT: { file: RegExp; fn: RegExp }[] = [
  { file: /\/dataplane\/event-worker\.js$/, fn: /^(?!warmUp$)/ },
  { file: /\/bpf\/ringbuf\.js$/, fn: /^(drain|producerPos)$/ },
  { file: /\/net\/sender\.js$/, fn: /^(enqueue|flush|flushLane|fail)$/ },
  { file: /\/packet\/forge\.js$/, fn: /^(forgeResets|build|l2Frame|alloc|onesSum|fold)$/ },
  { file: /\/dataplane\/delivery\.js$/, fn: /^(verdict|onLink|note)$/ },
  { file: /\/contract\.js$/, fn: /^decodeEvent$/ },
];

/**
 * "[bailout (kind: deopt-eager, reason: R): begin. deoptimizing 0x… <JSFunction NAME <file:///…/F.js> (sfi = …)>, …"
 * Eager and soft bail-outs only: those are code meeting what it was not
 * compiled for (missing or wrong type feedback), which warm-up exists to
 * prevent. A lazy one follows V8 invalidating compiled code elsewhere (a
 * field type generalised by any object of a shared map) and is not the
 * path's own doing.
 */
function hotBailouts(lines: readonly string[]): string[] {
  const out: string[] = [];
  for (const l of lines) {
    const m = /^\[bailout \(kind: deopt-(?:eager|soft), reason: ([^)]*)\): begin\. deoptimizing \S+ <JSFunction (\S*) <([^>]+)>/.exec(l);
    if (!m) continue;
    const [, reason, fn, file] = m;
    if (HOT.some((h) => h.file.test(file!) && h.fn.test(fn!))) out.push(`${fn} (${file!.replace(/^.*\/dist\//, '')}): ${reason}`);
  }
  return out;
}

/** The trace lines a daemon printed after its ready line. */
function afterReady(d: DaemonProc): string[] {
  const i = d.rawLines.findIndex((l) => l.includes('"tcpresetd ready"'));
  return i < 0 ? [] : d.rawLines.slice(i + 1);
}

ptest.serial('after a start and after kill -9 and restart, the first real segments deoptimize nothing on the event path (traced with V8 --trace-deopt)', async (t) => {
  const lab = await createLab();
  t.teardown(() => lab.destroy());
  const server = await startServer(lab, lab.ns.server, [{ port: ECHO_PORT, mode: 'echo' }]);
  const dir = mkdtempSync(join(tmpdir(), 'tcpresetd-traced-'));
  // bin/tcpresetd's entry with V8's tracing switched on first (it only prints; the code is the production one),
  // under bin/tcpresetd's shebang, whose node flags (the young generation's size) startDaemon passes on.
  const traced = join(dir, 'tcpresetd-traced.mjs');
  writeFileSync(traced, [
    readFileSync(DAEMON_BIN, 'utf8').split('\n', 1)[0],
    "import v8 from 'node:v8';",
    "v8.setFlagsFromString('--trace-deopt --trace-opt --trace-file-names');",
    `await import(${JSON.stringify(pathToFileURL(join(DAEMON_BIN, '../../dist/src/daemon/main.js')).href)});`,
  ].join('\n'));
  const start = (prev?: DaemonProc): Promise<DaemonProc> => startDaemon({
    netns: lab.ns.sensor, daemonBin: traced,
    ...(prev ? { dir: prev.dir, socket: prev.socket, stateDir: prev.stateDir, args: ['--config', `${prev.dir}/config.json`] } : { config: {} }),
  });
  let daemon = await start();
  t.teardown(async () => {
    await daemon.stop();
  });
  const ctx: Ctx = { t, lab, daemon, server };
  const host = lab.hosts.client.v4;
  t.is((await cli(ctx, createArgs(ctx, 'ENG-WARM', host, 120))).code, 0);
  for (let run = 0; run < 3; run++) {
    const what = run === 0 ? 'after the start' : `after restart ${run}`;
    for (let i = 0; i < 3; i++) {
      const before = daemon.logs.filter((l) => l.msg === 'flow reset').length;
      const r = await connectOnce(lab, lab.ns.client, lab.hosts.server.v4, ECHO_PORT, { timeoutMs: 1000 });
      t.is(connectOutcome(r), 'reset', `${what}, connection ${i + 1}: reset after its handshake (${JSON.stringify(r)})`);
      t.false(r.echoed, `${what}, connection ${i + 1}: not echoed first`);
      const resets = () => daemon.logs.filter((l) => l.msg === 'flow reset').length;
      await daemon.waitLog(() => resets() > before, 3000, `${what}: connection ${i + 1} answered`);
    }
    const lines = afterReady(daemon);
    t.true(lines.length > 0, `${what}: the daemon's output after its ready line was read`);
    // (onRecord itself may only ever run inlined into drain's or warmUp's optimized code.)
    t.true(daemon.rawLines.some((l) => /completed (?:optimizing|compiling) .*<JSFunction (?:onRecord|drain|warmUp) <[^>]*(?:event-worker|ringbuf)\.js>/.test(l)),
      `${what}: positive control: the trace shows the event path compiled by TurboFan`);
    t.deepEqual(hotBailouts(lines), [], `${what}: no bail-out on the event path once ready`);
    if (run === 2) break;
    await daemon.stop('SIGKILL');
    daemon = await start(daemon);
    ctx.daemon = daemon;
  }
});
