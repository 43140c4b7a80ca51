/**
 * Independent decoder for forged packets: write them to a pcap file and let
 * tshark (Wireshark's dissectors, with checksum validation on) say what they
 * are. Used by the forge and checksum tests.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101; // raw IPv4 or IPv6, told apart by the version nibble

/** A pcap (v2.4, microsecond, little-endian) file holding `packets`. */
export function pcapFile(packets: Uint8Array[], linktype: number): Buffer {
  const parts: Buffer[] = [];
  const gh = Buffer.alloc(24);
  gh.writeUInt32LE(0xa1b2c3d4, 0);
  gh.writeUInt16LE(2, 4);
  gh.writeUInt16LE(4, 6);
  gh.writeUInt32LE(262144, 16);
  gh.writeUInt32LE(linktype, 20);
  parts.push(gh);
  packets.forEach((p, i) => {
    const rh = Buffer.alloc(16);
    rh.writeUInt32LE(1_700_000_000 + i, 0);
    rh.writeUInt32LE(p.length, 8);
    rh.writeUInt32LE(p.length, 12);
    parts.push(rh, Buffer.from(p.buffer, p.byteOffset, p.byteLength));
  });
  return Buffer.concat(parts);
}

/** One decoded packet: tshark's `layers` object, field name -> value (string, or array when repeated). */
export type Layers = Record<string, Record<string, unknown>>;

export function hasTshark(): boolean {
  try {
    execFileSync('tshark', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Decode with checksum checks on. Returns, per packet, a flat map of every
 * field tshark printed (e.g. "tcp.seq_raw", "ip.checksum.status"), nested
 * trees flattened; a field that occurs more than once (VLAN tags) maps to
 * an array of its values in order.
 */
export function tsharkDecode(packets: Uint8Array[], linktype: number): Array<Record<string, string | string[]>> {
  const dir = mkdtempSync(join(tmpdir(), `tcpreset-tshark-${process.pid}-`));
  try {
    const file = join(dir, 'p.pcap');
    writeFileSync(file, pcapFile(packets, linktype));
    const out = execFileSync(
      'tshark',
      ['-n', '-r', file, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-o', 'tcp.relative_sequence_numbers:FALSE', '-T', 'json', '--no-duplicate-keys'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 },
    );
    const docs = JSON.parse(out) as Array<{ _source: { layers: Layers } }>;
    return docs.map((d) => {
      const flat: Record<string, string | string[]> = {};
      flatten(d._source.layers, flat);
      return flat;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function flatten(node: unknown, out: Record<string, string | string[]>): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const n of node) flatten(n, out);
    return;
  }
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    if (typeof v === 'string') {
      const prev = out[k];
      out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    } else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) {
      out[k] = v as string[];
    } else {
      flatten(v, out);
    }
  }
}
