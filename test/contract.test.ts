/**
 * src/bpf/contract.ts must mirror bpf/tcpreset.h and the built object exactly.
 * Layouts are read from BTF (bpftool -j btf dump): of build/tcpreset.bpf.o
 * (what the program was compiled with) and of the header alone (so structs
 * the program does not keep in its BTF are still checked). Constants are
 * read through the C compiler. Map shapes come from libbpf (root).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as C from '../src/bpf/contract.js';
import type { Family } from '../src/core/model.js';
import { ptest } from './helpers/privileged.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const objPath = join(root, 'build/tcpreset.bpf.o');
const headerPath = join(root, 'bpf/tcpreset.h');

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
  bitfield_size?: number;
}
interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  members?: BtfMember[];
  values?: { name: string; val: number }[];
}

function btfTypes(file: string): BtfType[] {
  const out = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return (JSON.parse(out) as { types: BtfType[] }).types;
}

function structsByName(types: BtfType[]): Map<string, BtfType> {
  return new Map(types.filter((t) => t.kind === 'STRUCT').map((t) => [t.name, t]));
}

type LayoutName = keyof typeof C.LAYOUT;
const layoutNames = Object.keys(C.LAYOUT) as LayoutName[];

/** clang flags for compiling the header for the BPF target outside the Makefile (multiarch dir holds asm/types.h). */
function bpfIncludeFlags(): string[] {
  const multiarch = execFileSync('clang', ['-print-multiarch'], { encoding: 'utf8' }).trim();
  return ['-I', join(root, 'bpf'), ...(multiarch ? ['-idirafter', `/usr/include/${multiarch}`] : [])];
}

/** BTF and preprocessed constants of the header on its own. */
const headerInfo = (() => {
  let cached: { structs: Map<string, BtfType>; numbers: Map<string, number>; strings: Map<string, string> } | undefined;
  return () => {
    if (cached) return cached;
    const dir = mkdtempSync(join(tmpdir(), 'tr-contract-'));
    try {
      const src = readFileSync(headerPath, 'utf8');
      const defines = [...src.matchAll(/^#define\s+(TR_\w+)\s+(.+)$/gm)].map((m) => ({ name: m[1], value: m[2].trim() }));
      const numeric = defines.filter((d) => !d.value.startsWith('"'));
      const textual = defines.filter((d) => d.value.startsWith('"'));
      const c = [
        '#include "tcpreset.h"',
        // Globals keep every struct in BTF; an enum lets the compiler evaluate each numeric define.
        ...layoutNames.map((n) => `struct ${n} anchor_${n};`),
        `enum tr_consts_check { ${numeric.map((d) => `K_${d.name} = ${d.name}`).join(', ')} } anchor_consts;`,
      ].join('\n');
      writeFileSync(join(dir, 'h.c'), c);
      execFileSync('clang', ['-g', '-O0', '-target', 'bpf', ...bpfIncludeFlags(), '-c', join(dir, 'h.c'), '-o', join(dir, 'h.o')]);
      const types = btfTypes(join(dir, 'h.o'));
      const numbers = new Map<string, number>();
      for (const v of types.find((t) => t.kind.startsWith('ENUM') && t.name === 'tr_consts_check')?.values ?? []) {
        numbers.set(v.name.slice(2), v.val);
      }
      writeFileSync(join(dir, 's.c'), ['#include "tcpreset.h"', ...textual.map((d) => `key_${d.name} ${d.name}`)].join('\n'));
      const pre = execFileSync('clang', ['-E', '-P', ...bpfIncludeFlags(), join(dir, 's.c')], { encoding: 'utf8' });
      const strings = new Map<string, string>();
      for (const m of pre.matchAll(/^key_(\w+) "(.*)"$/gm)) strings.set(m[1], m[2]);
      cached = { structs: structsByName(types), numbers, strings };
      return cached;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
})();

/** Every assertion about one struct: size, each LAYOUT field's offset, no BTF member missing from LAYOUT. */
function checkStruct(t: import('ava').ExecutionContext, where: string, name: LayoutName, btf: BtfType | undefined): void {
  const layout = C.LAYOUT[name];
  if (!btf) {
    // A struct reached only through local pointers leaves no BTF; a global anchor keeps it.
    t.fail(`struct ${name} is not in the BTF of ${where} (anchor it, e.g. \`const struct ${name} *${name}_btf __attribute__((unused));\`)`);
    return;
  }
  t.is(btf.size, layout.size, `sizeof(struct ${name}) in ${where}`);
  const fields = layout.fields as Record<string, number>;
  const members = new Map((btf.members ?? []).map((m) => [m.name, m]));
  for (const [field, off] of Object.entries(fields)) {
    const m = members.get(field);
    if (!m) {
      t.fail(`${name}.${field} is in src/bpf/contract.ts but not in ${where}`);
      continue;
    }
    t.falsy(m.bitfield_size, `${name}.${field} must not be a bitfield`);
    t.is(m.bits_offset % 8, 0, `${name}.${field} is byte aligned`);
    t.is(m.bits_offset / 8, off, `offsetof(${name}, ${field}) in ${where}`);
  }
  for (const m of members.keys()) {
    t.true(m in fields, `${name}.${m} is in ${where} but missing from LAYOUT in src/bpf/contract.ts`);
  }
}

for (const name of layoutNames) {
  test(`object BTF: struct ${name} has the size and offsets of LAYOUT`, (t) => {
    checkStruct(t, 'build/tcpreset.bpf.o', name, structsByName(btfTypes(objPath)).get(name));
  });
  test(`header BTF: struct ${name} has the size and offsets of LAYOUT`, (t) => {
    checkStruct(t, 'bpf/tcpreset.h', name, headerInfo().structs.get(name));
  });
}

test('header: every tr_* struct is mirrored in LAYOUT', (t) => {
  const declared = [...readFileSync(headerPath, 'utf8').matchAll(/^struct\s+(tr_\w+)\s*\{/gm)].map((m) => m[1]);
  t.true(declared.length >= layoutNames.length);
  t.deepEqual([...declared].sort(), [...layoutNames].sort());
});

test('header: names and constants equal those of src/bpf/contract.ts', (t) => {
  const { numbers, strings } = headerInfo();
  t.deepEqual(
    Object.fromEntries(strings),
    { TR_PROG_NAME: C.PROG_NAME, TR_MAP_TARGETS: C.MAP_TARGETS, TR_MAP_FLOWS: C.MAP_FLOWS, TR_MAP_EVENTS: C.MAP_EVENTS, TR_MAP_EVENT_RINGS: C.MAP_EVENT_RINGS, TR_MAP_COUNTERS: C.MAP_COUNTERS, TR_MAP_PREFILTER: C.MAP_PREFILTER, TR_MAP_UDP_TUNNELS: C.MAP_UDP_TUNNELS, TR_MAP_IF_COUNTERS: C.MAP_IF_COUNTERS, TR_MAP_FLOWMEM: C.MAP_FLOWMEM },
  );
  const expected: Record<string, number | bigint> = {
    TR_MAX_TARGETS: C.MAX_TARGETS,
    TR_MAX_FLOWS: C.MAX_FLOWS,
    TR_RINGBUF_BYTES: C.RINGBUF_BYTES,
    TR_RING_SLOTS: C.RING_SLOTS,
    TR_MAX_VLANS: C.MAX_VLANS,
    TR_PREFILTER_BITS: C.PREFILTER_BITS,
    TR_PREFILTER_WORDS: C.PREFILTER_WORDS,
    TR_DUP_INTERVAL_NS: C.DUP_INTERVAL_NS,
    TR_FAMILY_V4: C.FAMILY_V4,
    TR_FAMILY_V6: C.FAMILY_V6,
    TR_PORT_ANY: C.PORT_ANY,
    TR_MATCH_SRC: C.MATCH_SRC,
    TR_MATCH_DST: C.MATCH_DST,
    TR_TCP_FIN: C.TCP_FIN,
    TR_TCP_SYN: C.TCP_SYN,
    TR_TCP_RST: C.TCP_RST,
    TR_TCP_PSH: C.TCP_PSH,
    TR_TCP_ACK: C.TCP_ACK,
    TR_ENCAP_NONE: C.ENCAP_NONE,
    TR_ENCAP_VXLAN: C.ENCAP_VXLAN,
    TR_ENCAP_GENEVE: C.ENCAP_GENEVE,
    TR_ENCAP_GRE: C.ENCAP_GRE,
    TR_ENCAP_ERSPAN1: C.ENCAP_ERSPAN1,
    TR_ENCAP_ERSPAN2: C.ENCAP_ERSPAN2,
    TR_ENCAP_ERSPAN3: C.ENCAP_ERSPAN3,
    TR_VXLAN_PORT: C.VXLAN_PORT,
    TR_GENEVE_PORT: C.GENEVE_PORT,
    TR_UDP_PORTS: C.UDP_PORTS,
    TR_ENCAP_F_NO_L2: C.ENCAP_F_NO_L2,
    TR_IF_SLOTS: C.IF_SLOTS,
    TR_FLOWMEM_DEFAULT: C.FLOWMEM_DEFAULT,
    TR_FM_FIN_A: C.FM_FIN_A,
    TR_FM_FIN_B: C.FM_FIN_B,
    TR_FM_RST: C.FM_RST,
    TR_TCPOPT_MPTCP: C.TCPOPT_MPTCP,
    TR_MPTCP_CAPABLE: C.MPTCP_CAPABLE,
    TR_MPTCP_JOIN: C.MPTCP_JOIN,
    TR_MPTCP_FASTCLOSE: C.MPTCP_FASTCLOSE,
    TR_MAX_TCP_OPTS: C.MAX_TCP_OPTS,
    TR_MP_SEEN: C.MP_SEEN,
    TR_MP_CAPABLE: C.MP_CAPABLE,
    TR_MP_JOIN: C.MP_JOIN,
    TR_MP_KEY0: C.MP_KEY0,
    TR_MP_KEY1: C.MP_KEY1,
    TR_MP_TOKEN0: C.MP_TOKEN0,
    TR_MP_TOKEN1: C.MP_TOKEN1,
  };
  // Every numeric define of the header is mirrored, and equal.
  t.deepEqual([...numbers.keys()].sort(), Object.keys(expected).sort());
  for (const [k, v] of Object.entries(expected)) t.is(BigInt(numbers.get(k) ?? -1), BigInt(v), k);
});

test('object BTF: the program and the nine maps carry the contract names', (t) => {
  const types = btfTypes(objPath);
  t.truthy(types.find((x) => x.kind === 'FUNC' && x.name === C.PROG_NAME), `program ${C.PROG_NAME}`);
  const vars = new Set(types.filter((x) => x.kind === 'VAR').map((x) => x.name));
  for (const m of [C.MAP_TARGETS, C.MAP_FLOWS, C.MAP_EVENTS, C.MAP_EVENT_RINGS, C.MAP_COUNTERS, C.MAP_PREFILTER, C.MAP_UDP_TUNNELS, C.MAP_IF_COUNTERS, C.MAP_FLOWMEM]) t.true(vars.has(m), `map ${m}`);
});

/** Offsets straight from the header's BTF, so the encoders are checked against C, not against LAYOUT. */
function btfOffsets(name: LayoutName): Record<string, number> {
  const s = headerInfo().structs.get(name);
  if (!s?.members) throw new Error(`struct ${name} missing from header BTF`);
  return Object.fromEntries(s.members.map((m) => [m.name, m.bits_offset / 8]));
}

test('encodeTargetKey writes each field at its C offset (IPv4 and IPv6)', (t) => {
  const o = btfOffsets('tr_target_key');
  const v4 = C.encodeTargetKey({ ifindex: 0x01020304, family: 4, addr: Uint8Array.of(192, 0, 2, 7), port: 0xbeef });
  t.is(v4.length, headerInfo().structs.get('tr_target_key')?.size ?? -1);
  const dv = new DataView(v4.buffer, v4.byteOffset);
  t.is(dv.getUint32(o.ifindex, true), 0x01020304);
  t.is(dv.getUint16(o.port, true), 0xbeef);
  t.is(v4[o.family], 4);
  t.is(v4[o.pad], 0);
  t.deepEqual([...v4.subarray(o.addr, o.addr + 16)], [192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  t.deepEqual(C.decodeTargetKey(v4), { ifindex: 0x01020304, family: 4, addr: Uint8Array.of(192, 0, 2, 7), port: 0xbeef });

  const a6 = Uint8Array.from({ length: 16 }, (_, i) => 0x20 + i);
  // A reused buffer full of junk must come out clean (padding zero, as the hash compares all bytes).
  const reused = new Uint8Array(24).fill(0xff);
  const v6 = C.encodeTargetKey({ ifindex: 9, family: 6, addr: a6, port: 0 }, reused);
  t.is(v6, reused);
  t.is(v6[o.family], 6);
  t.is(v6[o.pad], 0);
  t.is(new DataView(v6.buffer).getUint16(o.port, true), 0);
  t.deepEqual([...v6.subarray(o.addr, o.addr + 16)], [...a6]);
  t.throws(() => C.encodeTargetKey({ ifindex: 1, family: 4, addr: a6, port: 0 }), { instanceOf: RangeError });
});

test('encodeTargetValue writes each field at its C offset', (t) => {
  const o = btfOffsets('tr_target_value');
  const v = C.encodeTargetValue({ targetId: 0xdeadbeef, expiresNs: 0x0102030405060708n }, new Uint8Array(16).fill(0xaa));
  t.is(v.length, headerInfo().structs.get('tr_target_value')?.size ?? -1);
  const dv = new DataView(v.buffer, v.byteOffset);
  t.is(dv.getUint32(o.target_id, true), 0xdeadbeef);
  t.is(dv.getUint32(o.pad, true), 0);
  t.is(dv.getBigUint64(o.expires_ns, true), 0x0102030405060708n);
});

test('decodeEvent reads each field from its C offset', (t) => {
  const o = btfOffsets('tr_event');
  const size = headerInfo().structs.get('tr_event')?.size ?? 0;
  // The event sits at an odd offset inside a larger buffer, as in the ring.
  const base = 8;
  const buf = new Uint8Array(base + size + 8);
  const dv = new DataView(buf.buffer, base);
  dv.setBigUint64(o.ts_ns, 123456789012345n, true);
  dv.setUint32(o.target_id, 77, true);
  dv.setUint32(o.ifindex, 5, true);
  dv.setUint32(o.seq, 0xfffffff0, true);
  dv.setUint32(o.ack, 0x11223344, true);
  dv.setUint32(o.payload_len, 1448, true);
  dv.setUint32(o.flow_label, 0xabcde, true);
  dv.setUint16(o.sport, 443, true);
  dv.setUint16(o.dport, 51000, true);
  dv.setUint16(o.vlan_tpid, 0x88a8, true);
  dv.setUint16(o.vlan_tpid + 2, 0x8100, true);
  dv.setUint16(o.vlan_tci, 100, true);
  dv.setUint16(o.vlan_tci + 2, 200, true);
  dv.setUint8(o.family, 6);
  dv.setUint8(o.vlan_count, 2);
  dv.setUint8(o.tcp_flags, C.TCP_ACK | C.TCP_PSH);
  dv.setUint8(o.ttl, 63);
  dv.setUint8(o.tos, 0x28);
  dv.setUint8(o.match, C.MATCH_DST);
  for (let i = 0; i < 6; i++) {
    dv.setUint8(o.smac + i, 0x10 + i);
    dv.setUint8(o.dmac + i, 0x20 + i);
  }
  dv.setUint8(o.encap, C.ENCAP_ERSPAN3);
  dv.setUint8(o.encap_flags, C.ENCAP_F_NO_L2);
  for (let i = 0; i < 16; i++) {
    dv.setUint8(o.saddr + i, 0x30 + i);
    dv.setUint8(o.daddr + i, 0x40 + i);
  }
  dv.setBigUint64(o.mp_key_src, 0x1122334455667788n, true);
  dv.setBigUint64(o.mp_key_dst, 0x8877665544332211n, true);
  dv.setUint32(o.mp_token, 0xcafef00d, true);
  dv.setUint8(o.mp_flags, C.MP_SEEN | C.MP_JOIN | C.MP_KEY0 | C.MP_TOKEN1);
  const ev = C.decodeEvent(new DataView(buf.buffer), base);
  t.deepEqual(ev, {
    tsNs: 123456789012345n,
    targetId: 77,
    ifindex: 5,
    seq: 0xfffffff0,
    ack: 0x11223344,
    payloadLen: 1448,
    flowLabel: 0xabcde,
    sport: 443,
    dport: 51000,
    vlans: [
      { tpid: 0x88a8, tci: 100 },
      { tpid: 0x8100, tci: 200 },
    ],
    family: 6,
    tcpFlags: C.TCP_ACK | C.TCP_PSH,
    ttl: 63,
    tos: 0x28,
    match: C.MATCH_DST,
    smac: Uint8Array.from({ length: 6 }, (_, i) => 0x10 + i),
    dmac: Uint8Array.from({ length: 6 }, (_, i) => 0x20 + i),
    saddr: Uint8Array.from({ length: 16 }, (_, i) => 0x30 + i),
    daddr: Uint8Array.from({ length: 16 }, (_, i) => 0x40 + i),
    encap: C.ENCAP_ERSPAN3,
    encapFlags: C.ENCAP_F_NO_L2,
    mpFlags: C.MP_SEEN | C.MP_JOIN | C.MP_KEY0 | C.MP_TOKEN1,
    mpKeySrc: 0x1122334455667788n,
    mpKeyDst: 0x8877665544332211n,
    mpToken: 0xcafef00d,
  });
  // Copies, not views: the ring slot can be reused after decoding.
  buf.fill(0);
  t.is(ev.saddr[0], 0x30);
});

test('sumCounters adds each counter at its C offset across CPU slots', (t) => {
  const o = btfOffsets('tr_counters');
  const size = headerInfo().structs.get('tr_counters')?.size ?? 0;
  const ncpu = 3;
  const buf = new Uint8Array(ncpu * size);
  const dv = new DataView(buf.buffer);
  const names = ['packets', 'tcp', 'matched', 'events', 'lost', 'suppressed', 'rst_seen', 'expired', 'fm_new', 'fm_evicted'];
  const tsName: Record<string, keyof C.Counters> = { rst_seen: 'rstSeen', fm_new: 'fmNew', fm_evicted: 'fmEvicted' };
  for (let c = 0; c < ncpu; c++) names.forEach((n, i) => dv.setBigUint64(c * size + o[n], BigInt((i + 1) * 10 + c), true));
  const sums = C.sumCounters(buf, ncpu);
  t.deepEqual(
    names.map((n) => sums[tsName[n] ?? (n as keyof C.Counters)]),
    names.map((_, i) => BigInt(3 * (i + 1) * 10 + 3)),
  );
});

test('sumIfCounters sums the CPU slots the interface owns and counts the others', (t) => {
  const o = btfOffsets('tr_if_counters');
  const size = headerInfo().structs.get('tr_if_counters')?.size ?? 0;
  const buf = new Uint8Array(4 * size);
  const dv = new DataView(buf.buffer);
  const put = (cpu: number, ifindex: number, packets: bigint, tcp: bigint, decap: bigint): void => {
    dv.setUint32(cpu * size + o.ifindex, ifindex, true);
    dv.setBigUint64(cpu * size + o.packets, packets, true);
    dv.setBigUint64(cpu * size + o.tcp, tcp, true);
    dv.setBigUint64(cpu * size + o.decap, decap, true);
  };
  put(0, 7, 10n, 3n, 1n);
  put(1, 7 + C.IF_SLOTS, 99n, 99n, 99n); // another interface took this CPU's slot
  put(2, 0, 0n, 0n, 0n); // never used on this CPU
  put(3, 7, 5n, 2n, 0n);
  t.deepEqual(C.sumIfCounters(buf, 4, 7), { packets: 15n, tcp: 5n, decap: 1n, foreignCpus: 1 });
  t.is(C.ifSlot(7 + C.IF_SLOTS), 7);
});

ptest('object maps (as libbpf sees them) have the contract names, types, key/value sizes and capacities', async (t) => {
  const { BpfObject } = await import('../src/bpf/object.js');
  const obj = BpfObject.load(objPath);
  t.teardown(() => obj.close());
  const L = C.LAYOUT;
  const want = [
    { name: C.MAP_TARGETS, type: 1 /* HASH */, keySize: L.tr_target_key.size, valueSize: L.tr_target_value.size, maxEntries: C.MAX_TARGETS },
    { name: C.MAP_FLOWS, type: 9 /* LRU_HASH */, keySize: L.tr_flow_key.size, valueSize: L.tr_flow_state.size, maxEntries: C.MAX_FLOWS },
    { name: C.MAP_EVENTS, type: 27 /* RINGBUF */, keySize: 0, valueSize: 0, maxEntries: C.RINGBUF_BYTES },
    { name: C.MAP_EVENT_RINGS, type: 12 /* ARRAY_OF_MAPS */, keySize: 4, valueSize: 4, maxEntries: C.RING_SLOTS },
    { name: C.MAP_COUNTERS, type: 6 /* PERCPU_ARRAY */, keySize: 4, valueSize: L.tr_counters.size, maxEntries: 1 },
    { name: C.MAP_PREFILTER, type: 2 /* ARRAY */, keySize: 4, valueSize: 8, maxEntries: C.PREFILTER_WORDS },
    { name: C.MAP_UDP_TUNNELS, type: 2 /* ARRAY */, keySize: 4, valueSize: 4, maxEntries: C.UDP_PORTS },
    { name: C.MAP_IF_COUNTERS, type: 6 /* PERCPU_ARRAY */, keySize: 4, valueSize: L.tr_if_counters.size, maxEntries: C.IF_SLOTS },
    { name: C.MAP_FLOWMEM, type: 2 /* ARRAY */, keySize: 4, valueSize: L.tr_fm_entry.size, maxEntries: C.FLOWMEM_DEFAULT },
  ];
  for (const w of want) {
    const m = obj.map(w.name);
    t.deepEqual({ name: m.name, type: m.type, keySize: m.keySize, valueSize: m.valueSize, maxEntries: m.maxEntries }, w);
  }
  t.true(obj.progFd > 0);
  t.is(obj.progName, C.PROG_NAME);
});

ptest('maxTargets resizes the targets map and an encoded key/value round-trips through it', async (t) => {
  const { BpfObject } = await import('../src/bpf/object.js');
  const obj = BpfObject.load(objPath, { maxTargets: 200_000 });
  t.teardown(() => obj.close());
  const m = obj.map(C.MAP_TARGETS);
  t.is(m.maxEntries, 200_000);
  const key = C.encodeTargetKey({ ifindex: 3, family: 6, addr: Uint8Array.from({ length: 16 }, (_, i) => i + 1), port: 22 });
  const value = C.encodeTargetValue({ targetId: 42, expiresNs: 99n });
  m.update(key, value);
  t.deepEqual(m.lookup(key), value);
  t.deepEqual(m.keys().map((k) => C.decodeTargetKey(k)), [C.decodeTargetKey(key)]);
});

test('prefilterHash equals the header\'s tr_prefilter_hash (compiled natively) on v4, v6 and edge inputs', (t) => {
  const rnd = (n: number): number[] => Array.from({ length: n }, () => Math.floor(Math.random() * 256));
  const vectors: { ifindex: number; family: Family; addr: number[] }[] = [
    { ifindex: 1, family: 4, addr: [192, 0, 2, 1] },
    { ifindex: 0xffffffff, family: 6, addr: Array(16).fill(0xff) },
    { ifindex: 0, family: 4, addr: [0, 0, 0, 0] },
    { ifindex: 7, family: 6, addr: [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1] },
    ...Array.from({ length: 200 }, (_, i) => ({ ifindex: (i * 2654435761) >>> 0, family: (i % 2 ? 6 : 4) as Family, addr: rnd(i % 2 ? 16 : 4) })),
  ];
  const dir = mkdtempSync(join(tmpdir(), 'tr-hash-'));
  try {
    const rows = vectors.map((v) => {
      const a = [...v.addr, ...Array(16 - v.addr.length).fill(0)];
      return `{ ${v.ifindex}u, ${v.family}, { ${a.join(', ')} } }`;
    });
    writeFileSync(
      join(dir, 'h.c'),
      [
        '#include <stdio.h>',
        '#include "tcpreset.h"',
        'struct v { __u32 ifindex; __u8 family; __u8 addr[16]; };',
        `static const struct v vs[] = { ${rows.join(',\n')} };`,
        'int main(void) { for (unsigned i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) printf("%u\\n", tr_prefilter_hash(vs[i].ifindex, vs[i].family, vs[i].addr)); return 0; }',
      ].join('\n'),
    );
    execFileSync('cc', ['-O2', '-I', join(root, 'bpf'), join(dir, 'h.c'), '-o', join(dir, 'h')]);
    const fromC = execFileSync(join(dir, 'h'), { encoding: 'utf8' }).trim().split('\n').map(Number);
    const fromTs = vectors.map((v) => C.prefilterHash(v.ifindex, v.family, Uint8Array.from(v.addr)));
    t.deepEqual(fromTs, fromC);
    // The bits spread: 200 random inputs land in (nearly) 200 distinct bits.
    t.true(new Set(fromTs.map((h) => h & (C.PREFILTER_BITS - 1))).size >= 195);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('srcIsA equals the header\'s tr_fm_src_is_a (compiled natively) on v4, v6, equal addresses and random inputs', (t) => {
  const rnd = (n: number): number[] => Array.from({ length: n }, () => Math.floor(Math.random() * 256));
  const pad = (a: number[]): number[] => [...a, ...Array(16 - a.length).fill(0)];
  const vectors: { s: number[]; sp: number; d: number[]; dp: number }[] = [
    { s: [192, 0, 2, 1], sp: 1, d: [192, 0, 2, 2], dp: 1 },
    { s: [10, 0, 0, 1], sp: 5, d: [10, 0, 0, 1], dp: 4 },
    { s: [10, 0, 0, 1], sp: 4, d: [10, 0, 0, 1], dp: 4 },
    { s: [1, 0, 0, 0], sp: 1, d: [0, 0, 0, 1], dp: 1 },
    ...Array.from({ length: 300 }, (_, i) => {
      const n = i % 2 ? 16 : 4;
      const s = rnd(n);
      // A third share the first words, so later words and ports decide.
      const d = i % 3 === 0 ? [...s.slice(0, n - 1), rnd(1)[0]] : rnd(n);
      return { s, sp: rnd(1)[0] * 256 + rnd(1)[0], d, dp: i % 5 === 0 ? 80 : rnd(1)[0] };
    }),
  ];
  const dir = mkdtempSync(join(tmpdir(), 'tr-fm-'));
  try {
    const rows = vectors.map((v) => `{ { ${pad(v.s).join(', ')} }, ${v.sp}, { ${pad(v.d).join(', ')} }, ${v.dp} }`);
    writeFileSync(
      join(dir, 'o.c'),
      [
        '#include <stdio.h>',
        '#include "tcpreset.h"',
        'struct v { __u8 s[16]; __u16 sp; __u8 d[16]; __u16 dp; };',
        `static const struct v vs[] = { ${rows.join(',\n')} };`,
        'int main(void) { for (unsigned i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) printf("%d\\n", tr_fm_src_is_a(vs[i].s, vs[i].sp, vs[i].d, vs[i].dp)); return 0; }',
      ].join('\n'),
    );
    execFileSync('cc', ['-O2', '-I', join(root, 'bpf'), join(dir, 'o.c'), '-o', join(dir, 'o')]);
    const fromC = execFileSync(join(dir, 'o'), { encoding: 'utf8' }).trim().split('\n').map((x) => x === '1');
    const fromTs = vectors.map((v) => C.srcIsA(Uint8Array.from(v.s), v.sp, Uint8Array.from(v.d), v.dp));
    t.deepEqual(fromTs, fromC);
    t.true(fromTs.includes(true) && fromTs.includes(false));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('encodeFlowKey / decodeFlowKey / decodeFlowEntry use the C offsets (IPv4 and IPv6); a torn entry decodes to null', (t) => {
  const k = btfOffsets('tr_fm_key');
  const key = C.encodeFlowKey({ ifindex: 0x01020304, family: 6, addrA: Uint8Array.from({ length: 16 }, (_, i) => i + 1), portA: 0xbeef, addrB: Uint8Array.from({ length: 16 }, (_, i) => 0x40 + i), portB: 22 }, new Uint8Array(44).fill(0xff));
  const kd = new DataView(key.buffer);
  t.is(kd.getUint32(k.ifindex, true), 0x01020304);
  t.is(kd.getUint16(k.port_a, true), 0xbeef);
  t.is(kd.getUint16(k.port_b, true), 22);
  t.is(key[k.family], 6);
  t.deepEqual([...key.subarray(k.pad, k.pad + 3)], [0, 0, 0]);
  t.is(key[k.addr_a], 1);
  t.is(key[k.addr_b + 15], 0x4f);
  const k4 = { ifindex: 3, family: 4 as const, addrA: Uint8Array.of(10, 0, 0, 1), portA: 1, addrB: Uint8Array.of(10, 0, 0, 2), portB: 2 };
  t.deepEqual(C.decodeFlowKey(C.encodeFlowKey(k4)), k4);

  const e = btfOffsets('tr_fm_entry');
  const d = btfOffsets('tr_fm_dir');
  const dsize = headerInfo().structs.get('tr_fm_dir')?.size ?? 0;
  const base = 8;
  const buf = new Uint8Array(base + (headerInfo().structs.get('tr_fm_entry')?.size ?? 0));
  buf.set(C.encodeFlowKey(k4), base + e.key);
  const h = C.fmHash(buf, base + e.key);
  const dv = new DataView(buf.buffer, base);
  const o1 = e.dir + dsize; // dir[1]
  dv.setBigUint64(o1 + d.last_ns, 42n, true);
  dv.setUint32(o1 + d.seq, 0xfffffff0, true);
  dv.setUint32(o1 + d.ack, 7, true);
  dv.setUint32(o1 + d.payload_len, 1448, true);
  dv.setUint32(o1 + d.flow_label, 0xabcde, true);
  dv.setUint16(o1 + d.vlan_tpid, 0x88a8, true);
  dv.setUint16(o1 + d.vlan_tpid + 2, 0x8100, true);
  dv.setUint16(o1 + d.vlan_tci, 100, true);
  dv.setUint16(o1 + d.vlan_tci + 2, 200, true);
  for (let i = 0; i < 6; i++) {
    dv.setUint8(o1 + d.smac + i, 0x10 + i);
    dv.setUint8(o1 + d.dmac + i, 0x20 + i);
  }
  dv.setUint8(o1 + d.tcp_flags, C.TCP_ACK);
  dv.setUint8(o1 + d.ttl, 63);
  dv.setUint8(o1 + d.tos, 0x28);
  dv.setUint8(o1 + d.vlan_count, 2);
  dv.setUint32(o1 + d.key_hash, h, true);
  dv.setUint8(o1 + d.encap, C.ENCAP_VXLAN);
  dv.setUint8(o1 + d.encap_flags, C.ENCAP_F_NO_L2);
  dv.setBigUint64(e.first_ns, 41n, true);
  dv.setUint8(e.state, C.FM_FIN_A | C.FM_FIN_B);
  const m = btfOffsets('tr_fm_mptcp');
  dv.setBigUint64(e.mp + m.key, 0x0102030405060708n, true);
  dv.setBigUint64(e.mp + m.key + 8, 0xf1f2f3f4f5f6f7f8n, true);
  dv.setUint32(e.mp + m.token, 0xdeadbeef, true);
  dv.setUint8(e.mp + m.flags, C.MP_SEEN | C.MP_CAPABLE | C.MP_KEY0 | C.MP_KEY1);
  t.deepEqual(C.decodeFlowEntry(buf, base), {
    key: k4,
    dirs: [null, {
      lastNs: 42n, seq: 0xfffffff0, ack: 7, payloadLen: 1448, flowLabel: 0xabcde,
      vlans: [{ tpid: 0x88a8, tci: 100 }, { tpid: 0x8100, tci: 200 }],
      smac: Uint8Array.from({ length: 6 }, (_, i) => 0x10 + i), dmac: Uint8Array.from({ length: 6 }, (_, i) => 0x20 + i),
      tcpFlags: C.TCP_ACK, ttl: 63, tos: 0x28, encap: C.ENCAP_VXLAN, encapFlags: C.ENCAP_F_NO_L2,
    }],
    firstNs: 41n,
    state: C.FM_FIN_A | C.FM_FIN_B,
    mp: { flags: C.MP_SEEN | C.MP_CAPABLE | C.MP_KEY0 | C.MP_KEY1, keys: [0x0102030405060708n, 0xf1f2f3f4f5f6f7f8n], token: 0xdeadbeef },
  });
  t.true(C.flowClosed(C.FM_FIN_A | C.FM_FIN_B));
  t.false(C.flowClosed(C.FM_FIN_B));
  t.true(C.flowClosed(C.FM_RST));
  // A direction written for another key (two CPUs took the slot at once) is refused.
  dv.setUint32(o1 + d.key_hash, h ^ 1, true);
  t.is(C.decodeFlowEntry(buf, base), null);
  // An empty slot (family 0) too.
  t.is(C.decodeFlowEntry(new Uint8Array(200)), null);
});

test('fmHash equals the header\'s tr_fm_hash (compiled natively) on v4, v6 and random keys', (t) => {
  const rnd = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(Math.random() * 256));
  const keys = Array.from({ length: 200 }, (_, i) => {
    const fam = (i % 2 ? 6 : 4) as Family;
    const n = fam === 4 ? 4 : 16;
    return C.encodeFlowKey({ ifindex: (i * 2654435761) >>> 0, family: fam, addrA: rnd(n), portA: i * 311 & 0xffff, addrB: rnd(n), portB: 80 });
  });
  const dir = mkdtempSync(join(tmpdir(), 'tr-fmh-'));
  try {
    writeFileSync(
      join(dir, 'h.c'),
      [
        '#include <stdio.h>',
        '#include "tcpreset.h"',
        `static const unsigned char ks[][44] = { ${keys.map((k) => `{ ${[...k].join(', ')} }`).join(',\n')} };`,
        'int main(void) { for (unsigned i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) { struct tr_fm_key k; __builtin_memcpy(&k, ks[i], sizeof(k)); printf("%u\\n", tr_fm_hash(&k)); } return 0; }',
      ].join('\n'),
    );
    execFileSync('cc', ['-O2', '-I', join(root, 'bpf'), join(dir, 'h.c'), '-o', join(dir, 'h')]);
    const fromC = execFileSync(join(dir, 'h'), { encoding: 'utf8' }).trim().split('\n').map(Number);
    t.deepEqual(keys.map((k) => C.fmHash(k)), fromC);
    // 200 keys into 512 sets: about 165 distinct sets if the hash spreads.
    t.true(new Set(fromC.map((h) => h & 1023 & ~1)).size > 145, 'sets spread');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
