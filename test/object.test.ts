/**
 * The loader against the real object and the real kernel: maps by fd,
 * BPF_PROG_TEST_RUN, XDP bpf_links on veths made here (and removed), the
 * error messages, and that a killed process leaves no XDP program behind.
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { BpfObject, defaultObjectPath, kernelKnowsXdpFrags, numPossibleCpus } from '../src/bpf/object.js';
import { encodeTargetKey, encodeTargetValue, LAYOUT, MAP_COUNTERS, MAP_TARGETS, sumCounters } from '../src/bpf/contract.js';
import { NativeError, TcpresetError } from '../src/core/errors.js';
import * as L from '../src/native/libbpf.js';
import { ptest } from './helpers/privileged.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const objPath = join(root, 'build/tcpreset.bpf.o');
const objectModule = new URL('../src/bpf/object.js', import.meta.url).href;

const XDP_PASS = 2;

function key(i: number): Uint8Array {
  return encodeTargetKey({ ifindex: 7, family: 4, addr: Uint8Array.of(10, (i >> 16) & 255, (i >> 8) & 255, i & 255), port: 0 });
}

/** 60-byte Ethernet frame carrying a UDP/IPv4 header: not TCP, so the program just counts and passes it. */
function smallFrame(): Uint8Array {
  const f = new Uint8Array(60);
  f.set([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00], 0);
  f.set([0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], 14);
  return f;
}

// --- plain tests (no root) ---

test('koffi struct layouts equal the C compiler\'s for libbpf 1.1.2 headers', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tr-layout-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fields = {
    bpf_link_create_opts: ['sz', 'flags', 'iter_info', 'iter_info_len', 'target_btf_id'],
    bpf_test_run_opts: ['sz', 'data_in', 'data_out', 'data_size_in', 'data_size_out', 'ctx_in', 'ctx_out', 'ctx_size_in', 'ctx_size_out', 'retval', 'repeat', 'duration', 'flags', 'cpu', 'batch_size'],
  };
  const lines = Object.entries(fields).flatMap(([s, fs]) => [
    `printf("%s.sizeof %zu\\n", "${s}", sizeof(struct ${s}));`,
    ...fs.map((f) => `printf("%s.%s %zu\\n", "${s}", "${f}", offsetof(struct ${s}, ${f}));`),
  ]);
  lines.push('printf("bpf_link_create_opts.u %zu\\n", offsetof(struct bpf_link_create_opts, perf_event));');
  lines.push('printf("BPF_XDP %d\\nXDP_FLAGS_DRV_MODE %d\\nXDP_FLAGS_SKB_MODE %d\\n", BPF_XDP, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE);');
  const src = `#include <stdio.h>\n#include <stddef.h>\n#include <bpf/bpf.h>\n#include <linux/if_link.h>\nint main(void) {\n${lines.join('\n')}\nreturn 0; }\n`;
  writeFileSync(join(dir, 'l.c'), src);
  execFileSync('clang', ['-o', join(dir, 'l'), join(dir, 'l.c')]);
  const c = new Map(
    execFileSync(join(dir, 'l'), { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((l) => l.split(' ') as [string, string])
      .map(([k, v]) => [k, Number(v)]),
  );
  const cv = (k: string): number => c.get(k) ?? -1;
  const types = { bpf_link_create_opts: L.LinkCreateOpts, bpf_test_run_opts: L.TestRunOpts };
  for (const [s, fs] of Object.entries(fields)) {
    const type = types[s as keyof typeof types];
    t.is(koffi.sizeof(type), cv(`${s}.sizeof`), `sizeof ${s}`);
    for (const f of fs) t.is(koffi.offsetof(type, f), cv(`${s}.${f}`), `${s}.${f}`);
  }
  t.is(koffi.offsetof(L.LinkCreateOpts, 'u'), cv('bpf_link_create_opts.u'));
  t.is(L.LINK_CREATE_OPTS_SIZE, cv('bpf_link_create_opts.sizeof'));
  t.is(L.TEST_RUN_OPTS_SIZE, cv('bpf_test_run_opts.sizeof'));
  t.is(L.BPF_XDP, cv('BPF_XDP'));
  t.is(L.XDP_FLAGS_DRV_MODE, cv('XDP_FLAGS_DRV_MODE'));
  t.is(L.XDP_FLAGS_SKB_MODE, cv('XDP_FLAGS_SKB_MODE'));
});

test('errnoText gives libc and libbpf texts', (t) => {
  t.is(L.errnoText(1), 'Operation not permitted');
  t.is(L.errnoText(2), 'No such file or directory');
  t.is(L.errnoText(4007), 'Kernel verifier blocks program loading');
});

test('defaultObjectPath is <root>/build/tcpreset.bpf.o from dist/, TCPRESET_BPF_OBJ overrides', (t) => {
  const saved = process.env.TCPRESET_BPF_OBJ;
  t.teardown(() => {
    if (saved === undefined) delete process.env.TCPRESET_BPF_OBJ;
    else process.env.TCPRESET_BPF_OBJ = saved;
  });
  delete process.env.TCPRESET_BPF_OBJ;
  t.is(defaultObjectPath(), objPath);
  t.true(readFileSync(defaultObjectPath()).subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])), 'an ELF file');
  process.env.TCPRESET_BPF_OBJ = '/opt/x/tcpreset.bpf.o';
  t.is(defaultObjectPath(), '/opt/x/tcpreset.bpf.o');
});

test('numPossibleCpus matches /sys/devices/system/cpu/possible', (t) => {
  const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  let n = 0;
  for (const part of text.split(',')) {
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a + 1;
  }
  t.is(numPossibleCpus(), n);
});

test('a bad object path fails naming the path and the errno text', (t) => {
  L.setLibbpfLogging('silent');
  t.teardown(() => L.setLibbpfLogging('stderr'));
  const missing = '/nonexistent/tcpreset-test.bpf.o';
  const e1 = t.throws(() => BpfObject.load(missing), { instanceOf: NativeError });
  t.is(e1?.message, `open BPF object ${missing} failed: No such file or directory (errno 2)`);
  t.is(e1?.errno, 2);
  t.is(e1?.code, 'E_NATIVE');

  const dir = mkdtempSync(join(tmpdir(), 'tr-badobj-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const junk = join(dir, 'junk.bpf.o');
  writeFileSync(junk, 'not an ELF file\n');
  const e2 = t.throws(() => BpfObject.load(junk), { instanceOf: NativeError });
  t.regex(e2?.message ?? '', new RegExp(`^open BPF object ${junk} failed: .+ \\(errno \\d+\\)$`));
});

test('maxTargets must be a positive 32-bit integer', (t) => {
  for (const bad of [0, -1, 1.5, 2 ** 32, Number.NaN]) {
    const e = t.throws(() => BpfObject.load(objPath, { maxTargets: bad }), { instanceOf: TcpresetError });
    t.is(e?.code, 'E_INVALID');
  }
});

// --- privileged tests ---

ptest('targets map: update, lookup, delete and keys round-trip', (t) => {
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const m = obj.map(MAP_TARGETS);
  t.is(m, obj.map(MAP_TARGETS), 'maps are cached');
  t.is(m.name, MAP_TARGETS);
  t.true(m.fd > 0);
  t.false(m.perCpu);
  t.is(m.valueBytes, LAYOUT.tr_target_value.size);

  t.is(m.lookup(key(1)), null);
  t.deepEqual(m.keys(), []);
  for (let i = 1; i <= 3; i++) m.update(key(i), encodeTargetValue({ targetId: 100 + i, expiresNs: BigInt(i) * 1000n }));
  t.deepEqual(m.lookup(key(2)), encodeTargetValue({ targetId: 102, expiresNs: 2000n }));
  const out = new Uint8Array(LAYOUT.tr_target_value.size);
  t.is(m.lookup(key(3), out), out, 'lookup fills a caller buffer');
  t.deepEqual(out, encodeTargetValue({ targetId: 103, expiresNs: 3000n }));
  t.throws(() => m.lookup(key(3), new Uint8Array(8)), { instanceOf: RangeError });

  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  t.deepEqual(m.keys().map(hex).sort(), [1, 2, 3].map((i) => hex(key(i))).sort());

  // Replace, then BPF_NOEXIST on a present key fails with EEXIST naming the map.
  m.update(key(2), encodeTargetValue({ targetId: 202, expiresNs: 0n }));
  t.deepEqual(m.lookup(key(2)), encodeTargetValue({ targetId: 202, expiresNs: 0n }));
  const e = t.throws(() => m.update(key(2), encodeTargetValue({ targetId: 1, expiresNs: 0n }), L.BPF_NOEXIST), { instanceOf: NativeError });
  t.is(e?.errno, 17);
  t.is(e?.message, 'update map "targets" failed: File exists (errno 17)');

  t.true(m.delete(key(2)));
  t.false(m.delete(key(2)), 'deleting an absent key returns false');
  t.is(m.lookup(key(2)), null);
  t.deepEqual(m.keys().map(hex).sort(), [1, 3].map((i) => hex(key(i))).sort());
});

ptest('a full map reports it is full', (t) => {
  const obj = BpfObject.load(objPath, { maxTargets: 4 });
  t.teardown(() => obj.close());
  const m = obj.map(MAP_TARGETS);
  t.is(m.maxEntries, 4);
  const v = encodeTargetValue({ targetId: 1, expiresNs: 0n });
  for (let i = 0; i < 4; i++) m.update(key(i), v);
  const e = t.throws(() => m.update(key(4), v), { instanceOf: NativeError });
  t.is(e?.message, 'update map "targets" (full: 4 entries) failed: Argument list too long (errno 7)');
  t.is(m.keys().length, 4);
});

ptest('counters: per-CPU lookup has ncpu 8-byte-aligned slots, zero on a fresh object, counting test runs', (t) => {
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const c = obj.map(MAP_COUNTERS);
  const ncpu = numPossibleCpus();
  t.true(c.perCpu);
  t.is(c.valueBytes, ncpu * Math.ceil(LAYOUT.tr_counters.size / 8) * 8);
  const zero = new Uint8Array(4);
  const fresh = c.lookup(zero);
  t.is(fresh?.length, c.valueBytes);
  t.true(Object.values(sumCounters(fresh!, ncpu)).every((v) => v === 0n));

  const res = obj.testRun(smallFrame(), { repeat: 50 });
  t.is(res.retval, XDP_PASS);
  const after = sumCounters(c.lookup(zero)!, ncpu);
  t.is(after.packets, 50n, 'each repetition is one frame seen');
  t.is(after.events, 0n);
});

ptest('testRun returns XDP_PASS and the frame untouched', (t) => {
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const frame = smallFrame();
  const res = obj.testRun(frame);
  t.is(res.retval, XDP_PASS);
  t.true(Number.isInteger(res.durationNs) && res.durationNs >= 0, `durationNs ${res.durationNs}`);
  t.is(res.dataOut, undefined);
  const out = new Uint8Array(256);
  const res2 = obj.testRun(frame, { repeat: 10, dataOut: out });
  t.is(res2.retval, XDP_PASS);
  t.deepEqual(res2.dataOut, frame);
  t.throws(() => obj.testRun(frame, { repeat: 0 }), { instanceOf: TcpresetError });
});

ptest('unknown map and use after close are errors that name what is missing', (t) => {
  const obj = BpfObject.load(objPath);
  const e = t.throws(() => obj.map('no_such_map'), { instanceOf: TcpresetError });
  t.is(e?.message, `BPF object ${objPath} has no map "no_such_map"`);
  const m = obj.map(MAP_TARGETS);
  obj.close();
  obj.close(); // idempotent
  t.true(obj.closed);
  t.throws(() => m.lookup(key(1)), { message: /after its BPF object was closed/ });
  t.throws(() => obj.map(MAP_TARGETS), { message: /used after close/ });
  t.throws(() => obj.testRun(smallFrame()), { message: /used after close/ });
});

ptest('an unknown program name is an error naming it', (t) => {
  const e = t.throws(() => BpfObject.load(objPath, { program: 'nope_xdp' }), { instanceOf: TcpresetError });
  t.is(e?.message, `BPF object ${objPath} has no program "nope_xdp"`);
});

// --- XDP attach on interfaces made here (root netns, unique names, always removed) ---

let ifSeq = 0;
/** A fresh veth pair (both up) named trl<pid><n>a/b; removed at teardown. */
function vethPair(t: import('ava').ExecutionContext): [string, string] {
  const base = `trl${process.pid}${(ifSeq++).toString(36)}`;
  const a = `${base}a`;
  const b = `${base}b`;
  execFileSync('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
  t.teardown(() => {
    try {
      execFileSync('ip', ['link', 'del', a], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  });
  execFileSync('ip', ['link', 'set', a, 'up']);
  execFileSync('ip', ['link', 'set', b, 'up']);
  return [a, b];
}

interface XdpState {
  mode: number; // 1 driver, 2 generic (ip -d's XDP_ATTACHED_*)
  prog: { id: number; name: string };
}
function xdpOf(ifname: string): XdpState | undefined {
  const [link] = JSON.parse(execFileSync('ip', ['-j', '-d', 'link', 'show', 'dev', ifname], { encoding: 'utf8' })) as { xdp?: XdpState }[];
  return link.xdp;
}
interface BpftoolXdp {
  devname: string;
  ifindex: number;
  mode: string;
  id: number;
}
function bpftoolXdp(ifname: string): BpftoolXdp[] {
  const [net] = JSON.parse(execFileSync('bpftool', ['-j', 'net', 'show', 'dev', ifname], { encoding: 'utf8' })) as { xdp: BpftoolXdp[] }[];
  return net.xdp;
}

ptest('attachXdp on a veth: native by default, visible to ip and bpftool, gone after close', (t) => {
  const [a, b] = vethPair(t);
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const link = obj.attachXdp(a);
  t.is(link.mode, 'native');
  t.is(link.ifname, a);
  t.is(link.ifindex, Number(readFileSync(`/sys/class/net/${a}/ifindex`, 'utf8')));
  const st = xdpOf(a);
  t.is(st?.mode, 1);
  t.is(st?.prog.name, 'tcpreset_xdp');
  t.deepEqual(bpftoolXdp(a), [{ devname: a, ifindex: link.ifindex, mode: 'driver', id: st?.prog.id ?? -1 }]);
  t.deepEqual(obj.attached, [link]);

  // Generic mode on the peer, when asked.
  const g = obj.attachXdp(b, 'generic');
  t.is(g.mode, 'generic');
  t.is(xdpOf(b)?.mode, 2);
  t.is(bpftoolXdp(b)[0]?.mode, 'generic');

  link.close();
  link.close(); // idempotent
  t.true(link.closed);
  t.is(xdpOf(a), undefined, 'detached from the interface');
  t.deepEqual(bpftoolXdp(a), []);
  t.deepEqual(obj.attached, [g]);
  t.is(xdpOf(b)?.mode, 2, 'the other link is untouched');
});

ptest('attachXdp falls back to generic mode where native XDP is not supported (a bridge)', (t) => {
  const br = `trl${process.pid}br`;
  execFileSync('ip', ['link', 'add', br, 'type', 'bridge']);
  t.teardown(() => execFileSync('ip', ['link', 'del', br], { stdio: 'ignore' }));
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const e = t.throws(() => obj.attachXdp(br, 'native'), { instanceOf: NativeError });
  t.regex(e?.message ?? '', new RegExp(`^attach XDP in native mode on ${br} failed: .+ \\(errno \\d+\\)$`));
  t.is(xdpOf(br), undefined);
  const link = obj.attachXdp(br, 'auto');
  t.is(link.mode, 'generic');
  t.is(xdpOf(br)?.mode, 2);
});

ptest('attaching where an XDP program already is fails naming the interface, and keeps the first', (t) => {
  const [a] = vethPair(t);
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const first = obj.attachXdp(a);
  const id = xdpOf(a)?.prog.id;
  const e = t.throws(() => obj.attachXdp(a), { instanceOf: NativeError });
  // The message names the holder (our own program here) and what the operator can do.
  t.regex(e?.message ?? '', new RegExp(`^attach XDP in native mode \\(${a} already has XDP program "tcpreset_xdp" \\(id ${id}\\); .*xdp off.*\\) on ${a} failed: `));
  t.is(e?.target, a);
  t.is(xdpOf(a)?.prog.id, id);
  t.deepEqual(obj.attached, [first]);
});

ptest('BpfObject.close detaches the links it made', (t) => {
  const [a, b] = vethPair(t);
  const obj = BpfObject.load(objPath);
  const la = obj.attachXdp(a);
  const lb = obj.attachXdp(b);
  t.truthy(xdpOf(a));
  t.truthy(xdpOf(b));
  obj.close();
  t.true(la.closed && lb.closed);
  t.is(xdpOf(a), undefined);
  t.is(xdpOf(b), undefined);
});

ptest('a missing interface is E_IFACE naming it', (t) => {
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const name = `nox${process.pid}`;
  const e = t.throws(() => obj.attachXdp(name), { instanceOf: TcpresetError });
  t.is(e?.code, 'E_IFACE');
  t.is(e?.message, `interface "${name}" does not exist`);
  // Names that cannot be interfaces (and would escape /sys/class/net) are just as absent.
  for (const bad of ['', '..', '../lo', 'a'.repeat(16)]) t.is(t.throws(() => obj.attachXdp(bad))?.message, `interface "${bad}" does not exist`);
});

ptest('a SIGKILLed process leaves no XDP program behind (bpf_link dies with it)', async (t) => {
  const [a] = vethPair(t);
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { BpfObject } = await import(${JSON.stringify(objectModule)});
       const link = BpfObject.load(${JSON.stringify(objPath)}).attachXdp(${JSON.stringify(a)});
       process.stdout.write('attached ' + link.mode + '\\n');
       setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.teardown(() => child.kill('SIGKILL'));
  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) resolve(buf.trim());
    });
    child.on('exit', (code) => reject(new Error(`child exited with ${code} before attaching`)));
  });
  t.is(line, 'attached native');
  t.is(xdpOf(a)?.prog.name, 'tcpreset_xdp');

  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  // The kernel releases the link when the dead process's fds close; allow it a moment.
  const deadline = Date.now() + 2000;
  while (xdpOf(a) !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.is(xdpOf(a), undefined);
});

test('xdp.frags is cleared before load only on kernels older than 5.18', (t) => {
  t.false(kernelKnowsXdpFrags('5.8.0-63-generic'));
  t.false(kernelKnowsXdpFrags('5.17.15'));
  t.true(kernelKnowsXdpFrags('5.18.0'));
  t.true(kernelKnowsXdpFrags('6.18.44-fc-v769'));
  t.true(kernelKnowsXdpFrags('10.1.0'));
});
