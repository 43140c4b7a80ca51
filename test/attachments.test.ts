/**
 * XDP attachments (src/dataplane/attachments.ts) beside xdp-filter on the
 * same sniff port (issue 11), through the REAL bin/tcpresetd and bin/tcpreset
 * in the lab's sensor namespace, with xdpAttach "libxdp".
 *
 * The daemon and xdp-filter share one bpffs (LIBXDP_BPFFS, a fresh mount per
 * test: `ip netns exec` replaces /sys, so /sys/fs/bpf is not the host's there).
 * xdp-filter gets a deny rule on DENY_PORT; its own hit counter for that port
 * must count exactly the frames sent to it (the positive control that it
 * still filters), while tcpreset kills a live session.
 *
 * Whether libxdp can build its dispatcher depends on the kernel (it needs
 * extension (freplace) programs): a probe with xdp-filter alone, on a scratch
 * veth, decides which outcome each test asserts. Where the kernel refuses
 * them (the 2026 CI VM: EPERM for BPF_PROG_TYPE_EXT even as root, so
 * xdp-filter itself attaches alone), the daemon must say so and keep working
 * exclusively; where it allows them, both programs run in the dispatcher in
 * either order and a stop takes out only tcpreset's.
 */
import type { ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ptest } from './helpers/privileged.js';
import { cli, createArgs, expectKilled, restartDaemon, session, setup, type Ctx } from './helpers/service-lab.js';
import { startTrafgen, tcpFrameConfig } from '../testkit/trafgen.js';
import { xdpProgId } from '../testkit/proc.js';
import { sleep } from '../testkit/time.js';

const DENY_PORT = 9999;
const FRAMES = 500;

/** A bpffs of this test's own, for the daemon and the xdp-tools. */
function ownBpffs(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-bpffs-'));
  const m = spawnSync('mount', ['-t', 'bpf', 'bpf', dir], { encoding: 'utf8' });
  if (m.status !== 0) throw new Error(`mount -t bpf: ${m.stderr}`);
  t.teardown(() => {
    spawnSync('umount', ['-l', dir]);
    rmdirSync(dir);
  });
  return dir;
}

/** An xdp-tools command in namespace `ns` with LIBXDP_BPFFS=bpffs: its exit status and output. */
function xdpTool(ns: string, bpffs: string, argv: string[]): { status: number | null; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'env', `LIBXDP_BPFFS=${bpffs}`, ...argv], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Can libxdp build its dispatcher on this kernel? xdp-filter alone on a scratch veth in `ns` says. */
function dispatcherWorks(ns: string, bpffs: string): boolean {
  const ip = (args: string[]) => spawnSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
  if (ip(['link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1']).status !== 0) throw new Error('probe veth');
  try {
    ip(['link', 'set', 'probe0', 'up']);
    const load = xdpTool(ns, bpffs, ['xdp-filter', 'load', 'probe0']);
    if (load.status !== 0) throw new Error(`xdp-filter load probe0: ${load.out}`);
    const works = /xdp_dispatcher/.test(xdpTool(ns, bpffs, ['xdp-loader', 'status', 'probe0']).out);
    xdpTool(ns, bpffs, ['xdp-filter', 'unload', 'probe0']);
    return works;
  } finally {
    ip(['link', 'del', 'probe0']);
  }
}

/** xdp-filter's hit counter of DENY_PORT (frames it dropped for that rule). */
function denyHits(ns: string, bpffs: string): number {
  const st = xdpTool(ns, bpffs, ['xdp-filter', 'status']);
  const m = new RegExp(`^\\s*${DENY_PORT}\\s+\\S+\\s+(\\d+)`, 'm').exec(st.out);
  if (!m) throw new Error(`no rule for ${DENY_PORT} in xdp-filter status:\n${st.out}`);
  return Number(m[1]);
}

/** Send FRAMES TCP frames to DENY_PORT into the sniff port (the mirror); returns when trafgen is done. */
async function sendDenied(ctx: Ctx, tag: string): Promise<void> {
  const cfg = tcpFrameConfig({ smac: '02:00:00:00:99:01', dmac: '02:00:00:00:98:01', src: null, dst: null, dport: DENY_PORT });
  const tg = startTrafgen(ctx.lab, join(ctx.daemon.dir, `deny-${tag}.cfg`), cfg, { gapUs: 200, count: FRAMES });
  const end = await tg.done;
  ctx.t.is(end.code, 0, end.output);
  ctx.t.is(end.packets, FRAMES);
  await sleep(200);
}

/** The program entries `xdp-loader status IF` lists: [name, priority] in run order. */
function entries(ns: string, bpffs: string, ifname: string): { text: string; progs: string[] } {
  const text = xdpTool(ns, bpffs, ['xdp-loader', 'status', ifname]).out;
  const progs = [...text.matchAll(/^\s*(?:=>|\S+)\s+(\d+)\s+(\S+)\s/gm)].map((m) => `${m[2]}@${m[1]}`);
  return { text, progs };
}

/**
 * A live session dies at both ends after a job on its client. Not a speed
 * test (the 1 s bound is test/e2e/dataplane.test.ts's): the bound here is
 * loose, as a first create loads and verifies the program twice (object and
 * libxdp's copy), which took 3.4-9.8 s in an emulated (TCG) VM.
 */
/** A daemon in libxdp mode watching the sniff port from its start, on a bpffs of its own; whether this kernel runs the dispatcher. */
async function watchingDaemon(t: ExecutionContext): Promise<{ bpffs: string; ctx: Ctx; ns: string; sniffIf: string; works: boolean; attached: Record<string, unknown> }> {
  const bpffs = ownBpffs(t);
  process.env.LIBXDP_BPFFS = bpffs;
  const ctx = await setup(t, {}, (lab) => ({ xdpAttach: 'libxdp', watch: [lab.sensor.sniffIf] }));
  const { ns, sniffIf } = ctx.lab.sensor;
  const works = dispatcherWorks(ns, bpffs);
  t.log(`libxdp dispatcher on this kernel: ${works ? 'yes' : 'no (extension programs refused)'}`);
  const attached = await ctx.daemon.waitLog((l) => l.msg === 'XDP attached', 10_000, 'XDP attached');
  return { bpffs, ctx, ns, sniffIf, works, attached };
}

async function killOne(ctx: Ctx, engid: string, what: string): Promise<void> {
  const s = await session(ctx, ctx.lab.hosts.server.v4);
  const r = await cli(ctx, createArgs(ctx, engid, ctx.lab.hosts.client.v4, 30));
  ctx.t.is(r.code, 0, r.stderr);
  await expectKilled(ctx, s, r.startedAt, what, 30_000);
}

ptest.serial('xdp-filter first, then a tcpreset job on the same port: the session dies and xdp-filter still drops its port (or, where the kernel has no dispatcher, the create says why)', async (t) => {
  const bpffs = ownBpffs(t);
  process.env.LIBXDP_BPFFS = bpffs;
  const ctx = await setup(t, {}, () => ({ xdpAttach: 'libxdp' }));
  const { ns, sniffIf } = ctx.lab.sensor;
  const works = dispatcherWorks(ns, bpffs);
  t.log(`libxdp dispatcher on this kernel: ${works ? 'yes' : 'no (extension programs refused)'}`);
  t.is(await xdpProgId(ns, sniffIf), null, 'nothing on the port before xdp-filter');
  const load = xdpTool(ns, bpffs, ['xdp-filter', 'load', sniffIf]);
  t.is(load.status, 0, load.out);
  t.is(xdpTool(ns, bpffs, ['xdp-filter', 'port', String(DENY_PORT)]).status, 0);
  const filterProg = await xdpProgId(ns, sniffIf);

  if (works) {
    await killOne(ctx, 'FIRST', 'tcpreset joined after xdp-filter');
    const st = entries(ns, bpffs, sniffIf);
    t.regex(st.text, /xdp_dispatcher/);
    t.deepEqual(st.progs.filter((p) => !p.startsWith('xdp_dispatcher')), ['tcpreset_xdp@5', 'xdpfilt_alw_all@10'], st.text);
    const daemonSaid = ctx.daemon.logs.find((l) => l.msg === 'XDP attached');
    t.is(daemonSaid?.via, 'libxdp');
  } else {
    const r = await cli(ctx, createArgs(ctx, 'FIRST', ctx.lab.hosts.client.v4, 30));
    t.is(r.code, 69, r.stderr);
    t.regex(r.stderr, new RegExp(`${sniffIf} already has XDP program "xdpfilt_alw_all" \\(id \\d+\\); tcpreset could not join it through libxdp: ${sniffIf} has XDP program "xdpfilt_alw_all" \\(id \\d+\\) attached without libxdp's dispatcher; tcpreset needs the XDP hook`));
    t.is(await xdpProgId(ns, sniffIf), filterProg, "xdp-filter's program is untouched");
  }
  // Positive control: xdp-filter drops exactly what was sent to its denied port.
  const before = denyHits(ns, bpffs);
  await sendDenied(ctx, 'first');
  t.is(denyHits(ns, bpffs) - before, FRAMES, 'xdp-filter dropped every frame to its denied port');
  xdpTool(ns, bpffs, ['xdp-filter', 'unload', '--all']);
});

ptest.serial('tcpreset watching the port first, then xdp-filter loads: both work; the daemon stop leaves xdp-filter attached and filtering (or, without a dispatcher, the warning and the exclusive hook)', async (t) => {
  const { bpffs, ctx, ns, sniffIf, works, attached } = await watchingDaemon(t);
  t.is(attached.ifname, sniffIf);

  if (works) {
    t.is(attached.via, 'libxdp');
    t.deepEqual(entries(ns, bpffs, sniffIf).progs.filter((p) => !p.startsWith('xdp_dispatcher')), ['tcpreset_xdp@5']);
    const load = xdpTool(ns, bpffs, ['xdp-filter', 'load', sniffIf]);
    t.is(load.status, 0, load.out);
    t.is(xdpTool(ns, bpffs, ['xdp-filter', 'port', String(DENY_PORT)]).status, 0);
    const st = entries(ns, bpffs, sniffIf);
    t.deepEqual(st.progs.filter((p) => !p.startsWith('xdp_dispatcher')), ['tcpreset_xdp@5', 'xdpfilt_alw_all@10'], st.text);
    await killOne(ctx, 'SECOND', 'xdp-filter joined after tcpreset');
    let hits = denyHits(ns, bpffs);
    await sendDenied(ctx, 'both');
    t.is(denyHits(ns, bpffs) - hits, FRAMES, 'xdp-filter drops beside tcpreset');

    await ctx.daemon.stop();
    const after = entries(ns, bpffs, sniffIf);
    t.deepEqual(after.progs.filter((p) => !p.startsWith('xdp_dispatcher')), ['xdpfilt_alw_all@10'], `only tcpreset's entry left:\n${after.text}`);
    hits = denyHits(ns, bpffs);
    await sendDenied(ctx, 'after-stop');
    t.is(denyHits(ns, bpffs) - hits, FRAMES, 'xdp-filter still drops after the daemon stopped');
  } else {
    t.is(attached.via, 'exclusive');
    const warned = ctx.daemon.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith("XDP attached exclusively, not through libxdp's dispatcher"));
    t.truthy(warned, 'a warning names why the dispatcher was not used');
    t.regex(String(warned?.reason), /^libxdp cannot build its dispatcher on this kernel \(.*Operation not permitted/);
    const ours = await xdpProgId(ns, sniffIf);
    const load = xdpTool(ns, bpffs, ['xdp-filter', 'load', sniffIf]);
    t.not(load.status, 0, 'xdp-filter cannot load beside an exclusive tcpreset');
    t.is(await xdpProgId(ns, sniffIf), ours, "tcpreset's program is untouched");
    await killOne(ctx, 'SECOND', 'exclusive tcpreset');

    await ctx.daemon.stop();
    t.is(await xdpProgId(ns, sniffIf), null, 'the stop detached it');
    // Positive control: with the hook free, xdp-filter loads and filters.
    t.is(xdpTool(ns, bpffs, ['xdp-filter', 'load', sniffIf]).status, 0);
    t.is(xdpTool(ns, bpffs, ['xdp-filter', 'port', String(DENY_PORT)]).status, 0);
    const hits = denyHits(ns, bpffs);
    await sendDenied(ctx, 'after-stop');
    t.is(denyHits(ns, bpffs) - hits, FRAMES);
  }
  xdpTool(ns, bpffs, ['xdp-filter', 'unload', '--all']);
});

ptest.serial("a SIGKILLed daemon's dispatcher entry is taken out by the next daemon's attach, and xdp-filter's stays (without a dispatcher: the bpf_link died with it)", async (t) => {
  const { bpffs, ctx, ns, sniffIf, works, attached: first } = await watchingDaemon(t);
  if (works) {
    t.is(xdpTool(ns, bpffs, ['xdp-filter', 'load', sniffIf]).status, 0);
    await ctx.daemon.stop('SIGKILL');
    const left = entries(ns, bpffs, sniffIf);
    t.deepEqual(left.progs.filter((p) => !p.startsWith('xdp_dispatcher')), [`tcpreset_xdp@5`, 'xdpfilt_alw_all@10'], `the killed daemon's entry stays pinned:\n${left.text}`);
    await restartDaemon(ctx, { xdpAttach: 'libxdp', watch: [sniffIf] });
    const second = await ctx.daemon.waitLog((l) => l.msg === 'XDP attached', 10_000, 'XDP attached');
    const reaped = await ctx.daemon.waitLog((l) => l.msg === "took out a stale tcpreset program (of a daemon that did not stop) from libxdp's dispatcher", 10_000, 'stale entry taken out');
    t.is(reaped.progId, first.progId);
    const now = entries(ns, bpffs, sniffIf);
    t.deepEqual(now.progs.filter((p) => !p.startsWith('xdp_dispatcher')), ['tcpreset_xdp@5', 'xdpfilt_alw_all@10'], now.text);
    t.regex(now.text, new RegExp(`tcpreset_xdp\\s+${String(second.progId)}\\s`), 'the entry is the new daemon\'s');
    await killOne(ctx, 'AFTER', 'after a restart');
  } else {
    t.not(await xdpProgId(ns, sniffIf), null);
    await ctx.daemon.stop('SIGKILL');
    t.is(await xdpProgId(ns, sniffIf), null, 'the bpf_link died with the process');
  }
  xdpTool(ns, bpffs, ['xdp-filter', 'unload', '--all']);
});
