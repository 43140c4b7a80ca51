/**
 * Where the time goes between a matching segment and its first RST, for a
 * quiet tcpresetd and for the C floor (bench/floor), stage by stage, with
 * one clock (the kernel's monotonic clock, bpftrace's nsecs). Issue 8.
 *
 *   node dist/bench/split.js [--gap-ms 100] [--count 40] [--rounds 2] [--label before] [--out FILE] [--config JSON]
 *
 * Root, bpftrace (apt-get install bpftrace) and tracefs (mounted here if it
 * is not). Run it under `flock /tmp/tcpreset-heavy.lock`. It builds its own
 * lab, starts the real daemon (bin/tcpresetd; jobs created and cancelled
 * with bin/tcpreset) and the floor, alternately, and sends SYNs of new flows
 * with trafgen into the mirror port `--gap-ms` apart. Per trigger the
 * bpftrace script (generated below, printed with --print-script) stamps:
 *
 *   wire-in   net:net_dev_start_xmit on p-mirror (switch namespace): the
 *             SYN handed to sniff0's cable
 *   notify    irq_vectors:irq_work_entry on that CPU: the XDP program ran
 *             and committed to the ring, whose adaptive wake-up queues an
 *             irq_work (this kernel has no kprobes; XDP itself and the
 *             commit cannot be stamped apart)
 *   woken     sched:sched_waking of one of the tool's threads on that CPU
 *             within 30 µs of the irq_work's entry (irq_work_exit cannot
 *             be attached here: EPERM): the ring's waiter is woken
 *   running   sched:sched_switch to that thread: it got a CPU
 *   returned  syscalls:sys_exit_epoll_wait/_pwait/_pwait2 of that thread:
 *             its wait returned (libbpf, libuv and the event thread all
 *             wait in epoll; raw_syscalls:sys_exit, on every system call
 *             of the machine, cost too much to keep attached)
 *   handler   daemon: getegid(2) issued by bench/split/marker.ts as the JS
 *             record handler is entered; floor: uprobe on floor_on_record
 *   forged    daemon: getgid(2) at the first RST queued; floor: uretprobe
 *             of floor_on_record
 *   send      syscalls:sys_enter_sendmmsg by the tool
 *   wire-out  net:net_dev_start_xmit on reset0 (sensor namespace): the RST
 *             leaves the reset interface
 *   sent      syscalls:sys_exit_sendmmsg
 * and the write(2) calls the tool made between forged and send (the
 * daemon's log lines), their count and time.
 *
 * Writes a Markdown table (stage deltas, p50/p90 over the triggers) to
 * --out (default bench/results/idle-split-LABEL.md) and prints it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync, mkdirSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLab, type Lab } from '../testkit/lab/lab.js';
import { BENCH_DAEMON_CONFIG, BENCH_ENGID } from './context.js';
import { BPF_OBJECT, FLOOR_BIN, FLOOR_NICE, ensureFloor, idleFrameConfig, type IdleTool } from './idle.js';
import { quantileSorted, sortNumbers } from '../testkit/stats.js';
import { startTrafgen } from '../testkit/trafgen.js';
import { machineInfo } from '../testkit/proc.js';
import { sleep } from '../testkit/time.js';
import { SensorDaemon } from '../testkit/daemon.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const MARKER = fileURLToPath(new URL('./split/marker.js', import.meta.url));

export const STAGES = ['notify', 'woken', 'running', 'returned', 'handler', 'forged', 'send', 'wireOut', 'sent'] as const;
type Stage = (typeof STAGES)[number];
const STAGE_TEXT: Record<Stage, string> = {
  notify: 'XDP ran, ring commit, irq_work (wake-up) runs',
  woken: 'waiter thread woken',
  running: 'waiter thread on a CPU',
  returned: 'epoll_wait returned',
  handler: 'record handler entered',
  forged: 'RSTs forged (first queued)',
  send: 'sendmmsg entered',
  wireOut: 'RST leaves reset0',
  sent: 'sendmmsg returned',
};

interface Args {
  gapMs: number;
  count: number;
  rounds: number;
  label: string;
  out: string | null;
  printScript: boolean;
  /** Merged into the daemon's config (e.g. {"eventRtPriority":10}), to compare settings. */
  config: Record<string, unknown>;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { gapMs: 100, count: 40, rounds: 2, label: 'now', out: null, printScript: false, config: {} };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = argv[i + 1];
    const int = (name: string): number => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer (got ${JSON.stringify(v)})`);
      i++;
      return n;
    };
    if (k === '--gap-ms') a.gapMs = int(k);
    else if (k === '--count') a.count = int(k);
    else if (k === '--rounds') a.rounds = int(k);
    else if (k === '--label') {
      if (!v || !/^[\w.-]+$/.test(v)) throw new Error(`--label must be a word (got ${JSON.stringify(v)})`);
      a.label = v;
      i++;
    } else if (k === '--out') {
      if (!v) throw new Error('--out needs a file');
      a.out = v;
      i++;
    } else if (k === '--config') {
      try {
        a.config = JSON.parse(v ?? '') as Record<string, unknown>;
      } catch {
        throw new Error(`--config must be a JSON object (got ${JSON.stringify(v)})`);
      }
      i++;
    } else if (k === '--print-script') a.printScript = true;
    else throw new Error(`unknown argument ${k}; usage: split.js [--gap-ms N] [--count N] [--rounds N] [--label WORD] [--out FILE] [--config JSON] [--print-script]`);
  }
  return a;
}

function netnsInode(ns: string): number {
  return statSync(`/run/netns/${ns}`).ino;
}

/** The bpftrace program for one tool process; see the file comment for the stages. */
export function splitScript(o: { pid: number; tids: number[]; swNs: number; sensorNs: number; tool: IdleTool; floorBin: string }): string {
  const tidTest = o.tids.map((t) => `args->pid == ${t}`).join(' || ');
  const netnsOf = (expr: string): string => `${expr}->dev->nd_net.net->ns.inum`;
  const handler =
    o.tool === 'floor'
      ? `uprobe:${o.floorBin}:floor_on_record /pid == ${o.pid} && @t0 && @handler == 0/ { @handler = nsecs; }
uretprobe:${o.floorBin}:floor_on_record /pid == ${o.pid} && @handler && @forged == 0/ { @forged = nsecs; }`
      : `tracepoint:syscalls:sys_enter_getegid /pid == ${o.pid} && @t0 && @handler == 0/ { @handler = nsecs; }
tracepoint:syscalls:sys_enter_getgid /pid == ${o.pid} && @t0 && @forged == 0/ { @forged = nsecs; }`;
  return `
BEGIN { @t0 = 0; printf("ready\\n"); }
tracepoint:net:net_dev_start_xmit
/str(args->name) == "p-mirror" && ${netnsOf('((struct sk_buff *)args->skbaddr)')} == ${o.swNs}/
{
  if (@t0 == 0 || nsecs - @t0 > 50000000) {
    if (@t0) { printf("T %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld\\n", @t0, @notify, @woken, @running, @returned, @handler, @forged, @send, @wireout, @sent, @wrn, @wrns); }
    @t0 = nsecs; @cpu0 = cpu; @notify = 0; @woken = 0; @wtid = 0; @running = 0; @returned = 0; @handler = 0; @forged = 0;
    @send = 0; @wireout = 0; @sent = 0; @wrn = 0; @wrns = 0; @wrs = 0;
  }
}
tracepoint:irq_vectors:irq_work_entry /@t0 && @notify == 0 && cpu == @cpu0/ { @notify = nsecs; @iwcpu = cpu; }
tracepoint:sched:sched_waking /@notify && @woken == 0 && cpu == @iwcpu && nsecs - @notify < 30000 && (${tidTest})/ { @woken = nsecs; @wtid = args->pid; }
tracepoint:sched:sched_switch /@woken && @running == 0 && args->next_pid == @wtid/ { @running = nsecs; }
tracepoint:syscalls:sys_exit_epoll_wait,tracepoint:syscalls:sys_exit_epoll_pwait,tracepoint:syscalls:sys_exit_epoll_pwait2
/@running && @returned == 0 && tid == @wtid/ { @returned = nsecs; }
${handler}
tracepoint:syscalls:sys_enter_write /pid == ${o.pid} && @forged && @send == 0/ { @wrs = nsecs; }
tracepoint:syscalls:sys_exit_write /pid == ${o.pid} && @wrs/ { @wrn = @wrn + 1; @wrns = @wrns + (nsecs - @wrs); @wrs = 0; }
tracepoint:syscalls:sys_enter_sendmmsg /pid == ${o.pid} && @t0 && @send == 0/ { @send = nsecs; }
tracepoint:net:net_dev_start_xmit
/@send && @wireout == 0 && str(args->name) == "reset0" && ${netnsOf('((struct sk_buff *)args->skbaddr)')} == ${o.sensorNs}/
{ @wireout = nsecs; }
tracepoint:syscalls:sys_exit_sendmmsg /pid == ${o.pid} && @send && @sent == 0/ { @sent = nsecs; }
END {
  if (@t0) { printf("T %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld\\n", @t0, @notify, @woken, @running, @returned, @handler, @forged, @send, @wireout, @sent, @wrn, @wrns); }
  clear(@t0); clear(@cpu0); clear(@notify); clear(@woken); clear(@wtid); clear(@running); clear(@returned); clear(@handler);
  clear(@forged); clear(@send); clear(@wireout); clear(@sent); clear(@wrn); clear(@wrns); clear(@wrs); clear(@iwcpu);
}
`;
}

/** One trigger: stage times in µs from wire-in (null = not seen), log writes. */
export interface SplitSample {
  at: Partial<Record<Stage, number>>;
  writes: number;
  writeUs: number;
}

export function parseSplitLines(text: string): SplitSample[] {
  const out: SplitSample[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('T ')) continue;
    const f = line.slice(2).trim().split(/\s+/).map(Number);
    if (f.length !== 12) continue;
    const t0 = f[0]!;
    const at: Partial<Record<Stage, number>> = {};
    STAGES.forEach((s, i) => {
      const v = f[i + 1]!;
      if (v > 0) at[s] = (v - t0) / 1000;
    });
    out.push({ at, writes: f[10]!, writeUs: f[11]! / 1000 });
  }
  return out;
}

interface ToolRun {
  pid: number;
  tids: number[];
  stop(): Promise<void>;
}

function tidsOf(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map(Number).filter((n) => Number.isInteger(n));
}

async function startTool(lab: Lab, daemon: SensorDaemon, tool: IdleTool): Promise<ToolRun> {
  const host = lab.hosts.client.v4;
  if (tool === 'tcpreset') {
    const args = [BENCH_ENGID, '-i', lab.sensor.sniffIf, '-o', lab.sensor.resetIf, '-h', host, '-d', '3600'];
    const r = await daemon.cli(args);
    if (r.code !== 0) throw new Error(`tcpreset ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return {
      pid: daemon.pid,
      tids: tidsOf(daemon.pid),
      async stop() {
        const c = await daemon.cli(['cancel', BENCH_ENGID, '-i', lab.sensor.sniffIf, '-h', host]);
        if (c.code !== 0) throw new Error(`tcpreset cancel exited ${c.code}: ${c.stderr.trim()}`);
      },
    };
  }
  const child = lab.spawn(lab.sensor.ns, [FLOOR_BIN, BPF_OBJECT, lab.sensor.sniffIf, lab.sensor.resetIf, host, String(FLOOR_NICE)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (out.includes('ready')) resolve();
    });
    child.once('close', (code) => reject(new Error(`floor exited ${code}: ${err.trim()}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  return {
    pid: child.pid!,
    tids: tidsOf(child.pid!),
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function runBpftrace(script: string): Promise<{ child: ChildProcess; output: () => string; stop: () => Promise<void> }> {
  const child = spawn('bpftrace', ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const deadline = Date.now() + 30_000;
  while (!out.includes('ready')) {
    if (child.exitCode !== null) throw new Error(`bpftrace exited ${child.exitCode}: ${err.trim()}`);
    if (Date.now() > deadline) throw new Error(`bpftrace not attached after 30 s: ${err.trim()}`);
    await sleep(50);
  }
  return {
    child,
    output: () => out,
    async stop() {
      child.kill('SIGINT');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await closed;
      clearTimeout(t);
    },
  };
}

function ensureTracefs(): void {
  if (existsSync('/sys/kernel/tracing/events')) return;
  execFileSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing'], { stdio: 'inherit' });
}

interface StageRow {
  stage: Stage;
  /** µs from wire-in, p50 and p90, per tool. */
  cum: Record<IdleTool, { p50: number; p90: number; n: number }>;
  /** µs from the previous stage seen, p50, per tool. */
  step: Record<IdleTool, { p50: number; p90: number }>;
}

export function splitTable(samples: Record<IdleTool, SplitSample[]>): StageRow[] {
  const rows: StageRow[] = [];
  for (let i = 0; i < STAGES.length; i++) {
    const stage = STAGES[i]!;
    const row = { stage, cum: {}, step: {} } as StageRow;
    for (const tool of ['tcpreset', 'floor'] as const) {
      const cum: number[] = [];
      const step: number[] = [];
      for (const s of samples[tool]) {
        const v = s.at[stage];
        if (v === undefined) continue;
        cum.push(v);
        // The previous stage this trigger has (wire-in = 0 when none before).
        let prev = 0;
        for (let j = i - 1; j >= 0; j--) {
          const p = s.at[STAGES[j]!];
          if (p !== undefined && !(stage === 'sent' && STAGES[j] === 'wireOut')) {
            prev = p;
            break;
          }
        }
        step.push(v - prev);
      }
      const c = sortNumbers(cum);
      const st = sortNumbers(step);
      row.cum[tool] = { p50: quantileSorted(c, 0.5), p90: quantileSorted(c, 0.9), n: c.length };
      row.step[tool] = { p50: quantileSorted(st, 0.5), p90: quantileSorted(st, 0.9) };
    }
    rows.push(row);
  }
  return rows;
}

const f1 = (x: number): string => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : 'n/a');

export function splitMarkdown(a: Args, samples: Record<IdleTool, SplitSample[]>, meta: { date: string; commit: string; machine: string }): string {
  const rows = splitTable(samples);
  const out: string[] = [];
  out.push(`# Latency split of the first RST from idle: ${a.label}`);
  out.push('');
  out.push(
    `Generated by \`node dist/bench/split.js --gap-ms ${a.gapMs} --count ${a.count} --rounds ${a.rounds} --label ${a.label}\` (bench/split.ts) on ${meta.date}, ` +
      `product (src/, bpf/, bin/) as of ${meta.commit}…; ${meta.machine}. One SYN of a new flow every ${a.gapMs} ms into the mirror port, ${a.count} per round, ` +
      `${a.rounds} round(s) per tool, tools alternating; tcpresetd (bin/tcpresetd, job by bin/tcpreset) and the C floor (bench/floor/floor.c, nice ${FLOOR_NICE}, the daemon's event-thread priority). ` +
      'All stamps are bpftrace `nsecs` (CLOCK_MONOTONIC) in µs from the SYN handed to sniff0\'s cable (p-mirror egress). ' +
      'Cumulative = from that moment; step = from the previous stage the trigger has. A stage missing for a trigger is left out of that row.',
  );
  out.push('');
  out.push('| Stage | tcpreset p50 (p90), cumulative | step p50 | floor p50 (p90), cumulative | step p50 | tcpreset − floor (p50, cumulative) |');
  out.push('| --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const t = r.cum.tcpreset;
    const f = r.cum.floor;
    out.push(
      `| ${STAGE_TEXT[r.stage]} | ${f1(t.p50)} (${f1(t.p90)}) [n ${t.n}] | ${f1(r.step.tcpreset.p50)} | ${f1(f.p50)} (${f1(f.p90)}) [n ${f.n}] | ${f1(r.step.floor.p50)} | ${f1(t.p50 - f.p50)} |`,
    );
  }
  out.push('');
  for (const tool of ['tcpreset', 'floor'] as const) {
    const w = samples[tool].map((s) => s.writes);
    const wu = samples[tool].map((s) => s.writeUs);
    out.push(
      `- ${tool}: write(2) calls between "forged" and "sendmmsg entered" per trigger: p50 ${f1(quantileSorted(sortNumbers(w), 0.5))}, ` +
        `their time p50 ${f1(quantileSorted(sortNumbers(wu), 0.5))} µs (p90 ${f1(quantileSorted(sortNumbers(wu), 0.9))} µs); triggers traced: ${samples[tool].length}.`,
    );
  }
  out.push('');
  return out.join('\n');
}

async function main(): Promise<number> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write('split.js must run as root (namespaces, XDP, bpftrace).\n');
    return 77;
  }
  try {
    execFileSync('sh', ['-c', 'command -v bpftrace'], { stdio: 'ignore' });
  } catch {
    process.stderr.write('split.js needs bpftrace: apt-get install bpftrace\n');
    return 69;
  }
  ensureTracefs();
  ensureFloor();
  const log = (m: string): void => void process.stdout.write(`[split] ${m}\n`);
  const lab = await createLab();
  const tmp = mkdtempSync(join(tmpdir(), 'tcpreset-split-'));
  let daemon: SensorDaemon | undefined;
  try {
    // The marks are preloaded into the daemon only (the CLI spawned later does not get them).
    const startMarked = async (): Promise<SensorDaemon> => {
      const prevOpts = process.env.NODE_OPTIONS;
      process.env.NODE_OPTIONS = `${prevOpts ? `${prevOpts} ` : ''}--import ${MARKER}`;
      try {
        return await SensorDaemon.start(lab, { config: { ...BENCH_DAEMON_CONFIG, ...a.config } });
      } finally {
        if (prevOpts === undefined) delete process.env.NODE_OPTIONS;
        else process.env.NODE_OPTIONS = prevOpts;
      }
    };
    daemon = await startMarked();
    await lab.exec(lab.sensor.ns, ['ping', '-c', '1', '-W', '1', lab.hosts.client.v4]);
    const swNs = netnsInode(lab.sw.ns);
    const sensorNs = netnsInode(lab.sensor.ns);
    const cfg = idleFrameConfig('syn', { smac: lab.hosts.client.mac, dmac: lab.hosts.server.mac, src: lab.hosts.client.v4, dst: lab.hosts.server.v4, dport: 2222 });
    const samples: Record<IdleTool, SplitSample[]> = { tcpreset: [], floor: [] };
    for (let r = 0; r < a.rounds; r++) {
      for (const tool of (r % 2 === 0 ? ['tcpreset', 'floor'] : ['floor', 'tcpreset']) as IdleTool[]) {
        // A daemon keeps XDP on sniff0 once a job used it (watched interface): the floor needs it stopped.
        if (tool === 'floor' && !daemon.exited) {
          await daemon.stop();
          daemon.removeFiles();
        } else if (tool === 'tcpreset' && daemon.exited) {
          daemon = await startMarked();
          await sleep(1000);
        }
        const run = await startTool(lab, daemon, tool);
        try {
          const script = splitScript({ pid: run.pid, tids: run.tids, swNs, sensorNs, tool, floorBin: FLOOR_BIN });
          if (a.printScript && r === 0) process.stdout.write(script);
          const bt = await runBpftrace(script);
          try {
            await sleep(Math.max(300, a.gapMs));
            const end = await startTrafgen(lab, join(tmp, 'split.cfg'), cfg, { gapUs: a.gapMs * 1000, count: a.count, qdiscPath: true }).done;
            if (end.code !== 0) throw new Error(`trafgen failed (${end.code}): ${end.stderr.trim()}`);
            await sleep(100);
          } finally {
            await bt.stop();
          }
          const got = parseSplitLines(bt.output());
          samples[tool].push(...got);
          const wire = sortNumbers(got.map((s) => s.at.wireOut ?? NaN).filter(Number.isFinite));
          log(`${tool} round ${r + 1}/${a.rounds}: ${got.length} triggers traced, RST on the wire p50 ${f1(quantileSorted(wire, 0.5))} µs`);
        } finally {
          await run.stop();
        }
      }
    }
    let commit = 'unknown';
    try {
      // The product as measured: the last commit that touched it (bench commits on top do not change it).
      commit = execFileSync('git', ['-C', REPO, 'log', '-1', '--format=%h %s', '--', 'src', 'bpf', 'bin'], { encoding: 'utf8' }).trim().slice(0, 100);
    } catch {
      /* not a checkout */
    }
    const m = machineInfo();
    const md = splitMarkdown(a, samples, { date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', commit, machine: `${m.nproc} CPUs, Linux ${m.kernel}, Node ${m.node}` });
    const outPath = a.out ?? join(REPO, 'bench', 'results', `idle-split-${a.label}.md`);
    mkdirSync(join(outPath, '..'), { recursive: true });
    writeFileSync(outPath, md);
    process.stdout.write(md);
    log(`wrote ${outPath}`);
    return 0;
  } finally {
    await daemon?.stop().catch(() => {});
    daemon?.removeFiles();
    await lab.destroy().catch(() => {});
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`split failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
